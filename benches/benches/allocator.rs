//! Allocator decision time against topology size, from 1 socket / 8 CPUs to
//! 16 sockets / 64 NUMA nodes / 1024 CPUs, with devices.
//!
//! Baseline, in the same run: the kubelet Topology Manager's way of finding
//! a NUMA affinity, enumerating every subset of NUMA nodes as a bitmask hint
//! and keeping the narrowest feasible one (what makes it refuse more than 8
//! nodes). The baseline only picks the node set; Griffin's figure includes
//! choosing the CPUs and devices too. The baseline is run up to 20 nodes
//! (a million subsets) and reported as not run above that.

use std::time::Duration;

use griffin_benches::{micros, time, write_report, Summary};
use griffin_devices::DeviceKind::{Gpu, NicVf, Nvme};
use griffin_devices::Topology;
use griffin_runtime::alloc::{allocate, Allocator, DeviceWant, Policy, Request, State};
use griffin_tests::synthetic::Shape;

/// kubelet-style: every non-empty subset of nodes is a hint; keep the
/// narrowest feasible one (fewest nodes, then lowest mask).
fn subset_enumeration(topo: &Topology, cpus: usize) -> u64 {
    let n = topo.numa_nodes.len();
    let caps: Vec<usize> = topo.numa_nodes.iter().map(|x| x.cpus.len()).collect();
    let mut best: Option<(u32, u64)> = None;
    for mask in 1u64..(1u64 << n) {
        let have: usize = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| caps[i])
            .sum();
        if have >= cpus {
            let k = mask.count_ones();
            if best.is_none_or(|(bk, _)| k < bk) {
                best = Some((k, mask));
            }
        }
    }
    best.map_or(0, |b| b.1)
}

fn main() {
    let shapes: Vec<(u32, u32, u32)> = vec![
        // (packages, nodes per package, cores per node), 2 threads per core.
        (1, 1, 4),
        (1, 2, 8),
        (2, 2, 8),
        (2, 4, 8),
        (4, 4, 8),
        (8, 4, 8),
        (16, 4, 8),
    ];
    let mut md = String::from(
        "# Allocator decision time vs topology size\n\n\
         Request: 6 exclusive CPUs + 1 GPU + 1 NIC VF, best-effort, on a node where a third of the cores are already taken.\n\n\
         | topology | NUMA nodes | CPUs | devices | Griffin median | Griffin p99 | cold median (view built per call) | subset enumeration median | ratio (enumeration / Griffin) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut rows = Vec::new();
    let mut worst_p99 = Duration::ZERO;
    for (p, n, c) in shapes {
        let shape = Shape {
            packages: p,
            nodes_per_package: n,
            cores_per_node: c,
            threads: 2,
            devices_per_node: vec![Gpu, NicVf, Nvme],
            memory_per_node: 64 << 30,
        };
        let topo = shape.topology();
        // Occupy a third of the node with earlier allocations.
        let mut state = State::default();
        let fill = topo.cpus.len() / 3 / 4;
        for i in 0..fill {
            let r = Request {
                cpus: 4,
                ..Default::default()
            };
            if let Ok(pl) = allocate(&topo, &state, &r) {
                state.commit(format!("f{i}"), r, pl).unwrap();
            }
        }
        let req = Request {
            cpus: 6,
            devices: vec![
                DeviceWant::Kind {
                    kind: Gpu,
                    count: 1,
                },
                DeviceWant::Kind {
                    kind: NicVf,
                    count: 1,
                },
            ],
            policy: Policy::BestEffort,
            ..Default::default()
        };
        // As the daemon decides: with the allocator prepared for the topology.
        let prepared = Allocator::new(&topo);
        let ours: Summary = time(50, 2000, || prepared.allocate(&state, &req).unwrap());
        // Cold: preparing the topology view inside every decision.
        let cold: Summary = time(20, 500, || allocate(&topo, &state, &req).unwrap());
        worst_p99 = worst_p99.max(ours.p99);
        let nodes = topo.numa_nodes.len();
        let base = (nodes <= 20).then(|| {
            let reps = if nodes <= 12 { 200 } else { 3 };
            time(1, reps, || subset_enumeration(&topo, 6))
        });
        let ratio = base
            .map(|b| (b.median.as_secs_f64() / ours.median.as_secs_f64() * 100.0).round() / 100.0);
        md.push_str(&format!(
            "| {p} sockets × {n} nodes × {c} cores × 2 threads | {nodes} | {} | {} | {} µs | {} µs | {} µs | {} | {} |\n",
            topo.cpus.len(),
            topo.endpoints().count(),
            micros(ours.median),
            micros(ours.p99),
            micros(cold.median),
            base.map_or("not run (2^N subsets)".into(), |b| format!("{} µs", micros(b.median))),
            ratio.map_or("-".into(), |r| format!("{r}x")),
        ));
        rows.push(serde_json::json!({
            "packages": p, "numa_nodes": nodes, "cpus": topo.cpus.len(),
            "griffin": ours.to_json(),
            "griffin_cold": cold.to_json(),
            "subset_enumeration": base.map(Summary::to_json),
            "ratio": ratio,
        }));
    }
    md.push_str(&format!(
        "\nTarget: well under 1 ms per decision at 64 NUMA nodes / 1024 CPUs: worst p99 {} µs ({}).\n",
        micros(worst_p99),
        if worst_p99 < Duration::from_millis(1) { "met" } else { "NOT met" }
    ));
    write_report("allocator", &serde_json::json!({ "rows": rows }), &md).unwrap();
}
