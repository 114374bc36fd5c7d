//! The link watcher on real veths (needs root, iproute2, bpffs and native
//! XDP on veth): a redirect target that goes down or is deleted is withdrawn
//! from the devmap, so its frames fall back to the node's stack instead of
//! being lost, and it is restored when it comes back up.

mod common;

use std::{
    collections::BTreeSet,
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    },
    time::Duration,
};

use common::{
    frames::UDP,
    netns::{Mgmt, SetOnDrop},
    split::*,
};
use griffin_ebpf::{
    linkwatch::{LinkWatcher, DEFAULT_TICK},
    Action, Counters, Datapath, Rule, TargetChange, DEFAULT_BPFFS,
};

const DATA_PORT: u16 = 5061;
const RULE: u32 = 1;
const SLOT: u32 = 0;

/// Attaches to both ends of the split, the node's datapath with one rule
/// redirecting the data port to `n_out` (slot `SLOT`). Returns that
/// datapath, the consumer's (to keep attached) and `n_out`'s ifindex.
fn attach_redirecting(net: &Split) -> (Datapath, Datapath, u32) {
    let (mut dp, consumer_dp) = net.attach();
    let n_out = net.ifindex(&net.node, &net.n_out);
    // The devmap resolves ifindexes in the updating thread's namespace.
    net.node.run(|| {
        dp.set_rules(&[Rule::new(RULE, 10, Action::Redirect { slot: SLOT })
            .ip_proto(UDP)
            .dst_ports(DATA_PORT..=DATA_PORT)])
            .unwrap();
        dp.set_redirect_target(SLOT, n_out).unwrap();
    });
    (dp, consumer_dp, n_out)
}

/// Runs `watcher` on `dp` while `body` runs, in the node's namespace (where
/// n_out's ifindex means n_out); then stops it (also when `body` panics)
/// and checks that it ended without an error.
fn watching(net: &Split, watcher: LinkWatcher, dp: &Mutex<Datapath>, body: impl FnOnce()) {
    let stop = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let watch = s.spawn(move || {
            net.node
                .run(|| watcher.run(dp, || stop.load(Ordering::Acquire)))
        });
        {
            let _stop = SetOnDrop(stop);
            body();
        }
        watch.join().unwrap().unwrap();
    });
}

fn counters(dp: &Mutex<Datapath>) -> Counters {
    dp.lock().unwrap().counters().unwrap()
}

fn installed(dp: &Mutex<Datapath>) -> Option<u32> {
    dp.lock().unwrap().redirect_target(SLOT).unwrap()
}

/// Per-flow deltas.
struct Delta {
    data: u64,
    redirect: u64,
    fallbacks: u64,
}

fn delta(before: &Counters, after: &Counters) -> Delta {
    let data = |c: &Counters| c.rules.get(&RULE).map_or(0, |r| r.packets);
    Delta {
        data: data(after) - data(before),
        redirect: after.actions.redirect.packets - before.actions.redirect.packets,
        fallbacks: after.fallbacks.packets - before.fallbacks.packets,
    }
}

/// Datagrams of a burst sent while the target is usable.
const WARMUP: u32 = 200;

/// The split a flow runs through: the namespaces, the datapath and the two
/// receiving sockets.
struct Flows<'a> {
    net: &'a Split,
    dp: &'a Mutex<Datapath>,
    consumer: &'a UdpSocket,
    node: &'a UdpSocket,
}

impl Flows<'_> {
    /// A flow of `n` datagrams to the data port while `during` runs, with
    /// what the datapath counted meanwhile.
    fn flow(&self, n: u32, gap: Duration, during: impl FnOnce(&Seen)) -> (FlowResult, Delta) {
        let before = counters(self.dp);
        let r = flow(
            self.net,
            self.consumer,
            self.node,
            DATA_PORT,
            n,
            gap,
            during,
        );
        (r, delta(&before, &counters(self.dp)))
    }

    /// A burst of `WARMUP` datagrams while the target is usable: every one
    /// redirected to the consumer, none to the node.
    fn all_redirected(&self) {
        let (r, d) = self.flow(WARMUP, Duration::ZERO, |_| {});
        assert_all("consumer", &r.consumer, WARMUP);
        assert!(r.node.is_empty());
        assert_eq!(
            (d.data, d.redirect, d.fallbacks),
            (u64::from(WARMUP), u64::from(WARMUP), 0)
        );
    }

    /// A burst of `WARMUP` datagrams while the target is withdrawn: every
    /// one falls back to the node's stack.
    fn all_to_stack(&self) {
        let (r, d) = self.flow(WARMUP, Duration::ZERO, |_| {});
        assert!(r.consumer.is_empty());
        assert_all("node", &r.node, WARMUP);
        assert_eq!(
            (d.data, d.redirect, d.fallbacks),
            (u64::from(WARMUP), 0, u64::from(WARMUP))
        );
    }

    /// A flow of `n` across a change of the consumer's veth: once `first`
    /// has received a quarter of it, `ip link <change>` runs in the
    /// consumer's namespace, and the flow goes on until the watcher has
    /// made the installed target `want`.
    fn across(
        &self,
        n: u32,
        first: fn(&Seen) -> &AtomicUsize,
        change: &[&str],
        want: Option<u32>,
    ) -> (FlowResult, Delta) {
        self.flow(n, Duration::from_micros(100), |seen| {
            wait_for(first(seen), n as usize / 4);
            let mut args = vec!["link"];
            args.extend_from_slice(change);
            self.net.consumer.ip(&args);
            wait_until(&format!("the installed target to be {want:?}"), || {
                installed(self.dp) == want
            });
        })
    }
}

/// The consumer's and the node's distinct datagrams of a flow of `n`, once
/// the counters account for all of them: each matched the rule and was
/// redirected or fell back, each fallback reached the node, and the only
/// losses are redirected frames.
fn accounted(what: &str, n: u32, r: &FlowResult, d: &Delta) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let (c, nd) = (distinct(&r.consumer), distinct(&r.node));
    let lost = n as usize - c.len() - nd.len();
    eprintln!(
        "{what}: sent {n}, consumer {}, node {}, redirect +{}, fallbacks +{}, lost {lost}",
        c.len(),
        nd.len(),
        d.redirect,
        d.fallbacks
    );
    assert_eq!(d.data, u64::from(n));
    assert_eq!(d.redirect + d.fallbacks, u64::from(n));
    assert_eq!(d.fallbacks, nd.len() as u64);
    assert_eq!(lost as u64, d.redirect - c.len() as u64);
    (c, nd)
}

/// A flow of `n` across the moment the target stopped being usable: every
/// datagram was redirected or fell back; every fallback reached the node's
/// stack; the only losses are frames redirected into the dying target
/// before the watcher reacted, all between the consumer's last datagram and
/// the node's first.
fn switched_over(what: &str, n: u32, r: &FlowResult, d: &Delta) {
    let (c, nd) = accounted(what, n, r, d);
    assert!(d.fallbacks > 0, "{what}: nothing fell back");
    let (c_last, n_first) = (*c.last().unwrap(), *nd.first().unwrap());
    assert!(c_last < n_first);
    assert_eq!(c, (0..=c_last).collect(), "{what}: lost before the switch");
    assert_eq!(nd, (n_first..n).collect(), "{what}: lost after the switch");
}

#[test]
fn a_target_that_goes_down_falls_back_to_the_stack_and_comes_back() {
    const N: u32 = 3000;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    let (dp, _consumer_dp, n_out) = attach_redirecting(&net);
    // A restarted loader knows the targets from the pinned devmap.
    let adopted = net
        .node
        .run(|| Datapath::adopt(&net.n_if, std::path::Path::new(DEFAULT_BPFFS)))
        .unwrap();
    assert_eq!(
        adopted.redirect_targets().iter().collect::<Vec<_>>(),
        [(&SLOT, &n_out)]
    );
    drop(adopted);
    let dp = Mutex::new(dp);
    let watcher = net.node.run(|| LinkWatcher::new(DEFAULT_TICK)).unwrap();
    assert!(watcher.usable(n_out));
    let consumer = net.udp(&net.consumer, N_ADDR, DATA_PORT);
    let node = net.udp(&net.node, N_ADDR, DATA_PORT);
    let flows = Flows {
        net: &net,
        dp: &dp,
        consumer: &consumer,
        node: &node,
    };
    watching(&net, watcher, &dp, || {
        // 1. Target up: everything is redirected.
        flows.all_redirected();
        mgmt.ping("split");

        // 2. The consumer's veth goes down mid-flow (n_out keeps IFF_UP but
        // loses carrier): once the watcher withdraws the target, every
        // datagram falls back to the node's stack.
        let (r, d) = flows.across(N, |s| &s.consumer, &["set", &net.c_if, "down"], None);
        mgmt.ping("target down");
        switched_over("down", N, &r, &d);
        assert_eq!(
            dp.lock().unwrap().redirect_targets().get(&SLOT),
            Some(&n_out)
        );

        // 3. While it is down, a whole flow goes to the stack.
        flows.all_to_stack();

        // 4. Up again mid-flow: the watcher restores the target and the
        // redirect resumes.
        let (r, d) = flows.across(N, |s| &s.node, &["set", &net.c_if, "up"], Some(n_out));
        mgmt.ping("target up");
        let (c, n) = accounted("up", N, &r, &d);
        assert!(!c.is_empty(), "redirect did not resume");
        let (n_last, c_first) = (*n.last().unwrap(), *c.first().unwrap());
        assert!(n_last < c_first);
        assert_eq!(n, (0..=n_last).collect());
        assert_eq!(c, (c_first..N).collect(), "lost after the restore");
    });
    mgmt.ping("end");
}

#[test]
fn a_target_down_at_start_is_withdrawn_and_a_deleted_one_falls_back() {
    const N: u32 = 3000;
    let net = Split::new();
    let mut mgmt = Mgmt::connect(&net, MGMT_PORT);
    let (mut dp, _consumer_dp, n_out) = attach_redirecting(&net);
    let consumer = net.udp(&net.consumer, N_ADDR, DATA_PORT);
    let node = net.udp(&net.node, N_ADDR, DATA_PORT);

    // Down before the watcher starts: its first sync withdraws it.
    net.consumer.ip(&["link", "set", &net.c_if, "down"]);
    let watcher = net.node.run(|| LinkWatcher::new(DEFAULT_TICK)).unwrap();
    assert!(!watcher.usable(n_out));
    assert_eq!(
        watcher.sync(&mut dp).unwrap(),
        [TargetChange::Withdrawn {
            slot: SLOT,
            ifindex: n_out
        }]
    );
    assert_eq!(dp.redirect_target(SLOT).unwrap(), None);
    assert_eq!(watcher.sync(&mut dp).unwrap(), [], "nothing left to change");
    let dp = Mutex::new(dp);
    let flows = Flows {
        net: &net,
        dp: &dp,
        consumer: &consumer,
        node: &node,
    };
    flows.all_to_stack();
    mgmt.ping("down at start");

    watching(&net, watcher, &dp, || {
        net.consumer.ip(&["link", "set", &net.c_if, "up"]);
        wait_until("the watcher to restore the target", || {
            installed(&dp) == Some(n_out)
        });
        flows.all_redirected();

        // Deleted mid-flow (n_out goes with its peer).
        let (r, d) = flows.across(N, |s| &s.consumer, &["del", &net.c_if], None);
        mgmt.ping("target deleted");
        switched_over("deleted", N, &r, &d);
        // Still wanted, not installed: a re-created interface needs a new
        // set_redirect_target.
        assert_eq!(
            dp.lock().unwrap().redirect_targets().get(&SLOT),
            Some(&n_out)
        );
    });
    assert_eq!(installed(&dp), None);
    mgmt.ping("end");
}
