//! `griffin topo` end to end: the binary on the committed capture of a
//! 2-CPU virtio host and on bad roots.

use std::path::PathBuf;

mod cli_common;
use cli_common::{griffin, ok};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

#[test]
fn topo_json_on_capture_follows_the_contract() {
    let out = griffin()
        .args(["topo", "--json", "--root"])
        .arg(fixture("host-2cpu-virtio"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["cpus"].as_array().unwrap().len(), 2);
    assert_eq!(v["cpus"][1]["siblings"], serde_json::json!([1]));
    assert_eq!(v["numa_nodes"][0]["distances"], serde_json::json!([10]));
    assert_eq!(v["nvml"]["state"], "not-queried");
    let nic = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pci_address"] == "0000:00:03.0")
        .unwrap();
    assert_eq!(nic["kind"], "nic-pf");
    assert_eq!(nic["vendor"], "1af4");
    assert_eq!(nic["device"], "1041");
    assert_eq!(nic["driver"], "virtio-pci");
    assert_eq!(nic["netdevs"], serde_json::json!(["eth0"]));
    assert_eq!(nic["numa_node"], 0);
    assert_eq!(nic["numa_source"], "local-cpus");
    assert_eq!(
        nic["sriov"],
        serde_json::json!({"total_vfs": 0, "num_vfs": 0, "pf": null, "vfs": []})
    );
    // Five endpoints on one root bus with no root ports: PHB between all.
    let m = v["matrix"].as_object().unwrap();
    assert_eq!(m.len(), 5);
    assert!(
        m.get("0000:00:00.0").is_none(),
        "the host bridge is not an endpoint"
    );
    assert_eq!(v["matrix"]["0000:00:03.0"]["0000:00:03.0"], "X");
    assert_eq!(v["matrix"]["0000:00:03.0"]["0000:00:01.0"], "PHB");
    assert_eq!(v["matrix"]["0000:00:05.0"]["0000:00:02.0"], "PHB");
}

#[test]
fn topo_table_has_matrix_affinity_and_legend() {
    let out = griffin()
        .args(["topo", "--root"])
        .arg(fixture("host-2cpu-virtio"))
        .output()
        .unwrap();
    let text = ok(out);
    let header = text.lines().find(|l| l.contains("CPU Affinity")).unwrap();
    assert!(
        header.contains("NIC0") && header.contains("NUMA Affinity"),
        "{header}"
    );
    let row = text.lines().find(|l| l.starts_with("NIC0 ")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["NIC0", "PHB", "PHB", "X", "PHB", "PHB", "0-1", "0"]
    );
    assert!(text.contains("Legend:"));
    assert!(text.contains("  NIC0  0000:00:03.0  nic-pf"), "{text}");
    assert!(
        text.lines().all(|l| l.len() <= 100),
        "lines stay readable:\n{text}"
    );
}

#[test]
fn topo_on_a_bad_root_names_the_file_and_fails() {
    let dir = std::env::temp_dir().join(format!("griffin-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = griffin()
        .args(["topo", "--root"])
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sys/devices/system/cpu/online"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn help_explains_the_levels() {
    let out = griffin().args(["topo", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["PIX", "PXB", "PHB", "NODE", "SYS", "--root", "--json"] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
}

/// A closed stdout (`griffin topo | head`) is not a failure: exit 0,
/// nothing on stderr, in both output forms. (Only stdout's broken pipe is
/// forgiven; one on the control socket is a failure, see daemon.rs.)
#[test]
fn topo_into_a_closed_pipe_is_not_a_failure() {
    for json in [true, false] {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut c = griffin();
        c.arg("topo").arg("--root").arg(fixture("host-2cpu-virtio"));
        if json {
            c.arg("--json");
        }
        let out = c.stdout(writer).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "json {json}: {:?} {}",
            out.status,
            cli_common::text(&out.stderr)
        );
    }
}
