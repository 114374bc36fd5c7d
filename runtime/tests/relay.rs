//! The AF_XDP relay with real traffic (needs root, iproute2, bpffs, native
//! XDP on veth, io_uring): a veth pair with several queues between two
//! network namespaces, the classifier's `xsk` rule steering a UDP port to
//! the relay, and each destination kind. Every datagram sent is delivered
//! or counted as dropped (by the relay or, before it, the kernel).

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixDatagram,
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use griffin_ebpf::{
    afxdp::{BindMode, XdpConfig},
    pin_dir, Action, AttachMode, AttachOptions, Datapath, Rule, DEFAULT_BPFFS,
};
use griffin_runtime::relay::{shm::ShmConsumer, DestinationSpec, Relay, RelaySpec, RelayStats};
use griffin_tests::netns::{NetNs, PinCleanup, Wire};

const PORT: u16 = 5091;
const UDP: u8 = 17;
const FLOWS: u32 = 32;
const BODY: usize = 100;

struct Net {
    _pins: PinCleanup,
    wire: Wire,
    split: Datapath,
}

fn net(tag: &str, queues: u32, prefix: &str) -> Net {
    let wire = Wire::new(tag, queues, prefix);
    let pins = PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &wire.n_if));
    let options = AttachOptions {
        mode: AttachMode::Native,
        ..AttachOptions::default()
    };
    let mut split = wire
        .node
        .run(|| Datapath::attach(&wire.n_if, &options))
        .unwrap();
    split
        .set_rules(&[Rule::new(1, 5, Action::Xsk { queue: None })
            .ip_proto(UDP)
            .dst_ports(PORT..=PORT)])
        .unwrap();
    Net {
        _pins: pins,
        wire,
        split,
    }
}

fn start(net: &mut Net, destination: DestinationSpec, queues: u32) -> Relay {
    let spec = RelaySpec {
        name: "test".into(),
        iface: net.wire.n_if.clone(),
        queues: (0..queues).collect(),
        rules: vec![1],
        destination,
        batch: 32,
    };
    let (wire, split) = (&net.wire, &mut net.split);
    let relay = wire
        .node
        .run(|| Relay::start(&spec, &XdpConfig::default(), split))
        .unwrap();
    for (q, mode) in relay.modes() {
        assert_eq!(*mode, BindMode::Copy, "veth queue {q}: no zero-copy");
    }
    relay
}

/// Sends datagrams `seqs` (the sequence number first in the body) from
/// `FLOWS` source ports, paced.
struct Sender {
    sockets: Vec<UdpSocket>,
    dest: SocketAddr,
}

impl Sender {
    fn new(net: &Net) -> Self {
        let w = &net.wire;
        let sockets = w.sender.run(|| {
            (0..FLOWS)
                .map(|_| UdpSocket::bind((w.s_addr, 0)).unwrap())
                .collect()
        });
        Self {
            sockets,
            dest: SocketAddr::from((w.n_addr, PORT)),
        }
    }

    fn send(&self, seqs: std::ops::Range<u32>) {
        self.send_sized(seqs, |_| BODY);
    }

    /// As `send`, datagram `seq` of `size(seq)` bytes (at least 4).
    fn send_sized(&self, seqs: std::ops::Range<u32>, size: impl Fn(u32) -> usize) {
        let mut body = [0u8; 2048];
        for seq in seqs {
            let body = &mut body[..size(seq)];
            body[..4].copy_from_slice(&seq.to_le_bytes());
            body[4..].fill(seq as u8);
            self.sockets[(seq % FLOWS) as usize]
                .send_to(body, self.dest)
                .unwrap();
            if seq % 16 == 15 {
                std::thread::sleep(Duration::from_micros(400));
            }
        }
    }
}

fn check_body(body: &[u8]) -> u32 {
    check_sized(body, |_| BODY)
}

/// The sequence number of a payload of `size(seq)` bytes sent by
/// `Sender::send_sized`, checked whole.
fn check_sized(body: &[u8], size: impl Fn(u32) -> usize) -> u32 {
    let seq = u32::from_le_bytes(body[..4].try_into().unwrap());
    assert_eq!(
        body.len(),
        size(seq),
        "datagram {seq}: the UDP payload, headers stripped"
    );
    assert!(
        body[4..].iter().all(|&b| b == seq as u8),
        "payload of {seq}"
    );
    seq
}

/// Waits until the relay has seen `n` frames or the kernel dropped the
/// rest (generous deadline), then returns its final counters.
fn settle(relay: &Relay, n: u64) -> RelayStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = relay.stats();
        if s.received + s.kernel_dropped >= n || Instant::now() > deadline {
            // Let the last batch finish and the kernel counters refresh.
            std::thread::sleep(Duration::from_millis(300));
            return relay.stats();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_accounted(s: &RelayStats, n: u64, consumer_got: u64) {
    eprintln!("relay stats: {s:?}; consumer got {consumer_got} of {n}");
    assert_eq!(
        s.received + s.kernel_dropped,
        n,
        "every frame reached the relay or a kernel counter"
    );
    assert_eq!(
        s.delivered + s.dropped_consumer + s.dropped_not_udp,
        s.received,
        "every frame received was delivered or dropped"
    );
    assert_eq!(s.dropped_not_udp, 0);
}

#[test]
fn unix_consumer_killed_and_restarted_mid_flow() {
    const PHASE: u32 = 1500;
    let mut net = net("ru", 2, "198.18.9");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("consumer.sock");
    let relay = start(&mut net, DestinationSpec::Unix { path: path.clone() }, 2);
    let sender = Sender::new(&net);

    let collect = |socket: UnixDatagram, stop: &AtomicBool| {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => seqs.push(check_body(&buf[..n])),
                Err(_) if stop.load(Ordering::Acquire) => return seqs,
                Err(_) => {}
            }
        }
    };

    // Phase 1: the consumer is there.
    let stop = AtomicBool::new(false);
    let first = std::thread::scope(|s| {
        let consumer = UnixDatagram::bind(&path).unwrap();
        let rx = s.spawn(|| collect(consumer, &stop));
        sender.send(0..PHASE);
        settle(&relay, u64::from(PHASE));
        stop.store(true, Ordering::Release);
        rx.join().unwrap()
    });
    // Phase 2: the consumer is gone (its socket closed, as a kill does).
    std::fs::remove_file(&path).unwrap();
    let before = relay.stats();
    sender.send(PHASE..2 * PHASE);
    let gone = settle(&relay, u64::from(2 * PHASE));
    // Phase 3: a new consumer at the same path is served again.
    let stop = AtomicBool::new(false);
    let third = std::thread::scope(|s| {
        let consumer = UnixDatagram::bind(&path).unwrap();
        let rx = s.spawn(|| collect(consumer, &stop));
        sender.send(2 * PHASE..3 * PHASE);
        settle(&relay, u64::from(3 * PHASE));
        stop.store(true, Ordering::Release);
        rx.join().unwrap()
    });
    let stats = relay.stop().unwrap();

    let got = first.len() + third.len();
    assert_accounted(&stats, u64::from(3 * PHASE), got as u64);
    assert_eq!(
        stats.delivered, got as u64,
        "delivered means the consumer has it"
    );
    let all: BTreeSet<u32> = first.iter().chain(&third).copied().collect();
    assert_eq!(all.len(), got, "no datagram twice");
    assert!(first.iter().all(|&s| s < PHASE));
    assert!(
        third.iter().all(|&s| s >= 2 * PHASE),
        "nothing from phase 2 was kept"
    );
    assert_eq!(
        gone.delivered, before.delivered,
        "nothing delivered while the consumer was gone"
    );
    assert!(gone.dropped_consumer > before.dropped_consumer);
    // A Unix datagram consumer queues few datagrams (net.unix.max_dgram_qlen):
    // part of each burst may be refused (EAGAIN, more so on a loaded
    // machine) and is counted above; how much arrives is not this test's
    // business, only that the consumer is served, and served again.
    assert!(!first.is_empty(), "phase 1: nothing delivered");
    assert!(!third.is_empty(), "the consumer that came back got nothing");
}

#[test]
fn udp_into_a_pod_network_namespace_over_several_queues() {
    const N: u32 = 4000;
    let mut net = net("rn", 4, "198.18.10");
    let pod = NetNs::with_prefix("gfp");
    let consumer = pod.udp_receiver(std::net::Ipv4Addr::LOCALHOST, 7000);
    let destination = DestinationSpec::Udp {
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
        netns: Some(Path::new("/run/netns").join(&pod.name)),
    };
    let relay = start(&mut net, destination, 4);
    let sender = Sender::new(&net);
    let stop = AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut seqs = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                match consumer.recv_from(&mut buf) {
                    Ok((n, _)) => seqs.push(check_body(&buf[..n])),
                    Err(_) if stop.load(Ordering::Acquire) => return seqs,
                    Err(_) => {}
                }
            }
        });
        sender.send(0..N);
        settle(&relay, u64::from(N));
        stop.store(true, Ordering::Release);
        rx.join().unwrap()
    });
    let stats = relay.stop().unwrap();
    assert_accounted(&stats, u64::from(N), got.len() as u64);
    // The consumer's socket has a 16 MiB buffer: what the relay delivered
    // arrived.
    assert_eq!(stats.delivered, got.len() as u64);
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>().len(),
        got.len()
    );
    let busy = stats.queues.iter().filter(|q| q.received > 0).count();
    assert!(busy >= 2, "{FLOWS} flows on one queue: {:?}", stats.queues);
    assert!(got.len() as u32 > N * 9 / 10, "{}", got.len());
}

#[test]
fn shared_memory_ring_consumer() {
    const N: u32 = 3000;
    let mut net = net("rs", 1, "198.18.11");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ring.sock");
    let destination = DestinationSpec::Shm {
        path: path.clone(),
        slots: 1024,
        slot_size: 256,
    };
    let relay = start(&mut net, destination, 1);
    let sender = Sender::new(&net);
    let mut ring = ShmConsumer::connect(&path.with_extension("sock.0")).unwrap();
    let stop = AtomicBool::new(false);
    let got = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut seqs = Vec::new();
            loop {
                match ring.next() {
                    Some(body) => seqs.push(check_body(body)),
                    None if stop.load(Ordering::Acquire) => return seqs,
                    None => std::thread::sleep(Duration::from_micros(100)),
                }
            }
        });
        sender.send(0..N);
        settle(&relay, u64::from(N));
        stop.store(true, Ordering::Release);
        rx.join().unwrap()
    });
    let stats = relay.stop().unwrap();
    assert_accounted(&stats, u64::from(N), got.len() as u64);
    assert_eq!(stats.delivered, got.len() as u64);
    let sorted: Vec<u32> = got.clone();
    assert!(
        sorted.windows(2).all(|w| w[0] < w[1]),
        "one queue: in order"
    );
    assert!(got.len() as u32 > N * 9 / 10, "{}", got.len());
}

#[test]
fn a_relay_naming_a_rule_that_does_not_feed_it_is_refused() {
    let mut net = net("rr", 1, "198.18.13");
    for (rules, why) in [
        (vec![2], "rule 2 is not in the split's rules"),
        (vec![1, 7], "rule 7 is not in the split's rules"),
    ] {
        let spec = RelaySpec {
            name: "bad".into(),
            iface: net.wire.n_if.clone(),
            queues: vec![0],
            rules,
            destination: DestinationSpec::Udp {
                addr: "127.0.0.1:9".parse().unwrap(),
                netns: None,
            },
            batch: 32,
        };
        let (wire, split) = (&net.wire, &mut net.split);
        let err = wire
            .node
            .run(|| Relay::start(&spec, &XdpConfig::default(), split))
            .unwrap_err();
        let msg = griffin_devices::Chain(&err).to_string();
        assert!(msg.contains(why), "{msg}");
    }
}

/// Runs of equal-size payloads go to UDP as GSO sends: datagrams of
/// several sizes arrive whole and each once, in fewer sends than
/// datagrams. Then the pod's path refuses GSO (its loopback's MTU is
/// below the segment size: the kernel answers `EMSGSIZE`, older ones
/// `EINVAL`) and the relay
/// sends a datagram at a time, losing nothing.
#[test]
fn udp_gso_runs_of_mixed_sizes_then_a_path_that_refuses_gso() {
    const N: u32 = 3000;
    const BIG: usize = 1300;
    let mut net = net("rg", 1, "198.18.12");
    let pod = NetNs::with_prefix("gfg");
    let status = std::process::Command::new("ip")
        .args(["-n", &pod.name, "link", "set", "lo", "mtu", "1280"])
        .status()
        .unwrap();
    assert!(status.success());
    let consumer = pod.udp_receiver(std::net::Ipv4Addr::LOCALHOST, 7001);
    let destination = DestinationSpec::Udp {
        addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
        netns: Some(Path::new("/run/netns").join(&pod.name)),
    };
    let relay = start(&mut net, destination, 1);
    let sender = Sender::new(&net);
    // Runs of five of one size; every size fits the pod's MTU.
    let size = |seq: u32| {
        if seq < N {
            60 + 37 * ((seq / 5) % 4) as usize
        } else {
            BIG
        }
    };
    let stop = AtomicBool::new(false);
    let (got, mixed) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut seqs = Vec::new();
            let mut buf = [0u8; 2048];
            loop {
                match consumer.recv_from(&mut buf) {
                    Ok((n, _)) => seqs.push(check_sized(&buf[..n], size)),
                    Err(_) if stop.load(Ordering::Acquire) => return seqs,
                    Err(_) => {}
                }
            }
        });
        sender.send_sized(0..N, size);
        let mixed = settle(&relay, u64::from(N));
        sender.send_sized(N..2 * N, size);
        settle(&relay, u64::from(2 * N));
        stop.store(true, Ordering::Release);
        (rx.join().unwrap(), mixed)
    });
    let stats = relay.stop().unwrap();
    assert_accounted(&stats, u64::from(2 * N), got.len() as u64);
    assert_eq!(stats.delivered, got.len() as u64);
    assert_eq!(stats.dropped_consumer, 0);
    assert_eq!(
        got.iter().copied().collect::<BTreeSet<_>>().len(),
        got.len(),
        "no datagram twice"
    );
    eprintln!(
        "mixed sizes: {} datagrams in {} sends; all: {} in {}",
        mixed.delivered, mixed.sends, stats.delivered, stats.sends
    );
    assert!(
        mixed.sends < mixed.delivered,
        "runs went as GSO sends: {} sends for {} datagrams",
        mixed.sends,
        mixed.delivered
    );
    // After the refusal, one send per datagram: the big ones' sends add
    // up to their count, bar the refused GSO sends (sent again).
    let big = stats.delivered - mixed.delivered;
    assert!(
        stats.sends - mixed.sends >= big,
        "{} sends for {big} datagrams of {BIG} bytes",
        stats.sends - mixed.sends
    );
    assert!(got.iter().filter(|&&s| s >= N).count() as u64 == big);
    assert!(got.len() as u32 > 2 * N * 9 / 10, "{}", got.len());
}
