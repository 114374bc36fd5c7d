//! BPF_PROG_TEST_RUN of the classifier on crafted frames (needs root).

mod common;

use common::frames::*;
use griffin_ebpf::{Action, Datapath, Error, Prefix, PrefixSets, Rule, XdpVerdict};

/// Runs `frame`, asserting the run succeeded; returns the verdict and
/// whether the frame came back unchanged.
fn run(dp: &Datapath, frame: &[u8]) -> (XdpVerdict, bool) {
    let out = dp
        .test_run(frame)
        .unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()));
    (out.verdict, out.frame == frame)
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    let dp = Datapath::load().unwrap();
    for len in [0, 1, 13] {
        match dp.test_run(&garbage(7, len)) {
            Err(Error::TestRun(e)) => assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{len}"),
            other => panic!("{len} bytes: expected EINVAL, got {other:?}"),
        }
    }
    assert_eq!(dp.counters().unwrap(), Default::default());
}

#[test]
fn malformed_frames_pass_untouched_and_are_counted() {
    let dp = Datapath::load().unwrap();
    let udp_payload = udp(1, 2, b"x");
    let v4 = ipv4(UDP, V4_SRC, V4_DST, 0, &udp_payload);
    let v6 = ipv6(UDP, V6_SRC, V6_DST, 0, &udp_payload);
    let mut ihl_small = v4.clone();
    ihl_small[0] = 0x44;
    let mut ihl_large = v4.clone();
    ihl_large[0] = 0x4f;
    let mut bad_version = v4.clone();
    bad_version[0] = 0x65;
    let mut tot_len_long = v4.clone();
    tot_len_long[2..4].copy_from_slice(&200u16.to_be_bytes());
    let mut tot_len_short = v4.clone();
    tot_len_short[2..4].copy_from_slice(&10u16.to_be_bytes());
    let mut v6_len_long = v6.clone();
    v6_len_long[4..6].copy_from_slice(&500u16.to_be_bytes());
    // Ten destination-options headers: more than the walker's bound.
    let mut long_chain = Vec::new();
    for _ in 0..9 {
        long_chain.extend(ext_hdr(60, 0));
    }
    long_chain.extend(ext_hdr(UDP, 0));
    long_chain.extend(&udp_payload);
    // Hop-by-hop header claiming 2 KiB.
    let mut huge_ext = ext_hdr(UDP, 255);
    huge_ext.truncate(8);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ethernet + truncated 802.1Q tag",
            eth(&[], ETH_P_8021Q, &[0x00]),
        ),
        (
            "ethernet claiming 802.1Q, no tag",
            eth(&[], ETH_P_8021Q, &[]),
        ),
        (
            "QinQ with truncated inner tag",
            eth(&[(ETH_P_8021AD, 10)], ETH_P_8021Q, &[0x00, 0x14]),
        ),
        ("truncated IPv4 header", eth(&[], ETH_P_IP, &v4[..12])),
        ("IPv4 ihl < 5", eth(&[], ETH_P_IP, &ihl_small)),
        ("IPv4 ihl beyond the frame", eth(&[], ETH_P_IP, &ihl_large)),
        ("IPv4 with version 6", eth(&[], ETH_P_IP, &bad_version)),
        (
            "IPv4 total length beyond the frame",
            eth(&[], ETH_P_IP, &tot_len_long),
        ),
        (
            "IPv4 total length below the header",
            eth(&[], ETH_P_IP, &tot_len_short),
        ),
        (
            "IPv4 with truncated UDP header",
            eth(&[], ETH_P_IP, &ipv4(UDP, V4_SRC, V4_DST, 0, &[0, 1, 0, 2])),
        ),
        (
            "IPv4 with truncated TCP header",
            eth(
                &[],
                ETH_P_IP,
                &ipv4(TCP, V4_SRC, V4_DST, 0, &tcp(1, 2)[..12]),
            ),
        ),
        ("truncated IPv6 header", eth(&[], ETH_P_IPV6, &v6[..30])),
        (
            "IPv6 payload length beyond the frame",
            eth(&[], ETH_P_IPV6, &v6_len_long),
        ),
        (
            "IPv6 truncated extension header",
            eth(&[], ETH_P_IPV6, &ipv6(0, V6_SRC, V6_DST, 0, &[UDP])),
        ),
        (
            "IPv6 extension header longer than the frame",
            eth(&[], ETH_P_IPV6, &ipv6(0, V6_SRC, V6_DST, 0, &huge_ext)),
        ),
        (
            "IPv6 too many extension headers",
            eth(&[], ETH_P_IPV6, &ipv6(60, V6_SRC, V6_DST, 0, &long_chain)),
        ),
        (
            "IPv6 truncated fragment header",
            eth(&[], ETH_P_IPV6, &ipv6(44, V6_SRC, V6_DST, 0, &[UDP, 0, 0])),
        ),
        (
            "IPv6 with truncated UDP header",
            eth(&[], ETH_P_IPV6, &ipv6(UDP, V6_SRC, V6_DST, 0, &[0, 1])),
        ),
    ];
    // A drop-everything rule: malformed frames must still pass.
    let mut dp = dp;
    dp.set_rules(&[Rule::new(0, 0, Action::Drop)]).unwrap();
    let mut bytes = 0;
    for (name, frame) in &cases {
        let (verdict, unchanged) = run(&dp, frame);
        assert_eq!(verdict, XdpVerdict::Pass, "{name}");
        assert!(unchanged, "{name}: frame modified");
        bytes += frame.len() as u64;
    }
    let counters = dp.counters().unwrap();
    assert_eq!(counters.parse_failures.packets, cases.len() as u64);
    assert_eq!(counters.parse_failures.bytes, bytes);
    assert_eq!(counters.actions.pass.packets, cases.len() as u64);
    assert_eq!(counters.rules[&0].packets, 0);
    assert_eq!(counters.no_match.packets, 0);
}

#[test]
fn garbage_never_crashes_and_passes_unless_a_rule_matches() {
    let dp = Datapath::load().unwrap();
    for seed in 1..400u64 {
        let len = 14 + (seed as usize * 37) % 1500;
        let mut frame = garbage(seed, len);
        // Steer a share of the garbage into the IP and VLAN parsers.
        let ethertype = [ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD][seed as usize % 5 % 4];
        if seed % 5 != 4 {
            frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }
        let (verdict, unchanged) = run(&dp, &frame);
        assert_eq!(verdict, XdpVerdict::Pass, "seed {seed}");
        assert!(unchanged, "seed {seed}");
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.actions.pass.packets, 399);
    assert_eq!(c.parse_failures.packets + c.no_match.packets, 399);
}

#[test]
fn well_formed_stacks_parse_and_reach_the_rules() {
    let mut dp = Datapath::load().unwrap();
    dp.set_rules(&[Rule::new(1, 0, Action::Drop)
        .ip_proto(UDP)
        .dst_ports(5353..=5353)])
        .unwrap();
    let payload = udp(40000, 5353, b"m");
    let chain = [
        ext_hdr(43, 0),
        ext_hdr(60, 1),
        frag_hdr(51, 0, true),
        {
            // AH: length in 4-byte units minus 2; 12-byte header + 4 bytes ICV.
            let mut ah = vec![UDP, 2, 0, 0];
            ah.extend_from_slice(&[0; 12]);
            ah
        },
        payload.clone(),
    ]
    .concat();
    let matching: Vec<(&str, Vec<u8>)> = vec![
        ("plain IPv4", udp4(&[], 5353)),
        ("802.1Q", udp4(&[(ETH_P_8021Q, 100)], 5353)),
        (
            "QinQ",
            udp4(&[(ETH_P_8021AD, 100), (ETH_P_8021Q, 200)], 5353),
        ),
        ("plain IPv6", udp6(5353)),
        (
            "IPv6 hop-by-hop, routing, dstopts, fragment, AH",
            eth(
                &[(ETH_P_8021Q, 7)],
                ETH_P_IPV6,
                &ipv6(0, V6_SRC, V6_DST, 0, &chain),
            ),
        ),
    ];
    for (name, frame) in &matching {
        assert_eq!(run(&dp, frame).0, XdpVerdict::Drop, "{name}");
    }
    let other: Vec<(&str, Vec<u8>)> = vec![
        ("other port", udp4(&[(ETH_P_8021Q, 100)], 5354)),
        (
            "TCP same port",
            eth(&[], ETH_P_IP, &ipv4(TCP, V4_SRC, V4_DST, 0, &tcp(1, 5353))),
        ),
        (
            "non-first IPv6 fragment (no ports)",
            eth(
                &[],
                ETH_P_IPV6,
                &ipv6(
                    44,
                    V6_SRC,
                    V6_DST,
                    0,
                    &[frag_hdr(UDP, 8, false), payload.clone()].concat(),
                ),
            ),
        ),
        ("ARP", eth(&[], ETH_P_ARP, &[0; 28])),
        (
            "three VLAN tags",
            udp4(
                &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
                5353,
            ),
        ),
    ];
    for (name, frame) in &other {
        let (verdict, unchanged) = run(&dp, frame);
        assert_eq!(verdict, XdpVerdict::Pass, "{name}");
        assert!(unchanged, "{name}");
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.parse_failures.packets, 0);
    assert_eq!(c.rules[&1].packets, matching.len() as u64);
    assert_eq!(c.actions.drop.packets, matching.len() as u64);
    assert_eq!(c.no_match.packets, other.len() as u64);
}

#[test]
fn drop_rule_drops_matching_udp_and_counts() {
    let mut dp = Datapath::load().unwrap();
    dp.set_rules(&[Rule::new(7, 10, Action::Drop)
        .ip_proto(UDP)
        .dst_ports(9000..=9999)])
        .unwrap();
    let hit = udp4(&[], 9999);
    let miss = udp4(&[], 10000);
    assert_eq!(run(&dp, &hit).0, XdpVerdict::Drop);
    assert_eq!(run(&dp, &hit).0, XdpVerdict::Drop);
    assert_eq!(run(&dp, &miss), (XdpVerdict::Pass, true));
    let c = dp.counters().unwrap();
    assert_eq!(c.rules[&7].packets, 2);
    assert_eq!(c.rules[&7].bytes, 2 * hit.len() as u64);
    assert_eq!(c.actions.drop.packets, 2);
    assert_eq!(c.actions.drop.bytes, 2 * hit.len() as u64);
    assert_eq!(c.actions.pass.packets, 1);
    assert_eq!(c.no_match.packets, 1);
    assert_eq!(c.no_match.bytes, miss.len() as u64);
    assert_eq!(c.parse_failures.packets, 0);
    assert_eq!(c.fallbacks.packets, 0);
}

#[test]
fn first_match_by_priority_and_rules_change_at_run_time() {
    let mut dp = Datapath::load().unwrap();
    let frame = udp4(&[(ETH_P_8021Q, 42)], 53);
    // Given out of order: priority decides, not position.
    dp.set_rules(&[
        Rule::new(2, 20, Action::Drop).ip_proto(UDP),
        Rule::new(1, 10, Action::Pass).vlan(42),
    ])
    .unwrap();
    assert_eq!(run(&dp, &frame).0, XdpVerdict::Pass);
    let c = dp.counters().unwrap();
    assert_eq!((c.rules[&1].packets, c.rules[&2].packets), (1, 0));

    dp.set_rules(&[
        Rule::new(2, 5, Action::Drop).ip_proto(UDP),
        Rule::new(1, 10, Action::Pass).vlan(42),
    ])
    .unwrap();
    assert_eq!(run(&dp, &frame).0, XdpVerdict::Drop);
    dp.set_rules(&[]).unwrap();
    assert_eq!(run(&dp, &frame).0, XdpVerdict::Pass);
    let c = dp.counters().unwrap();
    assert!(c.rules.is_empty());
    // Rule counters belong to the active rule set: replaced rules start from zero.
    assert_eq!(dp.rule_counter(2).unwrap().packets, 0);
    assert_eq!(dp.rule_counter(1).unwrap().packets, 0);
    assert_eq!(c.actions.drop.packets, 1);
    assert_eq!(c.actions.pass.packets, 2);
    assert_eq!(c.no_match.packets, 1);
}

#[test]
fn replaced_rule_sets_start_their_counters_from_zero() {
    let mut dp = Datapath::load().unwrap();
    let hit = udp4(&[], 9000);
    let other = udp4(&[], 9001);
    let set_a = [
        Rule::new(3, 10, Action::Drop)
            .ip_proto(UDP)
            .dst_ports(9000..=9000),
        Rule::new(4, 20, Action::Pass).ip_proto(UDP),
    ];
    dp.set_rules(&set_a).unwrap();
    for _ in 0..5 {
        assert_eq!(run(&dp, &hit).0, XdpVerdict::Drop);
    }
    for _ in 0..2 {
        assert_eq!(run(&dp, &other).0, XdpVerdict::Pass);
    }
    let c = dp.counters().unwrap();
    assert_eq!((c.rules[&3].packets, c.rules[&4].packets), (5, 2));

    // Same ids, new rules: both start from zero; the action totals stay.
    let set_b = [
        Rule::new(3, 10, Action::Pass)
            .ip_proto(UDP)
            .dst_ports(9001..=9001),
        Rule::new(4, 20, Action::Drop).ip_proto(UDP),
    ];
    dp.set_rules(&set_b).unwrap();
    let c = dp.counters().unwrap();
    assert_eq!(c.rules[&3], Default::default());
    assert_eq!(c.rules[&4], Default::default());
    assert_eq!(c.actions.drop.packets, 5);
    assert_eq!(c.actions.pass.packets, 2);
    assert_eq!(run(&dp, &hit).0, XdpVerdict::Drop);
    assert_eq!(run(&dp, &other).0, XdpVerdict::Pass);
    assert_eq!(run(&dp, &other).0, XdpVerdict::Pass);
    let c = dp.counters().unwrap();
    assert_eq!((c.rules[&3].packets, c.rules[&4].packets), (2, 1));
    assert_eq!(c.rules[&4].bytes, hit.len() as u64);
    assert_eq!(c.actions.drop.packets, 6);
    assert_eq!(c.actions.pass.packets, 4);

    // The same set again is not a replacement: the counts go on.
    dp.set_rules(&set_b).unwrap();
    let c = dp.counters().unwrap();
    assert_eq!((c.rules[&3].packets, c.rules[&4].packets), (2, 1));

    // Back to set A (it lands in the bank set A used before): still from
    // zero, not from A's old 5 and 2. An id only the older set had reads 0.
    dp.set_rules(&set_a).unwrap();
    let c = dp.counters().unwrap();
    assert_eq!(c.rules[&3], Default::default());
    assert_eq!(c.rules[&4], Default::default());
    assert_eq!(run(&dp, &hit).0, XdpVerdict::Drop);
    let c = dp.counters().unwrap();
    assert_eq!((c.rules[&3].packets, c.rules[&4].packets), (1, 0));
    dp.set_rules(&[Rule::new(9, 1, Action::Pass)]).unwrap();
    assert_eq!(dp.rule_counter(3).unwrap(), Default::default());
    assert_eq!(dp.rule_counter(9).unwrap(), Default::default());
    // Totals per action over all four rule sets.
    let c = dp.counters().unwrap();
    assert_eq!(c.actions.drop.packets, 7);
    assert_eq!(c.actions.pass.packets, 4);
}

#[test]
fn every_match_field() {
    let mut dp = Datapath::load().unwrap();
    let mut sets = PrefixSets::new();
    sets.insert(3, "198.51.100.0/24".parse::<Prefix>().unwrap())
        .unwrap();
    sets.insert(4, "192.0.2.0/24".parse::<Prefix>().unwrap())
        .unwrap();
    sets.insert(5, "2001:db8::/48".parse::<Prefix>().unwrap())
        .unwrap();
    sets.insert(6, "2001:db8:1::/48".parse::<Prefix>().unwrap())
        .unwrap();
    sets.insert(7, "0.0.0.0/0".parse::<Prefix>().unwrap())
        .unwrap();
    dp.set_prefix_sets(&sets).unwrap();
    let check = |dp: &mut Datapath, rule: Rule, hit: &[u8], miss: &[u8]| {
        dp.set_rules(std::slice::from_ref(&rule)).unwrap();
        assert_eq!(run(dp, hit).0, XdpVerdict::Drop, "{rule:?} should match");
        assert_eq!(
            run(dp, miss).0,
            XdpVerdict::Pass,
            "{rule:?} should not match"
        );
    };
    let r = || Rule::new(0, 0, Action::Drop);
    check(
        &mut dp,
        r().vlan(5),
        &udp4(&[(ETH_P_8021Q, 5)], 1),
        &udp4(&[(ETH_P_8021Q, 6)], 1),
    );
    check(
        &mut dp,
        r().vlan(5),
        &udp4(&[(ETH_P_8021AD, 5), (ETH_P_8021Q, 9)], 1),
        &udp4(&[], 1),
    );
    check(
        &mut dp,
        r().ip_proto(TCP),
        &eth(&[], ETH_P_IP, &ipv4(TCP, V4_SRC, V4_DST, 0, &tcp(1, 2))),
        &udp4(&[], 2),
    );
    check(
        &mut dp,
        r().dst_ports(100..=200),
        &udp4(&[], 100),
        &udp4(&[], 201),
    );
    check(&mut dp, r().dst_ports(100..=200), &udp6(200), &udp6(99));
    check(&mut dp, r().dst_set(3), &udp4(&[], 1), &udp6(1));
    check(&mut dp, r().src_set(4), &udp4(&[], 1), &udp6(1));
    check(
        &mut dp,
        r().src_set(3),
        &eth(
            &[],
            ETH_P_IP,
            &ipv4(UDP, V4_DST, V4_SRC, 0, &udp(1, 2, b"")),
        ),
        &udp4(&[], 1),
    );
    check(&mut dp, r().src_set(5).dst_set(6), &udp6(1), &udp4(&[], 1));
    // Nested prefixes: the /0 set still applies under longer prefixes.
    check(&mut dp, r().src_set(7).dst_set(3), &udp4(&[], 1), &udp6(1));
    check(
        &mut dp,
        r().dscp(46),
        &eth(
            &[],
            ETH_P_IP,
            &ipv4(UDP, V4_SRC, V4_DST, 46 << 2, &udp(1, 2, b"")),
        ),
        &udp4(&[], 2),
    );
    check(
        &mut dp,
        r().dscp(10),
        &eth(
            &[],
            ETH_P_IPV6,
            &ipv6(UDP, V6_SRC, V6_DST, 10 << 2, &udp(1, 2, b"")),
        ),
        &udp6(2),
    );
    // Removing a prefix from its set takes effect.
    let mut fewer = PrefixSets::new();
    fewer
        .insert(4, "192.0.2.0/24".parse::<Prefix>().unwrap())
        .unwrap();
    dp.set_prefix_sets(&fewer).unwrap();
    dp.set_rules(&[r().dst_set(3)]).unwrap();
    assert_eq!(run(&dp, &udp4(&[], 1)).0, XdpVerdict::Pass);
}

#[test]
fn redirects_fail_open_when_the_target_is_missing() {
    let mut dp = Datapath::load().unwrap();
    let frame = udp4(&[], 1);
    for action in [
        Action::Redirect { slot: 3 },
        Action::Xsk { queue: Some(0) },
        Action::Xsk { queue: None },
        Action::Cpu { cpu: 0 },
    ] {
        dp.set_rules(&[Rule::new(0, 0, action)]).unwrap();
        assert_eq!(run(&dp, &frame), (XdpVerdict::Pass, true), "{action:?}");
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.fallbacks.packets, 4);
    assert_eq!(c.actions.pass.packets, 4);
    assert_eq!(
        c.actions.redirect.packets + c.actions.xsk.packets + c.actions.cpu.packets,
        0
    );

    // With targets present the program redirects (test runs do not transmit).
    dp.set_redirect_target(3, 1).unwrap();
    dp.set_cpu_target(0, 192).unwrap();
    for action in [Action::Redirect { slot: 3 }, Action::Cpu { cpu: 0 }] {
        dp.set_rules(&[Rule::new(0, 0, action)]).unwrap();
        assert_eq!(run(&dp, &frame).0, XdpVerdict::Redirect, "{action:?}");
    }
    let c = dp.counters().unwrap();
    assert_eq!(c.fallbacks.packets, 4);
    assert_eq!((c.actions.redirect.packets, c.actions.cpu.packets), (1, 1));
}
