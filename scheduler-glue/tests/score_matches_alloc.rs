//! Issue 14 D6: one source of truth for feasibility. For random machines,
//! reservations, allocation histories and request shapes, the score's
//! `feasible` is exactly whether the manager (on the in-memory cpuset seam)
//! accepts the allocation for a process (pinned, so a shared allocation on
//! an empty shared pool fails in the seam as `sched_setaffinity` would).

use griffin_devices::DeviceKind;
use griffin_runtime::alloc::{Allocator, Policy};
use griffin_runtime::checkpoint::Target;
use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::enforce::Version;
use griffin_runtime::fake::FakeCpusets;
use griffin_runtime::manager::Manager;
use griffin_scheduler_glue::{score, DeviceCount, Shape};
use griffin_tests::synthetic::Shape as Machine;
use proptest::prelude::*;

const MEMORY_PER_NODE: u64 = 4 << 30;

fn machine() -> impl Strategy<Value = Machine> {
    (1u32..=2, 1u32..=2, 1u32..=2, 1u32..=2).prop_map(|(packages, nodes, cores, threads)| Machine {
        packages,
        nodes_per_package: nodes,
        cores_per_node: cores,
        threads,
        devices_per_node: vec![DeviceKind::Gpu, DeviceKind::NicVf],
        memory_per_node: MEMORY_PER_NODE,
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::None),
        Just(Policy::BestEffort),
        Just(Policy::Restricted),
        Just(Policy::SingleNumaNode),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    (0u32..6, 0u64..3, 0u32..2, 0u32..2, policy()).prop_map(|(cpus, mem, gpus, vfs, policy)| {
        let mut devices = Vec::new();
        for (kind, count) in [(DeviceKind::Gpu, gpus), (DeviceKind::NicVf, vfs)] {
            if count > 0 {
                devices.push(DeviceCount { kind, count });
            }
        }
        Shape {
            cpus,
            memory: mem * (MEMORY_PER_NODE / 2),
            devices,
            policy,
            topology_aware: true,
        }
    })
}

/// A step: ask for a shape, or release the allocation at an index.
#[derive(Debug, Clone)]
enum Step {
    Ask(Shape),
    Release(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(
        prop_oneof![
            3 => shape().prop_map(Step::Ask),
            1 => any::<usize>().prop_map(Step::Release),
        ],
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn score_is_feasible_exactly_when_the_allocation_succeeds(
        machine in machine(),
        reserve in 0usize..2,
        steps in steps(),
    ) {
        let topo = machine.topology();
        let online = CpuSet::from(&topo.online_cpus);
        let reserved = CpuSet::from_ids(online.iter().take(reserve));
        let nodes = topo.numa_nodes.iter().map(|n| n.id).collect();
        let fake = FakeCpusets::new(Version::V2, online, nodes);
        let dir = tempfile::tempdir().unwrap();
        let mut m = Manager::open(topo.clone(), dir.path(), fake.clone(), reserved).unwrap();
        let alloc = Allocator::new(&topo);
        for (pid, step) in (1..).zip(steps) {
            match step {
                Step::Ask(shape) => {
                    let s = score(&alloc, &topo, &m.checkpoint().state, &shape);
                    fake.spawn(pid);
                    let got = m.allocate(shape.request(), Target::Pid(pid));
                    prop_assert_eq!(
                        s.feasible,
                        got.is_ok(),
                        "{:?}: score {:?}, allocation {:?}",
                        shape,
                        s.reasons,
                        got.as_ref().map_err(|e| griffin_devices::Chain(e).to_string())
                    );
                }
                Step::Release(i) => {
                    let ids: Vec<String> = m.list().into_iter().map(|v| v.id).collect();
                    if !ids.is_empty() {
                        m.release(&ids[i % ids.len()]).unwrap();
                    }
                }
            }
        }
    }
}
