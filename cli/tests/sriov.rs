//! `griffin sriov apply` on the committed edge2s capture (igb PF eth2 at
//! 0000:13:00.0 with 2 VFs): dry runs report what would change, bad
//! configs are refused naming the key. Real VF changes are tested on igb in
//! the QEMU guest (`tests/tests/guest.rs`).

use std::path::PathBuf;

mod cli_common;
use cli_common::{griffin, ok, text};

fn sys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu/sys")
}

fn apply(config: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("griffin.toml");
    std::fs::write(&cfg, config).unwrap();
    griffin()
        .arg("sriov")
        .arg("--sys")
        .arg(sys())
        .args(["apply", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn dry_run_reports_the_difference_by_netdev_or_address() {
    let out = apply(
        r#"sriov = [{ pf = "eth2", num_vfs = 4, vfs = [{ index = "3", trust = true }] }]"#,
        &["--dry-run", "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(v[0]["pci_address"], "0000:13:00.0");
    assert_eq!(v[0]["num_vfs_changed"], serde_json::json!([2, 4]));
    assert_eq!(v[0]["configured"], serde_json::json!([3]));
    // Already as declared (2 VFs, no per-VF settings): nothing to do.
    let out = apply(
        r#"sriov = [{ pf = "0000:13:00.0", num_vfs = 2 }]"#,
        &["--dry-run"],
    );
    assert_eq!(ok(out).trim(), "0000:13:00.0 (0000:13:00.0): as declared");
}

#[test]
fn unknown_pfs_and_bad_settings_fail_naming_them() {
    let out = apply(r#"sriov = [{ pf = "eth9", num_vfs = 1 }]"#, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out.stdout);
    assert!(t.contains("eth9") && t.contains("NOT as declared"), "{t}");
    for (cfg, needle) in [
        (
            r#"sriov = [{ pf = "eth2", num_vfs = 2, vfs = [{ index = "0-1", mac = "02:00:00:00:00:01" }] }]"#,
            "sriov[0].vfs[0].mac: one MAC for 2 VFs",
        ),
        (
            r#"sriov = [{ pf = "eth2", num_vfs = 2, vfs = [{ index = "2" }] }]"#,
            "sriov[0].vfs[0].index: VF 2 does not exist",
        ),
        (
            r#"sriov = [{ pf = "eth2", num_vfs = 2, colour = 1 }]"#,
            "colour",
        ),
    ] {
        let out = apply(cfg, &["--dry-run"]);
        assert!(!out.status.success(), "{cfg}");
        let e = text(&out.stderr);
        assert!(e.contains(needle), "{cfg}: {e}");
    }
}
