//! The benchmark support API (`griffin_ebpf::bench`): repeated test runs
//! and the baseline programs (needs root). Durations are reported by the
//! kernel and never asserted on.

mod common;

use common::frames::*;
use griffin_ebpf::{bench::Baseline, Action, Datapath, Rule, XdpVerdict};

#[test]
fn repeated_runs_give_the_single_run_verdict_and_count_every_repetition() {
    let mut dp = Datapath::load().unwrap();
    dp.set_redirect_target(0, 1).unwrap();
    dp.set_rules(&[Rule::new(4, 1, Action::Redirect { slot: 0 })
        .ip_proto(UDP)
        .dst_ports(5000..=5100)])
        .unwrap();
    for (dport, verdict) in [(5050, XdpVerdict::Redirect), (53, XdpVerdict::Pass)] {
        let frame = udp4(&[], dport);
        assert_eq!(dp.test_run(&frame).unwrap().verdict, verdict);
        let timed = dp.test_run_timed(&frame, 1000).unwrap();
        assert_eq!((timed.verdict, timed.repeat), (verdict, 1000), "{dport}");
    }
    let counters = dp.counters().unwrap();
    assert_eq!(counters.rules[&4].packets, 1001);
    assert_eq!(counters.no_match.packets, 1001);
    // Zero repetitions run once, as the kernel does.
    assert_eq!(dp.test_run_timed(&udp4(&[], 53), 0).unwrap().repeat, 1);
}

#[test]
fn baselines_pass_everything_or_redirect_everything() {
    let mut pass = Baseline::load().unwrap();
    let mut redirect = Baseline::redirect_all(1).unwrap();
    let mut via_map = Baseline::redirect_map_all(1).unwrap();
    for frame in [udp4(&[], 5050), udp6(53), garbage(3, 14)] {
        let run = pass.test_run_timed(&frame, 100).unwrap();
        assert_eq!((run.verdict, run.repeat), (XdpVerdict::Pass, 100));
        let run = redirect.test_run_timed(&frame, 100).unwrap();
        assert_eq!(run.verdict, XdpVerdict::Redirect);
        let run = via_map.test_run_timed(&frame, 100).unwrap();
        assert_eq!(run.verdict, XdpVerdict::Redirect);
    }
}

#[test]
fn baseline_attach_names_a_missing_interface() {
    let mut pass = Baseline::load().unwrap();
    let err = pass.attach_native("gnosuchif0").unwrap_err().to_string();
    assert!(
        err.contains("gnosuchif0") && err.contains("trivial_pass"),
        "{err}"
    );
}

/// Each redirect action calls its map's redirect function directly, and
/// each prefix-set lookup its trie's lookup: a call site shared by several
/// maps would stay the generic helper and cost an indirect call (a
/// retpoline here) per frame.
#[test]
fn map_calls_are_direct() {
    let dp = Datapath::load().unwrap();
    let calls = griffin_ebpf::bench::kernel_calls(&dp).unwrap();
    let count = |name: &str| calls.iter().filter(|c| *c == name).count();
    for direct in ["dev_map_redirect", "xsk_map_redirect", "cpu_map_redirect"] {
        assert_eq!(count(direct), 1, "{direct} in {calls:?}");
    }
    // v4 and v6, for the source and the destination address (at each place
    // the classifier looks the addresses up).
    let tries = count("trie_lookup_elem");
    assert!(tries >= 4 && tries.is_multiple_of(4), "{calls:?}");
    for generic in ["bpf_xdp_redirect_map", "bpf_map_lookup_elem"] {
        assert_eq!(count(generic), 0, "{generic} in {calls:?}");
    }
}
