//! The `xsk` action into a real AF_XDP socket and the `cpu` action, with
//! real traffic on veths (needs root, iproute2, bpffs, native XDP on veth).

mod common;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::{frames::UDP, netns::Mgmt, split::*};
use griffin_ebpf::{
    afxdp::{XdpConfig, XdpSocket},
    Action, ActionCounters, Counter, Counters, Rule,
};

const XSK_PORT: u16 = 5071;
const CPU_PORT: u16 = 5072;
/// Ethernet + IPv4 (no options) + UDP headers.
const HEADERS: usize = 14 + 20 + 8;

/// Asserts that from `before` to `after`, `n` frames matched `rule` and
/// took the action `action` picks, and none fell back.
fn assert_took(
    before: &Counters,
    after: &Counters,
    rule: u32,
    action: fn(&ActionCounters) -> &Counter,
    n: u32,
) {
    let packets = |c: &Counters| (c.rules[&rule].packets, action(&c.actions).packets);
    let ((rule0, action0), (rule1, action1)) = (packets(before), packets(after));
    assert_eq!(
        (rule1 - rule0, action1 - action0),
        (u64::from(n), u64::from(n))
    );
    assert_eq!(after.fallbacks, before.fallbacks);
}

#[test]
fn xsk_rule_steers_a_udp_port_into_an_af_xdp_socket() {
    const N: u32 = 1000;
    const RULE: u32 = 2;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    let (mut dp, _consumer_dp) = net.attach();
    let mut xsk = net
        .node
        .run(|| XdpSocket::open(&net.n_if, 0, &XdpConfig::default()))
        .unwrap();
    dp.set_xsk(0, xsk.as_raw_fd()).unwrap();
    dp.set_rules(&[Rule::new(RULE, 5, Action::Xsk { queue: Some(0) })
        .ip_proto(UDP)
        .dst_ports(XSK_PORT..=XSK_PORT)])
        .unwrap();
    // Anything the rule failed to steer would land here.
    let node = net.udp(&net.node, N_ADDR, XSK_PORT);
    mgmt.ping("xsk bound");

    let before = dp.counters().unwrap();
    let sender = net.sender_socket();
    let done = AtomicBool::new(false);
    let frames = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let mut frames = Vec::new();
            loop {
                let mut got = Vec::new();
                if xsk.wait_readable(Duration::from_millis(200)).unwrap() {
                    xsk.receive(64, &mut got).unwrap();
                }
                let idle = got.is_empty();
                // Copied out; the frames go back to the fill ring.
                frames.extend(got.drain(..).map(|f| f.data().to_vec()));
                xsk.refill().unwrap();
                if frames.len() >= N as usize || (idle && done.load(Ordering::Acquire)) {
                    return frames;
                }
            }
        });
        let tx = s.spawn(|| {
            let dest = SocketAddr::from((N_ADDR, XSK_PORT));
            for seq in 0..N {
                sender.send_to(&payload(seq), dest).unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        // Management keeps working while data goes to user space.
        for round in 0..5 {
            mgmt.ping(&format!("xsk flow {round}"));
        }
        tx.join().unwrap();
        done.store(true, Ordering::Release);
        rx.join().unwrap()
    });
    let after = dp.counters().unwrap();
    mgmt.ping("after xsk flow");

    let mut seqs = Vec::new();
    for frame in &frames {
        assert_eq!(frame.len(), HEADERS + PAYLOAD_LEN);
        assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4");
        assert_eq!(frame[23], UDP);
        assert_eq!(&frame[26..30], &S_ADDR.octets());
        assert_eq!(&frame[30..34], &N_ADDR.octets());
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), XSK_PORT);
        let body = &frame[HEADERS..];
        let seq = u32::from_le_bytes(body[..4].try_into().unwrap());
        assert_eq!(body, payload(seq), "payload of datagram {seq}");
        seqs.push(seq);
    }
    eprintln!(
        "xsk: sent {N}, socket {}, rule +{}, xsk action +{}, fallbacks +{}, kernel {:?}",
        frames.len(),
        after.rules[&RULE].packets - before.rules[&RULE].packets,
        after.actions.xsk.packets - before.actions.xsk.packets,
        after.fallbacks.packets - before.fallbacks.packets,
        xsk.statistics().unwrap()
    );
    assert_all("AF_XDP socket", &seqs, N);
    let mut buf = [0u8; 2048];
    assert!(
        node.recv_from(&mut buf).is_err(),
        "a datagram reached the stack"
    );
    assert_took(&before, &after, RULE, |a| &a.xsk, N);
    assert_eq!(
        after.actions.xsk.bytes - before.actions.xsk.bytes,
        u64::from(N) * (HEADERS + PAYLOAD_LEN) as u64
    );
    assert!(
        after.no_match.packets > before.no_match.packets,
        "the management TCP is no-match traffic"
    );
    assert_eq!(xsk.statistics().unwrap(), Default::default());
}

#[test]
fn cpu_action_hands_real_frames_to_the_node_stack() {
    const N: u32 = 1000;
    const RULE: u32 = 3;
    const CPU: u32 = 0;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    let (mut dp, _consumer_dp) = net.attach();
    dp.set_cpu_target(CPU, 256).unwrap();
    dp.set_rules(&[Rule::new(RULE, 5, Action::Cpu { cpu: CPU })
        .ip_proto(UDP)
        .dst_ports(CPU_PORT..=CPU_PORT)])
        .unwrap();
    let consumer = net.udp(&net.consumer, N_ADDR, CPU_PORT);
    let node = net.udp(&net.node, N_ADDR, CPU_PORT);
    let before = dp.counters().unwrap();
    let r = flow(
        &net,
        &consumer,
        &node,
        CPU_PORT,
        N,
        Duration::from_micros(50),
        |_| mgmt.ping("cpu flow"),
    );
    let after = dp.counters().unwrap();
    mgmt.ping("after cpu flow");
    eprintln!(
        "cpu: sent {N}, node {}, consumer {}, cpu action +{}, fallbacks +{}",
        r.node.len(),
        r.consumer.len(),
        after.actions.cpu.packets - before.actions.cpu.packets,
        after.fallbacks.packets - before.fallbacks.packets
    );
    assert_all("node", &r.node, N);
    assert!(r.consumer.is_empty());
    assert_took(&before, &after, RULE, |a| &a.cpu, N);
    assert_eq!(after.actions.redirect, before.actions.redirect);
}
