//! Truncated, garbage and hostile sysfs trees: discovery fails with an
//! error naming the offending file, never panics, never hangs on a FIFO,
//! never reads a device or a file without bound, never sizes an allocation
//! by a number the tree claims, and tolerates what real nodes do show (a VF
//! whose PF went away).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

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
    t.pci(Function::host_bridge("0000:00:00.0", "pci0000:00"))
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
        .netdev_attr("eth0", "type", "1")
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
    let pf = topo.device(PF.parse().unwrap()).unwrap();
    assert_eq!(pf.link_type.as_deref(), Some("ether"));
}

/// A netdev `type` that is not a number is an error naming the file.
#[test]
fn garbage_netdev_type() {
    let dir = small();
    let f = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/net/eth0/type";
    fs::write(dir.path().join(f), "ether\n").unwrap();
    // Read (and named) through the class link, as discovery finds it.
    let err = rejects(&dir, "sys/class/net/eth0/type");
    assert!(matches!(err, DiscoveryError::Parse { .. }), "{err:?}");
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
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/net/eth0/type",
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
    let (accepted, rejected) = fuzz_small_tree(
        griffin_tests::fuzz_cases(64),
        proptest::collection::vec(damage(), 1..4),
        |root, damages| {
            damages
                .iter()
                .map(|d| {
                    let saved = apply(root, d);
                    Box::new(move || restore(saved)) as Undo
                })
                .collect()
        },
    );
    assert!(
        accepted > 0 && rejected > 0,
        "damage should sometimes be tolerated and sometimes not: {accepted} accepted, {rejected} rejected"
    );
}

/// Puts a tree back as it was before a fuzz case.
type Undo = Box<dyn FnOnce()>;

/// Runs `cases` cases of `strategy` on one small tree: `damage` changes the
/// tree and says how to undo it, discovery runs (in bounded memory, never
/// hanging: [`try_discover_guarded`]), the tree is repaired, and discovery
/// must have returned Ok or an error naming a file of the tree, without a
/// panic. Repairing before judging lets shrinking start from a clean tree;
/// at the end the tree discovers as before. Returns (accepted, rejected).
fn fuzz_small_tree<S: Strategy>(
    cases: u32,
    strategy: S,
    damage: impl Fn(&Path, &S::Value) -> Vec<Undo>,
) -> (u32, u32) {
    let dir = small();
    let root = dir.path();
    let clean = serde_json::to_value(ok(&dir)).unwrap();
    let mut runner = TestRunner::new(ProptestConfig::with_cases(cases));
    let (accepted, rejected) = (Cell::new(0), Cell::new(0));
    let result = runner.run(&strategy, |value| {
        let undo = damage(root, &value);
        let outcome = try_discover_guarded(root);
        for u in undo.into_iter().rev() {
            u();
        }
        let (result, largest) = outcome.map_err(TestCaseError::fail)?;
        prop_assert!(largest <= ALLOCATION_BOUND, "allocated {} at once", largest);
        match result {
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
    assert_eq!(serde_json::to_value(ok(&dir)).unwrap(), clean);
    (accepted.get(), rejected.get())
}

// Hostile trees (issue 14, D3 and D9): FIFOs, device files, sockets, loops,
// directories where files belong, over-size files, and huge counts.

/// The global allocator of this test binary: the system's, watching the
/// threads [`discover_guarded`] runs discovery in. It records the largest
/// single request such a thread makes and refuses (the process aborts with
/// "memory allocation of N bytes failed") any over [`REFUSED_ABOVE`]: the
/// old code's 32 GiB VF list or endless read of `/dev/zero` ends the run
/// with a clear failure instead of exhausting the machine.
struct Watched;

#[global_allocator]
static WATCHED: Watched = Watched;

const REFUSED_ABOVE: usize = 1 << 30;

/// The largest single allocation discovery of a small tree may make,
/// whatever numbers or files the tree holds.
const ALLOCATION_BOUND: usize = 1 << 20;

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records a request of `size` bytes; true when it is to be refused.
fn refuse(size: usize) -> bool {
    let guarded = GUARDED.try_with(Cell::get).unwrap_or(false);
    if guarded {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
    guarded && size > REFUSED_ABOVE
}

// SAFETY: every method forwards to `System` with the caller's arguments,
// or returns null (an allocation failure, which callers handle).
unsafe impl GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc_zeroed requires.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every
        // allocation here is System's).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` came from `System` with `layout`; the caller
        // upholds realloc's other requirements.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Discovers `root` in a thread of its own, with its allocations watched:
/// the result and the largest single allocation it asked for. Discovery
/// that has not returned after two minutes is an error instead of a hung
/// test (the old code waited forever for a writer on a FIFO), and so is a
/// panic.
fn try_discover_guarded(root: &Path) -> Result<(Result<Topology, DiscoveryError>, usize), String> {
    let (tx, rx) = mpsc::channel();
    let root = root.to_owned();
    std::thread::spawn(move || {
        GUARDED.with(|g| g.set(true));
        let result = discover(&root);
        GUARDED.with(|g| g.set(false));
        let _ = tx.send((result, LARGEST.with(Cell::get)));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => {
                "discovery did not return within two minutes: it hangs".to_owned()
            }
            mpsc::RecvTimeoutError::Disconnected => "discovery panicked".to_owned(),
        })
}

fn discover_guarded(root: &Path) -> (Result<Topology, DiscoveryError>, usize) {
    try_discover_guarded(root).unwrap_or_else(|e| panic!("{e}"))
}

/// Discovery of the tree in `dir` fails, in bounded memory, with an error
/// naming `rel`.
fn rejects_guarded(dir: &TempDir, rel: &str) -> DiscoveryError {
    let (result, largest) = discover_guarded(dir.path());
    assert!(
        largest <= ALLOCATION_BOUND,
        "discovery allocated {largest} bytes at once"
    );
    let err = match result {
        Ok(_) => panic!("discovery accepted a tree with a bad {rel}"),
        Err(e) => e,
    };
    let path = dir.path().join(rel);
    assert!(
        err.to_string().contains(path.to_str().unwrap()),
        "error {err:?} does not name {}",
        path.display()
    );
    err
}

/// Replaces the file at `path` by a FIFO.
fn make_fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let _ = fs::remove_file(path);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

fn replace_by_link(path: &Path, target: &str) {
    let _ = fs::remove_file(path);
    symlink(target, path).unwrap();
}

fn not_regular(err: &DiscoveryError, want: &str) {
    assert!(
        matches!(err, DiscoveryError::NotRegular { kind, .. } if *kind == want),
        "{err:?}"
    );
}

#[test]
fn a_fifo_is_an_error_not_a_hang() {
    // A required attribute, an optional one, and the config space of a
    // bridge (read at offsets through its own open).
    for (file, rel) in [
        (
            format!("{NVME_DIR}/vendor"),
            format!("sys/bus/pci/devices/{NVME}/vendor"),
        ),
        (
            format!("{PF_DIR}/numa_node"),
            format!("sys/bus/pci/devices/{PF}/numa_node"),
        ),
        (
            "sys/devices/pci0000:00/0000:00:02.0/config".to_owned(),
            "sys/bus/pci/devices/0000:00:02.0/config".to_owned(),
        ),
        (
            "sys/devices/system/cpu/online".to_owned(),
            "sys/devices/system/cpu/online".to_owned(),
        ),
    ] {
        let dir = small();
        make_fifo(&dir.path().join(&file));
        not_regular(&rejects_guarded(&dir, &rel), "FIFO");
    }
}

#[test]
fn a_link_to_a_device_is_never_read() {
    for (target, file) in [
        ("/dev/zero", "numa_node"),
        ("/dev/zero", "vendor"),
        ("/dev/urandom", "local_cpulist"),
        ("/dev/null", "subsystem_vendor"),
    ] {
        let dir = small();
        replace_by_link(&dir.path().join(PF_DIR).join(file), target);
        let err = rejects_guarded(&dir, &format!("sys/bus/pci/devices/{PF}/{file}"));
        not_regular(&err, "symbolic link");
    }
    // /proc/meminfo, read when the node has no NUMA directory.
    let dir = small();
    fs::remove_dir_all(dir.path().join("sys/devices/system/node")).unwrap();
    replace_by_link(&dir.path().join("proc/meminfo"), "/dev/zero");
    not_regular(&rejects_guarded(&dir, "proc/meminfo"), "symbolic link");
}

#[test]
fn symlink_loops_are_errors() {
    // The attribute itself loops.
    let dir = small();
    replace_by_link(&dir.path().join(PF_DIR).join("class"), "class");
    not_regular(
        &rejects_guarded(&dir, &format!("sys/bus/pci/devices/{PF}/class")),
        "symbolic link",
    );
    // Two links into each other on the way to attributes.
    let dir = small();
    let topo = dir.path().join("sys/devices/system/cpu/cpu1/topology");
    fs::remove_dir_all(&topo).unwrap();
    symlink("topology.b", &topo).unwrap();
    symlink("topology", topo.with_extension("b")).unwrap();
    let err = rejects_guarded(&dir, "sys/devices/system/cpu/cpu1/topology/");
    assert!(matches!(err, DiscoveryError::Read { .. }), "{err:?}");
    // A class directory that loops.
    let dir = small();
    let net = dir.path().join("sys/class/net");
    fs::remove_dir_all(&net).unwrap();
    symlink("net", &net).unwrap();
    rejects_guarded(&dir, "sys/class/net");
}

#[test]
fn sockets_and_directories_are_not_files() {
    let dir = small();
    let path = dir.path().join(PF_DIR).join("numa_node");
    fs::remove_file(&path).unwrap();
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let err = rejects_guarded(&dir, &format!("sys/bus/pci/devices/{PF}/numa_node"));
    not_regular(&err, "socket");
    let dir = small();
    let path = dir.path().join(NVME_DIR).join("vendor");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let err = rejects_guarded(&dir, &format!("sys/bus/pci/devices/{NVME}/vendor"));
    not_regular(&err, "directory");
}

#[test]
fn an_over_size_file_is_an_error() {
    // Zeros parse as node 0: only the bound rejects it.
    let dir = small();
    let mut zeros = vec![b'0'; griffin_devices::sysfs::MAX_FILE_BYTES + 1];
    zeros.push(b'\n');
    write(&dir, &format!("{PF_DIR}/numa_node"), &zeros);
    let err = rejects_guarded(&dir, &format!("sys/bus/pci/devices/{PF}/numa_node"));
    assert!(matches!(err, DiscoveryError::TooLarge { .. }), "{err:?}");
    // Exactly at the bound it is read (and parsed).
    let dir = small();
    let mut zeros = vec![b'0'; griffin_devices::sysfs::MAX_FILE_BYTES - 1];
    zeros.push(b'\n');
    write(&dir, &format!("{PF_DIR}/numa_node"), &zeros);
    let (result, _) = discover_guarded(dir.path());
    let topo = result.unwrap();
    assert_eq!(topo.device(PF.parse().unwrap()).unwrap().numa_node, Some(0));
}

#[test]
fn a_huge_sriov_numvfs_is_inconsistent() {
    // NumVFs over TotalVFs, and a TotalVFs over the 16-bit field of the
    // SR-IOV capability.
    for (total, num, bad) in [
        ("7", "4294967295", "sriov_numvfs"),
        ("7", "8", "sriov_numvfs"),
        ("65536", "65536", "sriov_totalvfs"),
    ] {
        let dir = small();
        write(
            &dir,
            &format!("{PF_DIR}/sriov_totalvfs"),
            format!("{total}\n"),
        );
        write(&dir, &format!("{PF_DIR}/sriov_numvfs"), format!("{num}\n"));
        let err = rejects_guarded(&dir, &format!("sys/bus/pci/devices/{PF}/{bad}"));
        assert!(
            matches!(err, DiscoveryError::Inconsistent { .. }),
            "{total}/{num}: {err:?}"
        );
    }
    // Every VF enabled but only one link there: the list holds what exists.
    let dir = small();
    write(&dir, &format!("{PF_DIR}/sriov_numvfs"), "7\n");
    let (result, largest) = discover_guarded(dir.path());
    assert!(largest <= ALLOCATION_BOUND, "{largest}");
    let topo = result.unwrap();
    let pf = &topo.device(PF.parse().unwrap()).unwrap().sriov;
    assert_eq!((pf.total_vfs, pf.num_vfs), (7, 7));
    assert_eq!(pf.vfs, [VF.parse().unwrap()]);
}

#[test]
fn repeated_cpulist_ranges_stay_bounded() {
    // 64 KiB of the widest range, over and over: 65,536 ids, not 500 million.
    let text = "0-65535,".repeat(griffin_devices::sysfs::MAX_FILE_BYTES / 8 - 1) + "0-65535\n";
    let dir = small();
    write(&dir, &format!("{PF_DIR}/local_cpulist"), &text);
    let (result, largest) = discover_guarded(dir.path());
    assert!(largest <= ALLOCATION_BOUND, "{largest}");
    // Local CPUs are the online ones among them.
    let topo = result.unwrap();
    assert_eq!(
        topo.device(PF.parse().unwrap())
            .unwrap()
            .local_cpus
            .as_slice(),
        &[0, 1, 2, 3]
    );
}

/// What a hostile case puts where a file, link or directory of the tree was.
#[derive(Debug, Clone)]
enum Hostile {
    Fifo,
    Socket,
    Directory,
    LinkTo(&'static str),
    SelfLoop,
    Text(String),
}

/// Directories a hostile case may replace, on top of [`ATTRIBUTES`] and
/// [`LINKS`].
const DIRECTORIES: &[&str] = &[
    "sys/devices/system/cpu/cpu1/cache",
    "sys/devices/system/cpu/cpu2/topology",
    "sys/devices/system/node/node1",
    "sys/class/net",
    "sys/class/infiniband",
    "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0/infiniband/rdma0/ports",
];

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("4294967295\n".to_owned()),
        Just("18446744073709551616\n".to_owned()),
        Just("-9223372036854775809\n".to_owned()),
        Just("99999999999999999999999999\n".to_owned()),
        Just("0-65535\n".to_owned()),
        Just("0-65535:1/2,".repeat(5000)),
        Just("0-65535,".repeat(8000)),
        Just("ffffffff,".repeat(2048)),
        Just("1".repeat(70_000)),
        (0u64..u64::MAX).prop_map(|n| format!("{n}\n")),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        2 => Just(Hostile::Fifo),
        1 => Just(Hostile::Socket),
        1 => Just(Hostile::Directory),
        2 => prop_oneof![
            Just("/dev/zero"),
            Just("/dev/null"),
            Just("/dev/urandom"),
            Just("/dev/full"),
        ]
        .prop_map(Hostile::LinkTo),
        1 => Just(Hostile::SelfLoop),
        3 => hostile_text().prop_map(Hostile::Text),
    ]
}

fn hostile_target() -> impl Strategy<Value = &'static str> {
    let all: Vec<&'static str> = ATTRIBUTES
        .iter()
        .chain(LINKS)
        .chain(DIRECTORIES)
        .copied()
        .collect();
    proptest::sample::select(all)
}

/// Puts `h` at `rel` below `root`, moving what was there into `stash`
/// (outside the tree, so no directory discovery lists gains an entry);
/// returns how to undo it.
fn plant(root: &Path, stash: &Path, n: usize, rel: &str, h: &Hostile) -> (PathBuf, PathBuf) {
    let path = root.join(rel);
    let saved = stash.join(n.to_string());
    if fs::symlink_metadata(&path).is_ok() {
        fs::rename(&path, &saved).unwrap();
    }
    match h {
        Hostile::Fifo => make_fifo(&path),
        Hostile::Socket => drop(std::os::unix::net::UnixListener::bind(&path).unwrap()),
        Hostile::Directory => fs::create_dir(&path).unwrap(),
        Hostile::LinkTo(t) => symlink(t, &path).unwrap(),
        Hostile::SelfLoop => symlink(path.file_name().unwrap(), &path).unwrap(),
        Hostile::Text(t) => fs::write(&path, t).unwrap(),
    }
    (path, saved)
}

fn unplant((path, saved): (PathBuf, PathBuf)) {
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&path).unwrap(),
        Ok(_) => fs::remove_file(&path).unwrap(),
        Err(_) => {}
    }
    if fs::symlink_metadata(&saved).is_ok() {
        fs::rename(&saved, &path).unwrap();
    }
}

/// FIFOs, sockets, directories, links to devices, symlink loops and huge
/// numbers planted at random places of a valid tree: discovery returns Ok
/// or an error naming a file of the tree, within bounded memory, and never
/// hangs (a hang fails [`discover_guarded`]). One tree is damaged and
/// repaired case after case.
#[test]
fn hostile_trees_end_in_ok_or_an_error() {
    let stash = tempfile::tempdir().unwrap();
    let (_, rejected) = fuzz_small_tree(
        griffin_tests::fuzz_cases(96),
        proptest::collection::vec((hostile_target(), hostile()), 1..4),
        |root, cases| {
            let mut used: Vec<&str> = Vec::new();
            let mut undo = Vec::new();
            for (i, (rel, h)) in cases.iter().enumerate() {
                // One plant per path, and none below one already replaced.
                if used
                    .iter()
                    .any(|u| rel.starts_with(u) || u.starts_with(rel))
                {
                    continue;
                }
                used.push(rel);
                let planted = plant(root, stash.path(), i, rel, h);
                undo.push(Box::new(move || unplant(planted)) as Undo);
            }
            undo
        },
    );
    assert!(rejected > 0, "hostile entries should be rejected");
}
