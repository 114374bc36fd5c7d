//! Kubelet device plugins: Griffin's resource pools served to the kubelet
//! over its Device Plugin API (`griffin_kubelet_api::deviceplugin`).
//!
//! The types here are the seam between what is served (pools of devices
//! chosen by selectors over discovery: `crate::pools`) and how it is served
//! (the gRPC server, registration and re-registration: `server`). A
//! [`Backend`] answers for every resource; the server never looks at
//! sysfs, and the pools never see gRPC.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub mod backend;
pub mod holdings;
pub mod podresources;
mod rpc;
pub mod server;

pub use rpc::RpcStatus;

/// One device of a resource as the kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceState {
    /// The id the kubelet hands back in Allocate (a PCI address, a GPU
    /// UUID, …).
    pub id: String,
    /// Whether it may be handed out.
    pub healthy: bool,
    /// Its NUMA node, when known (sent as the device's topology).
    pub numa_node: Option<u32>,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only.
    pub read_only: bool,
}

/// A device node made available in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// cgroup permissions, any of `r`, `w`, `m`.
    pub permissions: String,
}

/// What one container gets for the devices allocated to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerDevices {
    /// Environment variables.
    pub envs: BTreeMap<String, String>,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// Device nodes.
    pub devices: Vec<DeviceNode>,
    /// Annotations for the container runtime.
    pub annotations: BTreeMap<String, String>,
}

/// Every resource's devices at one moment. Resources are full names
/// (`intel.com/intel_sriov_netdevice`, `nvidia.com/gpu`).
pub type Snapshot = Arc<BTreeMap<String, Vec<DeviceState>>>;

/// What the device plugin server serves from. Calls are synchronous and
/// cheap (no I/O beyond the daemon's own state); errors are short messages
/// naming the resource or device, sent back to the kubelet as gRPC status.
pub trait Backend: Send + Sync + 'static {
    /// The current devices of every resource; a new value is sent on each
    /// change (device added, removed, health changed).
    fn watch(&self) -> tokio::sync::watch::Receiver<Snapshot>;

    /// The preferred `size` devices of `resource` among `available`,
    /// containing every `must_include`.
    fn prefer(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Result<Vec<String>, String>;

    /// What a container gets for `ids` of `resource`; the devices are
    /// recorded as held until the kubelet no longer reports them.
    fn allocate(&self, resource: &str, ids: &[String]) -> Result<ContainerDevices, String>;
}
