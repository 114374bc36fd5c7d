//! `griffin xdp` end to end on the real kernel: a veth pair in throwaway
//! network namespaces (needs root, iproute2 and bpffs), real UDP traffic,
//! and rules files the binary must reject without panicking.

mod cli_common;
use cli_common::{griffin, ok, text};
use griffin_tests::netns;

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use netns::VethPair;

const N: usize = 25;
const DROP_PORT: u16 = 5001;
const PASS_PORT: u16 = 6005;

fn pin_dir(iface: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/griffin").join(iface)
}

/// Removes whatever a failed test left in bpffs and `/run/griffin/xdp`.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = pin_dir(&self.0);
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_file(format!("/run/griffin/xdp/{}.json", self.0));
        let _ = std::fs::remove_dir("/run/griffin/xdp");
        let _ = std::fs::remove_dir("/run/griffin");
    }
}

/// Sends `n` datagrams to `to`, returns how many arrive.
fn exchange(from: &UdpSocket, to: &UdpSocket, n: usize) -> usize {
    let dest = to.local_addr().unwrap();
    for _ in 0..n {
        from.send_to(b"griffin", dest).unwrap();
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while to.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

fn rule<'v>(stats: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {stats}"))
}

#[test]
fn attach_rules_stats_update_and_detach_on_veth() {
    let net = VethPair::new();
    let iface = net.b_if.clone();
    let _cleanup = Cleanup(iface.clone());
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
[[rules]]
name = "blocked"
priority = 10
action = "drop"
protocol = "udp"
dst_ports = "{DROP_PORT}"
src = ["198.19.32.0/24"]

[[rules]]
name = "allowed"
priority = 20
action = "pass"
protocol = "udp"
dst_ports = "6000-6010"

[[rules]]
name = "hairpin"
priority = 30
action = "redirect"
to = "{iface}"
dst_ports = 7777
"#
        ),
    )
    .unwrap();
    let in_b = |args: &[&str]| net.b.run(|| griffin().args(args).output().unwrap());

    let out = ok(in_b(&[
        "xdp",
        "attach",
        &iface,
        "--rules",
        rules.to_str().unwrap(),
        "--mode",
        "native",
    ]));
    assert!(
        out.contains("attached to") && out.contains("native"),
        "{out}"
    );
    assert!(pin_dir(&iface).join("link").exists());

    let table = ok(in_b(&["xdp", "rules", &iface]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[1].contains("blocked")
            && lines[1].contains("udp dport 5001 src 198.19.32.0/24")
            && lines[1].ends_with("drop"),
        "{table}"
    );
    assert!(
        lines[2].contains("allowed") && lines[2].contains("dport 6000-6010"),
        "{table}"
    );
    // The redirect target was resolved in the namespace the CLI runs in.
    assert!(
        lines[3].contains("hairpin") && lines[3].ends_with(&format!("redirect to {iface}")),
        "{table}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(in_b(&["xdp", "rules", &iface, "--json"]))).unwrap();
    assert_eq!(listed[0]["name"], "blocked");
    assert_eq!(listed[0]["protocol"], 17);
    assert_eq!(listed[1]["dst_ports"], "6000-6010");

    let receiver = |port| {
        net.b.run(|| {
            let s = UdpSocket::bind(SocketAddr::from((net.b_addr, port))).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            s
        })
    };
    let (dropped, passed) = (receiver(DROP_PORT), receiver(PASS_PORT));
    let sender = net
        .a
        .run(|| UdpSocket::bind(SocketAddr::from((net.a_addr, 0))).unwrap());
    assert_eq!(exchange(&sender, &dropped, N), 0);
    assert_eq!(exchange(&sender, &passed, N), N);

    let stats: serde_json::Value =
        serde_json::from_str(&ok(in_b(&["xdp", "stats", &iface, "--json"]))).unwrap();
    assert_eq!(rule(&stats, "blocked")["packets"], N as u64);
    assert_eq!(rule(&stats, "allowed")["packets"], N as u64);
    assert_eq!(stats["actions"]["drop"]["packets"], N as u64);
    assert!(stats["actions"]["pass"]["packets"].as_u64().unwrap() >= N as u64);
    assert_eq!(stats["parse_failures"]["packets"], 0);
    let human = ok(in_b(&["xdp", "stats", &iface]));
    assert!(
        human.contains("#0 blocked") && human.contains("no match"),
        "{human}"
    );

    // Attaching again adopts the pinned state and only swaps the rules.
    let yaml = dir.path().join("rules.yaml");
    std::fs::write(
        &yaml,
        "rules:\n  - name: open\n    priority: 1\n    action: pass\n    protocol: udp\n",
    )
    .unwrap();
    let out = ok(in_b(&[
        "xdp",
        "attach",
        &iface,
        "--rules",
        yaml.to_str().unwrap(),
    ]));
    assert!(out.starts_with("updated"), "{out}");
    let table = ok(in_b(&["xdp", "rules", &iface]));
    assert!(
        table.contains("open") && !table.contains("blocked"),
        "{table}"
    );
    assert_eq!(exchange(&sender, &dropped, N), N);

    // --watch reprints with per-second rates.
    let watch = ok(in_b(&[
        "xdp", "stats", &iface, "--json", "--watch", "--count", "2",
    ]));
    let samples: Vec<serde_json::Value> = watch
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 2, "{watch}");
    assert!(samples[0]["no_match"].get("pps").is_none());
    assert!(samples[1]["no_match"]["pps"].is_number(), "{watch}");
    // A replaced rule set starts its rule counters from zero: id 0 counted
    // "blocked" before the change, "open" counts only its own packets.
    assert_eq!(rule(&samples[1], "open")["packets"], N as u64);

    ok(in_b(&["xdp", "detach", &iface]));
    assert!(!pin_dir(&iface).exists());
    assert!(!Path::new(&format!("/run/griffin/xdp/{iface}.json")).exists());
    assert_eq!(exchange(&sender, &dropped, N), N);
    let out = in_b(&["xdp", "rules", &iface]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no Griffin XDP state pinned"));
}

/// Runs `griffin xdp attach` with a rules file holding `content`; the
/// interface does not exist, so nothing can be attached by accident.
fn attach_file(name: &str, content: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    let out = griffin()
        .args(["xdp", "attach", "gfnosuchif0", "--rules"])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn bad_rules_files_fail_naming_rule_and_field() {
    let (code, err) = attach_file(
        "r.toml",
        br#"
[[rules]]
name = "ok"
priority = 1
action = "pass"

[[rules]]
name = "video"
priority = 2
action = "drop"
dst_ports = "5100-5000"
"#,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(r#"rule "video" (#1): dst_ports: 5100-5000 is reversed"#),
        "{err}"
    );

    let (code, err) = attach_file(
        "r.yml",
        b"rules:\n  - name: tele\n    priority: 1\n    action: xsk\n    queues: 3\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(r#"rule "tele" (#0): unknown field `queues`"#),
        "{err}"
    );

    // Garbage of every kind: a clean failure, never a panic (exit 101).
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut garbage = Vec::new();
    for _ in 0..512 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        garbage.push(seed as u8);
    }
    for (name, content) in [
        ("g.toml", &garbage[..]),
        ("g.yaml", &garbage[..]),
        ("g.toml", b"[[rules]]\nname = [[[\n"),
        ("g.yaml", b"rules: {a: [1, 2}\n"),
        ("g.yaml", b"- just\n- a list\n"),
        ("g.json", b"{}"),
    ] {
        let (code, err) = attach_file(name, content);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.starts_with("griffin: rules file"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// Regression (issue 14 D3): a FIFO given as the rules file hung `griffin
/// xdp attach` (it waited in `open` for a writer); it is refused, naming it.
#[test]
fn a_fifo_rules_file_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rules.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let out = griffin_tests::liveness::output_within(
        griffin()
            .args(["xdp", "attach", "gfnosuchif0", "--rules"])
            .arg(&fifo),
        Duration::from_secs(10),
    )
    .expect("griffin xdp attach still waits on the FIFO");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "reading {}: not a regular file (a FIFO)",
            fifo.display()
        )),
        "{err}"
    );
}
