//! Test support for Griffin's integration tests.
//!
//! * [`sysfs`]: a builder that writes fake sysfs/procfs trees (CPUs, caches,
//!   NUMA nodes, PCI hierarchies with relative symlinks, netdevs, NVMe and
//!   RDMA devices) for `griffin_devices::discover` to read.
pub mod synthetic;
pub mod sysfs;
