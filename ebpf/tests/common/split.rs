//! The real-traffic topology of the kernel tests, driven through the library
//! (the CLI tests in cli/tests/xdp_split.rs use the same shape):
//!
//! ```text
//! sender ns            node ns                         consumer ns
//!   s_if  ==(wire)==>  n_if [griffin, native XDP]
//!                      n_out  ==(second veth)==>      c_if [pass-all XDP]
//! ```
//!
//! `c_if` carries the same MAC and IPv4 address as `n_if`, so a frame
//! redirected from `n_if` out of `n_out` is accepted by the consumer
//! unchanged, and a frame passed to the stack is accepted by the node: both
//! bind a UDP socket on the same address and port, and every datagram is
//! accounted for on one side or the other. The wire has one queue, so every
//! frame arrives on `n_if`'s queue 0 (where an AF_XDP socket is bound). `XDP_REDIRECT` into a veth needs
//! the receiving peer's NAPI, hence the pass-all instance on `c_if`.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use griffin_ebpf::{pin_dir, AttachMode, AttachOptions, Datapath, DEFAULT_BPFFS};

use super::netns::{NetNs, PinCleanup, SetOnDrop, ThreeNs};

pub const S_MAC: &str = "02:00:00:00:2a:01";
pub const N_MAC: &str = "02:00:00:00:2b:01";
pub const O_MAC: &str = "02:00:00:00:2c:01";
pub const S_ADDR: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);
pub const N_ADDR: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 2);
pub const MGMT_PORT: u16 = 7033;
pub const PAYLOAD_LEN: usize = 64;

pub struct Split {
    // Pins first: they are removed (detaching) before the namespaces go.
    _pins: [PinCleanup; 2],
    net: ThreeNs,
}

/// The namespaces and interfaces, as `split.node`, `split.n_if`, ...
impl std::ops::Deref for Split {
    type Target = ThreeNs;

    fn deref(&self) -> &ThreeNs {
        &self.net
    }
}

impl Split {
    pub fn new() -> Self {
        let net = ThreeNs::new("l", [S_MAC, N_MAC, O_MAC], "10.233.0");
        net.consumer
            .ip(&["addr", "add", "10.233.0.2/24", "dev", &net.c_if]);
        net.consumer.neigh("10.233.0.1", S_MAC, &net.c_if);
        let bpffs = std::path::Path::new(DEFAULT_BPFFS);
        Self {
            _pins: [
                PinCleanup(pin_dir(bpffs, &net.n_if)),
                PinCleanup(pin_dir(bpffs, &net.c_if)),
            ],
            net,
        }
    }

    /// Attaches a pass-all Griffin on `c_if` (for its NAPI) and Griffin on
    /// `n_if`, both native; returns the node's datapath (no rules yet) and
    /// the consumer's.
    pub fn attach(&self) -> (Datapath, Datapath) {
        let options = AttachOptions {
            mode: AttachMode::Native,
            ..AttachOptions::default()
        };
        let consumer = self
            .consumer
            .run(|| Datapath::attach(&self.c_if, &options))
            .unwrap();
        let node = self
            .node
            .run(|| Datapath::attach(&self.n_if, &options))
            .unwrap();
        (node, consumer)
    }

    /// The ifindex of `iface` in `ns`.
    pub fn ifindex(&self, ns: &NetNs, iface: &str) -> u32 {
        ns.run(|| nix::net::if_::if_nametoindex(iface).unwrap())
    }

    /// A receiving UDP socket in `ns` ([`NetNs::udp_receiver`]).
    pub fn udp(&self, ns: &NetNs, addr: Ipv4Addr, port: u16) -> UdpSocket {
        ns.udp_receiver(addr, port)
    }

    /// The sender's UDP socket, sending without a UDP checksum: veth offloads
    /// it (CHECKSUM_PARTIAL), a redirected xdp_frame loses that state and the
    /// receiver would drop the datagram as a checksum error.
    pub fn sender_socket(&self) -> UdpSocket {
        self.sender.run(|| {
            let s = UdpSocket::bind(SocketAddr::from((S_ADDR, 0))).unwrap();
            griffin_tests::sockopt::no_udp_checksum(&s);
            s
        })
    }
}

/// Receives sequence-numbered datagrams until `done` is set and the socket
/// has been idle for its read timeout.
pub fn collect(socket: &UdpSocket, done: &AtomicBool, seen: &AtomicUsize) -> Vec<u32> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                assert_eq!(len, PAYLOAD_LEN);
                assert_eq!(from.ip(), S_ADDR);
                got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                seen.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if done.load(Ordering::Acquire) => return got,
            Err(_) => {}
        }
    }
}

/// The payload of datagram `seq`: its number, then a fixed pattern.
pub fn payload(seq: u32) -> [u8; PAYLOAD_LEN] {
    let mut payload = [0x5au8; PAYLOAD_LEN];
    payload[..4].copy_from_slice(&seq.to_le_bytes());
    payload
}

/// Sends `n` sequence-numbered datagrams to `port`, paced by `gap`.
pub fn send_flow(sender: &UdpSocket, port: u16, n: u32, gap: Duration) {
    let dest = SocketAddr::from((N_ADDR, port));
    for seq in 0..n {
        sender.send_to(&payload(seq), dest).unwrap();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

pub struct FlowResult {
    pub consumer: Vec<u32>,
    pub node: Vec<u32>,
}

/// Datagrams seen so far by each side while a flow runs.
pub struct Seen {
    pub consumer: AtomicUsize,
    pub node: AtomicUsize,
}

/// Runs a flow of `n` datagrams to `port` while `during` runs on the calling
/// thread; `consumer` and `node` receive.
pub fn flow(
    net: &Split,
    consumer: &UdpSocket,
    node: &UdpSocket,
    port: u16,
    n: u32,
    gap: Duration,
    during: impl FnOnce(&Seen),
) -> FlowResult {
    let sender = net.sender_socket();
    let done = AtomicBool::new(false);
    let seen = Seen {
        consumer: AtomicUsize::new(0),
        node: AtomicUsize::new(0),
    };
    std::thread::scope(|s| {
        let c = s.spawn(|| collect(consumer, &done, &seen.consumer));
        let nd = s.spawn(|| collect(node, &done, &seen.node));
        let tx = s.spawn(|| send_flow(&sender, port, n, gap));
        // Stops the receivers even if `during` or the sender panics.
        let stop = SetOnDrop(&done);
        during(&seen);
        tx.join().unwrap();
        // Let the last datagrams land before the receivers may stop: until
        // all arrived, or nothing more arrived for 300 ms (a busy machine
        // may deliver the tail late).
        let total = || seen.consumer.load(Ordering::Relaxed) + seen.node.load(Ordering::Relaxed);
        let mut last = usize::MAX;
        while total() < n as usize && total() != last {
            last = total();
            std::thread::sleep(Duration::from_millis(300));
        }
        drop(stop);
        FlowResult {
            consumer: c.join().unwrap(),
            node: nd.join().unwrap(),
        }
    })
}

/// Waits (bounded, as a hang guard) until `seen` reaches `at_least`.
pub fn wait_for(seen: &AtomicUsize, at_least: usize) {
    wait_until("datagrams to arrive", || {
        seen.load(Ordering::Relaxed) >= at_least
    });
}

/// Polls `done` every few milliseconds; panics after 10 s (a hang guard,
/// not a timing assertion).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The set of sequence numbers, asserting there are no duplicates.
pub fn distinct(seqs: &[u32]) -> BTreeSet<u32> {
    let set: BTreeSet<u32> = seqs.iter().copied().collect();
    assert_eq!(set.len(), seqs.len(), "duplicated datagrams");
    set
}

/// Asserts `seqs` are exactly `0..n`, naming the missing ones.
pub fn assert_all(side: &str, seqs: &[u32], n: u32) {
    let got = distinct(seqs);
    let missing: Vec<u32> = (0..n).filter(|seq| !got.contains(seq)).collect();
    assert!(
        missing.is_empty() && got.len() == n as usize,
        "{side}: got {} of {n}, missing {missing:?}",
        got.len()
    );
}
