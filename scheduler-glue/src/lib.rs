//! Griffin's node scores for schedulers: how well this node can host a
//! request shape, from the allocator's own dry-run decision. Thin by design:
//! it turns runtime state into scores and JSON, nothing else. What the
//! endpoints serve from is [`node`], request parsing and bounds
//! [`request`], the node summary [`summary`], the routes [`http`] (node
//! score, extender) and [`gsch`] (GS-Scheduler), and [`serve`] runs them
//! on a listener with timeouts and a connection cap.
//!
//! # Score formula
//!
//! A shape that the allocator rejects under its policy (or because it would
//! empty the shared pool, see `griffin_runtime::alloc`) scores 0 and is
//! `feasible: false`: the same decision an allocation gets. Otherwise, with the allocator's placement:
//!
//! * alignment `a` = `n_min / n_used`: the fewest NUMA nodes the shape could
//!   ever need on this node over the nodes the placement spans (1 when it
//!   fits the narrowest set);
//! * device quality `d` = `c_best / c` where `c` is the placement's device
//!   cost (distance-matrix cost between the chosen devices plus their
//!   distance to the chosen CPUs) and `c_best` the cost the same devices
//!   would have if all sat under one switch next to the CPUs (PIX between
//!   every pair); 1 when no device is asked or `c` is 0;
//! * capacity left `f` = free exclusive CPUs after the placement over
//!   allocatable CPUs (spreads load, as kube-scheduler's least-allocated).
//!
//! `score = round(100 × (0.5·a + 0.3·d + 0.2·f))` when the shape is
//! topology-aware; otherwise alignment and device quality do not matter
//! and `score = round(100 × f)` for a feasible shape.

use griffin_devices::{DeviceKind, Level, Topology};
use griffin_runtime::alloc::{Allocator, DeviceWant, Options, Placement, Policy, Request, State};
use serde::{Deserialize, Serialize};

pub mod extender;
pub mod gojson;
pub mod gsch;
pub mod http;
pub mod metrics;
pub mod node;
pub mod nrt;
pub mod request;
pub mod serve;
pub mod summary;

/// A request shape, as schedulers send it (a JSON object: see
/// [`request::object`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct Shape {
    /// Exclusive CPUs.
    #[serde(default)]
    pub cpus: u32,
    /// Memory, bytes.
    #[serde(default)]
    pub memory: u64,
    /// Devices by kind.
    #[serde(default)]
    pub devices: Vec<DeviceCount>,
    /// Topology policy (default best-effort).
    #[serde(default)]
    pub policy: Policy,
    /// Whether alignment counts in the score.
    #[serde(default = "yes")]
    pub topology_aware: bool,
}

fn yes() -> bool {
    true
}

/// `{kind, count}` (a JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct DeviceCount {
    /// Device kind (`gpu`, `nic-vf`, …).
    pub kind: DeviceKind,
    /// How many.
    pub count: u32,
}

request::object_only!(Shape);
request::object_only!(DeviceCount);

/// The answer for one shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// 0..=100.
    pub score: u8,
    /// Whether the node can host the shape under its policy.
    pub feasible: bool,
    /// What the allocator would choose (not applied; its reasons are in
    /// `reasons`).
    pub placement: Option<Placement>,
    /// Why: the allocator's reasons, or its rejection, and the score's parts.
    pub reasons: Vec<String>,
}

impl Shape {
    /// The allocator request for this shape.
    pub fn request(&self) -> Request {
        Request {
            cpus: self.cpus,
            memory_bytes: self.memory,
            devices: self
                .devices
                .iter()
                .map(|d| DeviceWant::Kind {
                    kind: d.kind,
                    count: d.count,
                })
                .collect(),
            policy: self.policy,
            options: Options::default(),
            assigned: Vec::new(),
        }
    }
}

/// Fewest NUMA nodes that could ever hold `cpus` CPUs here (largest first).
fn min_nodes(topo: &Topology, cpus: u32) -> usize {
    let mut caps: Vec<usize> = topo.numa_nodes.iter().map(|n| n.cpus.len()).collect();
    caps.sort_unstable_by(|a, b| b.cmp(a));
    let mut have = 0;
    for (i, c) in caps.iter().enumerate() {
        have += c;
        if have >= cpus as usize {
            return i + 1;
        }
    }
    caps.len().max(1)
}

/// Scores `shape` on the node described by `topo` in allocation `state`.
pub fn score(alloc: &Allocator<'_>, topo: &Topology, state: &State, shape: &Shape) -> Score {
    let mut placement = match alloc.allocate(state, &shape.request()) {
        Ok(p) => p,
        Err(e) => {
            return Score {
                score: 0,
                feasible: false,
                placement: None,
                reasons: vec![e.0],
            }
        }
    };
    let allocatable = {
        let mut s = griffin_runtime::cpuset::CpuSet::from(&topo.online_cpus);
        s.subtract(&state.reserved);
        s.len().max(1)
    };
    let free_after = {
        let mut free = state.shared_pool(topo);
        free.subtract(&state.reserved);
        free.len().saturating_sub(placement.cpus.len())
    };
    let f = free_after as f64 / allocatable as f64;
    let used = placement.mems.len().max(1);
    let a = min_nodes(topo, shape.cpus) as f64 / used as f64;
    let n_dev = placement.devices.len() as u32;
    let best = n_dev * n_dev.saturating_sub(1) / 2 * Level::PIX.cost();
    let d = if placement.cost == 0 {
        1.0
    } else {
        (f64::from(best) / f64::from(placement.cost)).min(1.0)
    };
    let raw = if shape.topology_aware {
        0.5 * a.min(1.0) + 0.3 * d + 0.2 * f
    } else {
        f
    };
    // Moved, not copied: the answer lists them once, in `reasons`.
    let mut reasons = std::mem::take(&mut placement.reasons);
    reasons.push(format!(
        "alignment {a:.2} ({} of at least {} NUMA nodes), device quality {d:.2} (cost {} vs {best} best), capacity left {f:.2}",
        used,
        min_nodes(topo, shape.cpus),
        placement.cost
    ));
    Score {
        score: (raw * 100.0).round().clamp(0.0, 100.0) as u8,
        feasible: true,
        placement: Some(placement),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use griffin_tests::synthetic::Shape as Machine;

    fn machine() -> Topology {
        Machine {
            packages: 2,
            nodes_per_package: 2,
            cores_per_node: 4,
            threads: 2,
            devices_per_node: vec![DeviceKind::Gpu, DeviceKind::NicVf],
            memory_per_node: 16 << 30,
        }
        .topology()
    }

    fn shape(json: &str) -> Shape {
        serde_json::from_str(json).unwrap()
    }

    /// The request both ranking tests score: 4 CPUs, a GPU and a VF.
    fn cpus_gpu_vf() -> Shape {
        shape(
            r#"{"cpus": 4, "devices": [{"kind": "gpu", "count": 1}, {"kind": "nic-vf", "count": 1}]}"#,
        )
    }

    /// Asserts that the state named first scores higher than the second.
    fn assert_higher((a, a_name): (&Score, &str), (b, b_name): (&Score, &str)) {
        assert!(
            a.score > b.score,
            "{a_name} {} {:?} / {b_name} {} {:?}",
            a.score,
            a.reasons,
            b.score,
            b.reasons
        );
    }

    #[test]
    fn shapes_parse_strictly() {
        let s = shape(
            r#"{"cpus": 4, "devices": [{"kind": "gpu", "count": 1}], "policy": "single-numa-node"}"#,
        );
        assert_eq!(s.cpus, 4);
        assert!(s.topology_aware);
        assert!(
            serde_json::from_str::<Shape>(r#"{"cpus": 4, "gpus": 1}"#).is_err(),
            "unknown field"
        );
        assert!(serde_json::from_str::<Shape>(r#"{"cpus": -1}"#).is_err());
        assert!(
            serde_json::from_str::<Shape>(r#"{"devices": [{"kind": "tpu", "count": 1}]}"#).is_err()
        );
    }

    /// The issue's property: a request whose devices can sit under one
    /// switch with its CPUs scores higher while that is possible than after
    /// the allocator has taken those CPUs.
    #[test]
    fn score_reflects_topology() {
        let topo = machine();
        let alloc = Allocator::new(&topo);
        let want = cpus_gpu_vf();
        let mut state = State::default();
        let before = score(&alloc, &topo, &state, &want);
        assert!(before.feasible);
        // Take most CPUs of every node, leaving GPUs and VFs free but no
        // node able to host 4 CPUs next to them.
        for i in 0..4 {
            let r = Request {
                cpus: 6,
                policy: Policy::SingleNumaNode,
                ..Default::default()
            };
            let p = alloc.allocate(&state, &r).unwrap();
            state.commit(format!("x{i}"), r, p).unwrap();
        }
        let after = score(&alloc, &topo, &state, &want);
        assert!(after.feasible, "{:?}", after.reasons);
        assert_higher((&before, "before"), (&after, "after"));
        // Single-numa-node can no longer be met at all.
        let strict = Shape {
            policy: Policy::SingleNumaNode,
            ..want
        };
        let s = score(&alloc, &topo, &state, &strict);
        assert!(!s.feasible && s.score == 0, "{s:?}");
        assert!(s.reasons[0].contains("single-numa-node"));
    }

    /// Takes `per_node[i]` CPUs of node `i` (lowest ids first) in one
    /// committed allocation per node.
    fn occupy(topo: &Topology, per_node: &[usize]) -> State {
        let mut state = State::default();
        for (i, &n) in per_node.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let cpus =
                griffin_runtime::cpuset::CpuSet::from_ids(topo.numa_nodes[i].cpus.iter().take(n));
            let placement = Placement {
                cpus,
                mems: vec![topo.numa_nodes[i].id],
                devices: vec![],
                memory_bytes: 0,
                reasons: vec![],
                cost: 0,
            };
            state
                .commit(format!("n{i}"), Request::default(), placement)
                .unwrap();
        }
        state
    }

    /// Same free capacity (12 CPUs) in both states; only in the first can 4
    /// CPUs sit on one node with that node's GPU and VF (PIX).
    #[test]
    fn equal_capacity_aligned_beats_scattered() {
        let topo = machine();
        let alloc = Allocator::new(&topo);
        let want = cpus_gpu_vf();
        let aligned = occupy(&topo, &[2, 6, 6, 6]);
        let scattered = occupy(&topo, &[5, 5, 5, 5]);
        assert_eq!(
            aligned.shared_pool(&topo).len(),
            scattered.shared_pool(&topo).len()
        );
        let a = score(&alloc, &topo, &aligned, &want);
        let b = score(&alloc, &topo, &scattered, &want);
        assert!(a.feasible && b.feasible);
        assert_eq!(a.placement.as_ref().unwrap().mems.len(), 1);
        assert_eq!(b.placement.as_ref().unwrap().mems.len(), 2);
        assert_higher((&a, "aligned"), (&b, "scattered"));
        // Without topology awareness only capacity counts: equal scores.
        let blind = Shape {
            topology_aware: false,
            ..want
        };
        assert_eq!(
            score(&alloc, &topo, &aligned, &blind).score,
            score(&alloc, &topo, &scattered, &blind).score
        );
    }

    #[test]
    fn scores_stay_in_range_and_prefer_free_nodes() {
        let topo = machine();
        let alloc = Allocator::new(&topo);
        let small = shape(r#"{"cpus": 2, "topology_aware": false}"#);
        let empty = score(&alloc, &topo, &State::default(), &small);
        assert!(empty.score <= 100 && empty.score >= 90, "{empty:?}");
        let mut state = State::default();
        let r = Request {
            cpus: 16,
            ..Default::default()
        };
        let p = alloc.allocate(&state, &r).unwrap();
        state.commit("half".into(), r, p).unwrap();
        let busy = score(&alloc, &topo, &state, &small);
        assert!(busy.score < empty.score);
    }
}
