//! The pods' `Acceleration` requests (annotation
//! [`crate::accel::ANNOTATION`]) in the pods engine: [`AccelRule`] decides
//! what an annotated container wants, [`BookKeeper`] records what was
//! realized per pod in the node's [`AccelerationBook`] from each
//! reconcile's outcomes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{Action, Outcome, PodInfo, StaticRule, Want, Wants};
use crate::accel::{
    self, request::Isolation, AccelerationBook, AccelerationRecord, AccelerationRequest,
    ContainerRecord, PodRef, ANNOTATION,
};
use crate::alloc::Policy;
use crate::pods::spec::ContainerInfo;

/// Devices PodResources lists per container, by resource name, ids as the
/// device plugin names them: `(namespace, pod, container)` → resource →
/// ids (ascending).
pub type Devices = BTreeMap<(String, String, String), BTreeMap<String, Vec<String>>>;

/// The devices of every container in a PodResources list.
pub fn devices(list: &[crate::plugin::podresources::PodResources]) -> Devices {
    let mut out = Devices::new();
    for p in list {
        for c in &p.containers {
            let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in &c.devices {
                by.entry(d.resource_name.clone())
                    .or_default()
                    .extend(d.device_ids.iter().cloned());
            }
            by.values_mut().for_each(|ids| ids.sort());
            if !by.is_empty() {
                out.insert((p.namespace.clone(), p.name.clone(), c.name.clone()), by);
            }
        }
    }
    out
}

/// The daemon's rule: a pod's `Acceleration` request when it carries the
/// annotation, else the static rule.
///
/// * A value that does not parse: refused, the error naming the field.
/// * A request that applies to the container and is topology aware
///   (`placement` other than `none`): exclusive CPUs, as many as the
///   container's whole-CPU request (CPU request equal to its limit, a
///   whole number, as the seed asks CPUs "in whole hyper-threads"), placed
///   by `placement` next to the devices the kubelet assigned it; without
///   such a request it is refused, naming the container's `resources`.
///   With `isolation: isolated` the container's cgroup becomes an isolated
///   cpuset partition (cgroup v2; refused on v1, naming why).
/// * Otherwise (not topology aware, or a container it does not apply to):
///   the static rule.
#[derive(Debug, Clone)]
pub struct AccelRule {
    /// For containers without a topology-aware request.
    pub fallback: StaticRule,
}

impl Wants for AccelRule {
    fn want(&self, pod: &PodInfo, c: &ContainerInfo) -> Want {
        let req = match accel::request::from_annotations(Some(&pod.annotations)) {
            None => return self.fallback.want(pod, c),
            Some(Err(e)) => return Want::Refused(format!("annotation {ANNOTATION}: {e}")),
            Some(Ok(r)) => r,
        };
        if !req.applies_to(&c.name) || req.placement == Policy::None {
            return self.fallback.want(pod, c);
        }
        match c.whole_cpus {
            Some(n) => Want::Exclusive {
                cpus: n,
                memory_bytes: c.memory_bytes,
                policy: req.placement,
                isolated: req.isolation == Isolation::Isolated,
                why: format!(
                    "{ANNOTATION}: placement {} with {n} whole CPUs",
                    req.placement
                ),
            },
            None => Want::Refused(format!(
                "annotation {ANNOTATION}: placement {} needs whole CPUs: container {:?} must set resources.limits.cpu to a whole number equal to its request",
                req.placement, c.name
            )),
        }
    }
}

/// The key of a pod's `flows` failure among its containers' (see
/// [`BookKeeper::update`]).
const FLOWS: &str = "(flows)";
/// The key of a pod's rollback (first of all keys: it names the cause).
const ROLLBACK: &str = "(all)";

/// How long a released pod's record stays listed.
const KEEP_RELEASED: SignedDuration = SignedDuration::from_secs(600);

/// Keeps the [`AccelerationBook`] of the node's annotated pods from the
/// outcomes of each reconcile (see [`super::watch::Settings::on_outcomes`]).
///
/// A pod's record is created when its request is first seen, a container's
/// entry holds its exclusive CPUs and memory nodes (empty in the shared
/// pool) and the devices PodResources lists for it; the state is `failed`
/// (with the reason) while a container is refused or a step fails, else
/// `realized`; a pod that is gone or ending is `released` and forgotten
/// ten minutes later. Pods whose annotation does not parse get no record
/// (their refusal is an event on the pod).
#[derive(Debug)]
pub struct BookKeeper {
    book: Arc<AccelerationBook>,
    /// Failure reasons per pod uid, per container, until the container is
    /// realized.
    failures: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
}

impl BookKeeper {
    /// Keeps `book`.
    pub fn new(book: Arc<AccelerationBook>) -> Self {
        Self {
            book,
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one reconcile: its outcomes, the pods it was decided on,
    /// the devices PodResources listed.
    pub fn update(&self, outcomes: &[Outcome], pods: &[PodInfo], devices: &Devices) {
        self.update_at(outcomes, pods, devices, Timestamp::now());
    }

    fn update_at(&self, outcomes: &[Outcome], pods: &[PodInfo], devices: &Devices, now: Timestamp) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let mut live = std::collections::BTreeSet::new();
        for pod in pods {
            let Some(Ok(req)) = accel::request::from_annotations(Some(&pod.annotations)) else {
                continue;
            };
            if pod.ending {
                continue;
            }
            live.insert(pod.uid.clone());
            let old = self.book.get(&pod.uid);
            let mut rec = old.clone().unwrap_or_else(|| AccelerationRecord {
                pod: PodRef {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                },
                request: req.clone(),
                containers: Vec::new(),
                outcome: accel::Outcome::Realized,
                at: now,
            });
            rec.request = req.clone();
            let fails = failures.entry(pod.uid.clone()).or_default();
            for o in outcomes.iter().filter(|o| o.pod_uid == pod.uid) {
                let entry = |rec: &mut AccelerationRecord| -> usize {
                    match rec.containers.iter().position(|c| c.name == o.container) {
                        Some(i) => i,
                        None => {
                            rec.containers.push(ContainerRecord {
                                name: o.container.clone(),
                                cpus: Default::default(),
                                mems: Vec::new(),
                                devices: BTreeMap::new(),
                                vf: None,
                                xdp_rules: Vec::new(),
                            });
                            rec.containers.len() - 1
                        }
                    }
                };
                match &o.action {
                    Action::Pinned { cpus, mems, .. } => {
                        fails.remove(ROLLBACK);
                        let i = entry(&mut rec);
                        rec.containers[i].cpus = cpus.clone();
                        rec.containers[i].mems = mems.clone();
                        fails.remove(&o.container);
                    }
                    Action::Shared { .. } => {
                        let i = entry(&mut rec);
                        rec.containers[i].cpus = Default::default();
                        rec.containers[i].mems = Vec::new();
                        if !wants_cpus(&req, &o.container) {
                            fails.remove(&o.container);
                        }
                    }
                    Action::Refused { reason } => {
                        entry(&mut rec);
                        fails.insert(o.container.clone(), reason.clone());
                    }
                    Action::Failed { error } => {
                        entry(&mut rec);
                        fails.insert(o.container.clone(), error.clone());
                    }
                    Action::Released { .. } => {
                        rec.containers.retain(|c| c.name != o.container);
                        fails.remove(&o.container);
                    }
                    Action::Moved {
                        vf, netdev, netns, ..
                    } => {
                        fails.remove(ROLLBACK);
                        let i = entry(&mut rec);
                        rec.containers[i].vf = Some(accel::record::VfRecord {
                            pci_address: *vf,
                            netdev: netdev.clone(),
                            netns: Some(netns.clone()),
                        });
                        fails.remove(&format!("{} VF {vf}", o.container));
                    }
                    Action::MoveFailed { vf, error } => {
                        entry(&mut rec);
                        fails.insert(format!("{} VF {vf}", o.container), error.clone());
                    }
                    Action::Steered { rules, .. } => {
                        fails.remove(ROLLBACK);
                        for c in &mut rec.containers {
                            c.xdp_rules.clear();
                        }
                        let i = entry(&mut rec);
                        rec.containers[i].xdp_rules = rules.clone();
                        fails.remove(FLOWS);
                    }
                    Action::SteerFailed { error } => {
                        entry(&mut rec);
                        fails.insert(FLOWS.to_owned(), error.clone());
                    }
                    Action::RolledBack {
                        reason,
                        retry_in_s,
                        vfs_back,
                        rules_withdrawn,
                        ..
                    } => {
                        for c in &mut rec.containers {
                            if *rules_withdrawn {
                                c.xdp_rules.clear();
                            }
                            if c.vf
                                .as_ref()
                                .is_some_and(|v| vfs_back.contains(&v.pci_address))
                            {
                                c.vf = None;
                            }
                        }
                        fails.insert(
                            ROLLBACK.to_owned(),
                            format!("rolled back after: {reason}; tried again in {retry_in_s} s"),
                        );
                    }
                }
            }
            for c in &mut rec.containers {
                let key = (pod.namespace.clone(), pod.name.clone(), c.name.clone());
                c.devices = devices.get(&key).cloned().unwrap_or_default();
            }
            rec.containers.sort_by(|a, b| a.name.cmp(&b.name));
            rec.outcome = match fails.iter().next() {
                Some((c, reason)) if c == FLOWS || c == ROLLBACK => accel::Outcome::Failed {
                    reason: reason.clone(),
                },
                Some((c, reason)) => accel::Outcome::Failed {
                    reason: format!("container {c}: {reason}"),
                },
                None => accel::Outcome::Realized,
            };
            let changed = old.as_ref().is_none_or(|o| {
                o.outcome != rec.outcome
                    || o.containers != rec.containers
                    || o.request != rec.request
            });
            if changed {
                rec.at = now;
                self.book.set(rec);
            }
        }
        // Gone or ending: released, then forgotten.
        for r in self.book.snapshot() {
            if live.contains(&r.pod.uid) {
                continue;
            }
            failures.remove(&r.pod.uid);
            if r.outcome != accel::Outcome::Released {
                let mut r = r;
                r.outcome = accel::Outcome::Released;
                r.containers.iter_mut().for_each(|c| {
                    c.cpus = Default::default();
                    c.mems.clear();
                    c.devices.clear();
                });
                r.at = now;
                self.book.set(r);
            } else if now.duration_since(r.at) > KEEP_RELEASED {
                self.book.remove(&r.pod.uid);
            }
        }
    }
}

/// Whether `req` asks exclusive CPUs for container `name`.
fn wants_cpus(req: &AccelerationRequest, name: &str) -> bool {
    req.applies_to(name) && req.placement != Policy::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuset::CpuSet;
    use crate::pods::Qos;

    fn pod(uid: &str, annotation: Option<&str>, cpus: Option<u32>) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("p-{uid}"),
            qos: Qos::Guaranteed,
            containers: vec![ContainerInfo {
                name: "app".into(),
                whole_cpus: cpus,
                memory_bytes: 1 << 20,
                id: None,
                running: true,
            }],
            annotations: annotation
                .map(|a| BTreeMap::from([(ANNOTATION.to_owned(), a.to_owned())]))
                .unwrap_or_default(),
            ending: false,
            ips: Vec::new(),
            host_network: false,
        }
    }

    fn rule() -> AccelRule {
        AccelRule {
            fallback: StaticRule {
                enabled: false,
                policy: Policy::BestEffort,
            },
        }
    }

    #[test]
    fn an_annotated_container_wants_its_whole_cpus_by_its_placement() {
        let p = pod(
            "u1",
            Some(r#"{"topologyAware": true, "placement": "single-numa-node"}"#),
            Some(2),
        );
        match rule().want(&p, &p.containers[0]) {
            Want::Exclusive {
                cpus,
                policy,
                memory_bytes,
                ..
            } => {
                assert_eq!(
                    (cpus, policy, memory_bytes),
                    (2, Policy::SingleNumaNode, 1 << 20)
                );
            }
            w => panic!("{w:?}"),
        }
        let p = pod(
            "u3",
            Some(r#"{"topologyAware": true, "isolation": "isolated"}"#),
            Some(1),
        );
        assert!(matches!(
            rule().want(&p, &p.containers[0]),
            Want::Exclusive { isolated: true, .. }
        ));
        // The seed's own form: topology aware, best effort.
        let p = pod(
            "u2",
            Some(
                "Acceleration:\n  topologyAware: true\n  communication: '[\"SRIOV\", \"RDMA\"]'\n",
            ),
            Some(1),
        );
        assert!(matches!(
            rule().want(&p, &p.containers[0]),
            Want::Exclusive {
                cpus: 1,
                policy: Policy::BestEffort,
                ..
            }
        ));
    }

    #[test]
    fn bad_values_and_fractional_cpus_are_refused_naming_the_field() {
        let p = pod(
            "u1",
            Some(r#"{"communication": ["SRIOV", "SRIOVX"]}"#),
            Some(2),
        );
        match rule().want(&p, &p.containers[0]) {
            Want::Refused(r) => {
                assert!(
                    r.contains(ANNOTATION) && r.contains("communication[1]"),
                    "{r}"
                )
            }
            w => panic!("{w:?}"),
        }
        let p = pod("u2", Some(r#"{"topologyAware": true}"#), None);
        match rule().want(&p, &p.containers[0]) {
            Want::Refused(r) => assert!(
                r.contains("resources.limits.cpu") && r.contains("\"app\""),
                "{r}"
            ),
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn unannotated_untargeted_and_unaware_requests_follow_the_static_rule() {
        let on = AccelRule {
            fallback: StaticRule {
                enabled: true,
                policy: Policy::Restricted,
            },
        };
        for p in [
            pod("u1", None, Some(1)),
            pod("u2", Some(r#"{"compute": "GPU"}"#), Some(1)),
            pod(
                "u3",
                Some(r#"{"topologyAware": true, "containers": ["other"]}"#),
                Some(1),
            ),
        ] {
            assert!(
                matches!(
                    on.want(&p, &p.containers[0]),
                    Want::Exclusive {
                        policy: Policy::Restricted,
                        ..
                    }
                ),
                "{}",
                p.uid
            );
            assert_eq!(rule().want(&p, &p.containers[0]), Want::Shared, "{}", p.uid);
        }
    }

    #[test]
    fn podresources_devices_are_grouped_by_container_and_resource() {
        use crate::plugin::podresources::{ContainerResources, PodResources, ResourceDevices};
        let dev = |r: &str, ids: &[&str]| ResourceDevices {
            resource_name: r.into(),
            device_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            numa_nodes: Vec::new(),
        };
        let list = vec![PodResources {
            name: "p".into(),
            namespace: "ns".into(),
            containers: vec![
                ContainerResources {
                    name: "a".into(),
                    devices: vec![
                        dev("x.io/gpu", &["g2"]),
                        dev("x.io/gpu", &["g1"]),
                        dev("x.io/vf", &["v"]),
                    ],
                    cpu_ids: vec![],
                    memory: vec![],
                },
                ContainerResources {
                    name: "none".into(),
                    devices: vec![],
                    cpu_ids: vec![],
                    memory: vec![],
                },
            ],
        }];
        let d = devices(&list);
        assert_eq!(d.len(), 1, "a container without devices has no entry");
        let a = &d[&("ns".to_owned(), "p".to_owned(), "a".to_owned())];
        assert_eq!(a["x.io/gpu"], vec!["g1", "g2"]);
        assert_eq!(a["x.io/vf"], vec!["v"]);
    }

    fn outcome(uid: &str, action: Action) -> Outcome {
        Outcome {
            pod: format!("ns/p-{uid}"),
            pod_uid: uid.into(),
            container: "app".into(),
            cgroup: "kubepods/x".into(),
            action,
        }
    }

    #[test]
    fn a_moved_vf_is_recorded_and_a_failed_move_fails_the_pod_until_it_moves() {
        let book = Arc::new(AccelerationBook::new());
        let k = BookKeeper::new(book.clone());
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let a = pod("u1", Some(r#"{"communication": "SRIOV"}"#), Some(1));
        let vf: griffin_devices::PciAddress = "0000:01:10.0".parse().unwrap();
        k.update_at(
            &[outcome(
                "u1",
                Action::MoveFailed {
                    vf,
                    error: "moving eth5 of VF 0000:01:10.0: EPERM".into(),
                },
            )],
            std::slice::from_ref(&a),
            &Devices::new(),
            t0,
        );
        assert_eq!(
            book.get("u1").unwrap().outcome,
            accel::Outcome::Failed {
                reason: "container app VF 0000:01:10.0: moving eth5 of VF 0000:01:10.0: EPERM"
                    .into()
            }
        );
        k.update_at(
            &[outcome(
                "u1",
                Action::Moved {
                    vf,
                    netdev: Some("eth5".into()),
                    rdma: vec![],
                    netns: "/proc/42/ns/net".into(),
                },
            )],
            std::slice::from_ref(&a),
            &Devices::new(),
            t0,
        );
        let r = book.get("u1").unwrap();
        assert_eq!(r.outcome, accel::Outcome::Realized);
        let v = r.containers[0].vf.as_ref().unwrap();
        assert_eq!(
            (v.pci_address, v.netdev.as_deref(), v.netns.as_deref()),
            (vf, Some("eth5"), Some("/proc/42/ns/net"))
        );
    }

    #[test]
    fn a_rolled_back_pod_is_failed_naming_the_step_until_it_is_realized() {
        let book = Arc::new(AccelerationBook::new());
        let k = BookKeeper::new(book.clone());
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let a = pod(
            "u1",
            Some(r#"{"topologyAware": true, "flows": [{"ports": 7000}]}"#),
            Some(1),
        );
        let cpus = CpuSet::from_ids([1]);
        let pinned = || Action::Pinned {
            id: "a1".into(),
            cpus: cpus.clone(),
            mems: vec![0],
            near: vec![],
        };
        let error = "flows: the rules on eth1: EPERM".to_owned();
        let tried = [
            outcome("u1", pinned()),
            outcome(
                "u1",
                Action::SteerFailed {
                    error: error.clone(),
                },
            ),
            outcome("u1", Action::Released { id: "a1".into() }),
            outcome("u1", Action::Shared { id: "a2".into() }),
            outcome(
                "u1",
                Action::RolledBack {
                    reason: error.clone(),
                    retry_in_s: 10,
                    not_undone: vec![],
                    vfs_back: vec![],
                    rules_withdrawn: true,
                },
            ),
        ];
        k.update_at(&tried, std::slice::from_ref(&a), &Devices::new(), t0);
        let r = book.get("u1").unwrap();
        assert_eq!(
            r.outcome,
            accel::Outcome::Failed {
                reason: format!("rolled back after: {error}; tried again in 10 s")
            }
        );
        assert!(r.containers[0].cpus.is_empty(), "{r:?}");
        // The next try works.
        let ok = [
            outcome("u1", Action::Released { id: "a2".into() }),
            outcome("u1", pinned()),
            outcome(
                "u1",
                Action::Steered {
                    iface: "eth1".into(),
                    via: "veth1".into(),
                    rules: vec![3],
                },
            ),
        ];
        k.update_at(&ok, std::slice::from_ref(&a), &Devices::new(), t0);
        let r = book.get("u1").unwrap();
        assert_eq!(r.outcome, accel::Outcome::Realized);
        assert_eq!(
            (&r.containers[0].cpus, &r.containers[0].xdp_rules),
            (&cpus, &vec![3])
        );
    }

    #[test]
    fn the_book_follows_pinned_refused_and_released_pods() {
        let book = Arc::new(AccelerationBook::new());
        let k = BookKeeper::new(book.clone());
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let a = pod("u1", Some(r#"{"topologyAware": true}"#), Some(1));
        let plain = pod("u9", None, Some(1));
        let devs = Devices::from([(
            ("ns".into(), "p-u1".into(), "app".into()),
            BTreeMap::from([(
                "example.com/gpu".to_owned(),
                vec!["0000:01:00.0".to_owned()],
            )]),
        )]);
        k.update_at(
            &[
                outcome(
                    "u1",
                    Action::Pinned {
                        id: "a1".into(),
                        cpus: CpuSet::from_ids([3]),
                        mems: vec![1],
                        near: vec![],
                    },
                ),
                outcome("u9", Action::Shared { id: "a2".into() }),
            ],
            &[a.clone(), plain.clone()],
            &devs,
            t0,
        );
        assert_eq!(book.len(), 1, "only annotated pods have records");
        let r = book.get("u1").unwrap();
        assert_eq!(r.outcome, accel::Outcome::Realized);
        assert_eq!(r.containers[0].cpus, CpuSet::from_ids([3]));
        assert_eq!(r.containers[0].mems, vec![1]);
        assert_eq!(
            r.containers[0].devices["example.com/gpu"],
            vec!["0000:01:00.0"]
        );
        assert_eq!(r.at, t0);

        // A resync without outcomes changes nothing (not even the time).
        let t1 = t0 + SignedDuration::from_secs(5);
        k.update_at(&[], std::slice::from_ref(&a), &devs, t1);
        assert_eq!(book.get("u1").unwrap().at, t0);

        // Refused (e.g. the CPUs went elsewhere after a restart): failed,
        // naming the container and the reason; realized again once pinned.
        k.update_at(
            &[
                outcome(
                    "u1",
                    Action::Refused {
                        reason: "no NUMA node has 1 free CPU".into(),
                    },
                ),
                outcome("u1", Action::Shared { id: "a3".into() }),
            ],
            std::slice::from_ref(&a),
            &devs,
            t1,
        );
        let r = book.get("u1").unwrap();
        assert_eq!(
            r.outcome,
            accel::Outcome::Failed {
                reason: "container app: no NUMA node has 1 free CPU".into()
            }
        );
        assert!(r.containers[0].cpus.is_empty());
        k.update_at(
            &[outcome(
                "u1",
                Action::Pinned {
                    id: "a4".into(),
                    cpus: CpuSet::from_ids([2]),
                    mems: vec![0],
                    near: vec![],
                },
            )],
            std::slice::from_ref(&a),
            &devs,
            t1,
        );
        assert_eq!(book.get("u1").unwrap().outcome, accel::Outcome::Realized);

        // Gone: released at once, forgotten ten minutes later.
        let t2 = t1 + SignedDuration::from_secs(1);
        k.update_at(&[], &[], &Devices::new(), t2);
        let r = book.get("u1").unwrap();
        assert_eq!((r.outcome, r.at), (accel::Outcome::Released, t2));
        assert!(r.containers[0].cpus.is_empty() && r.containers[0].devices.is_empty());
        k.update_at(
            &[],
            &[],
            &Devices::new(),
            t2 + SignedDuration::from_secs(60),
        );
        assert!(book.get("u1").is_some());
        k.update_at(
            &[],
            &[],
            &Devices::new(),
            t2 + SignedDuration::from_secs(601),
        );
        assert!(book.is_empty());
    }
}
