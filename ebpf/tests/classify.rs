//! The bit-vector classifier in the kernel against a plain first-match walk
//! of the rules in Rust: random rule sets (1 to 1024 rules, every match
//! field, prefix sets) and random crafted frames through BPF_PROG_TEST_RUN;
//! the verdict and every per-rule counter must be the walk's (needs root).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::frames::*;
use griffin_ebpf::{Action, Datapath, Prefix, PrefixSets, Rule, XdpVerdict};

use griffin_tests::Rng;

const SETS: [(u8, &str); 6] = [
    (0, "198.18.0.0/15"),
    (1, "198.19.0.0/16"),
    (2, "2001:db8::/32"),
    (3, "0.0.0.0/0"),
    (4, "2001:db8:1::/48"),
    (5, "198.19.48.3/32"),
];
const V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 19, 48, 3),
    Ipv4Addr::new(198, 18, 48, 1),
    Ipv4Addr::new(192, 0, 2, 1),
];
const V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7),
    Ipv6Addr::new(0x2001, 0xdead, 0, 0, 0, 0, 0, 1),
];
const PORTS: [u16; 8] = [0, 1, 2, 3, 5, 65533, 65534, 65535];

#[derive(Clone, Copy, Debug)]
struct Frame {
    vlan: Option<u16>,
    /// None: ARP.
    ip: Option<Ip>,
}

#[derive(Clone, Copy, Debug)]
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    dscp: u8,
    dport: u16,
}

impl Frame {
    fn random(rng: &mut Rng) -> Self {
        let ip = (rng.below(8) != 0).then(|| {
            let (src, dst) = if rng.below(2) == 0 {
                (IpAddr::V4(rng.pick(&V4)), IpAddr::V4(rng.pick(&V4)))
            } else {
                (IpAddr::V6(rng.pick(&V6)), IpAddr::V6(rng.pick(&V6)))
            };
            Ip {
                src,
                dst,
                proto: rng.pick(&[UDP, TCP, 1]),
                dscp: rng.pick(&[0, 10, 46]),
                dport: rng.pick(&PORTS),
            }
        });
        Self {
            vlan: rng.maybe(2, &[1, 2, 3, 4095]),
            ip,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let tags: Vec<(u16, u16)> = self.vlan.iter().map(|&v| (ETH_P_8021Q, v)).collect();
        let Some(ip) = self.ip else {
            return eth(&tags, ETH_P_ARP, &[0; 28]);
        };
        let l4 = match ip.proto {
            UDP => udp(40000, ip.dport, b"g"),
            TCP => tcp(40000, ip.dport),
            _ => vec![8, 0, 0, 0, 0, 0, 0, 0],
        };
        match (ip.src, ip.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                eth(&tags, ETH_P_IP, &ipv4(ip.proto, s, d, ip.dscp << 2, &l4))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                eth(&tags, ETH_P_IPV6, &ipv6(ip.proto, s, d, ip.dscp << 2, &l4))
            }
            _ => unreachable!("one family per frame"),
        }
    }
}

fn random_rule(rng: &mut Rng, id: u32) -> Rule {
    let action = if rng.below(2) == 0 {
        Action::Drop
    } else {
        Action::Pass
    };
    let mut r = Rule::new(id, rng.below(40) as u32, action);
    r.vlan = rng.maybe(4, &[1, 2, 4095]);
    r.ip_proto = rng.maybe(3, &[UDP, TCP, 1]);
    r.dst_ports = rng
        .maybe(3, &[(0, 2), (1, 1), (3, 65534), (5, 5), (65535, 65535)])
        .map(|(lo, hi)| lo..=hi);
    r.src_set = rng.maybe(4, &[0, 1, 2, 3, 4, 5]);
    r.dst_set = rng.maybe(5, &[0, 1, 2, 3, 4, 5]);
    r.dscp = rng.maybe(5, &[0, 10, 46]);
    r
}

fn in_set(set: u8, addr: IpAddr) -> bool {
    let host = Prefix::new(addr, if addr.is_ipv4() { 32 } else { 128 }).unwrap();
    SETS.iter()
        .any(|&(s, p)| s == set && p.parse::<Prefix>().unwrap().contains(&host))
}

/// The rule a walk in priority order (ties in the given order) picks.
fn first_match<'r>(rules: &'r [Rule], f: &Frame) -> Option<&'r Rule> {
    let mut sorted: Vec<&Rule> = rules.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    sorted.into_iter().find(|r| {
        let ip = f.ip.as_ref();
        let ports = ip
            .filter(|ip| ip.proto == UDP || ip.proto == TCP)
            .map(|ip| ip.dport);
        r.vlan.is_none_or(|v| f.vlan == Some(v))
            && r.ip_proto
                .is_none_or(|p| ip.is_some_and(|ip| ip.proto == p))
            && r.dst_ports
                .as_ref()
                .is_none_or(|range| ports.is_some_and(|p| range.contains(&p)))
            && r.src_set
                .is_none_or(|s| ip.is_some_and(|ip| in_set(s, ip.src)))
            && r.dst_set
                .is_none_or(|s| ip.is_some_and(|ip| in_set(s, ip.dst)))
            && r.dscp.is_none_or(|d| ip.is_some_and(|ip| ip.dscp == d))
    })
}

#[test]
fn the_kernel_classifier_picks_the_first_matching_rule() {
    let mut dp = Datapath::load().unwrap();
    let mut sets = PrefixSets::new();
    for (set, prefix) in SETS {
        sets.insert(set, prefix.parse().unwrap()).unwrap();
    }
    dp.set_prefix_sets(&sets).unwrap();
    let (mut matched_total, mut no_match) = (0, 0);
    for (seed, count) in [
        (1u64, 1u32),
        (2, 5),
        (3, 63),
        (4, 64),
        (5, 65),
        (6, 130),
        (7, 400),
        (8, 1024),
    ] {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Bank without prefix-set rules now and then: the fast path.
        let rules: Vec<Rule> = (0..count)
            .map(|id| {
                let mut r = random_rule(&mut rng, id);
                if seed.is_multiple_of(3) {
                    (r.src_set, r.dst_set) = (None, None);
                }
                r
            })
            .collect();
        dp.set_rules(&rules).unwrap();
        let mut expected = std::collections::BTreeMap::new();
        for n in 0..150 {
            let frame = Frame::random(&mut rng);
            let want = first_match(&rules, &frame);
            let verdict = dp.test_run(&frame.bytes()).unwrap().verdict;
            let want_verdict = match want.map(|r| r.action) {
                Some(Action::Drop) => XdpVerdict::Drop,
                _ => XdpVerdict::Pass,
            };
            assert_eq!(
                verdict, want_verdict,
                "seed {seed} frame {n} {frame:?}: {want:?}"
            );
            match want {
                Some(r) => *expected.entry(r.id).or_insert(0u64) += 1,
                None => no_match += 1,
            }
        }
        let c = dp.counters().unwrap();
        for (id, counter) in &c.rules {
            assert_eq!(
                counter.packets,
                expected.get(id).copied().unwrap_or(0),
                "seed {seed}: rule {id}"
            );
        }
        matched_total += expected.values().sum::<u64>();
        assert_eq!(c.rules.len(), rules.len());
        assert_eq!(c.no_match.packets, no_match, "seed {seed}");
    }
    // The random rules do match: the comparison is not all "no match".
    assert!(matched_total > 600, "{matched_total}");
}
