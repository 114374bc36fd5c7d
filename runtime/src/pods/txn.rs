//! All or nothing across a pod's steps: an annotated pod's realization is
//! its containers' exclusive CPUs ([`super::reconcile`]), then its `flows`
//! ([`super::flows::steer`]), then its VFs ([`super::netns::move_assigned`],
//! last because a VF moved into a pod's namespace can only be moved back
//! from inside it, which needs `CAP_SYS_ADMIN`).
//!
//! [`realize`] runs the steps, then judges each annotated pod: a step that
//! failed (a container refused its CPUs, the flows not steered, a VF not
//! moved) while another step of the same pod took effect rolls the pod
//! back: its containers go to the shared pool, its rules leave the split,
//! the VFs moved in this attempt go back to the host's namespace, and one
//! [`Action::RolledBack`] names the failure and what could not be undone.
//! The pod is then held back ([`Holds`]): [`Held`] gives its containers the
//! shared pool and the later steps skip it, until it is tried again after
//! 10 s, doubling up to 5 min while it keeps failing. A failure with
//! nothing else realized has nothing to undo: it is reported as before
//! and tried again at the next reconcile.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::flows::Flows;
use super::netns::Netns;
use super::{
    cgroup, held as held_allocations, Action, Assigned, ContainerInfo, Outcome, PodInfo, Want,
    Wants,
};
use crate::accel::request::from_annotations;
use crate::checkpoint::Target;
use crate::enforce::Cpusets;
use crate::manager::Manager;

/// The wait before a rolled-back pod is tried again the first time.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between two tries.
pub const LAST_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Hold {
    attempts: u32,
    until: Instant,
}

/// The pods held back after a rollback, by uid.
#[derive(Debug, Default)]
pub struct Holds(Mutex<BTreeMap<String, Hold>>);

impl Holds {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Hold>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether pod `uid` is held back now.
    pub fn holds(&self, uid: &str) -> bool {
        self.lock()
            .get(uid)
            .is_some_and(|h| Instant::now() < h.until)
    }

    /// Holds pod `uid` back after one more failed try; returns the wait.
    fn failed(&self, uid: &str) -> Duration {
        let mut m = self.lock();
        let h = m.entry(uid.to_owned()).or_insert(Hold {
            attempts: 0,
            until: Instant::now(),
        });
        h.attempts += 1;
        let wait = FIRST_RETRY
            .saturating_mul(1 << (h.attempts - 1).min(8))
            .min(LAST_RETRY);
        h.until = Instant::now() + wait;
        wait
    }

    /// Forgets pod `uid`'s failed tries.
    fn succeeded(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Forgets the pods not in `live`.
    fn retain(&self, live: &BTreeSet<&str>) {
        self.lock().retain(|uid, _| live.contains(uid.as_str()));
    }

    /// Ends every wait now (tests).
    #[cfg(test)]
    pub(crate) fn expire(&self) {
        self.lock()
            .values_mut()
            .for_each(|h| h.until = Instant::now());
    }
}

/// What containers want, with held-back pods in the shared pool, and no
/// exclusive CPUs for a pod whose `flows` can never be steered here (see
/// [`super::flows::blocker`]: nothing of it is realized, rather than
/// pinned and undone at every try): the rule of the reconciles and of
/// containers' creation.
pub struct Held {
    inner: Arc<dyn Wants + Send + Sync>,
    holds: Arc<Holds>,
    flows: Flows,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("holds", &self.holds)
            .finish_non_exhaustive()
    }
}

impl Held {
    /// `inner`'s wants, but for the pods `holds` holds back and those whose
    /// flows `flows` can never steer.
    pub fn new(inner: Arc<dyn Wants + Send + Sync>, holds: Arc<Holds>, flows: Flows) -> Self {
        Self {
            inner,
            holds,
            flows,
        }
    }
}

/// `want` of a container of `pod`, given whether the pod is held back.
fn shaped(want: Want, pod: &PodInfo, held: bool, flows: &Flows) -> Want {
    match want {
        Want::Exclusive { .. } if held => Want::Shared,
        Want::Exclusive { .. } => match super::flows::blocker(flows, pod) {
            Some(why) => Want::Refused(format!("flows: {why}")),
            None => want,
        },
        w => w,
    }
}

impl Wants for Held {
    fn want(&self, pod: &PodInfo, c: &ContainerInfo) -> Want {
        shaped(
            self.inner.want(pod, c),
            pod,
            self.holds.holds(&pod.uid),
            &self.flows,
        )
    }
}

/// [`Held`] with the held-back pods fixed for one [`realize`] (a hold that
/// ends meanwhile does not split a pod's steps).
struct Frozen<'a> {
    held: &'a Held,
    uids: &'a BTreeSet<String>,
}

impl Wants for Frozen<'_> {
    fn want(&self, pod: &PodInfo, c: &ContainerInfo) -> Want {
        shaped(
            self.held.inner.want(pod, c),
            pod,
            self.uids.contains(&pod.uid),
            &self.held.flows,
        )
    }
}

/// What the steps need besides the manager and the pods.
pub struct Steps<'a> {
    /// The kubelet's `--cgroup-root`.
    pub kubelet_root: &'a str,
    /// Devices the kubelet assigned, as PCI functions.
    pub assigned: &'a Assigned,
    /// Cgroups whose allocation is kept (made at creation).
    pub keep: &'a BTreeSet<String>,
    /// VF moves, or none.
    pub netns: Option<&'a dyn Netns>,
    /// Flows steering.
    pub flows: &'a Flows,
}

impl std::fmt::Debug for Steps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steps")
            .field("kubelet_root", &self.kubelet_root)
            .field("flows", &self.flows)
            .finish_non_exhaustive()
    }
}

/// The steps after pinning for the pods `active`: flows, then (with
/// `vfs`) VF moves.
fn later_steps<C: Cpusets>(
    m: &Manager<C>,
    s: &Steps<'_>,
    active: &[PodInfo],
    vfs: bool,
) -> Vec<Outcome> {
    let exists = |p: &str| matches!(m.cgroups().read(p), Ok(Some(_)));
    let cgroup_of = |pod: &PodInfo, c: &str| {
        let c = pod.containers.iter().find(|k| k.name == c)?;
        cgroup::existing(s.kubelet_root, pod, c, &exists)
    };
    let pid = |p: &str| m.cgroups().processes(p).ok()?.first().copied();
    let mut out = super::flows::steer(s.flows, active, &cgroup_of, &pid);
    if let (true, Some(net)) = (vfs, s.netns) {
        out.extend(super::netns::move_assigned(
            net, active, s.assigned, &cgroup_of, &pid,
        ));
    }
    out
}

/// How an annotated pod stands after its steps: the first failure, and
/// whether anything of it took effect.
#[derive(Debug, Default)]
struct Verdict {
    failure: Option<String>,
    realized: bool,
}

fn judge<C: Cpusets>(
    m: &Manager<C>,
    s: &Steps<'_>,
    inner: &dyn Wants,
    pod: &PodInfo,
    out: &[Outcome],
) -> Option<Verdict> {
    let req = from_annotations(Some(&pod.annotations))?.ok()?;
    let mut v = Verdict::default();
    let pinned = held_allocations(m);
    let exists = |p: &str| matches!(m.cgroups().read(p), Ok(Some(_)));
    let mine = || out.iter().filter(|o| o.pod_uid == pod.uid);
    for c in pod.containers.iter().filter(|c| c.running) {
        let want = inner.want(pod, c);
        match &want {
            Want::Refused(r) => {
                v.failure
                    .get_or_insert(format!("container {}: {r}", c.name));
            }
            Want::Exclusive { cpus, .. } => {
                let Some(cg) = cgroup::existing(s.kubelet_root, pod, c, &exists) else {
                    continue;
                };
                match pinned.get(&cg) {
                    Some((_, n)) if *n == *cpus as usize => v.realized = true,
                    _ => {
                        let key = (pod.namespace.clone(), pod.name.clone(), c.name.clone());
                        let near = s.assigned.get(&key).cloned().unwrap_or_default();
                        let why = mine()
                            .filter(|o| o.container == c.name)
                            .find_map(|o| match &o.action {
                                Action::Refused { reason } => Some(reason.clone()),
                                Action::Failed { error } => Some(error.clone()),
                                _ => None,
                            })
                            .or_else(|| {
                                let req = super::request_for(&want, &near)?;
                                super::refused(m, &req, &Target::Container(cg.clone()))
                            })
                            .unwrap_or_else(|| format!("{cpus} exclusive CPUs not available"));
                        v.failure
                            .get_or_insert(format!("container {}: {why}", c.name));
                    }
                }
            }
            Want::Shared => {}
        }
    }
    if !req.flows.is_empty() {
        if s.flows.in_force(&pod.uid) {
            v.realized = true;
        } else if let Some(e) = s.flows.failure(&pod.uid) {
            v.failure.get_or_insert(e);
        }
    }
    for o in mine() {
        match &o.action {
            Action::Moved { .. } => v.realized = true,
            Action::MoveFailed { error, .. } => {
                v.failure.get_or_insert(error.clone());
            }
            _ => {}
        }
    }
    Some(v)
}

/// Realizes `pods` on `m` as one transaction per annotated pod (see the
/// module doc); `wants` is the rule with its holds. Returns what changed.
pub fn realize<C: Cpusets>(
    m: &mut Manager<C>,
    wants: &Held,
    s: &Steps<'_>,
    pods: &[PodInfo],
) -> Vec<Outcome> {
    let live: BTreeSet<&str> = pods
        .iter()
        .filter(|p| !p.ending)
        .map(|p| p.uid.as_str())
        .collect();
    wants.holds.retain(&live);
    let mut held: BTreeSet<String> = pods
        .iter()
        .filter(|p| wants.holds.holds(&p.uid))
        .map(|p| p.uid.clone())
        .collect();
    let active = |held: &BTreeSet<String>| -> Vec<PodInfo> {
        pods.iter()
            .filter(|p| !held.contains(&p.uid))
            .cloned()
            .collect()
    };
    let frozen = Frozen {
        held: wants,
        uids: &held,
    };
    let mut out = super::reconcile(m, s.kubelet_root, pods, s.assigned, &frozen, s.keep);
    let tried = active(&held);
    out.extend(later_steps(m, s, &tried, true));

    let mut failed = Vec::new();
    for pod in tried.iter().filter(|p| !p.ending) {
        let Some(v) = judge(m, s, &*wants.inner, pod, &out) else {
            continue;
        };
        match (v.failure, v.realized) {
            (Some(reason), true) => failed.push((pod, reason)),
            (None, _) => wants.holds.succeeded(&pod.uid),
            // Nothing to undo: reported, tried again next time.
            (Some(_), false) => {}
        }
    }
    if failed.is_empty() {
        return out;
    }

    // Roll back: hold the pods, move back the VFs moved for them now,
    // then the pinning and the flows without them.
    let mut rolled = Vec::new();
    for (pod, reason) in failed {
        let wait = wants.holds.failed(&pod.uid);
        held.insert(pod.uid.clone());
        let mut not_undone = Vec::new();
        let mut vfs_back = Vec::new();
        for o in out.iter().filter(|o| o.pod_uid == pod.uid) {
            let Action::Moved {
                vf, netdev, rdma, ..
            } = &o.action
            else {
                continue;
            };
            let pid = m
                .cgroups()
                .processes(&o.cgroup)
                .ok()
                .and_then(|p| p.first().copied());
            let back = match (s.netns, pid) {
                (Some(net), Some(pid)) => net.move_back(netdev.as_deref(), rdma, pid),
                _ => Err("the pod has no process left".into()),
            };
            match back {
                Ok(()) => vfs_back.push(*vf),
                Err(e) => not_undone.push(format!(
                    "VF {vf} stays in the pod's network namespace (moving it back: {e})"
                )),
            }
        }
        rolled.push((pod.clone(), reason, wait, not_undone, vfs_back));
    }
    let frozen = Frozen {
        held: wants,
        uids: &held,
    };
    out.extend(super::reconcile(
        m,
        s.kubelet_root,
        pods,
        s.assigned,
        &frozen,
        s.keep,
    ));
    out.extend(later_steps(m, s, &active(&held), false));
    let pinned = held_allocations(m);
    let exists = |p: &str| matches!(m.cgroups().read(p), Ok(Some(_)));
    for (pod, reason, wait, mut not_undone, vfs_back) in rolled {
        for c in pod.containers.iter().filter(|c| c.running) {
            let cg = cgroup::existing(s.kubelet_root, &pod, c, &exists);
            if cg
                .and_then(|cg| pinned.get(&cg).map(|(_, n)| *n))
                .unwrap_or(0)
                > 0
            {
                not_undone.push(format!("container {} keeps its exclusive CPUs", c.name));
            }
        }
        let rules_withdrawn = !s.flows.in_force(&pod.uid);
        if !rules_withdrawn {
            not_undone.push(format!(
                "its flows' rules stay ({})",
                s.flows
                    .failure(&pod.uid)
                    .unwrap_or_else(|| "the rules were not updated".into())
            ));
        }
        let first = pod.containers.first();
        out.push(Outcome {
            pod: pod.key(),
            pod_uid: pod.uid.clone(),
            container: first.map(|c| c.name.clone()).unwrap_or_default(),
            cgroup: String::new(),
            action: Action::RolledBack {
                reason,
                retry_in_s: wait.as_secs(),
                not_undone,
                vfs_back,
                rules_withdrawn,
            },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::Policy;
    use crate::pods::accel::AccelRule;
    use crate::pods::testing::{kinds, one_container, FakeNet, FakeSteer, Node};
    use crate::pods::StaticRule;
    use griffin_devices::PciAddress;

    /// A node, its split and VFs, the rule with its holds, and pod `ns/p`
    /// whose container `work` (process 100) runs.
    struct Bed {
        node: Node,
        steer: Arc<FakeSteer>,
        net: FakeNet,
        flows: Flows,
        held: Held,
        holds: Arc<Holds>,
        pod: PodInfo,
        cg: String,
        assigned: Assigned,
    }

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    impl Bed {
        fn new(annotation: &str) -> Self {
            let node = Node::new(2);
            let mut pod = one_container(Some(annotation), true, false);
            pod.ips = vec!["198.19.1.2".parse().unwrap()];
            let cg = node.start(&pod, 0);
            node.fake.spawn(100);
            node.fake.move_process(&cg, 100);
            let steer = Arc::new(FakeSteer::new());
            let flows = Flows::new(Some(steer.clone()));
            let holds = Arc::new(Holds::default());
            let rule = AccelRule {
                fallback: StaticRule {
                    enabled: false,
                    policy: Policy::BestEffort,
                },
            };
            let (vf1, vf2) = (addr("0000:01:10.0"), addr("0000:01:10.1"));
            let net = FakeNet {
                vfs: [vf1, vf2].into(),
                netdevs: Mutex::new(
                    [(vf1, vec!["eth5".into()]), (vf2, vec!["eth6".into()])].into(),
                ),
                ..FakeNet::default()
            };
            Self {
                node,
                steer,
                net,
                held: Held::new(Arc::new(rule), holds.clone(), flows.clone()),
                flows,
                holds,
                pod,
                cg,
                assigned: [(("ns".into(), "p".into(), "work".into()), vec![vf1, vf2])].into(),
            }
        }

        fn realize(&self) -> Vec<Outcome> {
            let keep = BTreeSet::new();
            let s = Steps {
                kubelet_root: "",
                assigned: &self.assigned,
                keep: &keep,
                netns: Some(&self.net),
                flows: &self.flows,
            };
            realize(
                &mut self.node.open(),
                &self.held,
                &s,
                std::slice::from_ref(&self.pod),
            )
        }

        fn pinned(&self) -> usize {
            self.node.cpus(&self.cg).len()
        }

        /// The rules of the split's last update.
        fn rules(&self) -> usize {
            let applied = self.steer.applied.lock().unwrap();
            applied.last().map_or(0, |(extra, _)| extra.rules.len())
        }
    }

    fn rolled_back(out: &[Outcome]) -> (&str, u64, &[String]) {
        out.iter()
            .find_map(|o| match &o.action {
                Action::RolledBack {
                    reason,
                    retry_in_s,
                    not_undone,
                    ..
                } => Some((reason.as_str(), *retry_in_s, not_undone.as_slice())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no rollback in {:?}", kinds(out)))
    }

    const PIN_AND_FLOW: &str = r#"{"topologyAware": true, "flows": [{"ports": 7000}]}"#;
    const PIN_FLOW_AND_VF: &str =
        r#"{"topologyAware": true, "communication": "SRIOV", "flows": [{"ports": 7000}]}"#;

    #[test]
    fn flows_that_fail_after_the_pinning_undo_it_and_the_pod_is_tried_again_later() {
        let bed = Bed::new(PIN_AND_FLOW);
        *bed.steer.fail_apply.lock().unwrap() = Some("the split's map is full".into());
        let out = bed.realize();
        let k: Vec<&str> = kinds(&out).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            k,
            [
                "pinned",
                "steer-failed",
                "released",
                "shared",
                "rolled-back"
            ]
        );
        let (reason, retry, not_undone) = rolled_back(&out);
        assert!(reason.contains("the split's map is full"), "{reason}");
        assert_eq!(retry, FIRST_RETRY.as_secs());
        assert!(not_undone.is_empty(), "{not_undone:?}");
        assert_eq!(bed.pinned(), 4, "the container is back in the shared pool");
        assert!(bed.holds.holds("u1"));
        // Held back: nothing is tried, nothing reported.
        *bed.steer.fail_apply.lock().unwrap() = None;
        assert!(bed.realize().is_empty());
        assert_eq!((bed.pinned(), bed.rules()), (4, 0));
        // Its time comes: pinned and steered, no longer held.
        bed.holds.expire();
        let k: Vec<&str> = kinds(&bed.realize()).into_iter().map(|(_, k)| k).collect();
        assert_eq!(k, ["released", "pinned", "steered"]);
        assert_eq!((bed.pinned(), bed.rules()), (1, 1));
        assert!(!bed.holds.holds("u1"));
        assert!(bed.realize().is_empty(), "realized: nothing more to do");
    }

    #[test]
    fn each_failed_try_doubles_the_wait() {
        let bed = Bed::new(PIN_AND_FLOW);
        *bed.steer.fail_apply.lock().unwrap() = Some("EPERM".into());
        let mut waits = Vec::new();
        for _ in 0..7 {
            waits.push(rolled_back(&bed.realize()).1);
            assert_eq!(bed.pinned(), 4);
            bed.holds.expire();
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_vf_that_does_not_move_undoes_the_flows_the_pinning_and_the_vf_moved_before_it() {
        let mut bed = Bed::new(PIN_FLOW_AND_VF);
        bed.net.fail = Some("eth6".into());
        let out = bed.realize();
        let k: Vec<&str> = kinds(&out).into_iter().map(|(_, k)| k).collect();
        assert_eq!(
            k,
            [
                "pinned",
                "steered",
                "moved",
                "move-failed",
                "released",
                "shared",
                "rolled-back"
            ]
        );
        let (reason, _, not_undone) = rolled_back(&out);
        assert!(reason.contains("eth6"), "{reason}");
        assert!(not_undone.is_empty(), "{not_undone:?}");
        assert_eq!(
            *bed.net.moved_back.lock().unwrap(),
            [(Some("eth5".to_owned()), Vec::new(), 100)],
            "the VF moved in this try went back"
        );
        assert_eq!((bed.pinned(), bed.rules()), (4, 0), "shared pool, no rules");
        // Held back: the VFs are not tried either.
        let moves = bed.net.moved.lock().unwrap().len();
        assert!(bed.realize().is_empty());
        assert_eq!(bed.net.moved.lock().unwrap().len(), moves);
    }

    #[test]
    fn a_failure_with_nothing_else_realized_has_nothing_to_undo() {
        // Flows only (no placement): the pod is not pinned, its flows fail
        // (its process has no veth the split knows).
        let mut bed = Bed::new(r#"{"flows": [{"ports": 7000}]}"#);
        bed.node.fake.move_process("", 100);
        bed.node.fake.spawn(300);
        bed.node.fake.move_process(&bed.cg, 300);
        bed.pod.containers[0].whole_cpus = None;
        let out = bed.realize();
        assert_eq!(
            kinds(&out).into_iter().map(|(_, k)| k).collect::<Vec<_>>(),
            ["shared", "steer-failed"]
        );
        assert!(!bed.holds.holds("u1"), "not held: tried at every reconcile");
    }

    #[test]
    fn a_container_refused_its_cpus_undoes_its_pods_other_steps() {
        // Placement needs whole CPUs: refused, and the flows steered in
        // the same try are withdrawn.
        let mut bed = Bed::new(PIN_AND_FLOW);
        bed.pod.containers[0].whole_cpus = None;
        let out = bed.realize();
        let k: Vec<&str> = kinds(&out).into_iter().map(|(_, k)| k).collect();
        assert_eq!(k, ["refused", "shared", "steered", "rolled-back"]);
        assert!(rolled_back(&out).0.contains("whole CPUs"));
        assert_eq!(bed.rules(), 0, "the rules left the split");
    }

    #[test]
    fn flows_that_can_never_be_steered_leave_the_pod_unpinned_from_the_start() {
        // hostNetwork: the pod has no interface of its own. Nothing is
        // pinned (rather than pinned and undone at every try), nothing held.
        let mut bed = Bed::new(PIN_AND_FLOW);
        bed.pod.host_network = true;
        let out = bed.realize();
        let k: Vec<&str> = kinds(&out).into_iter().map(|(_, k)| k).collect();
        assert_eq!(k, ["refused", "shared", "steer-failed"]);
        assert!(
            matches!(&out[0].action, Action::Refused { reason } if reason.contains("hostNetwork")),
            "{out:?}"
        );
        assert!(!bed.holds.holds("u1"));
        assert_eq!(bed.pinned(), 4);
        assert!(bed.realize().is_empty(), "reported once");
        // Containers created through NRI are told the same.
        assert!(matches!(
            bed.held.want(&bed.pod, &bed.pod.containers[0]),
            Want::Refused(_)
        ));
    }
}
