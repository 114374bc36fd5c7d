//! Contract tests of `griffin daemon`'s HTTP routes, against a daemon started
//! here on an ephemeral port with the edge2s fixture (a real 6.12 capture:
//! 4 NUMA nodes, two igb VFs and an NVMe under one switch on node 0).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use griffin_runtime::alloc::{Allocation, Placement, Request, State};
use griffin_runtime::checkpoint::{encode, Checkpoint};
use griffin_runtime::cpuset::CpuSet;

mod cli_common;
use cli_common::Daemon;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu")
}

fn start(state: &Path) -> Daemon {
    Daemon::start(&[
        OsStr::new("--root"),
        fixture().as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
    ])
}

#[test]
fn routes_answer_with_the_documented_shapes() {
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    assert_eq!(d.request("GET", "/healthz", b""), (200, "ok\n".into()));
    assert_eq!(d.request("GET", "/readyz", b"").0, 200);

    let node = d.json("GET", "/v1/node", "");
    assert_eq!(node["health"], "ok");
    assert_eq!(node["cpus"]["capacity"], 8);
    assert_eq!(node["cpus"]["free_exclusive"], 8);
    assert_eq!(node["numa_nodes"].as_array().unwrap().len(), 4);
    assert_eq!(node["numa_nodes"][0]["free_cpus"], "0-1");
    assert_eq!(node["devices"]["nic-vf"]["total"], 2);
    assert_eq!(node["devices"]["nic-vf"]["free"], 2);
    assert_eq!(node["allocations"], 0);

    let s = d.json(
        "POST",
        "/v1/score",
        r#"{"cpus": 2, "devices": [{"kind": "nic-vf", "count": 2}], "policy": "single-numa-node"}"#,
    );
    assert_eq!(s["feasible"], true);
    assert!(s["score"].as_u64().unwrap() <= 100);
    assert_eq!(s["placement"]["mems"], serde_json::json!([0]));
    assert_eq!(s["placement"]["cpus"], serde_json::json!([0, 1]));
    assert!(!s["reasons"].as_array().unwrap().is_empty());

    let none = d.json("POST", "/v1/score", r#"{"cpus": 64}"#);
    assert_eq!(none["feasible"], false);
    assert_eq!(none["score"], 0);
    assert!(none["placement"].is_null());

    let b = d.json(
        "POST",
        "/v1/score:batch",
        r#"{"shapes": [{"cpus": 1}, {"cpus": 64}, {"cpus": 2, "topology_aware": false}]}"#,
    );
    let scores = b["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 3);
    assert_eq!(scores[1]["feasible"], false);
    assert_eq!(scores[0]["feasible"], true);
}

#[test]
fn client_mistakes_are_400_or_413_with_the_field_named() {
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/score", "{", 400, "EOF"),
        ("/v1/score", "", 400, "EOF"),
        ("/v1/score", r#"{"cpus": "four"}"#, 400, "cpus"),
        ("/v1/score", r#"{"cpus": -1}"#, 400, "cpus"),
        ("/v1/score", r#"{"cpus": 1, "gpus": 1}"#, 400, "gpus"),
        ("/v1/score", r#"{"cpus": 4294967296}"#, 400, "cpus"),
        ("/v1/score", r#"{"cpus": 100000}"#, 400, "cpus"),
        ("/v1/score", r#"{"memory": 1e30}"#, 400, "memory"),
        (
            "/v1/score",
            r#"{"devices": [{"kind": "gpu", "count": 99999}]}"#,
            400,
            "devices[0].count",
        ),
        (
            "/v1/score",
            r#"{"devices": [{"kind": "tpu", "count": 1}]}"#,
            400,
            "devices[0].kind",
        ),
        ("/v1/score", r#"{"policy": "strictest"}"#, 400, "policy"),
        ("/v1/score", r#"{"cpus": 1} trailing"#, 400, "trailing"),
        ("/v1/score:batch", r#"{"shapes": {}}"#, 400, "shapes"),
        (
            "/v1/score:batch",
            r#"{"shapes": [{"cpus": 1}, {"cpu": 1}]}"#,
            400,
            "shapes[1]",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, text) = d.request("POST", path, body.as_bytes());
        assert_eq!(got, *status, "{path} {body}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{body}: {e}: {text}"));
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg:?} should name {needle}");
    }
    let many = format!("{{\"shapes\": [{}]}}", vec!["{}"; 257].join(","));
    let (got, text) = d.request("POST", "/v1/score:batch", many.as_bytes());
    assert_eq!(got, 400, "{text}");
    assert!(text.contains("shapes"), "{text}");
    let big = vec![b' '; 1 << 20];
    let (got, text) = d.request("POST", "/v1/score", &big);
    assert_eq!(got, 413, "{text}");
    assert!(text.contains("too large"), "{text}");
    let (got, text) = d.request("GET", "/v1/nothing", b"");
    assert_eq!(got, 404, "{text}");
    assert!(text.contains("error"), "{text}");
    // Still serving after all of that.
    assert_eq!(d.request("GET", "/healthz", b"").0, 200);
}

#[test]
fn score_drops_once_the_cpus_near_the_switch_are_taken() {
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    let shape = r#"{"cpus": 2, "devices": [{"kind": "nic-vf", "count": 2}]}"#;
    let before = d.json("POST", "/v1/score", shape);
    assert_eq!(before["placement"]["mems"], serde_json::json!([0]));

    // Another workload takes node 0's CPUs (the ones next to the switch).
    let taken = CpuSet::from_ids([0, 1]);
    let mut st = State::default();
    st.allocations.insert(
        "a000000".into(),
        Allocation {
            id: "a000000".into(),
            request: Request {
                cpus: 2,
                ..Request::default()
            },
            placement: Placement {
                cpus: taken,
                mems: vec![0],
                devices: vec![],
                memory_bytes: 0,
                reasons: vec![],
                cost: 0,
            },
        },
    );
    let cp = Checkpoint {
        state: st,
        ..Checkpoint::default()
    };
    std::fs::write(state.path().join("checkpoint"), encode(&cp)).unwrap();

    let after = d.json("POST", "/v1/score", shape);
    assert_eq!(after["feasible"], true);
    assert_ne!(after["placement"]["mems"], serde_json::json!([0]));
    assert!(
        after["score"].as_u64() < before["score"].as_u64(),
        "before {before}\nafter {after}"
    );
    let node = d.json("GET", "/v1/node", "");
    assert_eq!(node["allocations"], 1);
    assert_eq!(node["numa_nodes"][0]["free_cpus"], "");
    assert_eq!(node["cpus"]["free_exclusive"], 6);
}

#[test]
fn a_corrupt_checkpoint_is_503_not_a_crash() {
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    std::fs::write(state.path().join("checkpoint"), b"garbage").unwrap();
    let (status, text) = d.request("POST", "/v1/score", br#"{"cpus": 1}"#);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("checkpoint"), "{text}");
    assert_eq!(d.request("GET", "/healthz", b"").0, 200);
}

#[test]
fn config_files_and_flags() {
    let out = cli_common::ok(
        cli_common::griffin()
            .args(["daemon", "--print-default-config"])
            .output()
            .unwrap(),
    );
    assert!(out.contains("listen = \"127.0.0.1:8420\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:0\nlisen_addr: 1\n").unwrap();
    let o = cli_common::griffin()
        .args(["daemon", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = cli_common::text(&o.stderr);
    assert!(
        err.contains("lisen_addr") && err.contains("bad.yaml"),
        "{err}"
    );

    // A file's values are used; SIGTERM stops the daemon cleanly.
    let good = dir.path().join("griffin.toml");
    std::fs::write(
        &good,
        format!(
            "root = {:?}\nstate_dir = {:?}\nnode_name = \"edge-7\"\nreserved = \"0-1\"\n",
            fixture(),
            dir.path().join("state")
        ),
    )
    .unwrap();
    let d = Daemon::start(&[OsStr::new("--config"), good.as_os_str()]);
    let node = d.json("GET", "/v1/node", "");
    assert_eq!(node["node_name"], "edge-7");
    assert_eq!(node["cpus"]["allocatable"], 6);
    assert_eq!(node["cpus"]["reserved"], "0-1");
    assert!(d.terminate().success());
}
