//! Discovery of the live node (`/`) checked against independent sources:
//! `/proc/cpuinfo`, `lspci -D -n` (pciutils), `numactl --hardware` and
//! `lstopo` (hwloc). `cargo xtask deps` installs those tools; a missing tool
//! is a test failure, not a skip.

use std::collections::BTreeMap;
use std::process::Command;

use griffin_devices::{discover, DeviceKind, NvmlStatus, Topology};

fn live() -> Topology {
    discover("/").expect("discovery of the live node")
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is needed (cargo xtask deps installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cpu_count_matches_proc_cpuinfo() {
    let topo = live();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let ids: Vec<u32> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .map(|l| l.split(':').nth(1).unwrap().trim().parse().unwrap())
        .collect();
    assert!(!ids.is_empty());
    assert_eq!(topo.cpus.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    // Package ids agree too.
    let packages: Vec<u32> = cpuinfo
        .lines()
        .filter(|l| l.starts_with("physical id"))
        .map(|l| l.split(':').nth(1).unwrap().trim().parse().unwrap())
        .collect();
    if !packages.is_empty() {
        assert_eq!(
            topo.cpus.iter().map(|c| c.package).collect::<Vec<_>>(),
            packages
        );
    }
}

#[test]
fn pci_functions_match_lspci() {
    let topo = live();
    // `lspci -D -n`: "0000:00:03.0 0200: 1af4:1041 (rev 01)"
    let lspci: BTreeMap<String, (String, String)> = run("lspci", &["-D", "-n"])
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            let addr = w.next().unwrap().to_owned();
            let class = w.next().unwrap().trim_end_matches(':').to_owned();
            let ids = w.next().unwrap().to_owned();
            (addr, (class, ids))
        })
        .collect();
    let ours: BTreeMap<String, (String, String)> = topo
        .devices
        .iter()
        .map(|d| {
            (
                d.pci_address.to_string(),
                (
                    d.class[..4].to_owned(),
                    format!("{}:{}", d.vendor, d.device),
                ),
            )
        })
        .collect();
    assert!(!ours.is_empty());
    assert_eq!(ours, lspci);
    // Every non-bridge function is in the matrix, every bridge is not.
    for d in &topo.devices {
        let in_matrix = topo.matrix.index_of(d.pci_address).is_some();
        assert_eq!(in_matrix, d.kind != DeviceKind::Bridge, "{}", d.pci_address);
    }
}

#[test]
fn numa_nodes_match_numactl_and_lstopo() {
    let topo = live();
    let hw = run("numactl", &["--hardware"]);
    let available: usize = hw
        .lines()
        .find_map(|l| l.strip_prefix("available: "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(topo.numa_nodes.len(), available);
    for n in &topo.numa_nodes {
        let line = hw
            .lines()
            .find(|l| l.starts_with(&format!("node {} cpus:", n.id)))
            .unwrap();
        let cpus: Vec<u32> = line
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(n.cpus.as_slice(), cpus.as_slice(), "node {}", n.id);
    }
    let xml = run("lstopo-no-graphics", &["--of", "xml", "--no-io"]);
    let lstopo_nodes = xml.matches("type=\"NUMANode\"").count();
    assert_eq!(topo.numa_nodes.len(), lstopo_nodes.max(1));
    let lstopo_pus = xml.matches("type=\"PU\"").count();
    assert_eq!(topo.cpus.len(), lstopo_pus);
    let lstopo_cores = xml.matches("type=\"Core\"").count();
    assert_eq!(topo.core_count(), lstopo_cores);
}

#[test]
fn nvml_falls_back_cleanly_when_the_library_is_absent() {
    // Force the NVML attempt even without an NVIDIA GPU: this machine has
    // none, so this is as far as the NVML path can be tested here.
    let topo = griffin_devices::discover_with(
        "/",
        griffin_devices::Options {
            nvml: griffin_devices::NvmlMode::Always,
        },
    )
    .unwrap();
    let has_nvml = run("ldconfig", &["-p"]).contains("libnvidia-ml.so");
    match (&topo.nvml, has_nvml) {
        (NvmlStatus::Absent { reason }, false) => {
            assert!(reason.contains("libnvidia-ml"), "{reason}");
            // Discovery still found the PCI devices.
            assert!(!topo.devices.is_empty());
        }
        (NvmlStatus::Loaded { gpus, .. }, true) => {
            for (addr, _) in gpus {
                assert_eq!(topo.device(*addr).unwrap().kind, DeviceKind::Gpu);
            }
        }
        (state, present) => panic!("NVML state {state:?} with libnvidia-ml present={present}"),
    }
    // Default discovery only asks NVML when PCI shows an NVIDIA GPU.
    let default = live();
    let nvidia = default
        .devices
        .iter()
        .any(|d| d.kind == DeviceKind::Gpu && d.vendor == "10de");
    if !nvidia {
        assert_eq!(default.nvml, NvmlStatus::NoNvidiaGpu);
    }
}

#[test]
fn live_capture_replays_identically() {
    // The committed host fixture is a capture of a machine of this kind; here
    // a fresh capture of this node must replay to what live discovery sees.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cap");
    let stats = griffin_devices::capture::capture("/".as_ref(), &out).unwrap();
    assert!(stats.files > 0 && stats.links > 0);
    let mut live = serde_json::to_value(live()).unwrap();
    let mut replay = serde_json::to_value(discover(&out).unwrap()).unwrap();
    for v in [&mut live, &mut replay] {
        v["root"] = serde_json::Value::Null;
        v["nvml"] = serde_json::Value::Null;
        for n in v["numa_nodes"].as_array_mut().unwrap() {
            n["free_bytes"] = serde_json::Value::Null;
        }
    }
    assert_eq!(live, replay);
}
