//! `griffin relay` as a process, with real traffic (needs root, iproute2,
//! bpffs, native XDP on veth, io_uring): the split attached on a veth in a
//! network namespace, the relay started there, datagrams delivered to a
//! Unix datagram consumer, the counters printed and shown by
//! `griffin xdp stats`; a relay's process ended and started again on the
//! same split (what a daemon restart does to its relays).

use std::{
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use griffin_ebpf::{pin_dir, Action, AttachMode, AttachOptions, Datapath, Rule, DEFAULT_BPFFS};
use griffin_tests::netns::{PinCleanup, Wire};

const PORT: u16 = 5095;
const N: u32 = 1000;

/// A split on a veth in a namespace with an `xsk` rule for UDP to `PORT`,
/// and a Unix datagram consumer.
/// (Fields drop in order: the datapath, its pins, then the namespaces.)
struct Bed {
    dp: Datapath,
    _pins: PinCleanup,
    wire: Wire,
    dir: tempfile::TempDir,
    consumer: UnixDatagram,
}

impl Bed {
    fn new(tag: &str, net: &str) -> Self {
        let wire = Wire::new(tag, 1, net);
        let pins = PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &wire.n_if));
        let options = AttachOptions {
            mode: AttachMode::Native,
            ..AttachOptions::default()
        };
        let mut dp = wire
            .node
            .run(|| Datapath::attach(&wire.n_if, &options))
            .unwrap();
        dp.set_rules(&[Rule::new(1, 5, Action::Xsk { queue: None })
            .ip_proto(17)
            .dst_ports(PORT..=PORT)])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let consumer = UnixDatagram::bind(dir.path().join("consumer.sock")).unwrap();
        consumer
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            dp,
            _pins: pins,
            wire,
            dir,
            consumer,
        }
    }

    /// `griffin relay` on the split for `secs` seconds as `name`, once it
    /// published its counters (started from a thread inside the node's
    /// namespace: `ip netns exec` would hide bpffs behind its own /sys).
    fn relay(&self, name: &str, secs: u32) -> Relay {
        let to = format!("unix:{}", self.dir.path().join("consumer.sock").display());
        let child = self.wire.node.run(|| {
            Command::new(env!("CARGO_BIN_EXE_griffin"))
                .args(["relay", &self.wire.n_if, "--to", &to, "--name", name])
                .args(["--json", "--duration", &secs.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        });
        let mut relay = Relay(Some(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !stats_file(name).exists() {
            assert!(Instant::now() < deadline, "the relay never published");
            let child = relay.0.as_mut().unwrap();
            assert!(child.try_wait().unwrap().is_none(), "the relay exited");
            std::thread::sleep(Duration::from_millis(50));
        }
        relay
    }

    /// Sends `n` numbered 32-byte datagrams to the split's flow, paced.
    fn send(&self, n: u32) {
        let sender = self
            .wire
            .sender
            .run(|| UdpSocket::bind((self.wire.s_addr, 0)).unwrap());
        let dest = SocketAddr::from((self.wire.n_addr, PORT));
        for seq in 0..n {
            let mut body = [0u8; 32];
            body[..4].copy_from_slice(&seq.to_le_bytes());
            sender.send_to(&body, dest).unwrap();
            if seq % 8 == 7 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }

    /// Sends `n` datagrams and returns the sequence numbers the consumer
    /// got (until it has been idle for 2 s).
    fn send_and_collect(&self, n: u32) -> Vec<u32> {
        let consumer = self.consumer.try_clone().unwrap();
        let collector = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            let mut idle = 0;
            while idle < 10 {
                match consumer.recv(&mut buf) {
                    Ok(len) => {
                        assert_eq!(len, 32);
                        got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                        idle = 0;
                    }
                    Err(_) => idle += 1,
                }
            }
            got
        });
        self.send(n);
        collector.join().unwrap()
    }
}

/// A relay process, stopped (SIGTERM) if the test ends early.
struct Relay(Option<std::process::Child>);

impl Relay {
    /// Its final counters, once it ended (`--duration`).
    fn finish(mut self) -> serde_json::Value {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str(text.lines().last().expect("final counters")).unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(child) = &self.0 {
            // SAFETY: plain kill(2) of the child we started (no-op if gone).
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
    }
}

fn stats_file(name: &str) -> std::path::PathBuf {
    Path::new("/run/griffin/relay").join(format!("{name}.json"))
}

/// Every frame the relay took is delivered or counted as dropped, and the
/// consumer got what it says it delivered.
fn check_accounting(last: &serde_json::Value, sent: u32, got: usize) {
    let count = |k: &str| last[k].as_u64().unwrap();
    assert_eq!(count("received") + count("kernel_dropped"), u64::from(sent));
    assert_eq!(
        count("delivered") + count("dropped_consumer") + count("dropped_not_udp"),
        count("received")
    );
    assert_eq!(count("delivered"), got as u64);
    assert!(got as u32 > sent / 2, "{got}");
}

#[test]
fn relay_command_delivers_and_reports_its_counters() {
    let bed = Bed::new("rc", "198.18.12");
    let name = format!("clitest{}", std::process::id());
    let relay = bed.relay(&name, 8);
    let got = bed.send_and_collect(N);

    // The daemon-independent view while the relay runs.
    let stats = bed.wire.node.run(|| {
        Command::new(env!("CARGO_BIN_EXE_griffin"))
            .args(["xdp", "stats", &bed.wire.n_if, "--json"])
            .output()
            .unwrap()
    });
    assert!(stats.status.success(), "{stats:?}");
    let view: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(view["relays"][0]["name"], name.as_str(), "{view}");

    let last = relay.finish();
    eprintln!("griffin relay: {last}; consumer got {}", got.len());
    check_accounting(&last, N, got.len());
    assert!(
        !stats_file(&name).exists(),
        "the counters file goes with the relay"
    );
}

/// The relay's process ends (a daemon restart) and a new one starts on the
/// same split: the pinned program and maps are adopted, the new sockets
/// take the queues again; between the two, the flow's frames fail open to
/// the stack, each counted as a redirect fallback.
#[test]
fn a_restarted_relay_serves_the_same_split_and_the_gap_is_counted() {
    let bed = Bed::new("rr", "198.18.13");
    let name = format!("clirestart{}", std::process::id());
    let first = bed.relay(&name, 4);
    let got = bed.send_and_collect(N);
    check_accounting(&first.finish(), N, got.len());

    // No relay: the XSKMAP slot is empty.
    const GAP: u32 = 200;
    let before = bed.dp.counters().unwrap().fallbacks.packets;
    bed.send(GAP);
    let deadline = Instant::now() + Duration::from_secs(5);
    let fell_back = loop {
        let n = bed.dp.counters().unwrap().fallbacks.packets - before;
        if n >= u64::from(GAP) || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(fell_back, u64::from(GAP), "every gap frame counted");
    let mut buf = [0u8; 64];
    assert!(
        bed.consumer.recv(&mut buf).is_err(),
        "nothing relayed in the gap"
    );

    let second = bed.relay(&name, 4);
    let got = bed.send_and_collect(N);
    let last = second.finish();
    eprintln!(
        "restarted griffin relay: {last}; consumer got {}",
        got.len()
    );
    check_accounting(&last, N, got.len());
}

#[test]
fn relay_help_explains_the_destinations() {
    let out = Command::new(env!("CARGO_BIN_EXE_griffin"))
        .args(["relay", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "udp:ADDR:PORT",
        "unix:PATH",
        "shm:PATH",
        "--netns",
        "--queues",
        "XSKMAP",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
}
