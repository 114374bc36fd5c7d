//! `griffin accelerations`: `validate` checks annotation values offline
//! (the GEdge seed's forms as written, errors naming the field, bounded
//! input), and the listing reads a daemon's `GET /v1/accelerations`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod cli_common;
use cli_common::{griffin, ok, text, Daemon};

/// The seed's service spec, as written there.
const SEED: &str = "Acceleration:\n  topologyAware: true\n  communication: '[\"SRIOV\", \"RDMA\"]'\n  compute: '[\"GPU, FPGA, AIX...\"]'\n";

fn run_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer thread: the binary may stop reading early (bounded input).
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn validate_prints_the_seeds_request_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acceleration.yaml");
    std::fs::write(&file, SEED).unwrap();
    let out = ok(griffin()
        .args(["accelerations", "validate"])
        .arg(&file)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "topologyAware": true,
            "communication": ["SRIOV", "RDMA"],
            "compute": ["GPU", "FPGA", "AIX"],
            "placement": "best-effort",
            "isolation": "none",
            "flows": [],
            "containers": null,
        })
    );
    // Its own output validates to the same (stdin this time).
    let again = run_with_stdin(
        griffin().args(["accelerations", "validate", "-"]),
        out.as_bytes(),
    );
    assert_eq!(ok(again), out);
}

#[test]
fn validate_names_the_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"communication": "[\"SRIOV\", \"SRIOVX\"]", "compute": ["GPU"]}"#,
    )
    .unwrap();
    let out = griffin()
        .args(["accelerations", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!(
            "griffin: {}: communication[1]: \"SRIOVX\" is not one of SRIOV, RDMA\n",
            file.display()
        )
    );
    let out = run_with_stdin(
        griffin().args(["accelerations", "validate", "-"]),
        b"flows:\n  - protocol: udp\n    ports: 70000\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "griffin: stdin: flows[0].ports: 70000 is not a port\n"
    );
}

#[test]
fn validate_reads_bounded_input() {
    let big = format!("compute: GPU\n#{}\n", "x".repeat(300 << 10));
    let out = run_with_stdin(
        griffin().args(["accelerations", "validate", "-"]),
        big.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "griffin: stdin: more than 262144 bytes\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, &big).unwrap();
    let out = griffin()
        .args(["accelerations", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).ends_with("larger than the limit of 256 KiB\n"),
        "{}",
        text(&out.stderr)
    );
    let out = griffin()
        .args(["accelerations", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).ends_with("not a regular file (a directory)\n"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_explains_the_annotation() {
    let out = ok(griffin()
        .args(["accelerations", "--help"])
        .output()
        .unwrap());
    for word in [
        "griffin.gedge.io/acceleration",
        "topologyAware",
        "communication",
        "compute",
        "placement",
        "isolation",
        "flows",
        "containers",
        "--daemon-timeout",
        "validate",
    ] {
        assert!(out.contains(word), "{word} missing from:\n{out}");
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edge2s-qemu")
}

#[test]
fn a_daemon_without_a_cluster_has_no_accelerations() {
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        OsStr::new("--root"),
        fixture().as_os_str(),
        OsStr::new("--state-dir"),
        state.path().as_os_str(),
    ]);
    assert_eq!(
        d.json("GET", "/v1/accelerations", ""),
        serde_json::json!([])
    );
    let addr = d.addr.to_string();
    let out = ok(griffin()
        .args(["accelerations", "--daemon", &addr])
        .output()
        .unwrap());
    assert_eq!(out, "no accelerations\n");
    let out = ok(griffin()
        .args(["accelerations", "--json", "--daemon"])
        .arg(format!("http://{addr}/"))
        .output()
        .unwrap());
    assert_eq!(out.trim(), "[]");
    assert!(d.terminate().success());
}

/// A one-shot HTTP server answering `answer` to the first request; the
/// request's text comes back through the handle.
fn serve_once(answer: String) -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(answer.as_bytes()).unwrap();
        text(&request)
    });
    (addr, handle)
}

#[test]
fn records_are_listed_as_a_table_and_as_json() {
    let records = serde_json::json!([
        {
            "pod": {"namespace": "edge", "name": "video", "uid": "u1"},
            "request": {"topologyAware": true, "communication": ["SRIOV"], "compute": ["GPU"],
                        "placement": "single-numa-node", "isolation": "none", "flows": [],
                        "containers": null},
            "containers": [
                {"name": "app", "cpus": [2, 3], "mems": [1],
                 "devices": {"nvidia.com/gpu": ["0000:3b:00.0"]},
                 "vf": {"pci_address": "0000:3c:02.1", "netdev": "net1", "netns": "/var/run/netns/cni-1"},
                 "xdp_rules": [4, 5]},
                {"name": "sidecar", "cpus": [], "mems": [], "devices": {}, "vf": null, "xdp_rules": []}
            ],
            "state": "realized",
            "at": "2026-12-01T21:00:00Z"
        },
        {
            "pod": {"namespace": "edge", "name": "zeta", "uid": "u2"},
            "request": {"topologyAware": false, "communication": [], "compute": ["FPGA"],
                        "placement": "none", "isolation": "none", "flows": [], "containers": null},
            "containers": [],
            "state": "failed",
            "reason": "no free fpga",
            "at": "2026-12-01T21:00:01Z"
        }
    ])
    .to_string();
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{records}",
        records.len()
    );
    let (addr, server) = serve_once(answer.clone());
    let out = ok(griffin()
        .args(["accelerations", "--daemon", &addr.to_string()])
        .output()
        .unwrap());
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /v1/accelerations HTTP/1.1\r\n"),
        "{request}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        cells(lines[0]),
        [
            "POD",
            "STATE",
            "AT",
            "CONTAINER",
            "CPUS",
            "MEMS",
            "DEVICES",
            "VF",
            "XDP"
        ]
    );
    assert_eq!(
        cells(lines[1]),
        [
            "edge/video",
            "realized",
            "2026-12-01T21:00:00Z",
            "app",
            "2-3",
            "1",
            "nvidia.com/gpu=0000:3b:00.0",
            "0000:3c:02.1",
            "net1",
            "in",
            "/var/run/netns/cni-1",
            "4,5"
        ]
    );
    assert_eq!(cells(lines[2]), ["sidecar", "-", "-", "-", "-", "-"]);
    assert_eq!(
        cells(lines[3])[..4],
        ["edge/zeta", "failed", "2026-12-01T21:00:01Z", "-"]
    );
    assert_eq!(lines[4], "  reason: no free fpga");
    // --json: the records, as the daemon sent them.
    let (addr, server) = serve_once(answer);
    let out = ok(griffin()
        .args(["accelerations", "--json", "--daemon", &addr.to_string()])
        .output()
        .unwrap());
    server.join().unwrap();
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        got,
        serde_json::from_str::<serde_json::Value>(&records).unwrap()
    );
}

#[test]
fn daemon_errors_are_failures_that_say_so() {
    // An error answer: the daemon's message.
    let body = r#"{"error":"no such route"}"#;
    let (addr, server) = serve_once(format!(
        "HTTP/1.1 404 Not Found\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    ));
    let out = griffin()
        .args(["accelerations", "--daemon", &addr.to_string()])
        .output()
        .unwrap();
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("griffin: the daemon at {addr}: 404 no such route\n")
    );
    // Nobody listening.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let out = griffin()
        .args(["accelerations", "--daemon", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("griffin: connecting to the daemon at {addr}: ")),
        "{}",
        text(&out.stderr)
    );
    // A listener that never answers: given up after --daemon-timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = std::time::Instant::now();
    let out = griffin()
        .args([
            "accelerations",
            "--daemon-timeout",
            "1",
            "--daemon",
            &addr.to_string(),
        ])
        .output()
        .unwrap();
    eprintln!("gave up after {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("the daemon at {addr}: no answer within 1s")),
        "{}",
        text(&out.stderr)
    );
    drop(silent);
}
