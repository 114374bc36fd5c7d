//! A warm relay allocates nothing per frame: a counting global allocator
//! counts the allocations made on the relay's queue threads (named
//! `relay-q<N>`) while real traffic crosses a veth into it (needs root,
//! iproute2, bpffs, native XDP on veth, io_uring). Its own test binary, so
//! that no other test's relay threads are counted.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use griffin_ebpf::{
    afxdp::XdpConfig, pin_dir, Action, AttachMode, AttachOptions, Datapath, Rule, DEFAULT_BPFFS,
};
use griffin_runtime::relay::{DestinationSpec, Relay, RelaySpec};
use griffin_tests::netns::{PinCleanup, Wire};

/// Allocations (and reallocations) made on relay queue threads.
static RELAY_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// 0: not looked at yet; 1: a relay queue thread; 2: another.
    static ON_RELAY: Cell<u8> = const { Cell::new(0) };
}

fn on_relay_thread() -> bool {
    ON_RELAY
        .try_with(|c| {
            if c.get() == 0 {
                let mut name = [0u8; 16];
                // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
                let rc = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) };
                c.set(if rc == 0 && name.starts_with(b"relay-q") {
                    1
                } else {
                    2
                });
            }
            c.get() == 1
        })
        .unwrap_or(false)
}

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged; the
// counting touches only an atomic and a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_relay_thread() {
            RELAY_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if on_relay_thread() {
            RELAY_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PORT: u16 = 5093;
const CONSUMER: u16 = 7003;

#[test]
fn a_warm_relay_allocates_nothing_per_frame() {
    let wire = Wire::new("ra", 1, "198.18.14");
    let _pins = PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), &wire.n_if));
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
            .ip_proto(17)
            .dst_ports(PORT..=PORT)])
        .unwrap();
    let consumer = wire
        .node
        .udp_receiver(std::net::Ipv4Addr::LOCALHOST, CONSUMER);
    let spec = RelaySpec {
        name: "alloc".into(),
        iface: wire.n_if.clone(),
        queues: vec![0],
        rules: vec![1],
        destination: DestinationSpec::Udp {
            addr: SocketAddr::from(([127, 0, 0, 1], CONSUMER)),
            netns: None,
        },
        batch: 64,
    };
    let relay = wire
        .node
        .run(|| Relay::start(&spec, &XdpConfig::default(), &mut split))
        .unwrap();
    let sender = wire.sender.run(|| {
        let s = UdpSocket::bind((wire.s_addr, 0)).unwrap();
        s.connect((wire.n_addr, PORT)).unwrap();
        s
    });
    // Sizes in runs (GSO sends) and alone; bursts and pauses (the thread
    // waits for the ring between them).
    let send = |seqs: std::ops::Range<u32>| {
        let body = [0x5au8; 1400];
        for seq in seqs {
            let size = [64, 64, 64, 200, 1400, 1400, 900][(seq % 7) as usize];
            sender.send(&body[..size]).unwrap();
            if seq % 64 == 63 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    };
    let settle = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while relay.stats().received + relay.stats().kernel_dropped < n {
            assert!(Instant::now() < deadline, "{:?}", relay.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Acquire) {
                let _ = consumer.recv_from(&mut buf);
            }
        });
        const WARM: u32 = 4_000;
        const MEASURED: u32 = 20_000;
        send(0..WARM);
        settle(u64::from(WARM));
        let warm = RELAY_ALLOCS.load(Ordering::Relaxed);
        let before = relay.stats();
        send(WARM..WARM + MEASURED);
        settle(u64::from(WARM + MEASURED));
        let allocs = RELAY_ALLOCS.load(Ordering::Relaxed) - warm;
        let after = relay.stats();
        stop.store(true, Ordering::Release);
        let relayed = after.delivered - before.delivered;
        eprintln!(
            "warm-up: {warm} allocations on the relay thread; then {allocs} for {relayed} datagrams in {} sends",
            after.sends - before.sends
        );
        // The counter does see the relay's thread: its warm-up allocates
        // (runtime, scratch vectors, send batches).
        assert!(warm > 0, "no allocation counted on the relay thread");
        assert!(relayed > u64::from(MEASURED) * 9 / 10, "{after:?}");
        assert!(
            after.sends - before.sends < relayed,
            "runs went as GSO sends"
        );
        assert_eq!(allocs, 0, "allocations while relaying {relayed} datagrams");
    });
    relay.stop().unwrap();
}
