//! The topology-aware allocator: pure, no I/O.
//!
//! Given the discovered [`Topology`], the current [`State`] (reserved CPUs and
//! existing allocations) and a [`Request`], [`allocate`] decides the exact CPU
//! set, the memory NUMA nodes and the devices, with the reasons, or rejects the
//! request with its reason. Nothing is half-applied: [`State::commit`] records a
//! decision as a whole.
//!
//! # Algorithm
//!
//! The kubelet's Topology Manager enumerates every subset of NUMA nodes as a
//! bitmask "hint" and merges hints across providers: 2^N masks, which is why it
//! refuses nodes with more than 8 NUMA nodes. Griffin never enumerates subsets.
//! It works with distances:
//!
//! 1. **Per-node view.** For each NUMA node: free whole cores, free threads and
//!    free memory (O(CPUs)).
//! 2. **Single node first.** Every node is a candidate; a node fits when its
//!    free CPUs (whole cores only under `full-pcpus-only`), its free memory and
//!    the wanted devices can be had there. Devices are chosen for the node by a
//!    greedy nearest-first search (below). Among fitting nodes the one with the
//!    lowest device cost wins, then the one whose free capacity fits the
//!    request best (fewest free CPUs left: avoids fragmenting big nodes), then
//!    the lowest id. O(N · D) for N nodes and D devices.
//! 3. **Several nodes** (when no single node fits and the policy allows it):
//!    grow a set from a seed node (the node nearest to the pinned devices, else
//!    the one with most free CPUs), adding at each step the node that
//!    minimises the summed SLIT distance to the set (`prefer-closest-numa`) or
//!    that has most free capacity (default, fewest nodes), until the set holds
//!    the request. O(N²).
//!    `restricted` admits the result only if it uses the minimum number of
//!    nodes that could ever hold the request on this machine (the kubelet's
//!    "preferred" hint); `single-numa-node` never reaches this step.
//! 4. **CPUs inside the chosen nodes.** Whole free cores before threads; cores
//!    grouped by last-level cache, taking a group in which the request fits
//!    whole (the smallest such group) before spilling across groups (largest
//!    first); leftover single threads come from cores that are already partly
//!    used before breaking a free core. `distribute-across-numa` splits the
//!    count evenly over the chosen nodes.
//! 5. **Devices.** Pinned addresses are taken as given. For a kind and count,
//!    candidates are free devices of that kind, ranked by the cost of joining
//!    what is already chosen: the sum of distance-matrix costs to the devices
//!    already picked for the request plus a CPU cost (0 on a chosen node, the
//!    SLIT distance to the nearest chosen node otherwise, 50 if unknown). The
//!    cheapest is taken, one at a time, so a GPU and a NIC VF for one request
//!    end up PIX/PXB when the node allows it.
//!
//! # The shared pool
//!
//! CPUs not allocated exclusively form the shared pool (reserved CPUs are
//! part of it); shared-pool allocations (0 exclusive CPUs) and everything
//! Griffin does not manage run there. As in the kubelet's static CPU
//! manager, the pool is never emptied: the kubelet never hands out a
//! reserved CPU and requires at least one, so its last shared CPU is never
//! handed out. Griffin allows an empty reservation, so the rule is explicit:
//! an exclusive request that would take the last CPU of the shared pool is
//! refused (with no CPU reserved, at most all but one online CPU can be
//! exclusive), and a shared request is refused if the pool is empty anyway
//! (CPUs gone offline, a reservation changed between runs). A scheduler's
//! dry run ([`Allocator::allocate`]) applies the same rule, so a score and
//! an allocation never disagree on feasibility.
//!
//! Each decision is O(N² + N·D + C) for C CPUs: about a hundred microseconds at
//! 64 NUMA nodes and 1024 CPUs (see `cargo xtask bench`).

use std::collections::{BTreeMap, HashMap, HashSet};

use griffin_devices::{DeviceKind, Level, PciAddress, Topology};
use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;

/// Topology Manager policy (kubelet semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// No NUMA alignment: CPUs and devices are taken wherever they are free.
    None,
    /// Prefer alignment; admit anyway when it cannot be had.
    #[default]
    BestEffort,
    /// Admit only when the request gets the narrowest NUMA set it could ever
    /// have on this node.
    Restricted,
    /// Admit only when CPUs, memory and devices fit in one NUMA node.
    SingleNumaNode,
}

impl Policy {
    /// The kubelet's spelling (`best-effort`), as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::BestEffort => "best-effort",
            Policy::Restricted => "restricted",
            Policy::SingleNumaNode => "single-numa-node",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Policy::None),
            "best-effort" => Ok(Policy::BestEffort),
            "restricted" => Ok(Policy::Restricted),
            "single-numa-node" => Ok(Policy::SingleNumaNode),
            _ => Err(format!(
                "unknown policy {s:?} (none, best-effort, restricted, single-numa-node)"
            )),
        }
    }
}

/// Placement options (kubelet CPU Manager / Topology Manager option names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct Options {
    /// Whole physical cores only: never share a core with another workload.
    pub full_pcpus_only: bool,
    /// Spread the CPUs evenly over the chosen NUMA nodes.
    pub distribute_across_numa: bool,
    /// When several nodes are needed, take the closest ones (SLIT).
    pub prefer_closest_numa: bool,
    /// cgroup v2: make the exclusive CPUs an isolated cpuset partition (no
    /// load balancing; the kernel takes them out of every other cpuset).
    /// Enforcement only: placement is unchanged.
    pub isolated_partition: bool,
}

/// A device a request wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceWant {
    /// This exact function.
    Address(PciAddress),
    /// Any `count` free functions of this kind.
    Kind {
        /// Device kind.
        kind: DeviceKind,
        /// How many.
        count: u32,
    },
}

/// What a workload asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    /// Exclusive CPUs (0: the workload runs in the shared pool).
    pub cpus: u32,
    /// Memory, bytes (checked against the chosen nodes' free memory).
    pub memory_bytes: u64,
    /// Devices it must sit near.
    pub devices: Vec<DeviceWant>,
    /// Devices already handed to the workload by someone else (the
    /// kubelet, through a device plugin): placed near exactly as pinned
    /// devices are, but not claimed (they are the plugin's holding), so
    /// left out of the placement's devices.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assigned: Vec<PciAddress>,
    /// Alignment policy.
    pub policy: Policy,
    /// Options.
    pub options: Options,
}

/// The allocator's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Exclusive CPUs.
    pub cpus: CpuSet,
    /// NUMA nodes for memory.
    pub mems: Vec<u32>,
    /// Chosen devices.
    pub devices: Vec<PciAddress>,
    /// Memory accounted, bytes.
    pub memory_bytes: u64,
    /// Which constraint decided what (left out of JSON when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Device cost (distance-matrix plus CPU-to-device), lower is better.
    pub cost: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// An allocation that has been committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Stable id.
    pub id: String,
    /// What was asked.
    pub request: Request,
    /// What was decided.
    pub placement: Placement,
}

/// The allocator's state: reserved CPUs and committed allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// CPUs never handed out exclusively (system daemons).
    pub reserved: CpuSet,
    /// Allocations by id.
    pub allocations: BTreeMap<String, Allocation>,
    /// Devices the kubelet handed to pods through Griffin's device plugins,
    /// by resource name: not free for allocations (see
    /// `crate::plugin::holdings`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_devices: BTreeMap<String, Vec<HeldDevice>>,
}

/// A device held by a pod through a device plugin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeldDevice {
    /// The id the kubelet knows it by.
    pub id: String,
    /// Its PCI function, when it is one.
    pub pci_address: Option<PciAddress>,
}

impl State {
    /// A state with `reserved` CPUs and nothing allocated.
    pub fn new(reserved: CpuSet) -> Self {
        Self {
            reserved,
            allocations: BTreeMap::new(),
            plugin_devices: BTreeMap::new(),
        }
    }

    /// Devices not free for a new allocation: those of allocations and
    /// those held through device plugins.
    pub fn taken_devices(&self) -> HashSet<PciAddress> {
        self.allocations
            .values()
            .flat_map(|a| a.placement.devices.iter().copied())
            .chain(
                self.plugin_devices
                    .values()
                    .flatten()
                    .filter_map(|d| d.pci_address),
            )
            .collect()
    }

    /// Memory the allocations account per NUMA node, bytes (an
    /// allocation's memory split evenly over its nodes).
    pub fn memory_by_node(&self) -> BTreeMap<u32, u64> {
        let mut used = BTreeMap::new();
        for a in self.allocations.values() {
            let p = &a.placement;
            let share = p.memory_bytes / p.mems.len().max(1) as u64;
            for m in &p.mems {
                *used.entry(*m).or_default() += share;
            }
        }
        used
    }

    /// Every exclusively allocated CPU.
    pub fn exclusive(&self) -> CpuSet {
        let mut s = CpuSet::new();
        for a in self.allocations.values() {
            s.union_with(&a.placement.cpus);
        }
        s
    }

    /// The shared pool: online CPUs not exclusively allocated (reserved CPUs
    /// are part of it).
    pub fn shared_pool(&self, topo: &Topology) -> CpuSet {
        let mut s = CpuSet::from(&topo.online_cpus);
        s.subtract(&self.exclusive());
        s
    }

    /// Records a decision under `id`. Fails if the id exists or the placement
    /// overlaps what is already allocated (a stale decision).
    pub fn commit(
        &mut self,
        id: String,
        request: Request,
        placement: Placement,
    ) -> Result<(), Rejection> {
        if self.allocations.contains_key(&id) {
            return Err(Rejection(format!("allocation {id} already exists")));
        }
        if placement.cpus.intersects(&self.exclusive()) || placement.cpus.intersects(&self.reserved)
        {
            return Err(Rejection(format!(
                "allocation {id}: CPUs {} are no longer free",
                placement.cpus
            )));
        }
        let taken = self.taken_devices();
        if let Some(d) = placement.devices.iter().find(|d| taken.contains(d)) {
            return Err(Rejection(format!(
                "allocation {id}: device {d} is no longer free"
            )));
        }
        self.allocations.insert(
            id.clone(),
            Allocation {
                id,
                request,
                placement,
            },
        );
        Ok(())
    }

    /// Removes an allocation, returning it.
    pub fn release(&mut self, id: &str) -> Option<Allocation> {
        self.allocations.remove(id)
    }
}

/// CPUs free for exclusive allocation on each NUMA node: online, neither
/// reserved nor exclusively allocated (the `free_cpus` of the node summary).
/// Every node of `topo` is listed, with 0 when it has none free.
pub fn free_cpus_by_numa(topo: &Topology, state: &State) -> BTreeMap<u32, usize> {
    let mut free = CpuSet::from(&topo.online_cpus);
    free.subtract(&state.reserved);
    free.subtract(&state.exclusive());
    topo.numa_nodes
        .iter()
        .map(|n| (n.id, free.intersection(&CpuSet::from(&n.cpus)).len()))
        .collect()
}

/// Cost of a device whose NUMA node is unknown, relative to chosen CPUs.
const UNKNOWN_NUMA_COST: u32 = Level::SYS.cost();

/// The topology an [`Allocator`] decides on: borrowed, or shared by a
/// long-lived owner (the daemon keeps one allocator per discovery).
#[derive(Debug)]
enum TopoRef<'t> {
    Borrowed(&'t Topology),
    Shared(std::sync::Arc<Topology>),
}

impl std::ops::Deref for TopoRef<'_> {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        match self {
            Self::Borrowed(t) => t,
            Self::Shared(t) => t,
        }
    }
}

/// A precomputed, index-based view of the topology for fast decisions.
#[derive(Debug)]
struct View<'t> {
    topo: TopoRef<'t>,
    /// Cores: their CPUs (online only), node index, LLC group.
    cores: Vec<Core>,
    /// Node index → core indices.
    node_cores: Vec<Vec<usize>>,
    threads_per_core: u32,
    /// Every non-bridge device with its node and matrix indices.
    devices: HashMap<PciAddress, Cand>,
}

/// A device as the device search sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cand {
    addr: PciAddress,
    kind: DeviceKind,
    /// Index into `numa_nodes`, if known.
    node: Option<usize>,
    /// Row in the distance matrix.
    mx: usize,
}

#[derive(Debug)]
struct Core {
    cpus: Vec<u32>,
    node: usize,
    llc: usize,
}

impl<'t> View<'t> {
    fn new(topo: TopoRef<'t>) -> Self {
        let mut by_key: BTreeMap<(u32, Option<u32>, u32), usize> = BTreeMap::new();
        let mut cores: Vec<Core> = Vec::new();
        for c in &topo.cpus {
            let node = c
                .numa_node
                .and_then(|n| topo.numa_nodes.iter().position(|x| x.id == n))
                .unwrap_or(0);
            let key = (c.package, c.die, c.core);
            let idx = *by_key.entry(key).or_insert_with(|| {
                cores.push(Core {
                    cpus: Vec::new(),
                    node,
                    llc: c.l3.or(c.l2).unwrap_or(usize::MAX - c.package as usize),
                });
                cores.len() - 1
            });
            cores[idx].cpus.push(c.id);
        }
        let mut node_cores = vec![Vec::new(); topo.numa_nodes.len().max(1)];
        for (i, c) in cores.iter().enumerate() {
            node_cores[c.node].push(i);
        }
        let threads_per_core = cores.iter().map(|c| c.cpus.len() as u32).max().unwrap_or(1);
        let devices = topo
            .endpoints()
            .filter_map(|d| {
                Some((
                    d.pci_address,
                    Cand {
                        addr: d.pci_address,
                        kind: d.kind,
                        node: d
                            .numa_node
                            .and_then(|n| topo.numa_nodes.iter().position(|x| x.id == n)),
                        mx: topo.matrix.index_of(d.pci_address)?,
                    },
                ))
            })
            .collect();
        Self {
            topo,
            cores,
            node_cores,
            threads_per_core,
            devices,
        }
    }

    fn node_id(&self, idx: usize) -> u32 {
        self.topo.numa_nodes.get(idx).map_or(0, |n| n.id)
    }

    fn distance(&self, a: usize, b: usize) -> u32 {
        self.topo
            .numa_nodes
            .get(a)
            .and_then(|n| n.distances.get(b).copied())
            .unwrap_or(if a == b { 10 } else { 20 })
    }
}

/// Per-node free capacity.
#[derive(Debug, Clone, Default)]
struct NodeFree {
    whole_cores: usize,
    threads: usize,
    memory: u64,
}

/// Decides a placement for `req` without changing `state`. Builds the
/// topology view each call; a long-lived caller keeps an [`Allocator`].
pub fn allocate(topo: &Topology, state: &State, req: &Request) -> Result<Placement, Rejection> {
    Allocator::new(topo).allocate(state, req)
}

/// An allocator prepared for one topology (the per-topology indices built
/// once), for callers that decide many times.
#[derive(Debug)]
pub struct Allocator<'t> {
    view: View<'t>,
}

impl Allocator<'static> {
    /// Prepares an allocator that owns a share of `topo`, to be kept as long
    /// as the topology is current.
    pub fn shared(topo: std::sync::Arc<Topology>) -> Self {
        Self {
            view: View::new(TopoRef::Shared(topo)),
        }
    }
}

impl<'t> Allocator<'t> {
    /// Prepares the allocator for `topo`.
    pub fn new(topo: &'t Topology) -> Self {
        Self {
            view: View::new(TopoRef::Borrowed(topo)),
        }
    }

    /// The topology it decides on.
    pub fn topology(&self) -> &Topology {
        &self.view.topo
    }

    /// Decides a placement for `req` without changing `state`.
    pub fn allocate(&self, state: &State, req: &Request) -> Result<Placement, Rejection> {
        decide(&self.view, state, req)
    }
}

fn decide(view: &View<'_>, state: &State, req: &Request) -> Result<Placement, Rejection> {
    let topo = &*view.topo;
    let mut free = CpuSet::from(&topo.online_cpus);
    free.subtract(&state.reserved);
    free.subtract(&state.exclusive());
    shared_pool_rule(topo, state, req, &free)?;
    let taken_devices = state.taken_devices();
    // Free candidates per wanted kind, once per decision.
    let mut free_by_kind: HashMap<DeviceKind, Vec<Cand>> = HashMap::new();
    for w in &req.devices {
        if let DeviceWant::Kind { kind, .. } = w {
            free_by_kind.entry(*kind).or_insert_with(|| {
                let mut v: Vec<Cand> = view
                    .devices
                    .values()
                    .filter(|c| c.kind == *kind && !taken_devices.contains(&c.addr))
                    .copied()
                    .collect();
                v.sort_unstable_by_key(|c| c.addr);
                v
            });
        }
    }
    let mut reasons = Vec::new();

    let tpc = view.threads_per_core;
    if req.options.full_pcpus_only && !req.cpus.is_multiple_of(tpc) {
        return Err(Rejection(format!(
            "full-pcpus-only: {} CPUs is not a multiple of {tpc} threads per core",
            req.cpus
        )));
    }

    // Per-node free capacity.
    let nn = view.node_cores.len();
    let mut used_mem = vec![0u64; nn];
    for a in state.allocations.values() {
        let share = a.placement.memory_bytes / a.placement.mems.len().max(1) as u64;
        for m in &a.placement.mems {
            if let Some(i) = topo.numa_nodes.iter().position(|n| n.id == *m) {
                used_mem[i] += share;
            }
        }
    }
    let node_free: Vec<NodeFree> = (0..nn)
        .map(|n| {
            let mut f = NodeFree::default();
            for &c in &view.node_cores[n] {
                let k = view.cores[c]
                    .cpus
                    .iter()
                    .filter(|&&x| free.contains(x))
                    .count();
                f.threads += k;
                if k == view.cores[c].cpus.len() {
                    f.whole_cores += 1;
                }
            }
            f.memory = topo
                .numa_nodes
                .get(n)
                .map_or(0, |x| x.memory_bytes)
                .saturating_sub(used_mem[n]);
            f
        })
        .collect();
    let cpu_capacity = |f: &NodeFree| -> usize {
        if req.options.full_pcpus_only {
            f.whole_cores * tpc as usize
        } else {
            f.threads
        }
    };

    // Pinned devices.
    let mut pinned = Vec::new();
    for w in &req.devices {
        if let DeviceWant::Address(a) = w {
            let d = topo
                .device(*a)
                .ok_or_else(|| Rejection(format!("device {a} does not exist on this node")))?;
            if d.kind == DeviceKind::Bridge {
                return Err(Rejection(format!(
                    "device {a} is a bridge, not an allocatable device"
                )));
            }
            if taken_devices.contains(a) || pinned.contains(a) {
                return Err(Rejection(format!("device {a} is already allocated")));
            }
            pinned.push(*a);
        }
    }
    // Assigned devices weigh like pinned ones; unknown ones cannot.
    let claimed = pinned.len();
    for a in &req.assigned {
        if topo.device(*a).is_some() && !pinned.contains(a) {
            pinned.push(*a);
        }
    }
    let node_index =
        |id: Option<u32>| id.and_then(|n| topo.numa_nodes.iter().position(|x| x.id == n));

    let single = req.policy != Policy::None;
    let mut chosen_nodes: Option<Vec<usize>> = None;
    let mut failures = Vec::new();
    if single {
        let mut best: Option<(u32, usize, usize, Vec<PciAddress>)> = None;
        for (n, f) in node_free.iter().enumerate() {
            if cpu_capacity(f) < req.cpus as usize {
                failures.push(format!(
                    "node {}: {} free {} for {} CPUs",
                    view.node_id(n),
                    cpu_capacity(f),
                    if req.options.full_pcpus_only {
                        "CPUs in whole cores"
                    } else {
                        "CPUs"
                    },
                    req.cpus
                ));
                continue;
            }
            if f.memory < req.memory_bytes {
                failures.push(format!(
                    "node {}: {} bytes of memory free",
                    view.node_id(n),
                    f.memory
                ));
                continue;
            }
            if req.policy == Policy::SingleNumaNode {
                if let Some(p) = pinned.iter().find(|p| {
                    node_index(topo.device(**p).and_then(|d| d.numa_node)).is_some_and(|x| x != n)
                }) {
                    failures.push(format!(
                        "node {}: device {p} is on another node",
                        view.node_id(n)
                    ));
                    continue;
                }
            }
            let Ok((devs, cost)) = pick_devices(view, req, &[n], &pinned, &free_by_kind) else {
                failures.push(format!("node {}: not enough free devices", view.node_id(n)));
                continue;
            };
            if req.policy == Policy::SingleNumaNode {
                if let Some(d) = devs.iter().find(|d| {
                    node_index(topo.device(**d).and_then(|x| x.numa_node)).is_some_and(|x| x != n)
                }) {
                    failures.push(format!(
                        "node {}: device {d} is only available on another node",
                        view.node_id(n)
                    ));
                    continue;
                }
            }
            let leftover = cpu_capacity(f) - req.cpus as usize;
            let better = match &best {
                None => true,
                Some((bc, bl, _, _)) => (cost, leftover) < (*bc, *bl),
            };
            if better {
                best = Some((cost, leftover, n, devs));
            }
        }
        if let Some((_, _, n, _)) = best {
            reasons.push(format!(
                "NUMA node {} holds the whole request (lowest device cost, then best fit)",
                view.node_id(n)
            ));
            chosen_nodes = Some(vec![n]);
        } else if req.policy == Policy::SingleNumaNode {
            return Err(Rejection(format!(
                "single-numa-node: no NUMA node can hold the request ({})",
                failures.join("; ")
            )));
        }
    }

    let nodes = match chosen_nodes {
        Some(n) => n,
        None => {
            let set = grow_nodes(view, req, &node_free, &pinned, cpu_capacity)?;
            if req.policy == Policy::Restricted {
                let min = min_nodes_ever(view, req);
                if set.len() > min {
                    return Err(Rejection(format!(
                        "restricted: the request needs {} NUMA nodes now, but {min} on an idle node",
                        set.len()
                    )));
                }
            }
            if req.policy == Policy::None {
                reasons.push("policy none: CPUs taken without NUMA alignment".into());
            } else {
                reasons.push(format!(
                    "no single NUMA node can hold the request; using nodes {:?} ({})",
                    set.iter().map(|&n| view.node_id(n)).collect::<Vec<_>>(),
                    if req.options.prefer_closest_numa {
                        "closest by SLIT distance"
                    } else {
                        "fewest nodes by free capacity"
                    }
                ));
            }
            set
        }
    };

    let cpus = pick_cpus(view, req, &nodes, &free, &mut reasons)?;
    let (mut devices, cost) = pick_devices(view, req, &nodes, &pinned, &free_by_kind)
        .map_err(|e| Rejection(format!("devices: {e}")))?;
    // pick_devices lists the pinned ones first: drop the assigned ones.
    devices.drain(claimed..pinned.len());
    if !devices.is_empty() {
        reasons.push(format!("devices chosen nearest first (cost {cost})"));
    }
    let mems: Vec<u32> = nodes.iter().map(|&n| view.node_id(n)).collect();
    let mem_free: u64 = nodes.iter().map(|&n| node_free[n].memory).sum();
    if mem_free < req.memory_bytes {
        return Err(Rejection(format!(
            "memory: {} bytes requested, {mem_free} free on nodes {mems:?}",
            req.memory_bytes
        )));
    }
    Ok(Placement {
        cpus,
        mems,
        devices,
        memory_bytes: req.memory_bytes,
        reasons,
        cost,
    })
}

/// The shared pool is never emptied (see the module docs): a shared request
/// needs a CPU in it, an exclusive one must leave one there.
fn shared_pool_rule(
    topo: &Topology,
    state: &State,
    req: &Request,
    free: &CpuSet,
) -> Result<(), Rejection> {
    let pool = state.shared_pool(topo);
    let want = req.cpus as usize;
    if want == 0 && pool.is_empty() {
        return Err(Rejection(
            "the shared pool is empty: every online CPU is allocated exclusively".into(),
        ));
    }
    // A request that does not fit at all is refused later, with its reason.
    if want > 0 && want >= pool.len() && want <= free.len() {
        return Err(Rejection(format!(
            "{want} CPUs requested: the shared pool has {} and keeps at least one (no CPU is reserved)",
            pool.len()
        )));
    }
    Ok(())
}

/// The fewest nodes that could hold the request on an idle machine.
fn min_nodes_ever(view: &View<'_>, req: &Request) -> usize {
    let mut caps: Vec<(usize, u64)> = (0..view.node_cores.len())
        .map(|n| {
            let cpus = if req.options.full_pcpus_only {
                view.node_cores[n]
                    .iter()
                    .filter(|&&c| view.cores[c].cpus.len() as u32 == view.threads_per_core)
                    .count()
                    * view.threads_per_core as usize
            } else {
                view.node_cores[n]
                    .iter()
                    .map(|&c| view.cores[c].cpus.len())
                    .sum()
            };
            (
                cpus,
                view.topo.numa_nodes.get(n).map_or(0, |x| x.memory_bytes),
            )
        })
        .collect();
    caps.sort_unstable_by(|a, b| b.cmp(a));
    let (mut c, mut m) = (0usize, 0u64);
    for (i, (nc, nm)) in caps.iter().enumerate() {
        c += nc;
        m += nm;
        if c >= req.cpus as usize && m >= req.memory_bytes {
            return i + 1;
        }
    }
    caps.len()
}

/// Grows a set of nodes until it holds the request (step 3).
fn grow_nodes(
    view: &View<'_>,
    req: &Request,
    node_free: &[NodeFree],
    pinned: &[PciAddress],
    cap: impl Fn(&NodeFree) -> usize,
) -> Result<Vec<usize>, Rejection> {
    let nn = node_free.len();
    let total: usize = node_free.iter().map(&cap).sum();
    if total < req.cpus as usize {
        return Err(Rejection(format!(
            "{} CPUs requested, {total} free{}",
            req.cpus,
            if req.options.full_pcpus_only {
                " in whole cores"
            } else {
                ""
            }
        )));
    }
    let pinned_node = pinned.iter().find_map(|p| {
        let n = view.topo.device(*p)?.numa_node?;
        view.topo.numa_nodes.iter().position(|x| x.id == n)
    });
    let seed = pinned_node.unwrap_or_else(|| {
        (0..nn)
            .max_by_key(|&n| (cap(&node_free[n]), std::cmp::Reverse(n)))
            .unwrap_or(0)
    });
    let mut set = vec![seed];
    let mut have = cap(&node_free[seed]);
    let mut mem = node_free[seed].memory;
    while have < req.cpus as usize || mem < req.memory_bytes {
        let next = (0..nn).filter(|n| !set.contains(n)).min_by_key(|&n| {
            let dist: u32 = set.iter().map(|&s| view.distance(s, n)).sum();
            let capacity = std::cmp::Reverse(cap(&node_free[n]));
            if req.options.prefer_closest_numa {
                (dist, capacity, n)
            } else {
                (0, capacity, n)
            }
        });
        let Some(n) = next else {
            return Err(Rejection(format!(
                "memory: {} bytes requested, {mem} free on all nodes",
                req.memory_bytes
            )));
        };
        set.push(n);
        have += cap(&node_free[n]);
        mem += node_free[n].memory;
    }
    Ok(set)
}

/// Picks `req.cpus` CPUs from `nodes` (step 4).
fn pick_cpus(
    view: &View<'_>,
    req: &Request,
    nodes: &[usize],
    free: &CpuSet,
    reasons: &mut Vec<String>,
) -> Result<CpuSet, Rejection> {
    let mut out = CpuSet::new();
    if req.cpus == 0 {
        reasons.push("no exclusive CPUs: runs in the shared pool".into());
        return Ok(out);
    }
    // How many CPUs from each node.
    let mut quota: Vec<usize> = vec![0; nodes.len()];
    let caps: Vec<usize> = nodes
        .iter()
        .map(|&n| {
            view.node_cores[n]
                .iter()
                .map(|&c| {
                    let k = view.cores[c]
                        .cpus
                        .iter()
                        .filter(|&&x| free.contains(x))
                        .count();
                    if req.options.full_pcpus_only && k != view.cores[c].cpus.len() {
                        0
                    } else {
                        k
                    }
                })
                .sum()
        })
        .collect();
    let mut left = req.cpus as usize;
    if req.options.distribute_across_numa && nodes.len() > 1 {
        let unit = if req.options.full_pcpus_only {
            view.threads_per_core as usize
        } else {
            1
        };
        // Round-robin in units over nodes with room.
        while left > 0 {
            let mut progressed = false;
            for (i, q) in quota.iter_mut().enumerate() {
                if left > 0 && *q + unit <= caps[i] {
                    *q += unit.min(left);
                    left -= unit.min(left);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        reasons.push(format!("distribute-across-numa: {quota:?} CPUs per node"));
    } else {
        for (i, q) in quota.iter_mut().enumerate() {
            let take = left.min(caps[i]);
            *q = take;
            left -= take;
        }
    }
    if left > 0 {
        return Err(Rejection(format!(
            "{} CPUs requested, only {} can be placed",
            req.cpus,
            req.cpus as usize - left
        )));
    }
    let mut split_cores = false;
    for (i, &n) in nodes.iter().enumerate() {
        split_cores |= pick_in_node(view, req, n, quota[i], free, &mut out);
    }
    if req.options.full_pcpus_only {
        reasons.push("full-pcpus-only: whole physical cores only".into());
    } else if split_cores {
        reasons.push("whole cores first; the remainder as single threads".into());
    } else {
        reasons.push("whole cores only".into());
    }
    Ok(out)
}

/// Picks `want` CPUs on node `n`; returns true if a core was split.
fn pick_in_node(
    view: &View<'_>,
    req: &Request,
    n: usize,
    mut want: usize,
    free: &CpuSet,
    out: &mut CpuSet,
) -> bool {
    if want == 0 {
        return false;
    }
    let tpc = view.threads_per_core as usize;
    // Free whole cores grouped by LLC.
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut partial: Vec<(usize, usize)> = Vec::new(); // (free threads, core)
    for &c in &view.node_cores[n] {
        let core = &view.cores[c];
        let k = core.cpus.iter().filter(|&&x| free.contains(x)).count();
        if k == core.cpus.len() && k > 0 {
            groups.entry(core.llc).or_default().push(c);
        } else if k > 0 {
            partial.push((k, c));
        }
    }
    let whole_needed = want / tpc.max(1);
    // Order groups: the smallest group that holds every whole core wanted,
    // else largest first.
    let mut order: Vec<(usize, Vec<usize>)> = groups.into_iter().collect();
    if let Some(pos) = order
        .iter()
        .enumerate()
        .filter(|(_, (_, g))| g.len() >= whole_needed.max(1))
        .min_by_key(|(_, (_, g))| g.len())
        .map(|(i, _)| i)
    {
        let g = order.remove(pos);
        order.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
        order.insert(0, g);
    } else {
        order.sort_by_key(|(_, g)| std::cmp::Reverse(g.len()));
    }
    let mut spare_whole: Vec<usize> = Vec::new();
    for (_, g) in &order {
        for &c in g {
            let core = &view.cores[c];
            if want >= core.cpus.len() {
                for &x in &core.cpus {
                    out.insert(x);
                }
                want -= core.cpus.len();
            } else {
                spare_whole.push(c);
            }
        }
    }
    if want == 0 || req.options.full_pcpus_only {
        return false;
    }
    // Remainder: threads of partly used cores first, then break a free core.
    partial.sort_unstable();
    let candidates = partial.iter().map(|&(_, c)| c).chain(spare_whole);
    let mut split = false;
    for c in candidates {
        for &x in &view.cores[c].cpus {
            if want > 0 && free.contains(x) {
                out.insert(x);
                want -= 1;
                split = true;
            }
        }
        if want == 0 {
            break;
        }
    }
    split
}

/// Picks the wanted devices for CPUs on `nodes` (step 5); returns them and
/// their cost, or an error naming what is missing.
fn pick_devices(
    view: &View<'_>,
    req: &Request,
    nodes: &[usize],
    pinned: &[PciAddress],
    free_by_kind: &HashMap<DeviceKind, Vec<Cand>>,
) -> Result<(Vec<PciAddress>, u32), String> {
    let cpu_cost = |c: &Cand| -> u32 {
        let Some(dn) = c.node else {
            return UNKNOWN_NUMA_COST;
        };
        nodes
            .iter()
            .map(|&n| if n == dn { 0 } else { view.distance(dn, n) })
            .min()
            .unwrap_or(UNKNOWN_NUMA_COST)
    };
    let matrix = &view.topo.matrix;
    let mut chosen: Vec<Cand> = pinned
        .iter()
        .filter_map(|a| view.devices.get(a).copied())
        .collect();
    let mut cost: u32 = chosen.iter().map(cpu_cost).sum();
    for w in &req.devices {
        let DeviceWant::Kind { kind, count } = w else {
            continue;
        };
        let candidates = free_by_kind.get(kind).map_or(&[][..], Vec::as_slice);
        for _ in 0..*count {
            let best = candidates
                .iter()
                .filter(|c| !chosen.iter().any(|x| x.addr == c.addr))
                .map(|c| {
                    let pairs: u32 = chosen.iter().map(|x| matrix.at(c.mx, x.mx).cost()).sum();
                    (cpu_cost(c) + pairs, c.addr, *c)
                })
                .min_by_key(|(cost, addr, _)| (*cost, *addr));
            let Some((c, _, cand)) = best else {
                return Err(format!("no free {kind} left"));
            };
            chosen.push(cand);
            cost += c;
        }
    }
    Ok((chosen.into_iter().map(|c| c.addr).collect(), cost))
}
