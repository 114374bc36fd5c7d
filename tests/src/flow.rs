//! Flows of sequence-numbered UDP datagrams from one sender to two
//! receivers, the consumer and the node of the XDP split tests (ebpf's and
//! the CLI's): every datagram is accounted for on one side or the other.
//!
//! A datagram is [`PAYLOAD_LEN`] bytes: its sequence number (little endian),
//! then a fixed pattern ([`payload`]).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use crate::netns::SetOnDrop;

/// The length of every datagram of a flow.
pub const PAYLOAD_LEN: usize = 64;

/// The payload of datagram `seq`: its number, then a fixed pattern.
pub fn payload(seq: u32) -> [u8; PAYLOAD_LEN] {
    let mut payload = [0x5au8; PAYLOAD_LEN];
    payload[..4].copy_from_slice(&seq.to_le_bytes());
    payload
}

/// A sending socket on `addr` (call it in the sender's namespace), sending
/// without a UDP checksum: veth offloads it (CHECKSUM_PARTIAL), a redirected
/// xdp_frame loses that state and the receiver would drop the datagram as a
/// checksum error.
pub fn sender(addr: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::from((addr, 0))).unwrap();
    crate::sockopt::no_udp_checksum(&s);
    s
}

/// Receives datagrams of a flow from `from` until `done` is set and the
/// socket has been idle for its read timeout, counting them in `seen`.
pub fn collect(
    socket: &UdpSocket,
    from: IpAddr,
    done: &AtomicBool,
    seen: &AtomicUsize,
) -> Vec<u32> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                assert_eq!(len, PAYLOAD_LEN);
                assert_eq!(peer.ip(), from);
                got.push(u32::from_le_bytes(buf[..4].try_into().unwrap()));
                seen.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if done.load(Ordering::Acquire) => return got,
            Err(_) => {}
        }
    }
}

/// Sends `n` sequence-numbered datagrams to `dest`, paced by `gap`.
pub fn send(sender: &UdpSocket, dest: SocketAddr, n: u32, gap: Duration) {
    for seq in 0..n {
        sender.send_to(&payload(seq), dest).unwrap();
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
}

/// The sequence numbers each side received.
#[derive(Debug)]
pub struct FlowResult {
    /// The consumer's.
    pub consumer: Vec<u32>,
    /// The node's.
    pub node: Vec<u32>,
}

/// Datagrams seen so far by each side while a flow runs.
#[derive(Debug)]
pub struct Seen {
    /// By the consumer.
    pub consumer: AtomicUsize,
    /// By the node.
    pub node: AtomicUsize,
}

/// Sends a flow of `n` datagrams from `sender` to `dest` while `during`
/// runs on the calling thread; `consumer` and `node` receive.
pub fn run(
    sender: &UdpSocket,
    dest: SocketAddr,
    consumer: &UdpSocket,
    node: &UdpSocket,
    n: u32,
    gap: Duration,
    during: impl FnOnce(&Seen),
) -> FlowResult {
    let from = sender.local_addr().unwrap().ip();
    let done = AtomicBool::new(false);
    let seen = Seen {
        consumer: AtomicUsize::new(0),
        node: AtomicUsize::new(0),
    };
    std::thread::scope(|s| {
        let c = s.spawn(|| collect(consumer, from, &done, &seen.consumer));
        let nd = s.spawn(|| collect(node, from, &done, &seen.node));
        let tx = s.spawn(|| send(sender, dest, n, gap));
        // Stops the receivers even if `during` or the sender panics.
        let stop = SetOnDrop(&done);
        during(&seen);
        tx.join().unwrap();
        // Let the last datagrams land before the receivers may stop: until
        // all arrived, or nothing more arrived for 1 s (a busy machine may
        // deliver the tail late: a cpumap kthread starved by other load
        // was seen holding the last fifth of a burst for over 300 ms).
        let total = || seen.consumer.load(Ordering::Relaxed) + seen.node.load(Ordering::Relaxed);
        let mut last = usize::MAX;
        while total() < n as usize && total() != last {
            last = total();
            std::thread::sleep(Duration::from_secs(1));
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
