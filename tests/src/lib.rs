//! Test support for Griffin's integration tests and benchmarks.
//!
//! * [`sysfs`]: a builder that writes fake sysfs/procfs trees (CPUs, caches,
//!   NUMA nodes, PCI hierarchies with relative symlinks, netdevs, NVMe and
//!   RDMA devices) for `griffin_devices::discover` to read.
//! * [`edge2s`]: the hand-described multi-NUMA, multi-switch fixture.
//! * [`synthetic`]: parametric topologies, in memory or as sysfs trees.
//! * [`vm`]: the QEMU guest topologies and what a guest must discover.
pub mod edge2s;
pub mod synthetic;
pub mod sysfs;
pub mod vm;
