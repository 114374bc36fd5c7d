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

/// A checkpoint written by hand, not through the daemon, is seen once its
/// re-check window (1 ms) has passed.
fn behind_its_back() {
    std::thread::sleep(std::time::Duration::from_millis(5));
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
        // Issue 14 D10: a shape is an object.
        ("/v1/score", "[1,2]", 400, "JSON object"),
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
    // Issue 14 D10: 405, 414 and a bad path segment answer each listener's
    // own JSON error too.
    let long = format!("/v1/node?{}", "a".repeat(20_000));
    for (method, path, status) in [
        ("GET", "/v1/score", 405),
        ("DELETE", "/healthz", 405),
        ("GET", long.as_str(), 414),
    ] {
        let (got, text) = d.request(method, path, b"");
        assert_eq!(got, status, "{method} {path:.40}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(v["error"].is_string(), "{text}");
    }
    for (method, path, status) in [
        ("GET", "/monitoring/clusters/%FF/latency", 400),
        ("POST", "/monitoring/near-nodes/latency", 405),
        (
            "GET",
            long.replace("/v1/node", "/v1/gsch/resources").as_str(),
            414,
        ),
    ] {
        let (got, text) = cli_common::request(d.gsch_addr, method, path, b"");
        assert_eq!(got, status, "{method} {path:.40}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["Error"]["ErrorCode"], status, "{text}");
    }
    // Still serving after all of that.
    assert_eq!(d.request("GET", "/healthz", b"").0, 200);
}

/// Issue 14 D7: with its open-file limit at 256 and more idle connections
/// than that, the daemon still answers at once (it used to stop accepting
/// with EMFILE); an idle connection is closed, and a request whose promised
/// body never comes is answered 408, each within its 10 s bound.
#[test]
fn idle_connections_and_missing_bodies_are_bounded() {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let state = tempfile::tempdir().unwrap();
    let mut command = cli_common::daemon_command();
    command.args([
        OsStr::new("--root"),
        fixture().as_os_str(),
        OsStr::new("--state-dir"),
        state.path().as_os_str(),
    ]);
    // SAFETY: setrlimit(2) is async-signal-safe; the closure touches
    // nothing shared with the parent.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let d = Daemon::spawn(&mut command);
    // A liveness bound, not a timing assertion: the old daemon never
    // answered at all.
    let bounded = |s: &std::net::TcpStream| {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
    };
    let idle: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(d.addr).unwrap())
        .collect();
    let mut health = std::net::TcpStream::connect(d.addr).unwrap();
    bounded(&health);
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    health
        .read_to_string(&mut answer)
        .expect("/healthz answered with 300 idle connections open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(idle);
    // The body never comes: 408 with the JSON error.
    let mut slow = std::net::TcpStream::connect(d.addr).unwrap();
    bounded(&slow);
    slow.write_all(b"POST /v1/score HTTP/1.1\r\nHost: g\r\nContent-Length: 100\r\n\r\n{\"cpus\"")
        .unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer)
        .expect("answered before the client gave up");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"request not completed within 10 s"}"#),
        "{answer}"
    );
    // An idle connection is closed by the daemon.
    let mut quiet = std::net::TcpStream::connect(d.addr).unwrap();
    bounded(&quiet);
    let mut buf = [0u8; 16];
    assert_eq!(quiet.read(&mut buf).expect("closed, not timed out"), 0);
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
    behind_its_back();

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

    // /metrics follows the same state: node 0 has no free CPU, one allocation,
    // and the two score requests above were counted and timed.
    let (status, m) = d.request("GET", "/metrics", b"");
    assert_eq!(status, 200, "{m}");
    let value = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{m}"))
    };
    assert_eq!(value("griffin_allocations"), 1.0);
    assert_eq!(value("griffin_free_cpus{numa_node=\"0\"}"), 0.0);
    assert_eq!(value("griffin_free_cpus{numa_node=\"1\"}"), 2.0);
    assert_eq!(value("griffin_score_requests_total"), 2.0);
    assert_eq!(value("griffin_score_duration_seconds_count"), 2.0);
    assert_eq!(value("griffin_discoveries_total"), 1.0);
    assert!(value("griffin_discovery_duration_seconds") > 0.0);
    assert!(m.ends_with("# EOF\n"), "{m}");
}

#[test]
fn a_corrupt_checkpoint_is_503_not_a_crash() {
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    std::fs::write(state.path().join("checkpoint"), b"garbage").unwrap();
    behind_its_back();
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

/// Regression (issue 14 D3): a FIFO given as `--config` hung the daemon
/// before it served anything (it waited in `open` for a writer); it is
/// refused, naming it.
#[test]
fn a_fifo_config_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("griffin.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = griffin_tests::liveness::output_within(
        cli_common::griffin()
            .args(["daemon", "--config"])
            .arg(&fifo),
        std::time::Duration::from_secs(10),
    )
    .expect("griffin daemon still waits on the FIFO");
    let err = cli_common::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "reading config {}: not a regular file (a FIFO)",
            fifo.display()
        )),
        "{err}"
    );
}

#[test]
fn gs_scheduler_routes_speak_the_worker_agent_contract() {
    use std::net::TcpListener;
    // Peers: two listening "nodes", a "master", and one closed port.
    let n1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let n2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let master = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("griffin.yaml");
    std::fs::write(
        &cfg,
        format!(
            "root: {root:?}\nstate_dir: {state:?}\ncluster_name: edge\nnode_name: w1\n\
             probes:\n  interval_ms: 100\n  clusters:\n    core: [\"{m}\"]\n    dark: [\"{closed}\"]\n\
             \x20 near_nodes:\n    - {{name: n1, addr: \"{a}\"}}\n    - {{name: n2, addr: \"{b}\"}}\n\
             \x20   - {{name: gone, addr: \"{closed}\"}}\n",
            root = fixture(),
            state = dir.path().join("state"),
            m = master.local_addr().unwrap(),
            a = n1.local_addr().unwrap(),
            b = n2.local_addr().unwrap(),
        ),
    )
    .unwrap();
    let d = Daemon::start(&[OsStr::new("--config"), cfg.as_os_str()]);

    // Wait (bounded by attempts, not time) for the probes to report both nodes.
    let mut near = serde_json::Value::Null;
    for _ in 0..200 {
        let (status, v) = d.gsch("/monitoring/near-nodes/latency?pingSize=32&pingCount=2");
        assert_eq!(status, 200, "{v}");
        near = v;
        if near["result"].as_array().unwrap().len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rows = near["result"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "the closed peer is never reported: {near}");
    let mut names: Vec<&str> = rows
        .iter()
        .map(|r| r["node_name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2"]);
    for r in rows {
        assert_eq!(r["node_ip"], "127.0.0.1");
        assert!(r["latency"].as_f64().unwrap() >= 0.0);
        assert_eq!(r.as_object().unwrap().len(), 3, "exact fields: {r}");
    }
    assert!(rows[0]["latency"].as_f64() <= rows[1]["latency"].as_f64());

    let (status, v) = d.gsch("/monitoring/clusters/core/latency");
    assert_eq!(status, 200, "{v}");
    assert!(v["result"].as_f64().unwrap() >= 0.0);
    let errors = [
        ("/monitoring/clusters/nowhere/latency", 404, "nowhere"),
        ("/monitoring/clusters/dark/latency", 503, "dark"),
        (
            "/monitoring/near-nodes/latency?pingCount=abc",
            400,
            "pingCount",
        ),
        ("/monitoring/near-nodes/latency?pingSize=0", 400, "pingSize"),
        ("/v1/gsch/resources?gpu=maybe", 400, "gpu"),
    ];
    for (path, code, needle) in errors {
        let (status, v) = d.gsch(path);
        assert_eq!(status, code, "{path}: {v}");
        assert_eq!(v["Error"]["ErrorCode"], code, "{path}: {v}");
        let msg = v["Error"]["Message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }

    for gpu in ["necessary", "unnecessary"] {
        let (status, v) = d.gsch(&format!("/v1/gsch/resources?gpu={gpu}"));
        assert_eq!(status, 200, "{v}");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cluster_name",
                "cpu",
                "memory",
                "node_name",
                "nvidia.com/gpu",
                "score"
            ]
        );
        assert_eq!(v["cluster_name"], "edge");
        assert_eq!(v["node_name"], "w1");
        assert_eq!(v["cpu"], 0.0);
        assert_eq!(v["nvidia.com/gpu"], 0, "the fixture has no GPU");
        // No GPU on the node: the GPU shape is infeasible and scores 0.
        assert_eq!(v["score"].as_u64().unwrap() == 0, gpu == "necessary", "{v}");
    }
    // Also served on the main listener.
    assert_eq!(d.json("GET", "/v1/gsch/resources", "")["node_name"], "w1");
    assert!(d.terminate().success());
}

#[test]
fn extender_verbs_use_the_kube_scheduler_field_names() {
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("griffin.toml");
    std::fs::write(
        &cfg,
        format!(
            "root = {:?}\nstate_dir = {:?}\nnode_name = \"w1\"\n",
            fixture(),
            state.path()
        ),
    )
    .unwrap();
    let d = Daemon::start(&[OsStr::new("--config"), cfg.as_os_str()]);
    let pod = |cpu: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p", "namespace": "ns"}},
            "spec": {{"containers": [{{"name": "c", "image": "i",
            "resources": {{"requests": {{"cpu": "{cpu}", "memory": "64Mi"}}}}}}]}}}}"#
        )
    };
    // Names form, as kube-scheduler's extender/v1 Go types are encoded (no
    // json tags: Go field names, nil pointers as null); answers carry the
    // Go field names.
    let ok = d.json(
        "POST",
        "/filter",
        &format!(
            r#"{{"Pod": {}, "Nodes": null, "NodeNames": ["w0", "w1"]}}"#,
            pod("2")
        ),
    );
    assert_eq!(ok, serde_json::json!({"NodeNames": ["w0", "w1"]}));
    // Older schedulers' tagged names, and any case Go's decoder accepts.
    for (p, n) in [("pod", "nodenames"), ("POD", "nodeNames")] {
        let ok = d.json(
            "POST",
            "/filter",
            &format!(r#"{{"{p}": {}, "{n}": ["w1"]}}"#, pod("2")),
        );
        assert_eq!(ok, serde_json::json!({"NodeNames": ["w1"]}), "{p} {n}");
    }
    let no = d.json(
        "POST",
        "/filter",
        &format!(r#"{{"pod": {}, "nodenames": ["w0", "w1"]}}"#, pod("64")),
    );
    assert_eq!(no["NodeNames"], serde_json::json!(["w0"]));
    assert!(no["FailedNodes"]["w1"]
        .as_str()
        .unwrap()
        .starts_with("griffin"));
    // Issue 14 D5: requests no node can hold, in every form a quantity
    // takes, fail here and score 0 (they passed as "shared pool" before).
    for cpu in ["65537", "1e5", "1E", "1e300", "99999999999999999999999m"] {
        let no = d.json(
            "POST",
            "/filter",
            &format!(r#"{{"pod": {}, "nodenames": ["w1"]}}"#, pod(cpu)),
        );
        assert_eq!(no["NodeNames"], serde_json::json!([]), "{cpu}: {no}");
        assert!(no["FailedNodes"]["w1"].is_string(), "{cpu}: {no}");
        let p = d.json(
            "POST",
            "/prioritize",
            &format!(r#"{{"Pod": {}, "NodeNames": ["w1"]}}"#, pod(cpu)),
        );
        assert_eq!(p, serde_json::json!([{"Host": "w1", "Score": 0}]), "{cpu}");
    }
    // Whole-object form: items come back unchanged.
    let nodes = r#"{"kind": "NodeList", "apiVersion": "v1", "metadata": {},
        "items": [{"metadata": {"name": "w1", "labels": {"a": "b"}}}, {"metadata": {"name": "w2"}}]}"#;
    let r = d.json(
        "POST",
        "/filter",
        &format!(r#"{{"Pod": {}, "Nodes": {nodes}}}"#, pod("64")),
    );
    assert_eq!(r["Nodes"]["kind"], "NodeList");
    assert_eq!(
        r["Nodes"]["items"],
        serde_json::json!([{"metadata": {"name": "w2"}}])
    );
    let r = d.json(
        "POST",
        "/filter",
        &format!(r#"{{"Pod": {}, "Nodes": {nodes}}}"#, pod("1")),
    );
    assert_eq!(r["Nodes"]["items"][0]["metadata"]["labels"]["a"], "b");

    let p = d.json(
        "POST",
        "/prioritize",
        &format!(r#"{{"Pod": {}, "NodeNames": ["w0", "w1"]}}"#, pod("2")),
    );
    let list = p.as_array().unwrap();
    assert_eq!(list.len(), 1, "{p}");
    assert_eq!(list[0]["Host"], "w1");
    let score = list[0]["Score"].as_i64().unwrap();
    assert!((1..=10).contains(&score), "{p}");
    let score100 = d.json("POST", "/v1/score", r#"{"cpus": 2, "memory": 67108864}"#)["score"]
        .as_i64()
        .unwrap();
    assert_eq!(score, (score100 + 5) / 10);

    for (body, needle) in [
        ("{}", "missing field `Pod`"),
        (r#"{"pod": 3}"#, "Pod"),
        (r#"{"Pod": null, "NodeNames": ["w1"]}"#, "Pod"),
        (
            r#"{"pod": {"spec": {"containers": [{"resources": {"requests": {"cpu": "lots"}}}]}}}"#,
            "requests.cpu",
        ),
    ] {
        let (status, text) = d.request("POST", "/filter", body.as_bytes());
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
}

/// A series of `/metrics`, polled until `want` holds (re-discovery is
/// asynchronous); panics with the last scrape after 20 s.
fn wait_metric(d: &Daemon, series: &str, want: impl Fn(f64) -> bool) -> f64 {
    let mut last = String::new();
    for _ in 0..200 {
        let (_, m) = d.request("GET", "/metrics", b"");
        let v = m
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok());
        if let Some(v) = v.filter(|v| want(*v)) {
            return v;
        }
        last = m;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{series} never reached the wanted value:\n{last}");
}

#[test]
fn sighup_discovers_again_and_a_broken_tree_keeps_the_old_topology() {
    use griffin_devices::DeviceKind;
    use griffin_tests::synthetic::Shape;
    let shape = |devices| Shape {
        packages: 1,
        nodes_per_package: 2,
        cores_per_node: 2,
        threads: 1,
        devices_per_node: devices,
        memory_per_node: 1 << 30,
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    shape(vec![DeviceKind::NicVf]).tree().write(&root).unwrap();
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        OsStr::new("--root"),
        root.as_os_str(),
        OsStr::new("--state-dir"),
        state.path().as_os_str(),
    ]);
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    assert_eq!(
        d.json("GET", "/v1/node", "")["devices"]["nic-vf"]["total"],
        2
    );

    // The "hardware" changes: a second VF under each node's switch.
    let next = dir.path().join("next");
    shape(vec![DeviceKind::NicVf, DeviceKind::NicVf])
        .tree()
        .write(&next)
        .unwrap();
    std::fs::rename(&root, dir.path().join("old")).unwrap();
    std::fs::rename(&next, &root).unwrap();
    // Unchanged until told.
    assert_eq!(
        d.json("GET", "/v1/node", "")["devices"]["nic-vf"]["total"],
        2
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_metric(&d, "griffin_discoveries_total", |v| v == 2.0);
    assert_eq!(
        d.json("GET", "/v1/node", "")["devices"]["nic-vf"]["total"],
        4
    );
    let s = d.json(
        "POST",
        "/v1/score",
        r#"{"cpus": 1, "devices": [{"kind": "nic-vf", "count": 2}], "policy": "single-numa-node"}"#,
    );
    assert_eq!(s["feasible"], true, "{s}");

    // A tree discovery cannot read: the daemon keeps serving the last good one.
    std::fs::remove_dir_all(root.join("sys/devices/system/cpu")).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        d.json("GET", "/v1/node", "")["devices"]["nic-vf"]["total"],
        4
    );
    assert_eq!(d.json("GET", "/v1/node", "")["cpus"]["capacity"], 4);
    wait_metric(&d, "griffin_discoveries_total", |v| v == 2.0);
    assert!(d.terminate().success());
}

/// A real kernel uevent (written to a CPU's `uevent` file, which makes the
/// kernel broadcast `change@/devices/system/cpu/cpu0`) makes a daemon serving
/// the live node discover again.
#[test]
fn kernel_uevents_trigger_rediscovery_on_the_live_node() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        OsStr::new("--root"),
        OsStr::new("/"),
        OsStr::new("--state-dir"),
        state.path().as_os_str(),
    ]);
    // The daemon subscribed before printing its address.
    let before = wait_metric(&d, "griffin_discoveries_total", |v| v >= 1.0);
    std::fs::write("/sys/devices/system/cpu/cpu0/uevent", "change").unwrap();
    wait_metric(&d, "griffin_discoveries_total", |v| v > before);
    assert!(d.terminate().success());
}

/// `griffin allocs --json` on a state directory (through its daemon).
fn allocs_json(state: &Path) -> String {
    let out = cli_common::griffin()
        .args(["allocs", "--json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    cli_common::ok(out)
}

/// D10: a checkpoint damaged before the daemon starts is repaired at start
/// (kept aside, rebuilt), not at the first control request: `/v1/*`
/// answers from the first request.
#[test]
fn a_checkpoint_damaged_before_start_is_repaired_at_start() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("checkpoint"), b"garbage").unwrap();
    let d = start(state.path());
    let (status, text) = d.request("GET", "/v1/node", b"");
    assert_eq!(status, 200, "{text}");
    let kept: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(d.terminate().success());
}

/// D3: a FIFO where the checkpoint should be hung `GET /v1/node`, then
/// every route, `griffin allocs` and SIGTERM. At start it is moved aside
/// like a damaged file; one appearing later is refused at once (503 naming
/// it) while the other routes, the CLI and SIGTERM keep working.
#[test]
fn a_fifo_checkpoint_hangs_nothing() {
    use nix::sys::stat::Mode;
    let state = tempfile::tempdir().unwrap();
    let cp = state.path().join("checkpoint");
    nix::unistd::mkfifo(&cp, Mode::S_IRWXU).unwrap();
    let d = start(state.path());
    assert_eq!(d.json("GET", "/v1/node", "")["allocations"], 0);

    std::fs::remove_file(&cp).ok();
    nix::unistd::mkfifo(&cp, Mode::S_IRWXU).unwrap();
    behind_its_back();
    let (status, text) = d.request("GET", "/v1/node", b"");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("a FIFO, not a regular file"), "{text}");
    assert_eq!(d.request("GET", "/healthz", b"").0, 200);
    assert_eq!(d.request("POST", "/v1/score", br#"{"cpus": 1}"#).0, 503);
    assert_eq!(allocs_json(state.path()).trim(), "[]");
    // The control request repaired the state: the FIFO is kept aside.
    assert!(std::fs::symlink_metadata(&cp).is_ok_and(|m| m.is_file()));
    assert_eq!(d.request("GET", "/v1/node", b"").0, 200);
    assert!(d.terminate().success());
}

/// D7: `griffin allocs` waited forever on a stopped daemon. It gives up
/// after `--daemon-timeout`, naming the socket and saying the daemon did
/// not answer.
#[test]
fn the_cli_gives_up_on_a_stopped_daemon() {
    use nix::sys::signal::{kill, Signal};
    let state = tempfile::tempdir().unwrap();
    let d = start(state.path());
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let mut cli = cli_common::griffin()
        .args(["allocs", "--daemon-timeout", "1", "--state-dir"])
        .arg(state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded by attempts: a client without a timeout fails the test
    // (killed by its PID) instead of hanging it.
    let mut gave_up = false;
    for _ in 0..600 {
        if cli.try_wait().unwrap().is_some() {
            gave_up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !gave_up {
        let _ = cli.kill();
    }
    let out = cli.wait_with_output().unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    assert!(gave_up, "griffin allocs still waits on a stopped daemon");
    let err = cli_common::text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let sock = state.path().join("control.sock");
    assert!(
        err.contains(&format!(
            "the daemon at {} did not answer within 1 s",
            sock.display()
        )),
        "{err}"
    );
    // Running again, it answers.
    assert_eq!(allocs_json(state.path()).trim(), "[]");
    assert!(d.terminate().success());
}

/// Issue 13: log lines carry no ANSI colour codes when stderr is not a
/// terminal (a pipe here, a log collector in a cluster).
#[test]
fn logs_are_plain_text_when_stderr_is_not_a_terminal() {
    use std::io::Read;
    let state = tempfile::tempdir().unwrap();
    let mut command = cli_common::griffin();
    command
        .args(["--log", "info", "daemon", "--listen", "127.0.0.1:0"])
        .args(["--gsch-listen", "127.0.0.1:0", "--root"])
        .arg(fixture())
        .arg("--state-dir")
        .arg(state.path())
        .stderr(std::process::Stdio::piped());
    let mut d = Daemon::spawn(&mut command);
    let mut stderr = d.child.stderr.take().unwrap();
    assert!(d.terminate().success());
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).unwrap();
    assert!(logs.contains("serving"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs:?}");
}

/// Found by the SIGKILL campaign (kill_campaign.rs): a daemon killed after
/// taking the connection, before reading the request, made the client's
/// write fail with EPIPE, which `griffin` took for a closed stdout
/// (`griffin topo | head`) and exited 0 saying nothing: an `alloc` that
/// made nothing looked confirmed. A broken pipe on the control socket is a
/// failure naming the socket; only a closed stdout is forgiven.
#[test]
fn a_daemon_gone_before_the_request_is_a_failure_not_a_closed_stdout() {
    let state = tempfile::tempdir().unwrap();
    let sock = state.path().join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // The "daemon": takes each connection and dies (closes it) at once.
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    for args in [
        &["alloc", "--cpus", "0", "--json"][..],
        &["release", "a000000"][..],
        &["allocs", "--json"][..],
    ] {
        // strace holds the client 300 ms after `connect`, so the daemon
        // has hung up before the request is written.
        let out = std::process::Command::new("strace")
            .args([
                "-f",
                "-o",
                "/dev/null",
                "-e",
                "inject=connect:delay_exit=300000",
            ])
            .arg(cli_common::griffin_path())
            .args(args)
            .arg("--state-dir")
            .arg(state.path())
            .output()
            .expect("strace (cargo xtask deps installs it)");
        let err = cli_common::text(&out.stderr);
        assert!(!out.status.success(), "griffin {args:?} exited 0: {err}");
        assert!(
            err.contains(&sock.display().to_string()),
            "griffin {args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "griffin {args:?}");
    }
}
