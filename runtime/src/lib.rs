//! Griffin's node runtime: allocation, pinning, cgroups, SR-IOV, RDMA,
//! checkpoint and the daemon.
//! The `griffin` binary lives in `scheduler-glue/src/bin/griffin/`.

pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod cpuset;
pub mod enforce;
pub mod manager;
pub mod rdma;
pub mod sriov;
pub mod uevent;
