//! A client of the kubelet's PodResources API `v1` (its `pod-resources`
//! socket): which pods and containers hold which devices and CPUs, and what
//! the kubelet can allocate. Answers are plain Rust types; every call has a
//! deadline.
//!
//! `GetAllocatableResources` came after `List`: a v1.20 kubelet does not
//! have it (gRPC `Unimplemented`), and v1.21–v1.22 answer "Pod Resources API
//! GetAllocatableResources disabled" (code `Unknown`) unless their
//! `KubeletPodResourcesGetAllocatable` feature gate is on. Both are
//! [`None`] from [`PodResourcesClient::allocatable`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use griffin_kubelet_api::podresources as v1;
use serde::Serialize;

use super::rpc::RpcStatus;

/// The kubelet's PodResources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// Deadline of one call unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One pod's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodResources {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Its containers.
    pub containers: Vec<ContainerResources>,
}

/// One container's resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerResources {
    /// Container name.
    pub name: String,
    /// Devices, by resource.
    pub devices: Vec<ResourceDevices>,
    /// Exclusive CPUs (the kubelet's static CPU manager policy).
    pub cpu_ids: Vec<u32>,
    /// Memory blocks (the kubelet's memory manager).
    pub memory: Vec<MemoryBlock>,
}

/// Devices of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceDevices {
    /// Resource name (`nvidia.com/gpu`).
    pub resource_name: String,
    /// Device ids as the device plugin named them.
    pub device_ids: Vec<String>,
    /// Their NUMA nodes, when the plugin gave a topology.
    pub numa_nodes: Vec<u32>,
}

/// Memory of one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryBlock {
    /// `memory`, `hugepages-2Mi`, …
    pub memory_type: String,
    /// Bytes.
    pub size: u64,
    /// NUMA nodes it comes from.
    pub numa_nodes: Vec<u32>,
}

/// What the kubelet can hand out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allocatable {
    /// Devices, by resource.
    pub devices: Vec<ResourceDevices>,
    /// CPUs it can give exclusively.
    pub cpu_ids: Vec<u32>,
    /// Memory.
    pub memory: Vec<MemoryBlock>,
}

/// Why a PodResources call failed.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The kubelet answered with an error, or could not be reached.
    #[error("PodResources {call} on {path}")]
    Call {
        /// `List` or `GetAllocatableResources`.
        call: &'static str,
        /// The socket.
        path: PathBuf,
        /// The gRPC status.
        #[source]
        source: RpcStatus,
    },
    /// No answer within the deadline.
    #[error("PodResources {call} on {path}: no answer in {timeout:?}")]
    Timeout {
        /// `List` or `GetAllocatableResources`.
        call: &'static str,
        /// The socket.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// An id out of range (a negative CPU or NUMA node).
    #[error("PodResources {call} on {path}: {field} {value} is out of range")]
    Range {
        /// `List` or `GetAllocatableResources`.
        call: &'static str,
        /// The socket.
        path: PathBuf,
        /// `cpu_ids` or `topology.nodes.ID`.
        field: &'static str,
        /// The value.
        value: i64,
    },
}

/// A client of one kubelet's PodResources socket. The connection is made
/// on the first call and made again after it breaks (kubelet restart).
#[derive(Debug, Clone)]
pub struct PodResourcesClient {
    path: PathBuf,
    timeout: Duration,
    client: v1::pod_resources_lister_client::PodResourcesListerClient<tonic::transport::Channel>,
}

impl PodResourcesClient {
    /// A client of the socket at `path`, each call bounded by `timeout`.
    /// Must be called within a tokio runtime.
    pub fn new(path: impl AsRef<Path>, timeout: Duration) -> Self {
        let path = path.as_ref().to_owned();
        let client = v1::pod_resources_lister_client::PodResourcesListerClient::new(
            griffin_kubelet_api::unix_channel(&path),
        );
        Self {
            path,
            timeout,
            client,
        }
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every pod the kubelet knows with its containers' devices and CPUs.
    pub async fn list(&self) -> Result<Vec<PodResources>, PodResourcesError> {
        const CALL: &str = "List";
        let mut client = self.client.clone();
        let answer = self
            .bounded(CALL, client.list(v1::ListPodResourcesRequest {}))
            .await?;
        let conv = Convert {
            call: CALL,
            path: &self.path,
        };
        answer
            .pod_resources
            .into_iter()
            .map(|p| {
                Ok(PodResources {
                    name: p.name,
                    namespace: p.namespace,
                    containers: p
                        .containers
                        .into_iter()
                        .map(|c| {
                            Ok(ContainerResources {
                                name: c.name,
                                devices: conv.devices(c.devices)?,
                                cpu_ids: conv.cpus(c.cpu_ids)?,
                                memory: conv.memory(c.memory)?,
                            })
                        })
                        .collect::<Result<_, PodResourcesError>>()?,
                })
            })
            .collect()
    }

    /// What the kubelet can allocate, or `None` from a kubelet without
    /// `GetAllocatableResources` (module doc).
    pub async fn allocatable(&self) -> Result<Option<Allocatable>, PodResourcesError> {
        const CALL: &str = "GetAllocatableResources";
        let mut client = self.client.clone();
        let answer = match self
            .bounded(
                CALL,
                client.get_allocatable_resources(v1::AllocatableResourcesRequest {}),
            )
            .await
        {
            Ok(a) => a,
            Err(PodResourcesError::Call { source, .. }) if not_served(&source.0) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let conv = Convert {
            call: CALL,
            path: &self.path,
        };
        Ok(Some(Allocatable {
            devices: conv.devices(answer.devices)?,
            cpu_ids: conv.cpus(answer.cpu_ids)?,
            memory: conv.memory(answer.memory)?,
        }))
    }

    async fn bounded<T>(
        &self,
        call: &'static str,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, PodResourcesError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(PodResourcesError::Call {
                call,
                path: self.path.clone(),
                source: RpcStatus(status),
            }),
            Err(_) => Err(PodResourcesError::Timeout {
                call,
                path: self.path.clone(),
                timeout: self.timeout,
            }),
        }
    }
}

/// Whether `s` says the kubelet has no `GetAllocatableResources`.
fn not_served(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unimplemented
        || (s.code() == tonic::Code::Unknown
            && s.message().contains("GetAllocatableResources disabled"))
}

struct Convert<'a> {
    call: &'static str,
    path: &'a Path,
}

impl Convert<'_> {
    fn id(&self, field: &'static str, value: i64) -> Result<u32, PodResourcesError> {
        u32::try_from(value).map_err(|_| PodResourcesError::Range {
            call: self.call,
            path: self.path.to_owned(),
            field,
            value,
        })
    }

    fn cpus(&self, ids: Vec<i64>) -> Result<Vec<u32>, PodResourcesError> {
        ids.into_iter().map(|i| self.id("cpu_ids", i)).collect()
    }

    fn nodes(&self, t: Option<v1::TopologyInfo>) -> Result<Vec<u32>, PodResourcesError> {
        t.map(|t| t.nodes)
            .unwrap_or_default()
            .into_iter()
            .map(|n| self.id("topology.nodes.ID", n.id))
            .collect()
    }

    fn devices(
        &self,
        d: Vec<v1::ContainerDevices>,
    ) -> Result<Vec<ResourceDevices>, PodResourcesError> {
        d.into_iter()
            .map(|d| {
                Ok(ResourceDevices {
                    resource_name: d.resource_name,
                    device_ids: d.device_ids,
                    numa_nodes: self.nodes(d.topology)?,
                })
            })
            .collect()
    }

    fn memory(&self, m: Vec<v1::ContainerMemory>) -> Result<Vec<MemoryBlock>, PodResourcesError> {
        m.into_iter()
            .map(|m| {
                Ok(MemoryBlock {
                    memory_type: m.memory_type,
                    size: m.size,
                    numa_nodes: self.nodes(m.topology)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelets_without_get_allocatable_resources() {
        // v1.20: the method does not exist.
        assert!(not_served(&tonic::Status::unimplemented("unknown method")));
        // v1.21-v1.22 with the feature gate off (a Go error: code Unknown).
        assert!(not_served(&tonic::Status::unknown(
            "Pod Resources API GetAllocatableResources disabled"
        )));
        assert!(!not_served(&tonic::Status::unknown("something else")));
        assert!(!not_served(&tonic::Status::unavailable("no kubelet")));
    }
}
