//! The object's shape against the published API's names, its numbers
//! against the state, and the fingerprint against podfingerprint's own
//! golden vector and hand-computed ones.

use std::collections::BTreeSet;

use griffin_runtime::alloc::{Allocation, HeldDevice, Placement, Request};
use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::pools::{PoolSpec, Pools};
use serde_json::{json, Value};

use super::*;

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Two packages, one NUMA node each, 4 cores, two GPUs per node.
fn topo() -> Topology {
    griffin_tests::synthetic::two_nodes_with_gpus(8 << 30)
}

fn gpu_pools(topo: &Topology) -> Pools {
    let spec: PoolSpec =
        serde_json::from_value(json!({"resource": "example.com/gpu", "kinds": ["gpu"]})).unwrap();
    Pools::discover(topo, &[spec.to_def("pools[0]")]).unwrap()
}

const SETTINGS: Settings = Settings {
    policy: Policy::SingleNumaNode,
    scope: TopologyScope::Container,
};

#[test]
fn fingerprint_matches_the_podfingerprint_golden_vector() {
    // podfingerprint's testdata/compat-tiny-3pods-1ns.{txt,sign}.
    let pods = [
        pod("production", "jaeger-dpgjk"),
        pod("production", "nginx-rt684"),
        pod("production", "envoy-g9m22"),
    ];
    assert_eq!(fingerprint(&pods), "pfp0v001607b76a0e9d3aeb4");
    let mut rev = pods.clone();
    rev.reverse();
    assert_eq!(fingerprint(&rev), fingerprint(&pods), "order matters");
    // testdata/compat-small-10pods-3ns: several namespaces.
    let pods = [
        ("analytics", "controller-69dkj"),
        ("kube-public", "subscriber-tq6v7"),
        ("kube-public", "transformer-hfbng"),
        ("kube-public", "validator-c6pn5"),
        ("kube-system", "proxy-wszrd"),
        ("middleware", "processor-jkrl4"),
        ("network", "gateway-vsll5"),
        ("network", "importer-kzdfr"),
        ("network", "importer-q5vt9"),
        ("staging", "prometheus-bwgbn"),
    ]
    .map(|(ns, n)| pod(ns, n));
    assert_eq!(fingerprint(&pods), "pfp0v001567144e4a561bb5a");
}

#[test]
fn fingerprint_by_hand_from_the_algorithm() {
    use xxhash_rust::xxh64::xxh64;
    // The empty set: XXH64 of no bytes with seed 0, a published constant.
    assert_eq!(fingerprint(&[]), "pfp0v001ef46db3751d8e999");
    // One pod: XXH64 over the 8 little-endian bytes of its own hash.
    let h = xxh64(b"web-1", xxh64(b"default", 0));
    let want = format!("pfp0v001{:016x}", xxh64(&h.to_le_bytes(), 0));
    assert_eq!(fingerprint(&[pod("default", "web-1")]), want);
    // The namespace seeds the name: swapping them changes the value.
    assert_ne!(fingerprint(&[pod("a", "b")]), fingerprint(&[pod("b", "a")]));
    // Two pods: hashes sorted ascending before hashing.
    let (a, b) = (xxh64(b"x", xxh64(b"ns1", 0)), xxh64(b"y", xxh64(b"ns2", 0)));
    let (lo, hi) = (a.min(b), a.max(b));
    let bytes: Vec<u8> = [lo, hi].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        fingerprint(&[pod("ns2", "y"), pod("ns1", "x")]),
        format!("pfp0v001{:016x}", xxh64(&bytes, 0))
    );
}

/// Every key of `v` (an object) is one of `names`.
fn keys_within(v: &Value, names: &[&str], what: &str) {
    for k in v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object"))
        .keys()
    {
        assert!(
            names.contains(&k.as_str()),
            "{what} has {k:?}, not in {names:?}"
        );
    }
}

#[test]
fn json_shape_uses_the_published_field_names() {
    let topo = topo();
    let pools = gpu_pools(&topo);
    let state = State::new(CpuSet::new());
    let pods = BTreeSet::from([pod("default", "web-1")]);
    let obj = build(&Input {
        node_name: "worker-1",
        topo: &topo,
        state: &state,
        pools: Some(&pools),
        settings: SETTINGS,
        pods: Some(&pods),
    });
    let v = serde_json::to_value(&obj).unwrap();
    // NodeResourceTopology (v1alpha2 types.go): TypeMeta, metadata,
    // topologyPolicies, zones, attributes.
    keys_within(
        &v,
        &[
            "apiVersion",
            "kind",
            "metadata",
            "topologyPolicies",
            "zones",
            "attributes",
        ],
        "object",
    );
    assert_eq!(v["apiVersion"], "topology.node.k8s.io/v1alpha2");
    assert_eq!(v["kind"], "NodeResourceTopology");
    assert_eq!(v["metadata"]["name"], "worker-1");
    assert_eq!(
        v["topologyPolicies"],
        json!(["SingleNUMANodeContainerLevel"])
    );
    let zones = v["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 2);
    for (i, z) in zones.iter().enumerate() {
        // Zone: name, type, parent, costs, attributes, resources.
        keys_within(
            z,
            &["name", "type", "parent", "costs", "attributes", "resources"],
            "zone",
        );
        assert_eq!(z["name"], format!("node-{i}"));
        assert_eq!(z["type"], "Node");
        for c in z["costs"].as_array().unwrap() {
            keys_within(c, &["name", "value"], "cost");
            assert!(c["value"].is_i64(), "cost value {c} is not an integer");
        }
        for r in z["resources"].as_array().unwrap() {
            keys_within(
                r,
                &["name", "capacity", "allocatable", "available"],
                "resource",
            );
            for q in ["capacity", "allocatable", "available"] {
                let s = r[q]
                    .as_str()
                    .unwrap_or_else(|| panic!("{q} of {r} is not a string"));
                assert!(
                    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
                    "{q} {s:?}"
                );
            }
        }
    }
    // scheduler-plugins' names: nodeconfig (topologyManagerPolicy,
    // topologyManagerScope with kubelet spellings), podfingerprint's
    // Attribute and AttributeMethod.
    let attrs: Vec<(String, String)> = v["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            keys_within(a, &["name", "value"], "attribute");
            (
                a["name"].as_str().unwrap().into(),
                a["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let get = |n: &str| attrs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(get("topologyManagerPolicy"), Some("single-numa-node"));
    assert_eq!(get("topologyManagerScope"), Some("container"));
    assert_eq!(
        get("nodeTopologyPodsFingerprint"),
        Some(fingerprint(&pods).as_str())
    );
    assert_eq!(get("nodeTopologyPodsFingerprintMethod"), Some("all"));
    // Without known pods, no fingerprint is claimed.
    let obj = build(&Input {
        pods: None,
        ..Input {
            node_name: "worker-1",
            topo: &topo,
            state: &state,
            pools: Some(&pools),
            settings: SETTINGS,
            pods: None,
        }
    });
    assert!(obj
        .attributes
        .iter()
        .all(|a| !a.name.starts_with("nodeTopologyPods")));
    // And it reads back.
    let back: NodeResourceTopology = serde_json::from_value(v).unwrap();
    assert_eq!(back.zones.len(), 2);
}

#[test]
fn policies_and_scopes_in_kubelet_and_legacy_spellings() {
    use TopologyScope::{Container, Pod};
    let all = [
        (Policy::None, Container, "none", "None"),
        (
            Policy::BestEffort,
            Container,
            "best-effort",
            "BestEffortContainerLevel",
        ),
        (Policy::BestEffort, Pod, "best-effort", "BestEffortPodLevel"),
        (
            Policy::Restricted,
            Container,
            "restricted",
            "RestrictedContainerLevel",
        ),
        (Policy::Restricted, Pod, "restricted", "RestrictedPodLevel"),
        (
            Policy::SingleNumaNode,
            Container,
            "single-numa-node",
            "SingleNUMANodeContainerLevel",
        ),
        (
            Policy::SingleNumaNode,
            Pod,
            "single-numa-node",
            "SingleNUMANodePodLevel",
        ),
    ];
    for (p, s, name, legacy) in all {
        assert_eq!(p.name(), name);
        // The kubelet spelling is also Griffin's own config spelling.
        assert_eq!(name.parse::<Policy>().unwrap(), p);
        assert_eq!(legacy_policy(p, s), legacy);
    }
    assert_eq!(scope_name(Pod), "pod");
    assert_eq!(scope_name(Container), "container");
}

fn zone(obj: &NodeResourceTopology, id: u32) -> &Zone {
    obj.zones.iter().find(|z| z.name == zone_name(id)).unwrap()
}

fn res<'a>(z: &'a Zone, name: &str) -> (&'a str, &'a str, &'a str) {
    let r = z
        .resources
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{} has no {name}", z.name));
    (&r.capacity, &r.allocatable, &r.available)
}

#[test]
fn numbers_follow_reserved_cpus_allocations_and_holdings() {
    let topo = topo();
    let pools = gpu_pools(&topo);
    let pool = pools.pool("example.com/gpu").unwrap();
    let node0: Vec<_> = pool
        .devices
        .iter()
        .filter(|d| d.device_numa_node == Some(0))
        .collect();
    let node1: Vec<_> = pool
        .devices
        .iter()
        .filter(|d| d.device_numa_node == Some(1))
        .collect();
    assert_eq!((node0.len(), node1.len()), (2, 2), "the fixture's GPUs");
    assert!(pool.devices.iter().all(|d| d.healthy), "{:?}", pool.devices);
    let cpus0: Vec<u32> = topo.numa_nodes[0].cpus.iter().collect();
    let cpus1: Vec<u32> = topo.numa_nodes[1].cpus.iter().collect();

    // One reserved CPU on node 0; an allocation of two CPUs, 1 GiB and a
    // GPU on node 1; a pod holds a node-0 GPU through the device plugin.
    let mut state = State::new(CpuSet::from_ids([cpus0[0]]));
    state.allocations.insert(
        "a000001".into(),
        Allocation {
            id: "a000001".into(),
            request: Request::default(),
            placement: Placement {
                cpus: CpuSet::from_ids([cpus1[0], cpus1[1]]),
                mems: vec![1],
                devices: vec![node1[0].pci_address],
                memory_bytes: 1 << 30,
                reasons: vec![],
                cost: 0,
            },
        },
    );
    state.plugin_devices.insert(
        "example.com/gpu".into(),
        vec![HeldDevice {
            id: node0[0].id.clone(),
            pci_address: Some(node0[0].pci_address),
        }],
    );
    let obj = build(&Input {
        node_name: "n",
        topo: &topo,
        state: &state,
        pools: Some(&pools),
        settings: SETTINGS,
        pods: None,
    });
    let (z0, z1) = (zone(&obj, 0), zone(&obj, 1));
    assert_eq!(res(z0, "cpu"), ("4", "3", "3"));
    assert_eq!(res(z1, "cpu"), ("4", "4", "2"));
    let mem = (8u64 << 30).to_string();
    let mem_left = ((8u64 << 30) - (1 << 30)).to_string();
    assert_eq!(
        res(z0, "memory"),
        (mem.as_str(), mem.as_str(), mem.as_str())
    );
    assert_eq!(
        res(z1, "memory"),
        (mem.as_str(), mem.as_str(), mem_left.as_str())
    );
    let gpu0 = res(z0, "example.com/gpu");
    let gpu1 = res(z1, "example.com/gpu");
    assert_eq!(gpu0, ("2", "2", "1"), "the held GPU is not available");
    assert_eq!(gpu1, ("2", "2", "1"), "the allocated GPU is not available");
    // An unhealthy device is capacity, not allocatable.
    let mut sick = topo.clone();
    let addr = node1[1].pci_address;
    sick.devices
        .iter_mut()
        .find(|d| d.pci_address == addr)
        .unwrap()
        .driver = None;
    let sick_pools = gpu_pools(&sick);
    let obj_sick = build(&Input {
        node_name: "n",
        topo: &sick,
        state: &state,
        pools: Some(&sick_pools),
        settings: SETTINGS,
        pods: None,
    });
    assert_eq!(res(zone(&obj_sick, 1), "example.com/gpu"), ("2", "1", "0"));
    // Costs are the SLIT rows.
    for (z, n) in [(z0, 0usize), (z1, 1usize)] {
        let want: Vec<(String, i64)> = topo.numa_nodes[n]
            .distances
            .iter()
            .enumerate()
            .map(|(m, d)| (format!("node-{m}"), i64::from(*d)))
            .collect();
        let got: Vec<(String, i64)> = z.costs.iter().map(|c| (c.name.clone(), c.value)).collect();
        assert_eq!(got, want);
    }
    assert_eq!(z0.costs[0].value, 10);
    // No pools: only cpu and memory.
    let obj = build(&Input {
        node_name: "n",
        topo: &topo,
        state: &state,
        pools: None,
        settings: SETTINGS,
        pods: None,
    });
    let names: Vec<&str> = obj.zones[0]
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["cpu", "memory"]);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let pace = Pace {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..Pace::default()
    };
    let d: Vec<u128> = (1..=6).map(|f| backoff(&pace, f).as_millis()).collect();
    assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff(&pace, u32::MAX), Duration::from_secs(1));
}
