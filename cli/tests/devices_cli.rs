//! `griffin devices` end to end: pools of an sriov-network-device-plugin
//! config on the edge2s capture, Griffin's own pools from a config on the
//! hand-written edge2s tree, and `griffin devices prefer`.

use std::path::{Path, PathBuf};

mod cli_common;
use cli_common::{griffin, ok, text};

fn capture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu")
}

/// An sriovdp config as users write it: the VFs of eth2, and the virtio NIC
/// or eth1 (a list of selectors).
const SRIOVDP: &str = r#"{
  "resourceList": [
    {"resourceName": "intel_sriov_netdevice",
     "selectors": {"vendors": ["8086"], "devices": ["10ca"], "drivers": ["igbvf"], "pfNames": ["eth2"]}},
    {"resourceName": "other_nics", "resourcePrefix": "example.com",
     "selectors": [{"drivers": ["virtio-pci"]}, {"pfNames": ["eth1"]}]}
  ]
}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn pools_of_an_sriovdp_config_on_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.json", SRIOVDP);
    let out = griffin()
        .args(["devices", "--root"])
        .arg(capture())
        .arg("--sriovdp-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let t = ok(out);
    let lines: Vec<&str> = t.lines().collect();
    // Pools in resource order, each with its devices below it.
    assert!(lines[0].starts_with("example.com/other_nics  ("), "{t}");
    assert!(
        lines[3].starts_with("intel.com/intel_sriov_netdevice  (")
            && lines[3].ends_with("sriovdp netDevice)  2 devices, 2 healthy"),
        "{t}"
    );
    let row = |addr: &str| -> Vec<&str> {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(addr))
            .unwrap_or_else(|| panic!("{addr} missing:\n{t}"))
            .split_whitespace()
            .collect()
    };
    assert_eq!(
        row("0000:13:10.2"),
        [
            "0000:13:10.2",
            "nic-vf",
            "igbvf",
            "8086:10ca",
            "NUMA",
            "0",
            "healthy",
            "eth4",
            "pf",
            "eth2",
            "vf",
            "1"
        ]
    );
    assert_eq!(
        row("0000:00:05.0"),
        [
            "0000:00:05.0",
            "nic-pf",
            "igb",
            "8086:10c9",
            "NUMA",
            "-",
            "healthy",
            "eth1"
        ]
    );
    // The PF with VFs enabled is in no pool.
    assert!(!t.contains("0000:13:00.0"), "{t}");

    let out = griffin()
        .args(["devices", "--json", "--root"])
        .arg(capture())
        .arg("--sriovdp-config")
        .arg(&cfg)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["resource"], "example.com/other_nics");
    assert_eq!(pools[0]["flavor"], "sriov-net");
    let ids: Vec<&str> = pools[0]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["0000:00:05.0", "0000:31:00.0"]);
    let vf = &pools[1]["devices"][0];
    assert_eq!(vf["id"], "0000:13:10.0");
    assert_eq!(vf["pci_address"], "0000:13:10.0");
    assert_eq!(vf["healthy"], true);
    assert_eq!(vf["numa_node"], 0);
    assert_eq!(vf["pf_name"], "eth2");
    assert_eq!(vf["vf_index"], 0);
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn prefer_on_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "config.json", SRIOVDP);
    let run = |extra: &[&str]| {
        griffin()
            .args(["devices", "prefer", "--root"])
            .arg(capture())
            .arg("--sriovdp-config")
            .arg(&cfg)
            .args(extra)
            .output()
            .unwrap()
    };
    let t = ok(run(&[
        "--resource",
        "intel.com/intel_sriov_netdevice",
        "--size",
        "2",
    ]));
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "intel.com/intel_sriov_netdevice: 0000:13:10.0,0000:13:10.2"
    );
    assert_eq!(lines[1], "cost 20  NUMA score 4");
    assert_eq!(
        lines[2],
        "2 of 2 available; pairwise cost 20 (1×PIX); 2 on NUMA node 0 (2 free exclusive CPUs); exact: every combination compared"
    );
    // One device, no pair: the one whose NUMA node has free CPUs (the
    // other's node is unknown), unless --reserved takes them all; then
    // address order.
    let pick = |reserved: &str| -> serde_json::Value {
        serde_json::from_str(&ok(run(&[
            "--resource",
            "example.com/other_nics",
            "--size",
            "1",
            "--reserved",
            reserved,
            "--json",
        ])))
        .unwrap()
    };
    let v = pick("6");
    assert_eq!(v["ids"], serde_json::json!(["0000:31:00.0"]));
    assert_eq!(v["numa_score"], 1);
    assert_eq!(v["method"], "exhaustive");
    assert_eq!(pick("6-7")["ids"], serde_json::json!(["0000:00:05.0"]));
    let v: serde_json::Value = serde_json::from_str(&ok(run(&[
        "--resource",
        "example.com/other_nics",
        "--size",
        "2",
        "--available",
        "0000:00:05.0,0000:31:00.0",
        "--must-include",
        "0000:31:00.0",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["cost"], 50, "unknown NUMA and another root bus: SYS");
    // Refusals name what is wrong, exit 1.
    for (args, msg) in [
        (
            vec![
                "--resource",
                "intel.com/intel_sriov_netdevice",
                "--size",
                "3",
            ],
            "intel.com/intel_sriov_netdevice: 3 devices wanted, 2 available",
        ),
        (
            vec!["--resource", "intel.com/nope", "--size", "1"],
            "--resource: no pool serves intel.com/nope",
        ),
        (
            vec![
                "--resource",
                "intel.com/intel_sriov_netdevice",
                "--size",
                "1",
                "--must-include",
                "0000:31:00.0",
            ],
            "intel.com/intel_sriov_netdevice: no device 0000:31:00.0 in the pool",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}

/// Griffin's own `[[pools]]` on the edge2s tree; a PF link down makes its
/// VFs unhealthy, and `prefer` chooses among healthy devices by default.
#[test]
fn griffin_pools_health_and_default_availability() {
    let mut t = griffin_tests::edge2s::tree();
    t.netdev_attr("eth1", "operstate", "down");
    let root = t.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "griffin.toml",
        "[[pools]]\nresource = \"example.com/node0\"\nnuma_nodes = [0]\n\
         kinds = [\"nic-vf\", \"nvme\", \"accelerator\", \"fpga\"]\n",
    );
    let out = griffin()
        .args(["devices", "--root"])
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let t = ok(out);
    assert!(
        t.starts_with("example.com/node0  (pools[0], griffin)  5 devices, 3 healthy"),
        "{t}"
    );
    assert!(
        t.contains("0000:13:10.0  nic-vf      igbvf       8086:10ca  NUMA 0    unhealthy: its PF 0000:13:00.0 link eth1 is down"),
        "{t}"
    );
    let out = griffin()
        .args(["devices", "prefer", "--root"])
        .arg(root.path())
        .arg("--config")
        .arg(&cfg)
        .args(["--resource", "example.com/node0", "--size", "2", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    // Of N (below switch 1), C and F (below switch 2 below switch 1): the
    // accelerator and the FPGA share switch 2 (PIX).
    assert_eq!(
        v["ids"],
        serde_json::json!([griffin_tests::edge2s::C, griffin_tests::edge2s::F])
    );
    assert_eq!(v["cost"], 20);
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("2 of 3 available;"),
        "{v}"
    );
}

#[test]
fn a_refused_sriovdp_config_names_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "config.json",
        r#"{"resourceList": [{"resourceName": "x", "deviceType": "auxNetDevice", "selectors": {}}]}"#,
    );
    let out = griffin()
        .args(["devices", "--root"])
        .arg(capture())
        .arg("--sriovdp-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "sriov-network-device-plugin config {}: resourceList[0].deviceType: auxNetDevice is not supported by Griffin",
            cfg.display()
        )),
        "{err}"
    );
    // No pools at all is said, not an error.
    let t = ok(griffin()
        .args(["devices", "--root"])
        .arg(capture())
        .output()
        .unwrap());
    assert!(t.starts_with("no pools defined"), "{t}");
}

#[test]
fn help_names_the_options() {
    let t = ok(griffin().args(["devices", "--help"]).output().unwrap());
    for word in ["prefer", "--root", "--config", "--sriovdp-config", "--json"] {
        assert!(t.contains(word), "{word} missing:\n{t}");
    }
    let t = ok(griffin()
        .args(["devices", "prefer", "--help"])
        .output()
        .unwrap());
    for word in [
        "--resource",
        "--size",
        "--available",
        "--must-include",
        "--sriovdp-config",
        "PIX 20",
        "healthy",
    ] {
        assert!(t.contains(word), "{word} missing:\n{t}");
    }
}
