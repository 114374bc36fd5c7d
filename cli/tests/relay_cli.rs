//! `griffin relay` as a process, with real traffic (needs root, iproute2,
//! bpffs, native XDP on veth, io_uring): the split attached on a veth in a
//! network namespace, the relay started there, datagrams delivered to a
//! Unix datagram consumer, the counters printed and shown by
//! `griffin xdp stats`.

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

#[test]
fn relay_command_delivers_and_reports_its_counters() {
    let wire = Wire::new("rc", 1, "198.18.12");
    let _pins = PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &wire.n_if));
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
    let path = dir.path().join("consumer.sock");
    let consumer = UnixDatagram::bind(&path).unwrap();
    consumer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let name = format!("clitest{}", std::process::id());
    let stats_file = Path::new("/run/griffin/relay").join(format!("{name}.json"));
    let to = format!("unix:{}", path.display());
    // Started from a thread inside the node's namespace (`ip netns exec`
    // would hide bpffs behind its own /sys).
    let mut child = wire.node.run(|| {
        Command::new(env!("CARGO_BIN_EXE_griffin"))
            .args(["relay", &wire.n_if, "--to", &to, "--name", &name])
            .args(["--json", "--duration", "8"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    });
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: plain kill(2) of the child we started (no-op if gone).
            unsafe {
                libc::kill(self.0 as i32, libc::SIGTERM);
            }
        }
    }
    let _kill = Kill(child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stats_file.exists() {
        assert!(Instant::now() < deadline, "the relay never published");
        assert!(child.try_wait().unwrap().is_none(), "the relay exited");
        std::thread::sleep(Duration::from_millis(50));
    }

    let sender = wire
        .sender
        .run(|| UdpSocket::bind((wire.s_addr, 0)).unwrap());
    let dest = SocketAddr::from((wire.n_addr, PORT));
    let collector = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let mut idle = 0;
        while idle < 10 {
            match consumer.recv(&mut buf) {
                Ok(n) => {
                    assert_eq!(n, 32);
                    got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                    idle = 0;
                }
                Err(_) => idle += 1,
            }
        }
        got
    });
    for seq in 0..N {
        let mut body = [0u8; 32];
        body[..4].copy_from_slice(&seq.to_le_bytes());
        sender.send_to(&body, dest).unwrap();
        if seq % 8 == 7 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let got = collector.join().unwrap();

    // The daemon-independent view while the relay runs.
    let stats = wire.node.run(|| {
        Command::new(env!("CARGO_BIN_EXE_griffin"))
            .args(["xdp", "stats", &wire.n_if, "--json"])
            .output()
            .unwrap()
    });
    assert!(stats.status.success(), "{stats:?}");
    let view: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(view["relays"][0]["name"], name.as_str(), "{view}");

    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("final counters")).unwrap();
    eprintln!("griffin relay: {last}; consumer got {}", got.len());
    let count = |k: &str| last[k].as_u64().unwrap();
    assert_eq!(count("received") + count("kernel_dropped"), u64::from(N));
    assert_eq!(
        count("delivered") + count("dropped_consumer") + count("dropped_not_udp"),
        count("received")
    );
    assert_eq!(count("delivered"), got.len() as u64);
    assert!(got.len() as u32 > N / 2, "{}", got.len());
    assert!(
        !stats_file.exists(),
        "the counters file goes with the relay"
    );
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
