//! `griffin xdp` splitting real traffic on the real kernel (needs root,
//! iproute2, bpffs and native XDP on veth):
//!
//! ```text
//! sender ns            node ns                         consumer ns
//!   s_if  ==(wire)==>  n_if [griffin, native XDP]
//!                      n_out  ==(second veth)==>      c_if [pass-all XDP]
//! ```
//!
//! UDP to ports 5000-5100 is redirected from `n_if` to `n_out`; a management
//! TCP connection to a listener in the node namespace is passed. `c_if`
//! carries the same MAC and IPv4 address as `n_if` (they are in different
//! namespaces and L2 segments), so a redirected frame is accepted by the
//! consumer unchanged, and a frame that falls back to `XDP_PASS` is accepted
//! by the node's own stack: both sides bind a UDP socket on the same address
//! and port, and every datagram is accounted for on one side or the other.
//!
//! `XDP_REDIRECT` into a veth needs the receiving peer's NAPI (an XDP program
//! or GRO on `c_if`): a pass-all Griffin instance is attached on `c_if` with
//! the CLI for that.

mod cli_common;
use cli_common::{griffin, ok};
use griffin_tests::flow::{self, distinct, wait_for, FlowResult, Seen};
use griffin_tests::netns;

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use netns::{Mgmt, NetNs};

const S_MAC: &str = "02:00:00:00:1a:01";
const N_MAC: &str = "02:00:00:00:1b:01";
const O_MAC: &str = "02:00:00:00:1c:01";
const S_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 33, 1);
const N_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 33, 2);
const DATA_PORT: u16 = 5050;
const MGMT_PORT: u16 = 7022;

/// Removes the pins and rule metadata `griffin xdp attach` left for an
/// interface (the interfaces themselves go with their namespaces).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = Path::new("/sys/fs/bpf/griffin").join(&self.0);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir("/sys/fs/bpf/griffin");
        let _ = std::fs::remove_file(format!("/run/griffin/xdp/{}.json", self.0));
        let _ = std::fs::remove_dir("/run/griffin/xdp");
        let _ = std::fs::remove_dir("/run/griffin");
    }
}

struct Split {
    // Pins first: they are removed before the namespaces go.
    _pins: [Cleanup; 2],
    net: netns::ThreeNs,
    _rules_dir: tempfile::TempDir,
    data_rules: PathBuf,
    pass_rules: PathBuf,
}

/// The namespaces and interfaces, as `net.node`, `net.n_if`, ...
impl std::ops::Deref for Split {
    type Target = netns::ThreeNs;

    fn deref(&self) -> &netns::ThreeNs {
        &self.net
    }
}

impl Split {
    fn new() -> Self {
        let net = netns::ThreeNs::new("w", [S_MAC, N_MAC, O_MAC], "198.19.33");
        net.consumer
            .ip(&["addr", "add", "198.19.33.2/24", "dev", &net.c_if]);
        net.consumer.neigh("198.19.33.1", S_MAC, &net.c_if);
        let n_out = &net.n_out;

        let dir = tempfile::tempdir().unwrap();
        let data_rules = dir.path().join("split.toml");
        std::fs::write(
            &data_rules,
            format!(
                r#"
[[rules]]
name = "data"
priority = 10
action = "redirect"
to = "{n_out}"
protocol = "udp"
dst_ports = "5000-5100"
"#
            ),
        )
        .unwrap();
        let pass_rules = dir.path().join("pass.toml");
        std::fs::write(
            &pass_rules,
            "[[rules]]\nname = \"all\"\npriority = 1\naction = \"pass\"\n",
        )
        .unwrap();
        Self {
            _pins: [Cleanup(net.n_if.clone()), Cleanup(net.c_if.clone())],
            net,
            _rules_dir: dir,
            data_rules,
            pass_rules,
        }
    }

    fn attach(&self, ns: &NetNs, iface: &str, rules: &Path) -> String {
        ns.run(|| {
            ok(griffin()
                .args(["xdp", "attach", iface, "--mode", "native", "--rules"])
                .arg(rules)
                .output()
                .unwrap())
        })
    }

    /// Attaches the pass-all instance on `c_if`, then the splitter on `n_if`.
    fn attach_all(&self) {
        let out = self.attach(&self.consumer, &self.c_if, &self.pass_rules);
        assert!(out.starts_with("attached to"), "{out}");
        let out = self.attach(&self.node, &self.n_if, &self.data_rules);
        assert!(
            out.starts_with("attached to") && out.contains("native"),
            "{out}"
        );
    }

    fn stats(&self) -> Stats {
        let json = self.node.run(|| {
            ok(griffin()
                .args(["xdp", "stats", &self.n_if, "--json"])
                .output()
                .unwrap())
        });
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let data = v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "data")
            .unwrap_or_else(|| panic!("no rule data in {v}"))["packets"]
            .as_u64()
            .unwrap();
        let get = |x: &serde_json::Value| x["packets"].as_u64().unwrap();
        Stats {
            data,
            redirect: get(&v["actions"]["redirect"]),
            fallbacks: get(&v["fallbacks"]),
            no_match: get(&v["no_match"]),
        }
    }

    /// The XDP program ids `ip -d link show` lists for `n_if`.
    fn xdp_prog_ids(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.node.name,
                "-d",
                "link",
                "show",
                "dev",
                &self.n_if,
            ])
            .output()
            .unwrap();
        let out = ok(out);
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(3)
            .filter(|w| w[0].starts_with("prog/xdp") && w[1] == "id")
            .map(|w| w[2].to_owned())
            .collect()
    }

    /// The consumer's and the node's receiving sockets on the data port.
    fn receivers(&self) -> (UdpSocket, UdpSocket) {
        (
            self.consumer.udp_receiver(N_ADDR, DATA_PORT),
            self.node.udp_receiver(N_ADDR, DATA_PORT),
        )
    }

    /// A flow of `n` datagrams to the data port, received on `rx`, while
    /// `during` runs on the calling thread; with the counters before and
    /// after it.
    fn flow(
        &self,
        rx: &(UdpSocket, UdpSocket),
        n: u32,
        gap: Duration,
        during: impl FnOnce(&Seen),
    ) -> (FlowResult, Stats, Stats) {
        let before = self.stats();
        let sender = self.sender.run(|| flow::sender(S_ADDR));
        let dest = SocketAddr::from((N_ADDR, DATA_PORT));
        let r = flow::run(&sender, dest, &rx.0, &rx.1, n, gap, during);
        (r, before, self.stats())
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    data: u64,
    redirect: u64,
    fallbacks: u64,
    no_match: u64,
}

/// Every one of the `n` datagrams of `r` reached the consumer exactly once,
/// none the node, and the counters say so.
fn all_redirected(what: &str, n: u32, r: &FlowResult, before: Stats, after: Stats) {
    let c = distinct(&r.consumer);
    eprintln!(
        "{what}: sent {n}, consumer {}, node {}, redirect +{}, fallbacks +{}",
        c.len(),
        r.node.len(),
        after.redirect - before.redirect,
        after.fallbacks - before.fallbacks
    );
    assert_eq!(c, (0..n).collect(), "{what}: datagrams lost");
    assert!(r.node.is_empty(), "{what}: datagrams reached the node");
    assert_eq!(after.data - before.data, u64::from(n));
    assert_eq!(after.redirect - before.redirect, u64::from(n));
    assert_eq!(after.fallbacks, before.fallbacks);
}

#[test]
fn splits_real_traffic_then_fails_open_when_the_target_vanishes() {
    const WARMUP: u32 = 200;
    const N: u32 = 3000;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    mgmt.ping("before attach");
    net.attach_all();
    assert_eq!(net.xdp_prog_ids().len(), 1);
    mgmt.ping("attached");

    let rx = net.receivers();

    // 1. Split: every data datagram goes to the consumer, none to the node.
    let (r, before, after) = net.flow(&rx, WARMUP, Duration::ZERO, |_| {});
    mgmt.ping("split");
    let got = distinct(&r.consumer);
    assert_eq!(got, (0..WARMUP).collect(), "lost in the split");
    assert!(r.node.is_empty(), "{} reached the node", r.node.len());
    assert_eq!(after.data - before.data, u64::from(WARMUP));
    assert_eq!(after.redirect - before.redirect, u64::from(WARMUP));
    assert_eq!(after.fallbacks, before.fallbacks);
    assert!(
        after.no_match > 0,
        "management traffic is no-match: {after:?}"
    );
    eprintln!(
        "split: sent {WARMUP}, consumer {}, node {}, redirect +{}, fallbacks +{}",
        r.consumer.len(),
        r.node.len(),
        after.redirect - before.redirect,
        after.fallbacks - before.fallbacks
    );

    // 2. Fail open: the consumer's veth (and with it the redirect target
    // n_out) is deleted mid-flow.
    let (r, before, after) = net.flow(&rx, N, Duration::from_micros(100), |seen| {
        wait_for(&seen.consumer, N as usize / 4);
        net.consumer.ip(&["link", "del", &net.c_if]);
    });
    mgmt.ping("target gone");
    let (c, n) = (distinct(&r.consumer), distinct(&r.node));
    let sent = u64::from(N);
    let redirected = after.redirect - before.redirect;
    let fallbacks = after.fallbacks - before.fallbacks;
    eprintln!(
        "fail-open: sent {N}, consumer {}, node {}, redirect +{redirected}, fallbacks +{fallbacks}, \
         lost in the switch {}",
        c.len(),
        n.len(),
        sent - c.len() as u64 - n.len() as u64
    );
    let gone = Command::new("ip")
        .args(["-n", &net.node.name, "link", "show", "dev", &net.n_out])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "{} still exists", net.n_out);
    assert_eq!(after.data - before.data, sent);
    // Every data datagram was either redirected or fell back, and every
    // fallback was passed to (and received by) the node's stack.
    assert_eq!(redirected + fallbacks, sent);
    assert!(fallbacks > 0 && redirected >= N as u64 / 4);
    assert_eq!(fallbacks, n.len() as u64);
    // The rest were redirected into the veth while it was being torn down
    // (it goes down before it is unregistered and leaves the devmap): the
    // kernel drops those. They are exactly the gap between the last
    // datagram the consumer got and the first one the node got.
    assert!(redirected >= c.len() as u64);
    let lost: Vec<u32> = (0..N)
        .filter(|seq| !c.contains(seq) && !n.contains(seq))
        .collect();
    assert_eq!(lost.len() as u64, redirected - c.len() as u64);
    assert!(c.is_disjoint(&n));
    let (c_last, n_first) = (*c.last().unwrap(), *n.first().unwrap());
    assert!(c_last < n_first, "{c_last} vs {n_first}");
    assert!(
        lost.iter().all(|&seq| c_last < seq && seq < n_first),
        "lost outside the switch window: {lost:?}"
    );
    assert_eq!(c, (0..=c_last).collect(), "lost before the switch");
    assert_eq!(n, (n_first..N).collect(), "lost after the switch");
    assert_eq!(n.last(), Some(&(N - 1)));

    mgmt.ping("after fail-open");
}

#[test]
fn reattach_under_flow_adopts_without_duplicate_or_loss() {
    const N: u32 = 3000;
    const REATTACHES: usize = 5;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    mgmt.ping("before attach");
    net.attach_all();
    let ids = net.xdp_prog_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    mgmt.ping("attached");

    let rx = net.receivers();
    let mut outputs = Vec::new();
    let (r, before, after) = net.flow(&rx, N, Duration::from_micros(100), |seen| {
        wait_for(&seen.consumer, 100);
        for _ in 0..REATTACHES {
            // A new process each time: it adopts the pinned state.
            outputs.push(net.attach(&net.node, &net.n_if, &net.data_rules));
            mgmt.ping("re-attach");
        }
        // The re-attaches must have happened while data flowed.
        assert!(
            seen.consumer.load(Ordering::Relaxed) < N as usize,
            "flow ended too soon"
        );
    });
    for out in &outputs {
        assert!(out.starts_with("updated"), "{out}");
    }
    assert_eq!(net.xdp_prog_ids(), ids, "exactly the same single program");
    mgmt.ping("after re-attach");

    all_redirected(&format!("re-attach x{REATTACHES}"), N, &r, before, after);

    // Detach both via the CLI: pins go, traffic is no longer split.
    net.node.run(|| {
        ok(griffin()
            .args(["xdp", "detach", &net.n_if])
            .output()
            .unwrap())
    });
    net.consumer.run(|| {
        ok(griffin()
            .args(["xdp", "detach", &net.c_if])
            .output()
            .unwrap())
    });
    assert!(net.xdp_prog_ids().is_empty());
    assert!(!Path::new("/sys/fs/bpf/griffin").join(&net.n_if).exists());
    mgmt.ping("detached");
}

/// `griffin daemon` as the loader: it attaches the split from its
/// configuration, is SIGKILLed mid-flow, and a new daemon adopts the pinned
/// state while the flow goes on: one program throughout, every datagram
/// delivered, counters continuous and on `/metrics`; SIGTERM leaves the split
/// running.
#[test]
fn daemon_killed_mid_flow_is_adopted_without_loss() {
    const N: u32 = 5000;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    mgmt.ping("before attach");
    let out = net.attach(&net.consumer, &net.c_if, &net.pass_rules);
    assert!(out.starts_with("attached to"), "{out}");
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("griffin.toml");
    std::fs::write(
        &config,
        format!(
            "xdp = [{{ iface = \"{}\", rules = \"{}\", mode = \"native\" }}]\n",
            net.n_if,
            net.data_rules.display()
        ),
    )
    .unwrap();
    let start = || {
        net.node.run(|| {
            cli_common::Daemon::start(&[
                std::ffi::OsStr::new("--config"),
                config.as_os_str(),
                std::ffi::OsStr::new("--state-dir"),
                state.path().as_os_str(),
            ])
        })
    };
    let d = start();
    let ids = net.xdp_prog_ids();
    assert_eq!(ids.len(), 1, "{ids:?}");
    mgmt.ping("daemon attached");

    let rx = net.receivers();
    let mut d = Some(d);
    let (r, before, after) = net.flow(&rx, N, Duration::from_micros(100), |seen| {
        wait_for(&seen.consumer, 200);
        drop(d.take()); // SIGKILL
        mgmt.ping("daemon killed");
        d = Some(start());
        mgmt.ping("daemon restarted");
        assert!(
            seen.consumer.load(Ordering::Relaxed) < N as usize,
            "flow ended before the restart"
        );
    });
    let d = d.unwrap();
    assert_eq!(net.xdp_prog_ids(), ids, "adopted, not attached again");
    all_redirected("daemon SIGKILL + restart", N, &r, before, after);

    // The restarted daemon reports the same counters.
    let (status, m) = net.node.run(|| d.request("GET", "/metrics", b""));
    assert_eq!(status, 200);
    let series = format!(
        "griffin_xdp_action_packets_total{{iface=\"{}\",action=\"redirect\"}} ",
        net.n_if
    );
    let redirect: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series}in\n{m}"));
    assert!(redirect >= after.redirect, "{redirect} vs {after:?}");

    // SIGTERM: the daemon exits, the split stays.
    assert!(d.terminate().success());
    assert_eq!(net.xdp_prog_ids(), ids);
    mgmt.ping("daemon stopped");
}
