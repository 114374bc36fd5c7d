//! Pools on fixture trees: selection as sriov-network-device-plugin
//! selects (the edge2s capture from a real kernel and the hand-written
//! edge2s tree), health, allocation answers field by field, preferences.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use griffin_devices::{discover, GpuInfo};
use griffin_tests::edge2s;
use griffin_tests::synthetic::{farm_pf, farm_pf_netdev, farm_vf, vf_farm, vf_farm_topology};

use super::*;

fn capture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu")
}

/// Pools of an sriovdp config over the tree at `root`.
fn sriovdp_pools(root: &Path, json: &str) -> Pools {
    let topo = discover(root).unwrap();
    let defs = sriovdp::parse(json).unwrap().pools;
    Pools::discover(&topo, &defs).unwrap()
}

/// The device ids of `resource`.
fn ids(pools: &Pools, resource: &str) -> Vec<String> {
    pools
        .pool(resource)
        .unwrap_or_else(|| panic!("no pool {resource}"))
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

/// One netDevice resource `r` with `selectors` (JSON).
fn net(selectors: &str) -> String {
    format!(r#"{{"resourceList": [{{"resourceName": "r", "selectors": {selectors}}}]}}"#)
}

const R: &str = "intel.com/r";

/// The capture's network functions: igb PF 00:05.0 (eth1, no VF enabled),
/// igb PF 13:00.0 (eth2) with VFs 13:10.0 (eth3) and 13:10.2 (eth4),
/// virtio-net 31:00.0 (eth0).
#[test]
fn sriovdp_selectors_on_the_capture() {
    let root = capture_root();
    let cases: &[(&str, &[&str])] = &[
        // Network functions, but never a PF with VFs enabled.
        (
            "{}",
            &[
                "0000:00:05.0",
                "0000:13:10.0",
                "0000:13:10.2",
                "0000:31:00.0",
            ],
        ),
        (
            r#"{"vendors": ["8086"]}"#,
            &["0000:00:05.0", "0000:13:10.0", "0000:13:10.2"],
        ),
        (r#"{"vendors": ["0x8086"]}"#, &[]),
        (
            r#"{"devices": ["10ca"]}"#,
            &["0000:13:10.0", "0000:13:10.2"],
        ),
        (r#"{"devices": ["10CA"]}"#, &[]),
        (r#"{"drivers": ["virtio-pci"]}"#, &["0000:31:00.0"]),
        (
            r#"{"pciAddresses": ["0000:13:10.2", "0000:14:00.0"]}"#,
            &["0000:13:10.2"],
        ),
        // A VF's PF name is its PF's netdev; a PF's its own.
        (
            r#"{"pfNames": ["eth2"]}"#,
            &["0000:13:10.0", "0000:13:10.2"],
        ),
        (r#"{"pfNames": ["ETH2#1"]}"#, &["0000:13:10.2"]),
        (r#"{"pfNames": ["eth2#0-0"]}"#, &["0000:13:10.0"]),
        (r#"{"pfNames": ["eth1"]}"#, &["0000:00:05.0"]),
        (r#"{"pfNames": ["eth1#0"]}"#, &[]),
        (r#"{"pfNames": ["eth3"]}"#, &[]),
        (r#"{"rootDevices": ["0000:13:00.0#0"]}"#, &["0000:13:10.0"]),
        (
            r#"{"rootDevices": ["0000:13:00.0"]}"#,
            &["0000:13:10.0", "0000:13:10.2"],
        ),
        (r#"{"rootDevices": ["0000:31:00.0"]}"#, &["0000:31:00.0"]),
        (
            r#"{"linkTypes": ["ether"], "drivers": ["igbvf"]}"#,
            &["0000:13:10.0", "0000:13:10.2"],
        ),
        (r#"{"linkTypes": ["infiniband"]}"#, &[]),
        (r#"{"isRdma": true}"#, &[]),
        // Selectors combine as a conjunction; a list is a union.
        (
            r#"{"vendors": ["8086"], "drivers": ["igb"]}"#,
            &["0000:00:05.0"],
        ),
        (
            r#"[{"pfNames": ["eth2#1"]}, {"drivers": ["virtio-pci"]}, {"pciAddresses": ["0000:13:10.2"]}]"#,
            &["0000:13:10.2", "0000:31:00.0"],
        ),
    ];
    for (selectors, want) in cases {
        let pools = sriovdp_pools(&root, &net(selectors));
        assert_eq!(ids(&pools, R), *want, "selectors {selectors}");
    }
    // No processing accelerator in the capture: the pool is listed empty.
    let pools = sriovdp_pools(
        &root,
        r#"{"resourceList": [{"resourceName": "a", "deviceType": "accelerator", "selectors": {}}]}"#,
    );
    assert!(ids(&pools, "intel.com/a").is_empty());
    assert_eq!(pools.snapshot()["intel.com/a"], vec![]);
}

/// The hand-written edge2s tree: accelerators, InfiniBand, RDMA (hardware
/// and soft-RoCE), NUMA.
#[test]
fn selectors_on_the_edge2s_tree() {
    let dir = edge2s::tree().build().unwrap();
    let (a, v0, v1, h, e, q) = (
        edge2s::A,
        edge2s::V0,
        edge2s::V1,
        edge2s::H,
        edge2s::E,
        edge2s::Q,
    );
    let cases: &[(&str, &[&str])] = &[
        ("{}", &[a, v0, v1, h, e, q]),
        // Hardware RDMA only, as the plugin counts it (rxe0 on eth3 is not).
        (r#"{"isRdma": true}"#, &[h, q]),
        (r#"{"linkTypes": ["infiniband"]}"#, &[h]),
        (r#"{"pfNames": ["eth1#1"]}"#, &[v1]),
        (r#"{"pfNames": ["eth1#0,1"]}"#, &[v0, v1]),
        (r#"{"pfNames": ["ib0"]}"#, &[h]),
    ];
    for (selectors, want) in cases {
        let pools = sriovdp_pools(dir.path(), &net(selectors));
        assert_eq!(ids(&pools, R), *want, "selectors {selectors}");
    }
    let accel = |sel: &str| {
        let json = format!(
            r#"{{"resourceList": [{{"resourceName": "a", "deviceType": "accelerator", "selectors": {sel}}}]}}"#
        );
        ids(&sriovdp_pools(dir.path(), &json), "intel.com/a")
    };
    assert_eq!(
        accel("{}"),
        [edge2s::C, edge2s::F],
        "class 12, whatever Griffin's kind"
    );
    assert_eq!(accel(r#"{"drivers": ["xdma"]}"#), [edge2s::F]);
    // netDevice keys are ignored for accelerators, as the plugin does.
    assert_eq!(accel(r#"{"pfNames": ["nothing"]}"#), [edge2s::C, edge2s::F]);

    // Griffin's own pools: kinds, NUMA nodes, soft-RoCE counts as RDMA.
    let topo = discover(dir.path()).unwrap();
    let spec = |toml: &str| -> Pools {
        let c = crate::config::Config::parse(toml, crate::config::Format::Toml).unwrap();
        let (defs, _) = defs_from_config(&c, None).unwrap();
        Pools::discover(&topo, &defs).unwrap()
    };
    let p = spec("[[pools]]\nresource = \"example.com/rdma\"\nis_rdma = true\n");
    assert_eq!(ids(&p, "example.com/rdma"), [h, e, q]);
    let p = spec("[[pools]]\nresource = \"example.com/n0\"\nnuma_nodes = [0]\nkinds = [\"nic-vf\", \"accelerator\", \"fpga\"]\n");
    assert_eq!(ids(&p, "example.com/n0"), [v0, v1, edge2s::C, edge2s::F]);
    let p = spec("[[pools]]\nresource = \"example.com/nvme\"\nkinds = [\"nvme\"]\n");
    assert_eq!(
        ids(&p, "example.com/nvme"),
        [edge2s::N, edge2s::MV],
        "the NVMe PF with a VF enabled is not pooled"
    );
}

/// VF ranges on a PF with 8 VFs.
#[test]
fn vf_ranges_pick_vfs_by_index() {
    let dir = vf_farm(1, 2, 8).build().unwrap();
    let pf0 = farm_pf_netdev(0, 0);
    let pick = |sel: &str| -> Vec<u32> {
        let pools = sriovdp_pools(dir.path(), &net(sel));
        ids(&pools, R)
            .iter()
            .map(|id| {
                (0..8)
                    .find(|v| farm_vf(0, 0, *v) == *id)
                    .expect("a VF of PF 0")
            })
            .collect()
    };
    assert_eq!(
        pick(&format!(r#"{{"pfNames": ["{pf0}#0-3"]}}"#)),
        [0, 1, 2, 3]
    );
    assert_eq!(
        pick(&format!(r#"{{"pfNames": ["{pf0}#1,3-5"]}}"#)),
        [1, 3, 4, 5]
    );
    assert_eq!(pick(&format!(r#"{{"pfNames": ["{pf0}#7,0"]}}"#)), [0, 7]);
    let root = farm_pf(0, 0);
    assert_eq!(
        pick(&format!(r#"{{"rootDevices": ["{root}#6-9"]}}"#)),
        [6, 7]
    );
    // Both PFs' VFs without a range.
    let pools = sriovdp_pools(dir.path(), &net(r#"{"devices": ["10ca"]}"#));
    assert_eq!(ids(&pools, R).len(), 16);
}

#[test]
fn a_device_in_two_pools_names_both() {
    let dir = edge2s::tree().build().unwrap();
    let topo = discover(dir.path()).unwrap();
    let json = r#"{"resourceList": [
        {"resourceName": "a", "selectors": {"drivers": ["igbvf"]}},
        {"resourceName": "b", "selectors": {"pfNames": ["eth1#1"]}}]}"#;
    let defs = sriovdp::parse(json).unwrap().pools;
    let e = Pools::discover(&topo, &defs).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "device {} is selected by two pools: intel.com/a (resourceList[0]) and intel.com/b (resourceList[1])",
            edge2s::V1
        )
    );
    let mut twice = defs.clone();
    twice[1].resource = "intel.com/a".into();
    let e = Pools::discover(&topo, &twice).unwrap_err().to_string();
    assert!(
        e.starts_with("resource intel.com/a is defined twice"),
        "{e}"
    );
}

/// Writes `text` at `rel` below `root`.
fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn health_and_host_interfaces() {
    let mut t = edge2s::tree();
    t.netdev_attr("eth1", "operstate", "down");
    t.netdev_attr("eth4", "operstate", "up");
    let dir = t.build().unwrap();
    // eth0 (A) carries the default route: in use by the host.
    write(
        dir.path(),
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
         eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
    );
    let pools = sriovdp_pools(dir.path(), &net("{}"));
    let snap = pools.snapshot();
    let got: Vec<(&str, bool)> = snap[R].iter().map(|d| (d.id.as_str(), d.healthy)).collect();
    assert_eq!(
        got,
        [
            (edge2s::V0, false),
            (edge2s::V1, false),
            (edge2s::H, true),
            (edge2s::E, true),
            (edge2s::Q, true)
        ],
        "A holds the default route; the VFs' PF link is down"
    );
    let v0 = pools.pool(R).unwrap().device(edge2s::V0).unwrap();
    assert_eq!(
        v0.unhealthy.as_deref(),
        Some("its PF 0000:13:00.0 link eth1 is down")
    );
    // NUMA: V0 on node 0; E's from its local CPUs (node 3).
    assert_eq!(snap[R][0].numa_node, Some(0));
    assert_eq!(snap[R][3].numa_node, Some(3));
    // excludeTopology sends none.
    let pools = sriovdp_pools(
        dir.path(),
        r#"{"resourceList": [{"resourceName": "r", "excludeTopology": true, "selectors": {}}]}"#,
    );
    assert!(pools.snapshot()[R].iter().all(|d| d.numa_node.is_none()));
    // A GPU with no driver is listed, unhealthy.
    let topo = discover(dir.path()).unwrap();
    let c = crate::config::Config::parse(
        "[[pools]]\nresource = \"nvidia.com/gpu\"\nkinds = [\"gpu\"]\n",
        crate::config::Format::Toml,
    )
    .unwrap();
    let pools = Pools::discover(&topo, &defs_from_config(&c, None).unwrap().0).unwrap();
    let g = &pools.pool("nvidia.com/gpu").unwrap().devices[0];
    assert_eq!((g.id.as_str(), g.healthy), (edge2s::G, false));
    assert_eq!(g.unhealthy.as_deref(), Some("no driver bound"));
    // A fault of a device with a driver (a GPU's critical XID) makes it
    // unhealthy, with the fault as the reason; the others stay healthy.
    let faults = [(
        griffin_devices::parse::pci_address(edge2s::E).unwrap(),
        "critical XID 79".to_owned(),
    )]
    .into();
    let pools =
        Pools::discover_with_faults(&topo, &sriovdp::parse(&net("{}")).unwrap().pools, &faults)
            .unwrap();
    let e = pools.pool(R).unwrap().device(edge2s::E).unwrap();
    assert_eq!(
        (e.healthy, e.unhealthy.as_deref()),
        (false, Some("critical XID 79"))
    );
    assert!(pools.pool(R).unwrap().device(edge2s::H).unwrap().healthy);
}

/// A vfio-pci VF: the plugin's variables and VFIO nodes, field by field.
#[test]
fn allocate_a_vfio_vf() {
    use griffin_tests::sysfs::Function;
    let mut t = griffin_tests::sysfs::TreeBuilder::new();
    t.cpu(0, 0, 0, 0, &[0])
        .node(0, &[0], 1 << 20, 1 << 19, &[10]);
    t.root_bus("pci0000:00", Some(0));
    t.pci(Function::bridge("0000:00:01.0", "pci0000:00"));
    t.pci(
        Function::new("0000:01:00.0", "0000:00:01.0", 0x020000, 0x8086, 0x1572)
            .driver("i40e")
            .sriov(4, 2),
    );
    for (vf, driver, group) in [
        ("0000:01:02.0", "vfio-pci", 42),
        ("0000:01:02.1", "iavf", 43),
    ] {
        t.pci(
            Function::new(vf, "0000:00:01.0", 0x020000, 0x8086, 0x154c)
                .driver(driver)
                .vf_of("0000:01:00.0")
                .iommu_group(group),
        );
    }
    t.netdev("ens1f0", "0000:01:00.0");
    let dir = t.build().unwrap();
    let pools = sriovdp_pools(
        dir.path(),
        r#"{"resourceList": [{"resourceName": "intel_sriov_dpdk",
            "additionalInfo": {"*": {"tag": "a&b"}, "0000:01:02.0": {"port": "1"}},
            "selectors": {"devices": ["154c"]}}]}"#,
    );
    let r = "intel.com/intel_sriov_dpdk";
    let c = pools.allocate(r, &["0000:01:02.0".to_owned()]).unwrap();
    assert_eq!(
        c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK"],
        "0000:01:02.0"
    );
    assert_eq!(
        c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"],
        r#"{"0000:01:02.0":{"extra":{"port":"1","tag":"a\u0026b"},"generic":{"deviceID":"0000:01:02.0"},"vfio":{"dev-mount":"/dev/vfio/42","mount":"/dev/vfio/vfio"}}}"#
    );
    assert_eq!(c.envs.len(), 2);
    let nodes: Vec<(&str, &str, &str)> = c
        .devices
        .iter()
        .map(|d| {
            (
                d.host_path.as_str(),
                d.container_path.as_str(),
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/vfio/vfio", "/dev/vfio/vfio", "rw"),
            ("/dev/vfio/42", "/dev/vfio/42", "rw")
        ]
    );
    assert!(c.mounts.is_empty() && c.annotations.is_empty());
    // Two devices: addresses in the order asked, /dev/vfio/vfio once.
    let both = ["0000:01:02.1".to_owned(), "0000:01:02.0".to_owned()];
    let c = pools.allocate(r, &both).unwrap();
    assert_eq!(
        c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK"],
        "0000:01:02.1,0000:01:02.0"
    );
    let info: serde_json::Value =
        serde_json::from_str(&c.envs["PCIDEVICE_INTEL_COM_INTEL_SRIOV_DPDK_INFO"]).unwrap();
    assert_eq!(
        info["0000:01:02.1"],
        serde_json::json!({"extra": {"tag": "a&b"}, "generic": {"deviceID": "0000:01:02.1"}})
    );
    assert_eq!(c.devices.len(), 2);
    // Unknown ids and resources are named.
    let e = pools.allocate(r, &["0000:01:03.0".to_owned()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{r}: no device 0000:01:03.0 in the pool")
    );
    let e = pools.allocate("intel.com/other", &[]).unwrap_err();
    assert_eq!(e.to_string(), "no pool serves resource intel.com/other");
}

/// RDMA: sriovdp pools with isRdma, Griffin pools for any RDMA device
/// (soft-RoCE too).
#[test]
fn allocate_rdma_devices() {
    let mut t = edge2s::tree();
    t.char_dev(
        Some(edge2s::H),
        "infiniband_verbs",
        "uverbs0",
        "infiniband/uverbs0",
        (231, 192),
        &[("ibdev", "mlx5_0")],
    )
    .char_dev(
        Some(edge2s::H),
        "infiniband_mad",
        "umad0",
        "infiniband/umad0",
        (231, 0),
        &[("ibdev", "mlx5_0")],
    )
    .char_dev(
        None,
        "infiniband_verbs",
        "uverbs1",
        "infiniband/uverbs1",
        (231, 193),
        &[("ibdev", "rxe0")],
    )
    .char_dev(None, "misc", "rdma_cm", "infiniband/rdma_cm", (10, 58), &[]);
    let dir = t.build().unwrap();
    // The classes' own attribute, beside their devices, as on a live node
    // (found by the guest test bed: it was read as a device).
    for class in ["infiniband_verbs", "infiniband_mad"] {
        std::fs::write(
            dir.path().join("sys/class").join(class).join("abi_version"),
            "6\n",
        )
        .unwrap();
    }
    // A child device with attribute files (virtio-pci's `virtio0/device`),
    // also found by the guest test bed.
    let h = dir.path().join("sys/bus/pci/devices").join(edge2s::H);
    let child = std::fs::canonicalize(h).unwrap().join("virtio0");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(child.join("device"), "0x0001\n").unwrap();
    let pools = sriovdp_pools(
        dir.path(),
        r#"{"resourceList": [{"resourceName": "ib", "selectors": {"isRdma": true, "linkTypes": ["infiniband"]}}]}"#,
    );
    let c = pools
        .allocate("intel.com/ib", &[edge2s::H.to_owned()])
        .unwrap();
    let paths: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/dev/infiniband/uverbs0",
            "/dev/infiniband/umad0",
            "/dev/infiniband/rdma_cm"
        ]
    );
    let info: serde_json::Value =
        serde_json::from_str(&c.envs["PCIDEVICE_INTEL_COM_IB_INFO"]).unwrap();
    assert_eq!(
        info[edge2s::H]["rdma"],
        serde_json::json!({"rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": "mlx5_0",
                           "umad": "/dev/infiniband/umad0", "uverbs": "/dev/infiniband/uverbs0"})
    );
    // Without isRdma the plugin hands no RDMA device.
    let pools = sriovdp_pools(dir.path(), &net(r#"{"linkTypes": ["infiniband"]}"#));
    let c = pools.allocate(R, &[edge2s::H.to_owned()]).unwrap();
    assert!(c.devices.is_empty());
    // A Griffin pool: soft-RoCE rxe0 on E's netdev.
    let topo = discover(dir.path()).unwrap();
    let cfg = crate::config::Config::parse(
        "[[pools]]\nresource = \"example.com/roce\"\nis_rdma = true\npci_addresses = [\"0000:31:00.0\"]\n",
        crate::config::Format::Toml,
    )
    .unwrap();
    let pools = Pools::discover(&topo, &defs_from_config(&cfg, None).unwrap().0).unwrap();
    let c = pools
        .allocate("example.com/roce", &[edge2s::E.to_owned()])
        .unwrap();
    let paths: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        paths,
        ["/dev/infiniband/uverbs1", "/dev/infiniband/rdma_cm"]
    );
}

/// GPUs, FPGAs and accelerators in Griffin pools: their device nodes.
#[test]
fn allocate_gpus_and_accelerators() {
    use griffin_tests::sysfs::Function;
    let mut t = edge2s::tree();
    // A second GPU, bound to nvidia, with its minor in procfs.
    t.pci(Function::bridge("0000:10:02.0", "pci0000:10"));
    t.pci(Function::new("0000:1a:00.0", "0000:10:02.0", 0x030200, 0x10de, 0x20b0).driver("nvidia"));
    t.char_dev(
        Some(edge2s::F),
        "xdma",
        "xdma0_user",
        "xdma0_user",
        (240, 0),
        &[],
    )
    .char_dev(
        Some(edge2s::F),
        "xdma",
        "xdma0_h2c_0",
        "xdma0_h2c_0",
        (240, 1),
        &[],
    )
    .char_dev(
        Some(edge2s::C),
        "accel",
        "accel0",
        "accel/accel0",
        (261, 0),
        &[],
    );
    let dir = t.build().unwrap();
    write(
        dir.path(),
        "proc/driver/nvidia/gpus/0000:1a:00.0/information",
        "Model: \t\t NVIDIA A100\nDevice Minor: \t 3\n",
    );
    write(
        dir.path(),
        "proc/devices",
        "Character devices:\n195 nvidia\n508 nvidia-uvm\n\nBlock devices:\n",
    );
    let mut topo = discover(dir.path()).unwrap();
    let cfg = crate::config::Config::parse(
        "[[pools]]\nresource = \"nvidia.com/gpu\"\nkinds = [\"gpu\"]\nvendors = [\"10de\"]\n\
         [[pools]]\nresource = \"example.com/accel\"\nkinds = [\"accelerator\", \"fpga\"]\n",
        crate::config::Format::Toml,
    )
    .unwrap();
    let defs = defs_from_config(&cfg, None).unwrap().0;
    let pools = Pools::discover(&topo, &defs).unwrap();
    let gpu = "0000:1a:00.0".to_owned();
    let c = pools
        .allocate("nvidia.com/gpu", std::slice::from_ref(&gpu))
        .unwrap();
    let paths: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/dev/nvidia3",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools"
        ]
    );
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], "3", "no NVML: the minor");
    assert_eq!(c.envs["PCIDEVICE_NVIDIA_COM_GPU"], gpu);
    // With NVML's UUID, NVIDIA_VISIBLE_DEVICES carries it.
    let d = topo
        .devices
        .iter_mut()
        .find(|d| d.pci_address.to_string() == gpu)
        .unwrap();
    d.gpu = Some(GpuInfo {
        name: "A100".into(),
        uuid: "GPU-0b9e5a1c".into(),
        memory_bytes: 1 << 30,
        nvlink_peers: vec![],
        minor: Some(5),
    });
    let pools = Pools::discover(&topo, &defs).unwrap();
    let c = pools.allocate("nvidia.com/gpu", &[gpu]).unwrap();
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], "GPU-0b9e5a1c");
    assert_eq!(c.devices[0].host_path, "/dev/nvidia5", "NVML's minor first");
    // The driverless GPU has neither: refused, naming it.
    let e = pools
        .allocate("nvidia.com/gpu", &[edge2s::G.to_owned()])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "nvidia.com/gpu: device {}: an NVIDIA GPU whose UUID",
            edge2s::G
        )),
        "{e}"
    );
    // Accelerators: their character devices, by DEVNAME.
    let c = pools
        .allocate(
            "example.com/accel",
            &[edge2s::C.to_owned(), edge2s::F.to_owned()],
        )
        .unwrap();
    let paths: Vec<&str> = c.devices.iter().map(|d| d.host_path.as_str()).collect();
    assert_eq!(
        paths,
        ["/dev/accel/accel0", "/dev/xdma0_h2c_0", "/dev/xdma0_user"]
    );
    assert!(!c.envs.contains_key("NVIDIA_VISIBLE_DEVICES"));
}

/// Free CPUs per node: node `n` has `free[n]`.
fn free(f: &[(u32, usize)]) -> BTreeMap<u32, usize> {
    f.iter().copied().collect()
}

fn strings(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The VFs of a farm of `nodes` NUMA nodes × `pfs` PFs × `vfs` VFs in one
/// pool (in memory: writing hundreds of functions as a tree is slow).
fn farm(nodes: u32, pfs: u32, vfs: u32) -> Pools {
    let topo = vf_farm_topology(nodes, pfs, vfs);
    let defs = sriovdp::parse(&net(r#"{"devices": ["10ca"]}"#))
        .unwrap()
        .pools;
    Pools::build(&topo, &defs, &HostFacts::default()).unwrap()
}

/// The in-memory farm is what discovery finds in the written one.
#[test]
fn the_farm_in_memory_is_the_farm_discovered() {
    let dir = vf_farm(2, 2, 3).build().unwrap();
    let mut found = serde_json::to_value(discover(dir.path()).unwrap()).unwrap();
    let mut built = serde_json::to_value(vf_farm_topology(2, 2, 3)).unwrap();
    for v in [&mut found, &mut built] {
        for key in ["root", "caches", "cpus", "numa_nodes"] {
            v[key] = serde_json::Value::Null;
        }
        for d in v["devices"].as_array_mut().unwrap() {
            for key in ["class_name", "subsystem_vendor", "subsystem_device"] {
                d[key] = serde_json::Value::Null;
            }
            if d["kind"] == "bridge" {
                for key in ["class", "vendor", "device", "driver", "numa_source"] {
                    d[key] = serde_json::Value::Null;
                }
            }
        }
    }
    assert_eq!(found, built);
}

#[test]
fn preferences_follow_the_pcie_tree() {
    let pools = farm(2, 2, 4);
    let all = ids(&pools, R);
    assert_eq!(all.len(), 16);
    let f = free(&[(0, 2), (1, 2)]);
    // Two of one PF (PIX), on node 0 (equal free CPUs: address order).
    let p = pools.prefer(R, &all, &[], 2, &f).unwrap();
    assert_eq!(strings(&p.ids), [farm_vf(0, 0, 0), farm_vf(0, 0, 1)]);
    assert_eq!(p.cost, 20);
    // Node 1 has more free exclusive CPUs: the same shape there.
    let p = pools
        .prefer(R, &all, &[], 2, &free(&[(0, 1), (1, 2)]))
        .unwrap();
    assert_eq!(strings(&p.ids), [farm_vf(1, 0, 0), farm_vf(1, 0, 1)]);
    assert!(
        p.reason
            .contains("2 on NUMA node 1 (2 free exclusive CPUs)"),
        "{}",
        p.reason
    );
    // Must-include a VF of node 1's second PF: the others come from below
    // the same switch (every VF there is PIX from it, the first PF's VFs
    // included: one switch crossed), never from node 0.
    let must = [farm_vf(1, 1, 2)];
    let p = pools.prefer(R, &all, &must, 3, &f).unwrap();
    assert_eq!(
        strings(&p.ids),
        [farm_vf(1, 0, 0), farm_vf(1, 0, 1), farm_vf(1, 1, 2)]
    );
    assert_eq!(p.cost, 60);
    // Six: one PF's four VFs and two of its switch neighbour (PIX: one
    // switch), never across NUMA nodes.
    let p = pools.prefer(R, &all, &[], 6, &f).unwrap();
    assert!(
        p.ids.iter().all(|id| id.starts_with("0000:1")),
        "{:?}",
        p.ids
    );
    assert_eq!(p.cost, 15 * 20);
    // Only what is available is chosen.
    let avail = [farm_vf(0, 0, 0), farm_vf(0, 1, 0), farm_vf(1, 0, 0)];
    let p = pools.prefer(R, &avail, &[], 2, &f).unwrap();
    assert_eq!(strings(&p.ids), [farm_vf(0, 0, 0), farm_vf(0, 1, 0)]);
    assert_eq!(p.method, Method::Exhaustive);
}

#[test]
fn preference_errors_name_what_is_wrong() {
    let pools = farm(2, 2, 2);
    let all = ids(&pools, R);
    let f = free(&[]);
    let e = |r: Result<Preference, PoolError>| r.unwrap_err().to_string();
    assert_eq!(
        e(pools.prefer(R, &all[..2], &[], 3, &f)),
        format!("{R}: 3 devices wanted, 2 available")
    );
    assert_eq!(
        e(pools.prefer(R, &all[..2], &[all[3].clone()], 2, &f)),
        format!("{R}: must-include device {} is not available", all[3])
    );
    assert_eq!(
        e(pools.prefer(R, &["0000:99:00.0".into()], &[], 1, &f)),
        format!("{R}: no device 0000:99:00.0 in the pool")
    );
    assert_eq!(
        e(pools.prefer(R, &all, &all[..3], 2, &f)),
        format!("{R}: 3 must-include devices, more than the 2 wanted")
    );
    assert_eq!(
        e(pools.prefer("intel.com/x", &all, &[], 1, &f)),
        "no pool serves resource intel.com/x"
    );
    assert!(pools.prefer(R, &all, &[], 0, &f).unwrap().ids.is_empty());
}

/// The PCIe trees of the fixtures are hierarchies: every endpoint of the
/// edge2s tree (unknown NUMA nodes included) and of the capture, and the
/// farm.
#[test]
fn fixture_pools_are_hierarchies() {
    let dir = edge2s::tree().build().unwrap();
    for root in [dir.path().to_owned(), capture_root()] {
        let topo = discover(&root).unwrap();
        let c = crate::config::Config::parse(
            "[[pools]]\nresource = \"example.com/all\"\n",
            crate::config::Format::Toml,
        )
        .unwrap();
        let pools = Pools::discover(&topo, &defs_from_config(&c, None).unwrap().0).unwrap();
        let p = pools.pool("example.com/all").unwrap();
        assert!(p.devices.len() >= 9, "{}", root.display());
        assert!(p.hierarchical(), "{}", root.display());
    }
    assert!(farm(3, 2, 5).pool(R).unwrap().hierarchical());
}

/// 256 VFs: the hierarchy search answers (a large pool is searched over its
/// clusters, not combination by combination) and agrees with the shape.
#[test]
fn large_pools_are_searched_over_their_hierarchy() {
    let pools = farm(2, 4, 32);
    let all = ids(&pools, R);
    assert_eq!(all.len(), 256);
    let f = free(&[(0, 1), (1, 2)]);
    let p = pools.prefer(R, &all, &[], 8, &f).unwrap();
    assert_eq!(p.method, Method::Hierarchy);
    assert_eq!(p.ids, (0..8).map(|v| farm_vf(1, 0, v)).collect::<Vec<_>>());
    assert_eq!(p.cost, 28 * 20);
    // A must-include device on node 0 keeps the whole set below its
    // switch (all PIX), lowest addresses first.
    let p = pools.prefer(R, &all, &[farm_vf(0, 2, 5)], 40, &f).unwrap();
    assert_eq!(p.method, Method::Hierarchy);
    assert!(p.ids.contains(&farm_vf(0, 2, 5)));
    let mut want: Vec<String> = (0..32).map(|v| farm_vf(0, 0, v)).collect();
    want.extend((0..7).map(|v| farm_vf(0, 1, v)));
    want.push(farm_vf(0, 2, 5));
    assert_eq!(p.ids, want);
    assert_eq!(p.cost, (40 * 39 / 2) * 20);
    // Across the two NUMA nodes once one node cannot hold the set: 128
    // PIX pairs on each side... the larger part on the node with more free
    // CPUs.
    let p = pools.prefer(R, &all, &[], 130, &f).unwrap();
    let on_node1 = p.ids.iter().filter(|id| id.starts_with("0000:3")).count();
    assert_eq!(on_node1, 128);
    assert_eq!(p.cost, (128 * 127 / 2) * 20 + 2 * 128 * 50 + 20);
}

/// Free CPUs per NUMA node from the allocator's state.
#[test]
fn free_cpus_come_from_the_allocator_state() {
    let dir = edge2s::tree().build().unwrap();
    let topo = discover(dir.path()).unwrap();
    let mut state = crate::alloc::State::new(crate::cpuset::CpuSet::from_ids([0]));
    let f = crate::alloc::free_cpus_by_numa(&topo, &state);
    assert_eq!(f, free(&[(0, 1), (1, 2), (2, 2), (3, 2)]));
    let req = crate::alloc::Request {
        cpus: 2,
        policy: crate::alloc::Policy::SingleNumaNode,
        ..Default::default()
    };
    let placement = crate::alloc::allocate(&topo, &state, &req).unwrap();
    let node = topo
        .numa_nodes
        .iter()
        .find(|n| placement.cpus.iter().all(|c| n.cpus.contains(c)))
        .unwrap()
        .id;
    state.commit("a1".into(), req, placement).unwrap();
    let after = crate::alloc::free_cpus_by_numa(&topo, &state);
    assert_eq!(after[&node], f[&node] - 2);
}

/// The Griffin pool spec in the daemon config: errors name the key.
#[test]
fn pool_specs_are_checked_by_key() {
    use crate::config::{Config, Format};
    let bad = [
        (
            "[[pools]]\nresource = \"gpu\"\n",
            "pools[0].resource: \"gpu\" is not vendor.com/name",
        ),
        (
            "[[pools]]\nresource = \"Ex.com/gpu\"\n",
            "pools[0].resource: \"Ex.com\" is not a resource prefix",
        ),
        (
            "[[pools]]\nresource = \"ex.com/g-p\"\n",
            "pools[0].resource: \"g-p\" is not a resource name",
        ),
        (
            "[[pools]]\nresource = \"ex.com/a\"\nvendors = [\"0x10de\"]\n",
            "pools[0].vendors[0]: \"0x10de\"",
        ),
        (
            "[[pools]]\nresource = \"ex.com/a\"\nkinds = [\"bridge\"]\n",
            "pools[0].kinds[0]: bridges are never pooled",
        ),
        (
            "[[pools]]\nresource = \"ex.com/a\"\nkinds = [\"tpu\"]\n",
            "pools[0].kinds[0]",
        ),
        (
            "[[pools]]\nresource = \"ex.com/a\"\npf_names = [\"eth1#2-1\"]\n",
            "pools[0].pf_names[0]",
        ),
        (
            "[[pools]]\nresource = \"ex.com/a\"\npci_addresses = [\"13:10.0\"]\n",
            "pools[0].pci_addresses[0]",
        ),
        ("[[pools]]\nresource = \"ex.com/a\"\ncolour = 1\n", "colour"),
        (
            "[[pools]]\nresource = \"ex.com/a\"\n[[pools]]\nresource = \"ex.com/a\"\n",
            "pools[1].resource: ex.com/a is also pools[0]",
        ),
    ];
    for (text, want) in bad {
        let e = Config::parse(text, Format::Toml).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    let c = Config::parse(
        "sriovdp_config = \"/etc/pcidp/config.json\"\n[[pools]]\nresource = \"ex.com/a\"\n\
         pf_names = [\"eth1#0-3\"]\nnuma_nodes = [1]\nis_rdma = false\n",
        Format::Toml,
    )
    .unwrap();
    assert_eq!(c.pools[0].pf_names[0].to_string(), "eth1#0-3");
    assert_eq!(c.sriovdp_config, PathBuf::from("/etc/pcidp/config.json"));
}

/// The sriovdp config named in the daemon config is read, its warnings
/// carried, its refusal naming the file and the field.
#[test]
fn the_sriovdp_file_is_loaded_from_the_config() {
    use crate::config::{Config, Format};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, net(r#"{"drivers": ["igbvf"], "auxTypes": ["sf"]}"#)).unwrap();
    let c = Config::parse(
        &format!(
            "sriovdp_config = {:?}\n[[pools]]\nresource = \"ex.com/a\"\n",
            path.display().to_string()
        ),
        Format::Toml,
    )
    .unwrap();
    let (defs, warnings) = defs_from_config(&c, None).unwrap();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[1].resource, R);
    assert_eq!(
        defs[1].origin,
        format!("{}: resourceList[0]", path.display())
    );
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].ends_with("resourceList[0].selectors.auxTypes: ignored (not a selector of the plugin for this device type)"), "{warnings:?}");
    std::fs::write(&path, net(r#"{"vdpaType": "vhost"}"#)).unwrap();
    let e = defs_from_config(&c, None).unwrap_err();
    assert_eq!(
        griffin_devices::Chain(&e).to_string(),
        format!(
            "sriov-network-device-plugin config {}: resourceList[0].selectors.vdpaType: not supported by Griffin (it changes which devices are selected)",
            path.display()
        )
    );
    let e = defs_from_config(&c, Some(&dir.path().join("missing.json"))).unwrap_err();
    assert!(
        griffin_devices::Chain(&e)
            .to_string()
            .contains("missing.json"),
        "{e}"
    );
}
