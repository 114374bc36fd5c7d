//! Griffin's node runtime: allocation, pinning, cgroups, SR-IOV, RDMA,
//! checkpoint, the control socket and the daemon configuration.
//! The `griffin` binary lives in `cli/`.

pub mod accel;
pub mod alloc;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod cpuset;
pub mod enforce;
pub mod fake;
pub mod gpuhealth;
pub mod manager;
pub mod nri;
pub mod nsenter;
pub mod plugin;
pub mod pods;
pub mod pools;
pub mod quantity;
pub mod rdma;
pub mod relay;
pub mod sriov;
pub mod uevent;
pub mod vfplan;
