//! Attaching on real interfaces inside throwaway network namespaces, with
//! real UDP traffic (needs root, iproute2 and native XDP on veth).

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::Duration,
};

use common::netns::{NetNs, PinCleanup, VethPair};
use griffin_ebpf::{
    pin_dir, Action, AttachMode, AttachOptions, Counters, Datapath, Error, Rule, XdpMode,
    DEFAULT_BPFFS,
};

const PAYLOAD: [u8; 32] = [0x5a; 32];
/// Ethernet + IPv4 + UDP + payload, as XDP sees each datagram.
const FRAME_LEN: u64 = 14 + 20 + 8 + PAYLOAD.len() as u64;
const UDP: u8 = 17;

fn pins(iface: &str) -> PinCleanup {
    PinCleanup(pin_dir(Path::new(DEFAULT_BPFFS), iface))
}

/// A namespace with a bridge named after `tag`, up (bridges have no native
/// XDP: no ndo_bpf), and the cleanup of its pins.
fn bridge(tag: &str) -> (NetNs, String, PinCleanup) {
    let ns = NetNs::new();
    let iface = common::netns::unique(tag);
    ns.ip(&["link", "add", &iface, "type", "bridge"]);
    ns.ip(&["link", "set", &iface, "up"]);
    let cleanup = pins(&iface);
    (ns, iface, cleanup)
}

fn generic() -> AttachOptions {
    AttachOptions {
        mode: AttachMode::Generic,
        ..AttachOptions::default()
    }
}

/// Sends `n` datagrams from `from` to `to`, returns how many arrive at `to`.
fn exchange(from: &UdpSocket, to: &UdpSocket, n: usize) -> usize {
    let dest = to.local_addr().unwrap();
    for _ in 0..n {
        from.send_to(&PAYLOAD, dest).unwrap();
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while let Ok((len, _)) = to.recv_from(&mut buf) {
        assert_eq!(&buf[..len], &PAYLOAD);
        got += 1;
    }
    got
}

fn delta(after: &Counters, before: &Counters) -> (u64, u64, u64, u64) {
    (
        after.no_match.packets - before.no_match.packets,
        after.actions.pass.packets - before.actions.pass.packets,
        after.actions.drop.packets - before.actions.drop.packets,
        after.parse_failures.packets - before.parse_failures.packets,
    )
}

#[test]
fn native_xdp_on_veth_counts_real_udp_and_survives_adoption() {
    const N: usize = 40;
    let net = VethPair::new();
    let _cleanup = pins(&net.b_if);
    let options = AttachOptions {
        mode: AttachMode::Native,
        ..AttachOptions::default()
    };
    let mut dp = net.b.run(|| Datapath::attach(&net.b_if, &options)).unwrap();
    let attachment = dp.attachment().unwrap();
    assert_eq!(attachment.mode, XdpMode::Native);
    assert_eq!(attachment.native_refused, None);
    let dir = attachment.pin_dir.clone();
    for name in [
        "link",
        "prog",
        "griffin_rules",
        "griffin_rstats",
        "griffin_lpm_v6",
    ] {
        assert!(
            dir.join(name).exists(),
            "{name} not pinned in {}",
            dir.display()
        );
    }

    let receiver = net.b.run(|| {
        let socket = UdpSocket::bind(SocketAddr::from((net.b_addr, 0))).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        socket
    });
    let sender = net
        .a
        .run(|| UdpSocket::bind(SocketAddr::from((net.a_addr, 0))).unwrap());
    let port = receiver.local_addr().unwrap().port();

    // Default path: no rules, everything passes and is counted as no-match.
    let before = dp.counters().unwrap();
    assert_eq!(exchange(&sender, &receiver, N), N);
    let after = dp.counters().unwrap();
    assert_eq!(delta(&after, &before), (N as u64, N as u64, 0, 0));
    assert_eq!(
        after.no_match.bytes - before.no_match.bytes,
        N as u64 * FRAME_LEN
    );

    // A drop rule for the receiver's port: nothing arrives, all counted.
    dp.set_rules(&[
        Rule::new(9, 10, Action::Drop)
            .ip_proto(UDP)
            .dst_ports(port..=port),
        Rule::new(3, 20, Action::Drop).vlan(7),
    ])
    .unwrap();
    let before = dp.counters().unwrap();
    assert_eq!(exchange(&sender, &receiver, N), 0);
    let after = dp.counters().unwrap();
    assert_eq!(delta(&after, &before), (0, 0, N as u64, 0));
    assert_eq!(after.rules[&9].packets, N as u64);
    assert_eq!(after.rules[&9].bytes, N as u64 * FRAME_LEN);
    assert_eq!(after.rules[&3].packets, 0);

    // Restart: the process goes away, the program stays attached via pins.
    drop(dp);
    assert_eq!(exchange(&sender, &receiver, 5), 0, "pins keep it attached");
    let err = net
        .b
        .run(|| Datapath::attach(&net.b_if, &AttachOptions::default()))
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { .. }), "{err}");
    let mut dp = net
        .b
        .run(|| Datapath::adopt(&net.b_if, Path::new(DEFAULT_BPFFS)))
        .unwrap();
    assert_eq!(dp.attachment().unwrap().mode, XdpMode::Native);
    assert_eq!(dp.rule_counter(9).unwrap().packets, N as u64 + 5);

    // The adopted maps drive the attached program: a pass rule takes over.
    dp.set_rules(&[Rule::new(4, 0, Action::Pass).dst_ports(port..=port)])
        .unwrap();
    assert_eq!(exchange(&sender, &receiver, N), N);
    assert_eq!(dp.counters().unwrap().rules[&4].packets, N as u64);

    dp.detach().unwrap();
    assert!(!dir.exists(), "pins left behind in {}", dir.display());
    // Detached: traffic flows, nothing counts it any more.
    assert_eq!(exchange(&sender, &receiver, 5), 5);
    let err = net
        .b
        .run(|| Datapath::adopt(&net.b_if, Path::new(DEFAULT_BPFFS)))
        .unwrap_err();
    assert!(matches!(err, Error::NotAttached { .. }), "{err}");
}

#[test]
fn falls_back_to_generic_mode_unless_native_is_demanded() {
    let (ns, iface, _cleanup) = bridge("gbr");
    let dir = pin_dir(Path::new(DEFAULT_BPFFS), &iface);

    let demand = AttachOptions {
        mode: AttachMode::Native,
        ..AttachOptions::default()
    };
    let err = ns.run(|| Datapath::attach(&iface, &demand)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Attach {
                mode: XdpMode::Native,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.exists(), "a failed attach leaves no pins");

    let dp = ns
        .run(|| Datapath::attach(&iface, &AttachOptions::default()))
        .unwrap();
    let attachment = dp.attachment().unwrap();
    assert_eq!(attachment.mode, XdpMode::Generic);
    let reason = attachment.native_refused.as_deref().unwrap();
    assert!(
        reason.contains(&iface) && reason.contains("native"),
        "{reason}"
    );
    eprintln!("native refused: {reason}");

    drop(dp);
    let dp = ns
        .run(|| Datapath::adopt(&iface, Path::new(DEFAULT_BPFFS)))
        .unwrap();
    assert_eq!(dp.attachment().unwrap().mode, XdpMode::Generic);
    dp.detach().unwrap();
    assert!(!dir.exists());

    let generic = generic();
    let dp = ns.run(|| Datapath::attach(&iface, &generic)).unwrap();
    assert_eq!(dp.attachment().unwrap().mode, XdpMode::Generic);
    assert_eq!(dp.attachment().unwrap().native_refused, None);
    // Abandoned state can be purged without adopting it.
    drop(dp);
    assert!(Datapath::purge(&iface, Path::new(DEFAULT_BPFFS)).unwrap());
    assert!(!dir.exists());
    assert!(!Datapath::purge(&iface, Path::new(DEFAULT_BPFFS)).unwrap());
    let err = ns
        .run(|| Datapath::adopt(&iface, Path::new(DEFAULT_BPFFS)))
        .unwrap_err();
    assert!(matches!(err, Error::NotAttached { .. }), "{err}");
}

#[test]
fn unknown_interface_is_named_in_the_error() {
    let ns = NetNs::new();
    let err = ns
        .run(|| Datapath::attach("gnosuchif0", &AttachOptions::default()))
        .unwrap_err();
    assert!(matches!(err, Error::Interface { .. }), "{err}");
    assert!(err.to_string().contains("gnosuchif0"), "{err}");
}

#[test]
fn old_layout_pins_are_refused_as_incompatible() {
    let (ns, iface, _cleanup) = bridge("gold");
    let bpffs = Path::new(DEFAULT_BPFFS);
    let dir = pin_dir(bpffs, &iface);
    let generic = generic();
    drop(ns.run(|| Datapath::attach(&iface, &generic)).unwrap());
    assert!(ns.run(|| Datapath::adopt(&iface, bpffs)).is_ok());

    // A loader from before the bank maps pinned no griffin_banks.
    std::fs::remove_file(dir.join("griffin_banks")).unwrap();
    let err = ns.run(|| Datapath::adopt(&iface, bpffs)).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("griffin_banks"), "{err}");

    // A map of another layout under the expected name: the rules map
    // pinned a second time as griffin_banks.
    let rules = aya::maps::MapData::from_pin(dir.join("griffin_rules")).unwrap();
    rules.pin(dir.join("griffin_banks")).unwrap();
    let err = ns.run(|| Datapath::adopt(&iface, bpffs)).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    assert!(
        err.to_string().contains("griffin_banks") && err.to_string().contains("2048"),
        "{err}"
    );

    // Nor the program's active bank (a global, pinned under its own name).
    std::fs::remove_file(dir.join("griffin_active_bank")).unwrap();
    let err = ns.run(|| Datapath::adopt(&iface, bpffs)).unwrap_err();
    assert!(matches!(err, Error::Incompatible { .. }), "{err}");
    assert!(err.to_string().contains("griffin_active_bank"), "{err}");
    // And maps only earlier versions pinned: purged with the rest.
    rules.pin(dir.join("griffin_bitmaps")).unwrap();
    rules.pin(dir.join("griffin_astats")).unwrap();

    // Purging clears the way for a fresh attachment.
    assert!(Datapath::purge(&iface, bpffs).unwrap());
    let dp = ns.run(|| Datapath::attach(&iface, &generic)).unwrap();
    dp.detach().unwrap();
    assert!(!dir.exists());
}

/// The per-action totals are derived from the rule counters, which a rule
/// set replacement zeroes after folding them into retired totals: another
/// process reading the counters meanwhile must never see a total go
/// backwards, and the totals must come out exact.
#[test]
fn action_totals_never_go_backwards_while_rule_sets_change() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let (ns, iface, _cleanup) = bridge("gtot");
    let generic = generic();
    let mut writer = ns.run(|| Datapath::attach(&iface, &generic)).unwrap();
    let reader = ns
        .run(|| Datapath::adopt(&iface, Path::new(DEFAULT_BPFFS)))
        .unwrap();
    let hit = common::frames::udp4(&[], 9000);
    let other = common::frames::udp4(&[], 9001);
    // Rule sets with changing ids and actions, so that each replacement
    // retires counts of both actions.
    let set = |round: u32| {
        let (hit_action, rest_action) = if round.is_multiple_of(2) {
            (Action::Drop, Action::Pass)
        } else {
            (Action::Pass, Action::Drop)
        };
        [
            Rule::new(round % 5, 10, hit_action)
                .ip_proto(UDP)
                .dst_ports(9000..=9000),
            Rule::new(5 + round % 3, 20, rest_action).ip_proto(UDP),
        ]
    };
    let rounds = 60;
    let (mut drops, mut passes) = (0u64, 0u64);
    let sent = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let reads = std::thread::scope(|scope| {
        let reads = scope.spawn(|| {
            let (mut last_pass, mut last_drop, mut reads) = (0, 0, 0u32);
            while !done.load(Ordering::SeqCst) {
                let c = reader.counters().unwrap();
                let now = sent.load(Ordering::SeqCst);
                let (pass, drop) = (c.actions.pass.packets, c.actions.drop.packets);
                assert!(
                    pass >= last_pass && drop >= last_drop,
                    "read {reads}: pass {last_pass} -> {pass}, drop {last_drop} -> {drop}"
                );
                assert!(
                    pass + drop <= now,
                    "read {reads}: {pass} + {drop} of {now} sent"
                );
                (last_pass, last_drop) = (pass, drop);
                reads += 1;
            }
            reads
        });
        for round in 0..rounds {
            writer.set_rules(&set(round)).unwrap();
            for frame in [&hit, &other, &other] {
                // Counted before it runs: the reader may see the frame's
                // count before test_run returns.
                sent.fetch_add(1, Ordering::SeqCst);
                let verdict = writer.test_run(frame).unwrap().verdict;
                match verdict {
                    griffin_ebpf::XdpVerdict::Drop => drops += 1,
                    griffin_ebpf::XdpVerdict::Pass => passes += 1,
                    other => panic!("verdict {other:?}"),
                }
            }
        }
        done.store(true, Ordering::SeqCst);
        reads.join().unwrap()
    });
    assert!(reads > 0);
    // Each round: the hit frame takes the first rule's action, the others
    // the second's.
    assert_eq!(
        (drops, passes),
        (rounds as u64 / 2 * 3, rounds as u64 / 2 * 3)
    );
    let c = reader.counters().unwrap();
    assert_eq!(c.actions.drop.packets, drops);
    assert_eq!(c.actions.pass.packets, passes);
    assert_eq!(c.actions.drop.bytes, drops * hit.len() as u64);
    writer.detach().unwrap();
}
