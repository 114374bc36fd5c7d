//! `edge2s` (layout in `tests/src/edge2s.rs`): discovery of the fake sysfs
//! tree checked against an expected topology written by hand from the level
//! rules.

use std::collections::BTreeSet;

use griffin_devices::{discover, DeviceKind};
use griffin_tests::edge2s::*;
use griffin_tests::sysfs::pcie_config;
use serde_json::{json, Value};

fn topology() -> Value {
    let dir = tree().build().expect("write the edge2s tree");
    let topo = discover(dir.path()).expect("discover edge2s");
    serde_json::to_value(&topo).unwrap()
}

fn device<'a>(topo: &'a Value, addr: &str) -> &'a Value {
    topo["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pci_address"] == addr)
        .unwrap_or_else(|| panic!("device {addr} not discovered"))
}

/// The expected level of every pair, written by hand from the rules:
/// `PIX` at most one switch (or a shared parent bridge; root ports are not
/// switches), `PXB` same root port and two or more switches, `PHB` same root
/// bus and different root ports (or directly on the root bus), `NODE`
/// different root buses on one NUMA node, `SYS` different or unknown NUMA
/// nodes. Columns in the order of the header row.
const EXPECTED: &str = "
      A    S    U    P    V0   V1   N    G    C    F    M    MV   H    E    Q
A     X    PHB  PHB  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS
S     PHB  X    PHB  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS
U     PHB  PHB  X    SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS
P     SYS  SYS  SYS  X    PIX  PIX  PIX  PHB  PXB  PXB  SYS  SYS  SYS  SYS  NODE
V0    SYS  SYS  SYS  PIX  X    PIX  PIX  PHB  PXB  PXB  SYS  SYS  SYS  SYS  NODE
V1    SYS  SYS  SYS  PIX  PIX  X    PIX  PHB  PXB  PXB  SYS  SYS  SYS  SYS  NODE
N     SYS  SYS  SYS  PIX  PIX  PIX  X    PHB  PXB  PXB  SYS  SYS  SYS  SYS  NODE
G     SYS  SYS  SYS  PHB  PHB  PHB  PHB  X    PHB  PHB  SYS  SYS  SYS  SYS  NODE
C     SYS  SYS  SYS  PXB  PXB  PXB  PXB  PHB  X    PIX  SYS  SYS  SYS  SYS  NODE
F     SYS  SYS  SYS  PXB  PXB  PXB  PXB  PHB  PIX  X    SYS  SYS  SYS  SYS  NODE
M     SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  X    PIX  PHB  SYS  SYS
MV    SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  PIX  X    PHB  SYS  SYS
H     SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  PHB  PHB  X    SYS  SYS
E     SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  SYS  X    SYS
Q     SYS  SYS  SYS  NODE NODE NODE NODE NODE NODE NODE SYS  SYS  SYS  SYS  X
";

/// The address of a short name of the tables.
fn addr(name: &str) -> &'static str {
    const NAMES: [&str; 15] = [
        "A", "S", "U", "P", "V0", "V1", "N", "G", "C", "F", "M", "MV", "H", "E", "Q",
    ];
    let i = NAMES.iter().position(|n| *n == name);
    ENDPOINTS[i.unwrap_or_else(|| panic!("unknown name {name}"))]
}

/// `EXPECTED` as (row address, column address, level) triples.
fn expected_levels() -> Vec<(&'static str, &'static str, &'static str)> {
    let mut lines = EXPECTED.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().map(addr).collect();
    let mut out = Vec::new();
    for line in lines {
        let mut words = line.split_whitespace();
        let row = addr(words.next().unwrap());
        let levels: Vec<&str> = words.collect();
        assert_eq!(levels.len(), header.len(), "row {row}");
        out.extend(header.iter().zip(levels).map(|(col, l)| (row, *col, l)));
    }
    out
}

#[test]
fn hand_written_matrix_is_complete_and_symmetric() {
    let levels = expected_levels();
    assert_eq!(levels.len(), ENDPOINTS.len() * ENDPOINTS.len());
    let get = |a: &str, b: &str| {
        levels
            .iter()
            .find(|(r, c, _)| *r == a && *c == b)
            .map(|t| t.2)
            .unwrap()
    };
    for a in ENDPOINTS {
        assert_eq!(get(a, a), "X");
        for b in ENDPOINTS {
            assert_eq!(get(a, b), get(b, a), "{a} {b}");
        }
    }
}

#[test]
fn matrix_matches_hand_written_levels() {
    let topo = topology();
    let matrix = topo["matrix"].as_object().unwrap();
    assert_eq!(
        matrix.keys().map(String::as_str).collect::<Vec<_>>(),
        ENDPOINTS,
        "matrix rows are exactly the endpoints, bridges excluded"
    );
    for a in ENDPOINTS {
        assert_eq!(matrix[a].as_object().unwrap().len(), ENDPOINTS.len(), "{a}");
    }
    let wrong: Vec<String> = expected_levels()
        .into_iter()
        .filter(|(a, b, l)| topo["matrix"][a][b] != *l)
        .map(|(a, b, l)| format!("{a} {b}: expected {l}, got {}", topo["matrix"][a][b]))
        .collect();
    assert!(wrong.is_empty(), "wrong levels:\n{}", wrong.join("\n"));
}

#[test]
fn unknown_numa_pairs_are_root_bus_0_against_other_buses() {
    let topo = topology();
    let got: BTreeSet<(&str, &str)> = topo["matrix_unknown_numa"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect();
    // A, S and U share root bus 0 (PHB among themselves, not unknown);
    // against every other device the level is SYS for want of a node.
    let mut expected = BTreeSet::new();
    for a in [A, S, U] {
        for b in [P, V0, V1, N, G, C, F, M, MV, H, E, Q] {
            expected.insert((a, b));
        }
    }
    assert_eq!(got, expected);
    assert_eq!(topo["matrix_unknown_numa"].as_array().unwrap().len(), 36);
}

/// With config space readable, bridges declare their port types; the
/// matrix must not change, and `port_type` is reported.
#[test]
fn config_space_port_types_give_the_same_matrix() {
    let t = tree();
    let dir = t.build().unwrap();
    let mut typed: Vec<(&str, u8, &str)> = vec![];
    typed.extend(ROOT_PORTS.iter().map(|a| (*a, 4, "root-port")));
    typed.extend(SWITCH_UPSTREAM.iter().map(|a| (*a, 5, "upstream-port")));
    typed.extend(SWITCH_DOWNSTREAM.iter().map(|a| (*a, 6, "downstream-port")));
    typed.extend(ENDPOINTS.iter().map(|a| (*a, 0, "endpoint")));
    for (a, port, _) in &typed {
        let path = dir.path().join(t.device_dir(a).unwrap()).join("config");
        std::fs::write(path, pcie_config(0x1b36, 0x000c, *port)).unwrap();
    }
    let topo = serde_json::to_value(discover(dir.path()).unwrap()).unwrap();
    for (a, port, name) in &typed {
        // Only bridges' config space is read (see `pcie_port_type_with`):
        // an endpoint's port type is not needed and costs a trap per dword
        // on a virtual machine.
        let want = if *port == 0 {
            Value::Null
        } else {
            Value::from(*name)
        };
        assert_eq!(device(&topo, a)["port_type"], want, "{a}");
    }
    assert_eq!(device(&topo, HOST_BRIDGE)["port_type"], Value::Null);
    assert_eq!(topo["matrix"], topology()["matrix"]);
}

#[test]
fn cpus_and_caches() {
    let topo = topology();
    assert_eq!(topo["online_cpus"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
    assert_eq!(topo["isolated_cpus"], json!([]));
    let cpus = topo["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 8);
    // (id, package, core, numa_node, siblings)
    let expected = [
        (0, 0, 0, 0, [0, 4]),
        (1, 0, 1, 1, [1, 5]),
        (2, 1, 0, 2, [2, 6]),
        (3, 1, 1, 3, [3, 7]),
        (4, 0, 0, 0, [0, 4]),
        (5, 0, 1, 1, [1, 5]),
        (6, 1, 0, 2, [2, 6]),
        (7, 1, 1, 3, [3, 7]),
    ];
    for (c, (id, package, core, node, siblings)) in cpus.iter().zip(expected) {
        assert_eq!(c["id"], id);
        assert_eq!(c["package"], package, "cpu {id}");
        assert_eq!(c["die"], 0, "cpu {id}");
        assert_eq!(c["core"], core, "cpu {id}");
        assert_eq!(c["numa_node"], node, "cpu {id}");
        assert_eq!(c["siblings"], json!(siblings), "cpu {id}");
        let l2 = &topo["caches"][c["l2"].as_u64().unwrap() as usize];
        assert_eq!(l2["level"], 2);
        assert_eq!(l2["cpus"], json!(siblings), "cpu {id} L2");
        assert_eq!(l2["size_bytes"], 512 * 1024);
        let l3 = &topo["caches"][c["l3"].as_u64().unwrap() as usize];
        assert_eq!(l3["level"], 3);
        let socket = if package == 0 {
            [0, 1, 4, 5]
        } else {
            [2, 3, 6, 7]
        };
        assert_eq!(l3["cpus"], json!(socket), "cpu {id} L3");
        assert_eq!(l3["size_bytes"], 16 * 1024 * 1024);
    }
    // 4 cores × (L1d, L1i, L2) + 2 L3.
    let caches = topo["caches"].as_array().unwrap();
    assert_eq!(caches.len(), 14);
    let count = |level: u64, kind: &str| {
        caches
            .iter()
            .filter(|c| c["level"] == level && c["type"] == kind)
            .count()
    };
    assert_eq!(count(1, "Data"), 4);
    assert_eq!(count(1, "Instruction"), 4);
    assert_eq!(count(2, "Unified"), 4);
    assert_eq!(count(3, "Unified"), 2);
}

#[test]
fn numa_nodes() {
    let topo = topology();
    let gib = 1u64 << 30;
    assert_eq!(
        topo["numa_nodes"],
        json!([
            {"id": 0, "cpus": [0, 4], "memory_bytes": gib, "free_bytes": gib / 2, "distances": [10, 21, 31, 41]},
            {"id": 1, "cpus": [1, 5], "memory_bytes": gib, "free_bytes": gib / 2, "distances": [21, 10, 21, 31]},
            {"id": 2, "cpus": [2, 6], "memory_bytes": gib, "free_bytes": gib / 2, "distances": [31, 21, 10, 21]},
            {"id": 3, "cpus": [3, 7], "memory_bytes": gib / 2, "free_bytes": gib / 4, "distances": [41, 31, 21, 10]},
        ])
    );
}

#[test]
fn every_function_is_discovered_with_its_kind() {
    let topo = topology();
    let addrs: Vec<&str> = topo["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pci_address"].as_str().unwrap())
        .collect();
    let mut expected = bridges();
    expected.extend(ENDPOINTS);
    expected.sort_unstable();
    assert_eq!(addrs, expected);
    let kinds = [
        (A, "nic-pf"),
        (S, "other"),
        (U, "other"),
        (P, "nic-pf"),
        (V0, "nic-vf"),
        (V1, "nic-vf"),
        (N, "nvme"),
        (G, "gpu"),
        (C, "accelerator"),
        (F, "fpga"),
        (M, "nvme"),
        (MV, "nvme"),
        (H, "rdma-hca"),
        (E, "nic-pf"),
        (Q, "nic-pf"),
    ];
    for (addr, kind) in kinds {
        assert_eq!(device(&topo, addr)["kind"], kind, "{addr}");
    }
    for b in bridges() {
        assert_eq!(device(&topo, b)["kind"], "bridge", "{b}");
    }
}

/// Per endpoint: class, vendor, device, driver (`-`: none), root bus and
/// upstream bridges (root port first; `-`: directly on the root bus).
const IDENTITY: &str = "
A   020000 8086 10c9 igb         pci0000:00 -
S   010601 8086 2922 ahci        pci0000:00 -
U   0c0330 1b36 000d xhci_hcd    pci0000:00 0000:00:1c.0
P   020000 8086 10c9 igb         pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:00.0
V0  020000 8086 10ca igbvf       pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:00.0
V1  020000 8086 10ca igbvf       pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:00.0
N   010802 1b36 0010 nvme        pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:01.0
G   030200 10de 20b0 -           pci0000:10 0000:10:01.0
C   120000 1da3 1020 habanalabs  pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:02.0,0000:16:00.0,0000:17:00.0
F   120000 10ee 903f xdma        pci0000:10 0000:10:00.0,0000:11:00.0,0000:12:02.0,0000:16:00.0,0000:17:01.0
M   010802 1b36 0010 nvme        pci0000:20 0000:20:00.0
MV  010802 1b36 0010 nvme        pci0000:20 0000:20:00.0
H   020700 15b3 101b mlx5_core   pci0000:20 0000:20:01.0
E   020000 1af4 1041 virtio-pci  pci0000:30 0000:30:00.0
Q   020000 8086 1593 ice         pci0000:40 0000:40:00.0
";

#[test]
fn identity_drivers_and_placement() {
    let topo = topology();
    let mut seen = Vec::new();
    for line in IDENTITY.lines().filter(|l| !l.trim().is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [name, class, vendor, dev, driver, root_bus, upstream] = w[..] else {
            panic!("bad IDENTITY line {line:?}");
        };
        let addr = addr(name);
        let driver = (driver != "-").then_some(driver);
        let upstream: Vec<&str> = upstream.split(',').filter(|u| *u != "-").collect();
        seen.push(addr);
        let d = device(&topo, addr);
        assert_eq!(d["class"], class, "{addr}");
        assert_eq!(d["vendor"], vendor, "{addr}");
        assert_eq!(d["device"], dev, "{addr}");
        assert_eq!(d["driver"], json!(driver), "{addr}");
        assert_eq!(d["root_bus"], root_bus, "{addr}");
        assert_eq!(d["upstream"], json!(upstream), "{addr}");
        assert_eq!(d["port_type"], Value::Null, "{addr}: no config space");
        assert_eq!(d["gpu"], Value::Null, "{addr}: NVML is not queried");
    }
    seen.sort_unstable();
    assert_eq!(seen, ENDPOINTS, "one IDENTITY line per endpoint");
    // The link type of the first netdev, from its `type` attribute.
    for (a, link_type) in [
        (A, json!("ether")),
        (V0, json!("ether")),
        (H, json!("infiniband")),
        (E, json!("ether")),
        (N, Value::Null),
    ] {
        assert_eq!(device(&topo, a)["link_type"], link_type, "{a}");
    }
    assert_eq!(device(&topo, P)["subsystem_vendor"], "8086");
    assert_eq!(device(&topo, P)["subsystem_device"], "a03c");
    assert_eq!(device(&topo, "0000:11:00.0")["vendor"], "104c");
    assert_eq!(device(&topo, "0000:11:00.0")["driver"], "pcieport");
    assert_eq!(device(&topo, "0000:00:00.0")["driver"], Value::Null);
    assert_eq!(
        device(&topo, P)["link"],
        json!({"current_speed_gts": 5.0, "current_width": 4, "max_speed_gts": 5.0, "max_width": 4})
    );
    assert_eq!(
        device(&topo, N)["link"],
        json!({"current_speed_gts": 8.0, "current_width": 4, "max_speed_gts": 16.0, "max_width": 4})
    );
    assert_eq!(
        device(&topo, V0)["link"],
        json!({"current_speed_gts": null, "current_width": null, "max_speed_gts": null, "max_width": null})
    );
}

#[test]
fn device_numa_nodes_and_sources() {
    let topo = topology();
    let all = json!([0, 1, 2, 3, 4, 5, 6, 7]);
    // (address, numa_node, numa_source, local_cpus)
    let rows = [
        (A, json!(null), "unknown", all.clone()),
        (S, json!(null), "unknown", all.clone()),
        (U, json!(null), "unknown", all.clone()),
        (P, json!(0), "sysfs", json!([0, 4])),
        (V0, json!(0), "sysfs", json!([0, 4])),
        (V1, json!(0), "sysfs", json!([0, 4])),
        (N, json!(0), "sysfs", json!([0, 4])),
        (G, json!(0), "sysfs", json!([0, 4])),
        (C, json!(0), "sysfs", json!([0, 4])),
        (F, json!(0), "sysfs", json!([0, 4])),
        (M, json!(1), "sysfs", json!([1, 5])),
        (MV, json!(1), "sysfs", json!([1, 5])),
        (H, json!(1), "sysfs", json!([1, 5])),
        // numa_node -1, local_cpulist 3,7 lies in node 3 only.
        (E, json!(3), "local-cpus", json!([3, 7])),
        (Q, json!(0), "sysfs", json!([0, 4])),
    ];
    for (addr, node, source, local) in rows {
        let d = device(&topo, addr);
        assert_eq!(d["numa_node"], node, "{addr}");
        assert_eq!(d["numa_source"], source, "{addr}");
        assert_eq!(d["local_cpus"], local, "{addr}");
    }
    assert_eq!(device(&topo, "0000:30:00.0")["numa_node"], 3);
    assert_eq!(device(&topo, "0000:30:00.0")["numa_source"], "sysfs");
}

#[test]
fn sriov_links() {
    let topo = topology();
    let sriov = |a: &str| device(&topo, a)["sriov"].clone();
    assert_eq!(
        sriov(P),
        json!({"total_vfs": 7, "num_vfs": 2, "pf": null, "vfs": [V0, V1]})
    );
    for vf in [V0, V1] {
        assert_eq!(
            sriov(vf),
            json!({"total_vfs": 0, "num_vfs": 0, "pf": P, "vfs": []})
        );
    }
    assert_eq!(
        sriov(M),
        json!({"total_vfs": 4, "num_vfs": 1, "pf": null, "vfs": [MV]})
    );
    assert_eq!(
        sriov(MV),
        json!({"total_vfs": 0, "num_vfs": 0, "pf": M, "vfs": []})
    );
    assert_eq!(
        sriov(G),
        json!({"total_vfs": 0, "num_vfs": 0, "pf": null, "vfs": []})
    );
    assert_eq!(topo["warnings"], json!([]));
}

#[test]
fn netdevs_nvme_and_rdma() {
    let topo = topology();
    let field = |a: &str, f: &str| device(&topo, a)[f].clone();
    for (addr, netdevs) in [
        (A, json!(["eth0"])),
        (P, json!(["eth1"])),
        (V0, json!(["eth5"])),
        (V1, json!(["eth6"])),
        // Through virtio3/net/eth3.
        (E, json!(["eth3"])),
        (Q, json!(["eth4"])),
        (H, json!(["ib0"])),
        (N, json!([])),
        (G, json!([])),
    ] {
        assert_eq!(field(addr, "netdevs"), netdevs, "{addr}");
    }
    for (addr, ctrls) in [
        (N, json!(["nvme0"])),
        (M, json!(["nvme1"])),
        (MV, json!(["nvme2"])),
        (P, json!([])),
    ] {
        assert_eq!(field(addr, "nvme_controllers"), ctrls, "{addr}");
    }
    assert_eq!(
        topo["rdma_devices"],
        json!([
            {"name": "irdma0", "pci_address": Q, "netdevs": ["eth4"]},
            {"name": "mlx5_0", "pci_address": H, "netdevs": ["ib0"]},
            // Soft-RoCE: no device link, found through its parent netdev.
            {"name": "rxe0", "pci_address": E, "netdevs": ["eth3"]},
            // On a virtual netdev: no PCI function.
            {"name": "rxe1", "pci_address": null, "netdevs": ["lo"]},
        ])
    );
    assert_eq!(field(E, "rdma_devices"), json!(["rxe0"]));
    assert_eq!(field(Q, "rdma_devices"), json!(["irdma0"]));
    assert_eq!(field(H, "rdma_devices"), json!(["mlx5_0"]));
    assert_eq!(field(P, "rdma_devices"), json!([]));
    assert_eq!(field(E, "kind"), "nic-pf", "a NIC with RDMA stays a NIC");
}

#[test]
fn document_header() {
    let dir = tree().build().unwrap();
    let topo = serde_json::to_value(discover(dir.path()).unwrap()).unwrap();
    assert_eq!(topo["schema_version"], 1);
    assert_eq!(topo["root"], dir.path().to_str().unwrap());
    assert_eq!(topo["nvml"], json!({"state": "not-queried"}));
}

/// The synthetic shapes the allocator tests and benchmarks use in memory are
/// what discovery finds when the same shape is written as sysfs.
#[test]
fn synthetic_shape_written_as_sysfs_discovers_the_same() {
    let shape = griffin_tests::synthetic::Shape {
        packages: 2,
        nodes_per_package: 2,
        cores_per_node: 2,
        threads: 2,
        devices_per_node: vec![DeviceKind::Gpu, DeviceKind::NicVf, DeviceKind::Nvme],
        memory_per_node: 1 << 30,
    };
    let mem = shape.topology();
    let dir = shape.tree().build().unwrap();
    let disk = discover(dir.path()).unwrap();
    assert_eq!(
        mem.cpus,
        disk.cpus
            .iter()
            .map(|c| griffin_devices::Cpu {
                l2: None,
                ..c.clone()
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(mem.numa_nodes, disk.numa_nodes);
    let kinds = |t: &griffin_devices::Topology| {
        t.devices
            .iter()
            .map(|d| (d.pci_address, d.kind, d.numa_node))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&mem), kinds(&disk));
    assert_eq!(mem.matrix, disk.matrix);
    assert_eq!(mem.matrix_unknown_numa, disk.matrix_unknown_numa);
}
