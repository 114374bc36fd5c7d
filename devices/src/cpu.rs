//! CPUs, their packages, dies, cores, SMT siblings and caches, and NUMA nodes.

use serde::{Deserialize, Serialize};

use crate::error::DiscoveryError;
use crate::parse::{self, CpuList};
use crate::sysfs::SysRoot;

/// One online logical CPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    /// Logical CPU id (`cpuN`).
    pub id: u32,
    /// Physical package (socket) id.
    pub package: u32,
    /// Die id within the package (`None` when the kernel reports -1 or
    /// nothing).
    pub die: Option<u32>,
    /// Core id, unique within its package (not across packages).
    pub core: u32,
    /// NUMA node whose cpulist holds this CPU (`None` only on a kernel
    /// without NUMA support and no node directory).
    pub numa_node: Option<u32>,
    /// SMT siblings of this CPU, itself included (`thread_siblings_list`).
    pub siblings: CpuList,
    /// Index into [`crate::Topology::caches`] of the L2 this CPU uses.
    pub l2: Option<usize>,
    /// Index into [`crate::Topology::caches`] of the last-level (L3) cache.
    pub l3: Option<usize>,
}

/// One cache instance, shared by a set of CPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// Cache level (1, 2, 3, …).
    pub level: u32,
    /// `Data`, `Instruction` or `Unified`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes, when the kernel reports it.
    pub size_bytes: Option<u64>,
    /// CPUs sharing this cache.
    pub cpus: CpuList,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    /// Node id.
    pub id: u32,
    /// CPUs of the node (may be empty: a memory-only node is valid).
    pub cpus: CpuList,
    /// `MemTotal` of the node.
    pub memory_bytes: u64,
    /// `MemFree` of the node at discovery time.
    pub free_bytes: u64,
    /// SLIT distances to every node, in the order of
    /// [`crate::Topology::numa_nodes`] (10 = local).
    pub distances: Vec<u32>,
}

pub(crate) struct CpuInfo {
    pub online: CpuList,
    pub isolated: CpuList,
    pub cpus: Vec<Cpu>,
    pub caches: Vec<Cache>,
}

const CPU_DIR: &str = "sys/devices/system/cpu";
const NODE_DIR: &str = "sys/devices/system/node";

pub(crate) fn discover_cpus(sys: &SysRoot) -> Result<CpuInfo, DiscoveryError> {
    let online = sys.parse(&format!("{CPU_DIR}/online"), parse::cpulist)?;
    if online.is_empty() {
        return Err(DiscoveryError::Inconsistent {
            path: sys.path(&format!("{CPU_DIR}/online")),
            what: "no CPU is online".into(),
        });
    }
    let isolated = sys
        .parse_opt(&format!("{CPU_DIR}/isolated"), parse::cpulist)?
        .unwrap_or_default();

    // Sized by the CPU directories that exist, not by what `online` claims
    // (up to 65,536 ids).
    let mut cpus: Vec<Cpu> = Vec::new();
    let mut caches: Vec<Cache> = Vec::new();
    // Caches found at each `indexK`, so that a CPU already named in a
    // cache's shared list costs no reads for that index.
    let mut at_index: Vec<Vec<usize>> = Vec::new();
    // CPU id → position in `cpus` of an SMT sibling already read: siblings
    // share package, die and core, so their topology files are not re-read.
    let mut sibling_of: std::collections::HashMap<u32, usize> = Default::default();
    let mut index_kind: Vec<Option<(u32, String)>> = Vec::new();
    // CPU id → (package, die), learnt from a die's (or package's) CPU list.
    let mut package_of: std::collections::HashMap<u32, (u32, Option<u32>)> = Default::default();
    for id in online.iter() {
        let dir = format!("{CPU_DIR}/cpu{id}");
        let (package, die, core, siblings) = match sibling_of.get(&id) {
            Some(&i) => {
                // One read instead of four, which also proves the directory
                // is there and agrees with the sibling.
                let c: &Cpu = &cpus[i];
                let path = format!("{dir}/topology/core_id");
                let Some(core) = sys.parse_opt(&path, parse::optional_id)? else {
                    return Err(DiscoveryError::Missing {
                        path: sys.path(&format!("{dir}/topology")),
                    });
                };
                if core.unwrap_or(id) != c.core {
                    return Err(DiscoveryError::Inconsistent {
                        path: sys.path(&path),
                        what: format!(
                            "core {} differs from its SMT sibling CPU {}'s {}",
                            core.unwrap_or(id),
                            c.id,
                            c.core
                        ),
                    });
                }
                (c.package, c.die, c.core, c.siblings.clone())
            }
            None => {
                let topo = format!("{dir}/topology");
                let (package, die) = match package_of.get(&id) {
                    Some(&pd) => pd,
                    None => {
                        let Some(package) = sys.parse_opt(
                            &format!("{topo}/physical_package_id"),
                            parse::optional_id,
                        )?
                        else {
                            return Err(DiscoveryError::Missing {
                                path: sys.path(&topo),
                            });
                        };
                        let package = package.unwrap_or(0);
                        let die = sys
                            .parse_opt(&format!("{topo}/die_id"), parse::optional_id)?
                            .flatten();
                        // Every CPU of the same die (or package) shares both
                        // ids: read them once per die.
                        let mates = match sys
                            .parse_opt(&format!("{topo}/die_cpus_list"), parse::cpulist)?
                        {
                            Some(l) => Some(l),
                            None if die.is_none() => {
                                sys.parse_opt(&format!("{topo}/package_cpus_list"), parse::cpulist)?
                            }
                            None => None,
                        };
                        for m in mates.iter().flat_map(|l| l.iter()) {
                            package_of.insert(m, (package, die));
                        }
                        (package, die)
                    }
                };
                let core = sys
                    .parse_opt(&format!("{topo}/core_id"), parse::optional_id)?
                    .flatten()
                    .unwrap_or(id);
                let siblings =
                    match sys.parse_opt(&format!("{topo}/thread_siblings_list"), parse::cpulist)? {
                        Some(s) if s.contains(id) => s,
                        Some(s) if !s.is_empty() => {
                            return Err(DiscoveryError::Inconsistent {
                                path: sys.path(&format!("{topo}/thread_siblings_list")),
                                what: format!("CPU {id} is not among its own siblings {s}"),
                            })
                        }
                        _ => CpuList::from_ids([id]),
                    };
                for s in siblings.iter().filter(|&s| s != id) {
                    sibling_of.insert(s, cpus.len());
                }
                (package, die, core, siblings)
            }
        };
        let (mut l2, mut l3) = (None, None);
        for k in 0.. {
            if at_index.len() <= k {
                at_index.push(Vec::new());
                index_kind.push(None);
            }
            let known = at_index[k]
                .iter()
                .copied()
                .find(|&c| caches[c].cpus.contains(id));
            let idx = match known {
                Some(c) => c,
                None => {
                    let idir = format!("{dir}/cache/index{k}");
                    let Some(shared) =
                        sys.parse_opt(&format!("{idir}/shared_cpu_list"), parse::cpulist)?
                    else {
                        break;
                    };
                    let shared = if shared.contains(id) {
                        shared
                    } else {
                        CpuList::from_ids([id])
                    };
                    // Level and type of `indexK` are the same on every CPU
                    // of a node (sizes are not, on hybrid parts).
                    let (level, kind) = match &index_kind[k] {
                        Some(lk) => lk.clone(),
                        None => {
                            let Some(level) =
                                sys.parse_opt(&format!("{idir}/level"), parse::dec_u32)?
                            else {
                                break;
                            };
                            let kind = sys
                                .read_opt(&format!("{idir}/type"))?
                                .map(|t| t.trim().to_owned())
                                .unwrap_or_else(|| "Unified".into());
                            index_kind[k] = Some((level, kind.clone()));
                            (level, kind)
                        }
                    };
                    let size_bytes = sys.parse_opt(&format!("{idir}/size"), parse::size_bytes)?;
                    caches.push(Cache {
                        level,
                        kind,
                        size_bytes,
                        cpus: shared,
                    });
                    at_index[k].push(caches.len() - 1);
                    caches.len() - 1
                }
            };
            if caches[idx].kind != "Instruction" {
                match caches[idx].level {
                    2 => l2 = Some(idx),
                    3 => l3 = Some(idx),
                    _ => {}
                }
            }
        }
        cpus.push(Cpu {
            id,
            package,
            die,
            core,
            numa_node: None,
            siblings,
            l2,
            l3,
        });
    }
    Ok(CpuInfo {
        online,
        isolated,
        cpus,
        caches,
    })
}

/// Reads NUMA nodes. A kernel without `/sys/devices/system/node` gets one
/// node 0 holding every online CPU and the memory of `/proc/meminfo`.
pub(crate) fn discover_numa(
    sys: &SysRoot,
    online: &CpuList,
) -> Result<Vec<NumaNode>, DiscoveryError> {
    let online_path = format!("{NODE_DIR}/online");
    let Some(ids) = sys.parse_opt(&online_path, parse::cpulist)? else {
        let mem = sys.parse("proc/meminfo", parse::meminfo)?;
        return Ok(vec![NumaNode {
            id: 0,
            cpus: online.clone(),
            memory_bytes: mem.total_bytes,
            free_bytes: mem.free_bytes,
            distances: vec![10],
        }]);
    };
    // Sized by the node directories that exist, not by what `online` claims.
    let mut nodes = Vec::new();
    for id in ids.iter() {
        let dir = format!("{NODE_DIR}/node{id}");
        let cpus = sys.parse(&format!("{dir}/cpulist"), parse::cpulist)?;
        let mem = sys.parse(&format!("{dir}/meminfo"), parse::meminfo)?;
        let distances = sys.parse(&format!("{dir}/distance"), parse::distance_row)?;
        nodes.push(NumaNode {
            id,
            // Offline CPUs stay listed in the node; keep the online ones.
            cpus: CpuList::from_ids(cpus.iter().filter(|&c| online.contains(c))),
            memory_bytes: mem.total_bytes,
            free_bytes: mem.free_bytes,
            distances,
        });
    }
    for node in &nodes {
        if node.distances.len() != nodes.len() {
            return Err(DiscoveryError::Inconsistent {
                path: sys.path(&format!("{NODE_DIR}/node{}/distance", node.id)),
                what: format!(
                    "{} distances for {} online nodes",
                    node.distances.len(),
                    nodes.len()
                ),
            });
        }
    }
    Ok(nodes)
}
