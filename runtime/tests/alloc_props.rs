//! Allocator properties on random topologies and request sequences.

use griffin_devices::{DeviceKind, Level};
use griffin_runtime::alloc::{allocate, DeviceWant, Options, Policy, Request, State};
use griffin_runtime::cpuset::CpuSet;
use griffin_tests::synthetic::Shape;
use proptest::prelude::*;

fn shape() -> impl Strategy<Value = Shape> {
    (1u32..4, 1u32..4, 1u32..6, 1u32..3, 0usize..3).prop_map(|(p, n, c, t, d)| Shape {
        packages: p,
        nodes_per_package: n,
        cores_per_node: c,
        threads: t,
        devices_per_node: [DeviceKind::Gpu, DeviceKind::NicVf]
            .into_iter()
            .cycle()
            .take(d)
            .collect(),
        memory_per_node: 1 << 30,
    })
}

#[derive(Debug, Clone)]
enum Op {
    Alloc {
        cpus: u32,
        policy: u8,
        full: bool,
        dist: bool,
        close: bool,
        gpus: u32,
        vfs: u32,
    },
    Release(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            3 => (0u32..12, 0u8..4, any::<bool>(), any::<bool>(), any::<bool>(), 0u32..2, 0u32..2)
                .prop_map(|(cpus, policy, full, dist, close, gpus, vfs)| Op::Alloc { cpus, policy, full, dist, close, gpus, vfs }),
            1 => (0usize..16).prop_map(Op::Release),
        ],
        1..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn invariants_hold_over_request_sequences(shape in shape(), ops in ops(), reserve in 0u32..3) {
        let topo = shape.topology();
        let reserved = CpuSet::from_ids(topo.online_cpus.iter().take(reserve as usize));
        let mut state = State::new(reserved.clone());
        let mut next = 0;
        for op in ops {
            match op {
                Op::Alloc { cpus, policy, full, dist, close, gpus, vfs } => {
                    let mut devices = Vec::new();
                    if gpus > 0 { devices.push(DeviceWant::Kind { kind: DeviceKind::Gpu, count: gpus }); }
                    if vfs > 0 { devices.push(DeviceWant::Kind { kind: DeviceKind::NicVf, count: vfs }); }
                    let req = Request {
                        cpus,
                        memory_bytes: 0,
                        devices,
                        policy: [Policy::None, Policy::BestEffort, Policy::Restricted, Policy::SingleNumaNode][policy as usize],
                        options: Options { full_pcpus_only: full, distribute_across_numa: dist, prefer_closest_numa: close, isolated_partition: false },
                        assigned: Vec::new(),
                    };
                    let before = state.clone();
                    match allocate(&topo, &state, &req) {
                        Ok(p) => {
                            prop_assert_eq!(p.cpus.len(), cpus as usize, "exact count");
                            prop_assert!(!p.cpus.intersects(&before.exclusive()), "no CPU handed out twice");
                            prop_assert!(!p.cpus.intersects(&reserved), "reserved CPUs never handed out");
                            if full {
                                for c in p.cpus.iter() {
                                    let cpu = topo.cpus.iter().find(|x| x.id == c).unwrap();
                                    prop_assert!(cpu.siblings.iter().all(|s| p.cpus.contains(s)), "full-pcpus-only splits core of {}", c);
                                }
                            }
                            if req.policy == Policy::SingleNumaNode {
                                prop_assert_eq!(p.mems.len(), 1);
                                for c in p.cpus.iter() {
                                    let cpu = topo.cpus.iter().find(|x| x.id == c).unwrap();
                                    prop_assert_eq!(cpu.numa_node, Some(p.mems[0]));
                                }
                            }
                            prop_assert_eq!(p.devices.len() as u32, gpus + vfs);
                            state.commit(format!("a{next}"), req, p).unwrap();
                            next += 1;
                        }
                        Err(_) => prop_assert_eq!(&state, &before, "a rejection changes nothing"),
                    }
                }
                Op::Release(i) => {
                    let ids: Vec<String> = state.allocations.keys().cloned().collect();
                    if !ids.is_empty() {
                        let id = &ids[i % ids.len()];
                        let before_excl = state.exclusive();
                        let gone = state.release(id).unwrap();
                        let mut expect = before_excl.clone();
                        expect.subtract(&gone.placement.cpus);
                        prop_assert_eq!(state.exclusive(), expect, "release restores exactly");
                    }
                }
            }
            // The shared pool is the complement of the exclusive sets.
            let mut union = state.shared_pool(&topo);
            prop_assert!(!union.intersects(&state.exclusive()));
            union.union_with(&state.exclusive());
            prop_assert_eq!(union, CpuSet::from(&topo.online_cpus));
        }
    }
}

#[test]
fn whole_cores_and_one_node_when_it_fits() {
    let topo = Shape {
        packages: 2,
        nodes_per_package: 1,
        cores_per_node: 4,
        threads: 2,
        devices_per_node: vec![],
        memory_per_node: 1 << 30,
    }
    .topology();
    let state = State::default();
    let p = allocate(
        &topo,
        &state,
        &Request {
            cpus: 4,
            ..Default::default()
        },
    )
    .unwrap();
    // Two whole cores on one node: CPUs {c, c+8} pairs.
    assert_eq!(p.mems.len(), 1);
    let ids: Vec<u32> = p.cpus.iter().collect();
    for c in &ids {
        let cpu = topo.cpus.iter().find(|x| x.id == *c).unwrap();
        assert!(cpu.siblings.iter().all(|s| p.cpus.contains(s)), "{ids:?}");
    }
}

#[test]
fn devices_are_chosen_together_under_one_switch() {
    let topo = Shape {
        packages: 2,
        nodes_per_package: 2,
        cores_per_node: 4,
        threads: 2,
        devices_per_node: vec![DeviceKind::Gpu, DeviceKind::NicVf],
        memory_per_node: 1 << 30,
    }
    .topology();
    let mut state = State::default();
    for i in 0..4 {
        let req = Request {
            cpus: 2,
            devices: vec![
                DeviceWant::Kind {
                    kind: DeviceKind::Gpu,
                    count: 1,
                },
                DeviceWant::Kind {
                    kind: DeviceKind::NicVf,
                    count: 1,
                },
            ],
            policy: Policy::SingleNumaNode,
            ..Default::default()
        };
        let p = allocate(&topo, &state, &req).unwrap();
        assert_eq!(
            topo.matrix.get(p.devices[0], p.devices[1]),
            Some(Level::PIX),
            "request {i}: {p:?}"
        );
        let gpu_node = topo.device(p.devices[0]).unwrap().numa_node.unwrap();
        assert_eq!(p.mems, vec![gpu_node]);
        state.commit(format!("r{i}"), req, p).unwrap();
    }
    // Every GPU is now taken.
    let req = Request {
        cpus: 1,
        devices: vec![DeviceWant::Kind {
            kind: DeviceKind::Gpu,
            count: 1,
        }],
        ..Default::default()
    };
    let err = allocate(&topo, &state, &req).unwrap_err();
    assert!(err.0.contains("gpu"), "{err}");
}

/// Issue 15: devices pods hold through the device plugins are not free for
/// allocations, and a placement naming one no longer commits.
#[test]
fn plugin_held_devices_are_not_free() {
    let topo = Shape {
        packages: 1,
        nodes_per_package: 2,
        cores_per_node: 2,
        threads: 1,
        devices_per_node: vec![DeviceKind::Gpu],
        memory_per_node: 1 << 30,
    }
    .topology();
    let gpus: Vec<_> = topo
        .devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Gpu)
        .map(|d| d.pci_address)
        .collect();
    assert_eq!(gpus.len(), 2);
    let req = Request {
        cpus: 1,
        devices: vec![DeviceWant::Kind {
            kind: DeviceKind::Gpu,
            count: 1,
        }],
        ..Default::default()
    };
    let mut state = State::default();
    let before = allocate(&topo, &state, &req).unwrap();
    let held = before.devices[0];
    state.plugin_devices.insert(
        "nvidia.com/gpu".into(),
        vec![griffin_runtime::alloc::HeldDevice {
            id: held.to_string(),
            pci_address: Some(held),
        }],
    );
    let after = allocate(&topo, &state, &req).unwrap();
    assert_ne!(after.devices[0], held);
    let err = state
        .clone()
        .commit("x".into(), req.clone(), before)
        .unwrap_err();
    assert!(err.0.contains(&held.to_string()), "{err}");
    state
        .plugin_devices
        .get_mut("nvidia.com/gpu")
        .unwrap()
        .push(griffin_runtime::alloc::HeldDevice {
            id: after.devices[0].to_string(),
            pci_address: Some(after.devices[0]),
        });
    assert!(
        allocate(&topo, &state, &req).is_err(),
        "both GPUs held by pods"
    );
}

#[test]
fn policies_reject_with_reasons() {
    let topo = Shape {
        packages: 1,
        nodes_per_package: 2,
        cores_per_node: 2,
        threads: 2,
        devices_per_node: vec![],
        memory_per_node: 1 << 30,
    }
    .topology();
    let state = State::default();
    // 6 CPUs do not fit a 4-CPU node.
    let single = Request {
        cpus: 6,
        policy: Policy::SingleNumaNode,
        ..Default::default()
    };
    let err = allocate(&topo, &state, &single).unwrap_err();
    assert!(err.0.starts_with("single-numa-node"), "{err}");
    let best = Request {
        cpus: 6,
        policy: Policy::BestEffort,
        ..Default::default()
    };
    let p = allocate(&topo, &state, &best).unwrap();
    assert_eq!(p.mems.len(), 2);
    // Restricted admits the two-node placement: two nodes is the minimum.
    let restricted = Request {
        cpus: 6,
        policy: Policy::Restricted,
        ..Default::default()
    };
    assert!(allocate(&topo, &state, &restricted).is_ok());
    // Odd count with full-pcpus-only on SMT2.
    let odd = Request {
        cpus: 3,
        options: Options {
            full_pcpus_only: true,
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(allocate(&topo, &state, &odd)
        .unwrap_err()
        .0
        .contains("full-pcpus-only"));
    // More than the machine.
    let huge = Request {
        cpus: 9,
        ..Default::default()
    };
    assert!(allocate(&topo, &state, &huge).is_err());
}
