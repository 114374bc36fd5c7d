//! The node summary of `GET /v1/node` (and the gauges of `/metrics`):
//! capacity, what is free per NUMA node and devices by kind (pure over the
//! topology and the allocation state).

use std::collections::BTreeMap;

use griffin_devices::{DeviceKind, Topology};
use griffin_runtime::alloc::State;
use griffin_runtime::cpuset::CpuSet;
use serde::Serialize;

/// `GET /v1/node`.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Node name.
    pub node_name: String,
    /// Cluster name.
    pub cluster_name: String,
    /// `ok` (the checkpoint is readable).
    pub health: &'static str,
    /// CPU capacity.
    pub cpus: CpuSummary,
    /// Per NUMA node.
    pub numa_nodes: Vec<NumaSummary>,
    /// Devices by kind (bridges left out).
    pub devices: BTreeMap<String, DeviceSummary>,
    /// Number of allocations.
    pub allocations: usize,
}

/// CPU counts.
#[derive(Debug, Serialize)]
pub struct CpuSummary {
    /// Online CPUs.
    pub capacity: usize,
    /// Online minus reserved.
    pub allocatable: usize,
    /// Allocatable and not exclusively allocated.
    pub free_exclusive: usize,
    /// Reserved CPUs (cpulist).
    pub reserved: String,
}

/// One NUMA node.
#[derive(Debug, Serialize)]
pub struct NumaSummary {
    /// Node id.
    pub id: u32,
    /// CPUs (cpulist).
    pub cpus: String,
    /// CPUs free for exclusive allocation (cpulist).
    pub free_cpus: String,
    /// Memory of the node.
    pub memory_bytes: u64,
    /// Memory not accounted to allocations.
    pub memory_free_bytes: u64,
}

/// Devices of one kind.
#[derive(Debug, Serialize)]
pub struct DeviceSummary {
    /// How many.
    pub total: usize,
    /// Not held by an allocation.
    pub free: usize,
}

/// Builds the node summary (pure over topology and state).
pub fn summary(topo: &Topology, state: &State, node_name: &str, cluster_name: &str) -> NodeSummary {
    let online = CpuSet::from(&topo.online_cpus);
    let mut allocatable = online.clone();
    allocatable.subtract(&state.reserved);
    let mut free = state.shared_pool(topo);
    free.subtract(&state.reserved);
    let mem_used = state.memory_by_node();
    let held = state.taken_devices();
    let numa_nodes = topo
        .numa_nodes
        .iter()
        .map(|n| NumaSummary {
            id: n.id,
            cpus: n.cpus.to_string(),
            free_cpus: free.intersection(&CpuSet::from(&n.cpus)).to_string(),
            memory_bytes: n.memory_bytes,
            memory_free_bytes: n
                .memory_bytes
                .saturating_sub(mem_used.get(&n.id).copied().unwrap_or(0)),
        })
        .collect();
    let mut devices: BTreeMap<String, DeviceSummary> = BTreeMap::new();
    for d in topo.devices.iter().filter(|d| d.kind != DeviceKind::Bridge) {
        let e = devices
            .entry(d.kind.to_string())
            .or_insert(DeviceSummary { total: 0, free: 0 });
        e.total += 1;
        if !held.contains(&d.pci_address) {
            e.free += 1;
        }
    }
    NodeSummary {
        node_name: node_name.to_owned(),
        cluster_name: cluster_name.to_owned(),
        health: "ok",
        cpus: CpuSummary {
            capacity: online.len(),
            allocatable: allocatable.len(),
            free_exclusive: free.len(),
            reserved: state.reserved.to_string(),
        },
        numa_nodes,
        devices,
        allocations: state.allocations.len(),
    }
}
