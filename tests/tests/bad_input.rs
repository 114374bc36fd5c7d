//! Truncated and garbage sysfs trees: discovery fails with an error naming
//! the offending file, never panics, and tolerates what real nodes do show
//! (a VF whose PF went away).

use std::cell::Cell;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use griffin_devices::{discover, DiscoveryError, Topology};
use griffin_tests::sysfs::{Function, TreeBuilder};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tempfile::TempDir;

const PF: &str = "0000:01:00.0";
const VF: &str = "0000:01:10.0";
const NVME: &str = "0000:02:00.0";
const PF_DIR: &str = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";
const VF_DIR: &str = "sys/devices/pci0000:00/0000:00:01.0/0000:01:10.0";
const NVME_DIR: &str = "sys/devices/pci0000:00/0000:00:02.0/0000:02:00.0";

/// 4 CPUs (one socket, 2 cores × 2 threads) in 2 NUMA nodes; root bus 0 on
/// node 0 with a root port → NIC PF + one VF, and a root port → NVMe.
fn small() -> TempDir {
    let mut t = TreeBuilder::new();
    for id in 0..4 {
        t.cpu(id, 0, 0, id % 2, &[id % 2, id % 2 + 2]);
    }
    for core in 0..2 {
        t.cache(1, "Data", "32K", &[core, core + 2])
            .cache(2, "Unified", "1M", &[core, core + 2]);
    }
    t.cache(3, "Unified", "8M", &[0, 1, 2, 3]);
    t.node(0, &[0, 2], 1 << 20, 1 << 19, &[10, 20])
        .node(1, &[1, 3], 1 << 20, 1 << 19, &[20, 10]);
    t.isolated(&[3]).meminfo(3 << 20, 1 << 20);
    t.root_bus("pci0000:00", Some(0));
    t.pci(Function::new(
        "0000:00:00.0",
        "pci0000:00",
        0x060000,
        0x8086,
        0x29c0,
    ))
    .pci(Function::bridge("0000:00:01.0", "pci0000:00"))
    .pci(Function::bridge("0000:00:02.0", "pci0000:00"))
    .pci(
        Function::new(PF, "0000:00:01.0", 0x020000, 0x8086, 0x10c9)
            .driver("igb")
            .sriov(7, 1)
            .link("5.0 GT/s PCIe", 4, "5.0 GT/s PCIe", 4),
    )
    .pci(
        Function::new(VF, "0000:00:01.0", 0x020000, 0x8086, 0x10ca)
            .driver("igbvf")
            .vf_of(PF),
    )
    .pci(Function::new(NVME, "0000:00:02.0", 0x010802, 0x1b36, 0x0010).driver("nvme"));
    t.netdev("eth0", PF)
        .netdev("eth1", VF)
        .nvme("nvme0", NVME)
        .rdma("rdma0", PF, &["eth0"]);
    t.build().expect("write the small tree")
}

/// Runs discovery on a tree expected to be rejected, and checks that the
/// error's top-level message names `rel` (below the tree's root).
fn rejects(dir: &TempDir, rel: &str) -> DiscoveryError {
    let err = match discover(dir.path()) {
        Ok(_) => panic!("discovery accepted a tree with a bad {rel}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    let path = dir.path().join(rel);
    assert!(
        msg.contains(path.to_str().unwrap()),
        "error {msg:?} does not name {}",
        path.display()
    );
    err
}

fn write(dir: &TempDir, rel: &str, bytes: impl AsRef<[u8]>) {
    fs::write(dir.path().join(rel), bytes).unwrap();
}

fn ok(dir: &TempDir) -> Topology {
    discover(dir.path()).expect("discovery of a valid tree")
}

#[test]
fn the_small_tree_is_valid() {
    let dir = small();
    let topo = ok(&dir);
    assert_eq!(topo.cpus.len(), 4);
    assert_eq!(topo.numa_nodes.len(), 2);
    assert_eq!(topo.devices.len(), 6);
    assert_eq!(topo.matrix.devices().len(), 3);
    assert_eq!(topo.isolated_cpus.as_slice(), &[3]);
    assert!(topo.warnings.is_empty(), "{:?}", topo.warnings);
}

#[test]
fn empty_tree() {
    let dir = tempfile::tempdir().unwrap();
    let err = rejects(&dir, "sys/devices/system/cpu/online");
    assert!(matches!(err, DiscoveryError::Read { .. }), "{err:?}");
}

#[test]
fn root_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nothing-here");
    let err = discover(&gone).unwrap_err();
    assert!(err.to_string().contains(gone.to_str().unwrap()), "{err}");
}

#[test]
fn missing_cpu_online() {
    let dir = small();
    fs::remove_file(dir.path().join("sys/devices/system/cpu/online")).unwrap();
    rejects(&dir, "sys/devices/system/cpu/online");
}

#[test]
fn missing_cpu_topology_directory() {
    let dir = small();
    fs::remove_dir_all(dir.path().join("sys/devices/system/cpu/cpu3/topology")).unwrap();
    rejects(&dir, "sys/devices/system/cpu/cpu3/topology");
}

#[test]
fn garbage_online_cpulist() {
    for garbage in ["0-3,zz", "3-0", "0,,1", "0-99999999", "-1", "0-3:0/4"] {
        let dir = small();
        write(
            &dir,
            "sys/devices/system/cpu/online",
            format!("{garbage}\n"),
        );
        let err = rejects(&dir, "sys/devices/system/cpu/online");
        assert!(
            matches!(err, DiscoveryError::Parse { .. }),
            "{garbage}: {err:?}"
        );
    }
}

#[test]
fn no_cpu_online() {
    let dir = small();
    write(&dir, "sys/devices/system/cpu/online", "\n");
    rejects(&dir, "sys/devices/system/cpu/online");
}

#[test]
fn garbage_thread_siblings_and_cache_size() {
    let dir = small();
    write(
        &dir,
        "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
        "1,x\n",
    );
    rejects(
        &dir,
        "sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
    );
    let dir = small();
    write(
        &dir,
        "sys/devices/system/cpu/cpu0/cache/index1/size",
        "lots\n",
    );
    rejects(&dir, "sys/devices/system/cpu/cpu0/cache/index1/size");
}

#[test]
fn garbage_node_cpulist_and_meminfo() {
    let dir = small();
    write(&dir, "sys/devices/system/node/node1/cpulist", "1-\n");
    rejects(&dir, "sys/devices/system/node/node1/cpulist");
    let dir = small();
    write(
        &dir,
        "sys/devices/system/node/node0/meminfo",
        "Node 0 MemTotal: many kB\n",
    );
    rejects(&dir, "sys/devices/system/node/node0/meminfo");
    let dir = small();
    fs::remove_file(dir.path().join("sys/devices/system/node/node0/meminfo")).unwrap();
    rejects(&dir, "sys/devices/system/node/node0/meminfo");
}

#[test]
fn distance_row_of_wrong_length() {
    let dir = small();
    write(&dir, "sys/devices/system/node/node1/distance", "20 10 30\n");
    let err = rejects(&dir, "sys/devices/system/node/node1/distance");
    assert!(
        matches!(err, DiscoveryError::Inconsistent { .. }),
        "{err:?}"
    );
    let dir = small();
    write(&dir, "sys/devices/system/node/node0/distance", "10\n");
    rejects(&dir, "sys/devices/system/node/node0/distance");
}

#[test]
fn garbage_class_file() {
    let dir = small();
    write(&dir, &format!("{PF_DIR}/class"), "ethernet controller\n");
    let err = rejects(&dir, &format!("sys/bus/pci/devices/{PF}/class"));
    assert!(matches!(err, DiscoveryError::Parse { .. }), "{err:?}");
}

#[test]
fn empty_and_garbage_pci_attributes() {
    for (file, text) in [
        ("vendor", ""),
        ("device", "0xgggg\n"),
        ("numa_node", "zero\n"),
        ("local_cpulist", "0-1-2\n"),
        ("sriov_totalvfs", "-7\n"),
        ("current_link_speed", "fast\n"),
        ("max_link_width", "x16\n"),
        ("subsystem_vendor", "\n"),
    ] {
        let dir = small();
        write(&dir, &format!("{PF_DIR}/{file}"), text);
        rejects(&dir, &format!("sys/bus/pci/devices/{PF}/{file}"));
    }
}

#[test]
fn random_bytes_attribute() {
    // Not UTF-8: a required attribute and an optional one.
    let bytes = [0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x0a];
    for file in ["vendor", "numa_node"] {
        let dir = small();
        write(&dir, &format!("{NVME_DIR}/{file}"), bytes);
        let err = rejects(&dir, &format!("sys/bus/pci/devices/{NVME}/{file}"));
        assert!(matches!(err, DiscoveryError::Read { .. }), "{err:?}");
    }
    let dir = small();
    write(&dir, "sys/devices/system/cpu/cpu2/topology/core_id", bytes);
    rejects(&dir, "sys/devices/system/cpu/cpu2/topology/core_id");
    // Random bytes in config space are no error: the port type is unknown.
    let dir = small();
    write(&dir, &format!("{NVME_DIR}/config"), bytes);
    let topo = ok(&dir);
    assert_eq!(topo.devices.len(), 6);
}

#[test]
fn pci_entry_that_is_not_a_symlink() {
    let rel = format!("sys/bus/pci/devices/{NVME}");
    // A regular file …
    let dir = small();
    fs::remove_file(dir.path().join(&rel)).unwrap();
    write(&dir, &rel, "0000:02:00.0\n");
    let err = rejects(&dir, &rel);
    assert!(
        matches!(err, DiscoveryError::Inconsistent { .. }),
        "{err:?}"
    );
    // … or a copy of the device directory.
    let dir = small();
    fs::remove_file(dir.path().join(&rel)).unwrap();
    fs::create_dir(dir.path().join(&rel)).unwrap();
    for f in ["class", "vendor", "device"] {
        fs::copy(
            dir.path().join(NVME_DIR).join(f),
            dir.path().join(&rel).join(f),
        )
        .unwrap();
    }
    rejects(&dir, &rel);
}

#[test]
fn pci_entry_with_a_bad_name_or_target() {
    let dir = small();
    let bus = dir.path().join("sys/bus/pci/devices");
    symlink(
        "../../../devices/pci0000:00/0000:00:02.0/0000:02:00.0",
        bus.join("not-an-address"),
    )
    .unwrap();
    rejects(&dir, "sys/bus/pci/devices/not-an-address");
    // A link whose target ends in another function.
    let dir = small();
    let link = dir.path().join(format!("sys/bus/pci/devices/{NVME}"));
    fs::remove_file(&link).unwrap();
    symlink(
        "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0",
        &link,
    )
    .unwrap();
    rejects(&dir, &format!("sys/bus/pci/devices/{NVME}"));
    // A link out of the PCI hierarchy.
    let dir = small();
    let link = dir.path().join(format!("sys/bus/pci/devices/{NVME}"));
    fs::remove_file(&link).unwrap();
    symlink("../../../devices/virtual/misc/thing", &link).unwrap();
    rejects(&dir, &format!("sys/bus/pci/devices/{NVME}"));
}

#[test]
fn missing_pci_bus_directory() {
    let dir = small();
    fs::remove_dir_all(dir.path().join("sys/bus/pci/devices")).unwrap();
    rejects(&dir, "sys/bus/pci/devices");
}

#[test]
fn bad_physfn_link() {
    let dir = small();
    let link = dir.path().join(VF_DIR).join("physfn");
    fs::remove_file(&link).unwrap();
    symlink("../not-a-pf", &link).unwrap();
    rejects(&dir, &format!("sys/bus/pci/devices/{VF}/physfn"));
}

#[test]
fn vf_whose_pf_vanished_is_a_warning() {
    let dir = small();
    // The PF is hot-removed: its directory and bus entry go; the VF's physfn
    // link and the class links of the PF's netdev and RDMA device dangle.
    fs::remove_dir_all(dir.path().join(PF_DIR)).unwrap();
    fs::remove_file(dir.path().join(format!("sys/bus/pci/devices/{PF}"))).unwrap();
    let topo = ok(&dir);
    assert!(topo.device(PF.parse().unwrap()).is_none());
    let vf = topo
        .device(VF.parse().unwrap())
        .expect("the VF is still there");
    assert_eq!(vf.sriov.pf, Some(PF.parse().unwrap()));
    assert_eq!(vf.netdevs, ["eth1"]);
    assert_eq!(topo.warnings.len(), 1, "{:?}", topo.warnings);
    let w = &topo.warnings[0];
    assert!(w.contains(VF) && w.contains(PF), "{w}");
    let json = serde_json::to_value(&topo).unwrap();
    assert_eq!(json["warnings"][0], w.as_str());
}

#[test]
fn no_numa_directory_falls_back_to_proc_meminfo() {
    let dir = small();
    fs::remove_dir_all(dir.path().join("sys/devices/system/node")).unwrap();
    let topo = ok(&dir);
    assert_eq!(topo.numa_nodes.len(), 1);
    assert_eq!(topo.numa_nodes[0].cpus.as_slice(), &[0, 1, 2, 3]);
    assert_eq!(topo.numa_nodes[0].memory_bytes, 3 << 30);
    assert_eq!(topo.numa_nodes[0].free_bytes, 1 << 30);
    // … and then /proc/meminfo must be readable.
    fs::remove_file(dir.path().join("proc/meminfo")).unwrap();
    rejects(&dir, "proc/meminfo");
}

/// Files a fuzz case may overwrite, relative to the tree root.
const ATTRIBUTES: &[&str] = &[
    "proc/meminfo",
    "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/isolated",
    "sys/devices/system/cpu/cpu0/topology/physical_package_id",
    "sys/devices/system/cpu/cpu0/topology/die_id",
    "sys/devices/system/cpu/cpu1/topology/core_id",
    "sys/devices/system/cpu/cpu2/topology/thread_siblings_list",
    "sys/devices/system/cpu/cpu0/cache/index0/level",
    "sys/devices/system/cpu/cpu0/cache/index0/type",
    "sys/devices/system/cpu/cpu0/cache/index1/size",
    "sys/devices/system/cpu/cpu3/cache/index2/shared_cpu_list",
    "sys/devices/system/node/online",
    "sys/devices/system/node/node0/cpulist",
    "sys/devices/system/node/node1/meminfo",
    "sys/devices/system/node/node1/distance",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/class",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/vendor",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/numa_node",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/local_cpulist",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/sriov_numvfs",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/current_link_speed",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/max_link_width",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/config",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/rdma0/ports/1/gid_attrs/ndevs/0",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:10.0/local_cpus",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:10.0/numa_node",
    "sys/devices/pci0000:00/0000:00:02.0/0000:02:00.0/class",
    "sys/devices/pci0000:00/0000:00:02.0/config",
];

/// Symlinks a fuzz case may re-point.
const LINKS: &[&str] = &[
    "sys/bus/pci/devices/0000:01:00.0",
    "sys/bus/pci/devices/0000:00:02.0",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/driver",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/virtfn0",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:10.0/physfn",
    "sys/class/net/eth0",
    "sys/class/nvme/nvme0",
    "sys/class/infiniband/rdma0",
];

#[derive(Debug, Clone)]
enum Damage {
    Overwrite(usize, Vec<u8>),
    Repoint(usize, String),
}

fn content() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..48),
        "[0-9a-fx,:/.\\- \n-]{0,24}".prop_map(String::into_bytes),
        ".{0,32}".prop_map(String::into_bytes),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (0..ATTRIBUTES.len(), content()).prop_map(|(i, c)| Damage::Overwrite(i, c)),
        1 => (0..LINKS.len(), "[a-z0-9:./-]{1,48}").prop_map(|(i, t)| Damage::Repoint(i, t)),
    ]
}

/// What a file or link was before a [`Damage`], to put it back.
enum Saved {
    File(PathBuf, Option<Vec<u8>>),
    Link(PathBuf, PathBuf),
}

fn apply(root: &Path, d: &Damage) -> Saved {
    match d {
        Damage::Overwrite(i, bytes) => {
            let path = root.join(ATTRIBUTES[*i]);
            let before = fs::read(&path).ok();
            fs::write(&path, bytes).unwrap();
            Saved::File(path, before)
        }
        Damage::Repoint(i, target) => {
            let link = root.join(LINKS[*i]);
            let before = fs::read_link(&link).unwrap();
            fs::remove_file(&link).unwrap();
            symlink(target, &link).unwrap();
            Saved::Link(link, before)
        }
    }
}

fn restore(saved: Saved) {
    match saved {
        Saved::File(path, Some(bytes)) => fs::write(path, bytes).unwrap(),
        Saved::File(path, None) => fs::remove_file(path).unwrap(),
        Saved::Link(link, target) => {
            fs::remove_file(&link).unwrap();
            symlink(target, &link).unwrap();
        }
    }
}

#[test]
fn fuzz_targets_exist() {
    let dir = small();
    for a in ATTRIBUTES {
        assert!(
            dir.path().join(a).is_file() || a.ends_with("/config"),
            "{a}"
        );
    }
    for l in LINKS {
        assert!(fs::read_link(dir.path().join(l)).is_ok(), "{l}");
    }
}

/// Random bytes and strings in attribute files, random symlink targets:
/// discovery returns Ok or an error naming a file of the tree, and never
/// panics. One tree is damaged and repaired case after case (file creation
/// is what costs here).
#[test]
fn damaged_trees_never_panic() {
    let dir = small();
    let root = dir.path();
    let clean = serde_json::to_value(ok(&dir)).unwrap();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(64));
    let strategy = proptest::collection::vec(damage(), 1..4);
    let (accepted, rejected) = (Cell::new(0), Cell::new(0));
    let result = runner.run(&strategy, |damages| {
        let saved: Vec<Saved> = damages.iter().map(|d| apply(root, d)).collect();
        // Repair before judging, so that shrinking starts from a clean tree.
        let outcome = std::panic::catch_unwind(|| discover(root));
        for s in saved.into_iter().rev() {
            restore(s);
        }
        match outcome.map_err(|_| TestCaseError::fail("discover panicked"))? {
            Ok(_) => accepted.set(accepted.get() + 1),
            Err(e) => {
                rejected.set(rejected.get() + 1);
                let msg = e.to_string();
                prop_assert!(msg.contains(root.to_str().unwrap()), "{}", msg);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        accepted.get() > 0 && rejected.get() > 0,
        "damage should sometimes be tolerated and sometimes not: {} accepted, {} rejected",
        accepted.get(),
        rejected.get()
    );
    // Every case was repaired: the tree discovers as before.
    assert_eq!(serde_json::to_value(ok(&dir)).unwrap(), clean);
}
