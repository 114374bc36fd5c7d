//! Pods of this node realized: each running container gets an allocation
//! on its own cgroup, as the kubelet's static CPU manager would give it,
//! but decided by Griffin's allocator next to the devices the kubelet
//! assigned to it.
//!
//! * A container that wants exclusive CPUs (see [`Wants`]) gets an
//!   exclusive allocation whose target is its cgroup
//!   ([`Target::Container`]): its cpuset is the allocation's CPUs, its
//!   memory nodes the allocation's.
//! * Every other running container of the node becomes a shared consumer
//!   (an allocation of 0 CPUs on its cgroup): its cpuset is the shared
//!   pool, so no container runs on another's exclusive CPUs.
//! * A container whose pod ended, or whose cgroup is gone, is released.
//!
//! [`reconcile`] is the whole decision over one [`Manager`] (pure but for
//! the manager's seam): what is wanted now against the container
//! allocations the checkpoint holds. It is idempotent, so a restart, a
//! missed event or a crash between two containers is repaired by the next
//! call. Each container's change is the manager's transaction (decide,
//! save, apply; rolled back on failure); an annotated pod's steps (CPUs,
//! flows, VFs) are one transaction in [`txn`].

pub mod accel;
pub mod cgroup;
pub mod flows;
pub mod netns;
pub mod spec;
pub mod txn;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};

use griffin_devices::PciAddress;
use serde::Serialize;

use crate::alloc::{Policy, Request};
use crate::checkpoint::Target;
use crate::cpuset::CpuSet;
use crate::enforce::Cpusets;
use crate::manager::Manager;
pub use spec::{ContainerId, ContainerInfo, PodInfo, Qos};

/// What one container wants, as decided from its pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Want {
    /// Exclusive CPUs (with memory nodes to match).
    Exclusive {
        /// How many CPUs.
        cpus: u32,
        /// Memory accounted on the chosen nodes, bytes.
        memory_bytes: u64,
        /// NUMA alignment.
        policy: Policy,
        /// As an isolated cpuset partition (cgroup v2, `isolation:
        /// isolated`).
        isolated: bool,
        /// Why (for the record).
        why: String,
    },
    /// The shared pool.
    Shared,
    /// The pod asked for something that cannot be realized: refused with
    /// this reason (naming the field); the container runs in the shared
    /// pool meanwhile.
    Refused(String),
}

/// Decides what each container of a pod wants. The daemon's rule: an
/// annotated pod's request, else (when configured) exclusive CPUs for
/// Guaranteed containers with whole CPUs.
pub trait Wants {
    /// What container `c` of `pod` wants.
    fn want(&self, pod: &PodInfo, c: &ContainerInfo) -> Want;
}

/// The kubelet static CPU manager's rule: Guaranteed containers with whole
/// CPUs get them exclusively (under `policy`); everything else is shared.
#[derive(Debug, Clone)]
pub struct StaticRule {
    /// Whether the rule is on (`[pods] exclusive_guaranteed`).
    pub enabled: bool,
    /// The alignment it asks for.
    pub policy: Policy,
}

impl Wants for StaticRule {
    fn want(&self, pod: &PodInfo, c: &ContainerInfo) -> Want {
        match (self.enabled, pod.qos, c.whole_cpus) {
            (true, Qos::Guaranteed, Some(n)) => Want::Exclusive {
                cpus: n,
                memory_bytes: c.memory_bytes,
                policy: self.policy,
                isolated: false,
                why: format!("Guaranteed container with {n} whole CPUs"),
            },
            _ => Want::Shared,
        }
    }
}

/// Devices the kubelet assigned to each container (PodResources), as PCI
/// functions: `(namespace, pod, container)` → addresses.
pub type Assigned = BTreeMap<(String, String, String), Vec<PciAddress>>;

/// What happened to one container in a [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `namespace/name` of its pod.
    pub pod: String,
    /// The pod's uid.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// Its cgroup, relative to the cgroup root.
    pub cgroup: String,
    /// What was done.
    pub action: Action,
}

/// See [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Given exclusive CPUs.
    Pinned {
        /// The allocation.
        id: String,
        /// Its CPUs.
        cpus: CpuSet,
        /// Its memory nodes.
        mems: Vec<u32>,
        /// The devices it was placed near.
        near: Vec<PciAddress>,
    },
    /// Made a shared consumer.
    Shared {
        /// The allocation.
        id: String,
    },
    /// Exclusive CPUs refused (it runs in the shared pool).
    Refused {
        /// Why, naming the field or the constraint.
        reason: String,
    },
    /// Its allocation released (its pod ended or its cgroup is gone).
    Released {
        /// The allocation.
        id: String,
    },
    /// A step failed; tried again at the next reconcile.
    Failed {
        /// What failed.
        error: String,
    },
    /// A VF assigned to it (and its RDMA devices) moved into its network
    /// namespace (`communication`, see [`netns`]).
    Moved {
        /// The VF.
        vf: PciAddress,
        /// Its netdev, as named when it moved.
        netdev: Option<String>,
        /// Its RDMA devices moved with it.
        rdma: Vec<String>,
        /// The namespace, as the container's process names it.
        netns: String,
    },
    /// Moving a VF into its network namespace failed; tried again at the
    /// next reconcile.
    MoveFailed {
        /// The VF.
        vf: PciAddress,
        /// What failed.
        error: String,
    },
    /// Its pod's `flows` steered to the pod by XDP rules (see [`flows`]).
    Steered {
        /// The data interface.
        iface: String,
        /// The near end of the pod's veth the rules redirect to.
        via: String,
        /// The rules' ids in the split.
        rules: Vec<u32>,
    },
    /// Steering its pod's `flows` failed; tried again at the next
    /// reconcile.
    SteerFailed {
        /// What failed.
        error: String,
    },
    /// A step of its pod failed after others took effect: the pod's
    /// realization was undone (see [`txn`]).
    RolledBack {
        /// The step that failed.
        reason: String,
        /// When the pod is tried again, seconds from now.
        retry_in_s: u64,
        /// What could not be undone.
        not_undone: Vec<String>,
        /// The VFs moved back to the host's namespace.
        vfs_back: Vec<PciAddress>,
        /// Whether its flows' rules left the split.
        rules_withdrawn: bool,
    },
}

/// One running container to realize.
struct Live<'a> {
    pod: &'a PodInfo,
    c: &'a ContainerInfo,
    cgroup: String,
}

/// The container allocations the checkpoint holds: cgroup → (id,
/// exclusive CPUs).
pub(crate) fn held<C: Cpusets>(m: &Manager<C>) -> BTreeMap<String, (String, usize)> {
    let cp = m.checkpoint();
    cp.targets
        .iter()
        .filter_map(|(id, t)| match t {
            Target::Container(p) => {
                let n = cp.state.allocations.get(id)?.placement.cpus.len();
                Some((p.clone(), (id.clone(), n)))
            }
            _ => None,
        })
        .collect()
}

/// Brings the container allocations of `m` to what `pods` want now (see
/// the module doc; `kubelet_root` is the kubelet's `--cgroup-root`);
/// returns what changed, one [`Outcome`] per container touched (an
/// unchanged container is not reported). The allocations of the cgroups
/// in `keep` are not released even when no running container has them:
/// they were made while their container was being created (NRI), before
/// it runs or its cgroup exists.
pub fn reconcile<C: Cpusets>(
    m: &mut Manager<C>,
    kubelet_root: &str,
    pods: &[PodInfo],
    assigned: &Assigned,
    wants: &dyn Wants,
    keep: &BTreeSet<String>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    // Running containers and their cgroups, as they exist now.
    let mut live = Vec::new();
    for pod in pods.iter().filter(|p| !p.ending) {
        for c in pod.containers.iter().filter(|c| c.running) {
            let exists = |p: &str| matches!(m.cgroups().read(p), Ok(Some(_)));
            if let Some(cgroup) = cgroup::existing(kubelet_root, pod, c, &exists) {
                live.push(Live { pod, c, cgroup });
            }
        }
    }
    let wanted: BTreeSet<&str> = live.iter().map(|l| l.cgroup.as_str()).collect();

    // 1. Releases: containers gone, pods ended.
    let mut have = held(m);
    for (cg, (id, _)) in have.clone() {
        if wanted.contains(cg.as_str()) || keep.contains(&cg) {
            continue;
        }
        let (pod, pod_uid, container) = pods
            .iter()
            .find_map(|p| {
                p.containers.iter().find_map(|c| {
                    let cid = c.id.as_ref()?;
                    cgroup::candidates(kubelet_root, p.qos, &p.uid, cid)
                        .contains(&cg)
                        .then(|| (p.key(), p.uid.clone(), c.name.clone()))
                })
            })
            .unwrap_or_default();
        let action = match m.release(&id) {
            Ok(()) => {
                have.remove(&cg);
                Action::Released { id }
            }
            Err(e) => Action::Failed {
                error: format!("release {id}: {}", griffin_devices::Chain(&e)),
            },
        };
        out.push(Outcome {
            pod,
            pod_uid,
            container,
            cgroup: cg,
            action,
        });
    }

    // 2. Exclusive ones before shared ones: a shared consumer first would
    //    only be rewritten when the exclusive CPUs leave the pool.
    let mut decided: Vec<(Live, Want)> = live
        .into_iter()
        .map(|l| {
            let w = wants.want(l.pod, l.c);
            (l, w)
        })
        .collect();
    decided.sort_by_key(|(_, w)| !matches!(w, Want::Exclusive { .. }));
    for (l, want) in decided {
        let near = assigned
            .get(&(
                l.pod.namespace.clone(),
                l.pod.name.clone(),
                l.c.name.clone(),
            ))
            .cloned()
            .unwrap_or_default();
        let cur = have.get(&l.cgroup).cloned();
        realize_one(m, l.pod, l.c, &l.cgroup, &want, near, cur, &mut out);
    }
    out
}

/// Brings one container's allocation on `cgroup` to `want`; `cur` is the
/// allocation it holds (id, exclusive CPUs). Pushes what it did to `out`
/// (nothing when it already is as wanted).
#[allow(clippy::too_many_arguments)]
pub(crate) fn realize_one<C: Cpusets>(
    m: &mut Manager<C>,
    pod: &PodInfo,
    c: &ContainerInfo,
    cgroup: &str,
    want: &Want,
    near: Vec<PciAddress>,
    cur: Option<(String, usize)>,
    out: &mut Vec<Outcome>,
) {
    let outcome = |action| Outcome {
        pod: pod.key(),
        pod_uid: pod.uid.clone(),
        container: c.name.clone(),
        cgroup: cgroup.to_owned(),
        action,
    };
    let exclusive = request_for(want, &near);
    let target = Target::Container(cgroup.to_owned());
    match (&exclusive, cur) {
        // As wanted: nothing to do, but for an isolated partition wanted
        // on a cgroup that did not exist yet when the allocation was made
        // (at the container's creation).
        (Some(r), Some((id, n))) if n == r.cpus as usize => {
            if r.options.isolated_partition && !m.cgroups().is_isolated_partition(cgroup) {
                if let Err(e) = m.reapply(&id) {
                    out.push(outcome(Action::Failed {
                        error: format!(
                            "the isolated partition of {cgroup}: {}",
                            griffin_devices::Chain(&e)
                        ),
                    }));
                }
            }
            return;
        }
        // Refused before and still refused: it stays shared (the refusal
        // was reported when it was first made).
        (Some(r), Some((_, 0))) if refused(m, r, &target).is_some() => return,
        (None, Some((_, 0))) => return,
        // Kind changed (a config change): release, then as new.
        (_, Some((id, _))) => {
            if let Err(e) = m.release(&id) {
                out.push(outcome(Action::Failed {
                    error: format!("release {id}: {}", griffin_devices::Chain(&e)),
                }));
                return;
            }
            out.push(outcome(Action::Released { id }));
        }
        (_, None) => {}
    }
    if let Want::Refused(reason) = want {
        out.push(outcome(Action::Refused {
            reason: reason.clone(),
        }));
    }
    if let Some(req) = exclusive {
        match m.allocate(req, target.clone()) {
            Ok(v) => {
                out.push(outcome(Action::Pinned {
                    id: v.id,
                    cpus: v.cpus,
                    mems: v.mems,
                    near,
                }));
                return;
            }
            Err(e) => out.push(outcome(Action::Refused {
                reason: griffin_devices::Chain(&e).to_string(),
            })),
        }
    }
    // Shared, refused, or exclusive CPUs refused: the shared pool.
    match m.allocate(Request::default(), target) {
        Ok(v) => out.push(outcome(Action::Shared { id: v.id })),
        Err(e) => out.push(outcome(Action::Failed {
            error: griffin_devices::Chain(&e).to_string(),
        })),
    }
}

/// The allocation an exclusive `want` asks for, placed near `near`.
pub(crate) fn request_for(want: &Want, near: &[PciAddress]) -> Option<Request> {
    match want {
        Want::Exclusive {
            cpus,
            memory_bytes,
            policy,
            isolated,
            ..
        } => Some(Request {
            cpus: *cpus,
            memory_bytes: *memory_bytes,
            policy: *policy,
            assigned: near.to_vec(),
            options: crate::alloc::Options {
                isolated_partition: *isolated,
                ..Default::default()
            },
            ..Request::default()
        }),
        _ => None,
    }
}

/// Why `m` would refuse `req` on `target` now, if it would: the manager's
/// own checks, then the placement.
pub(crate) fn refused<C: Cpusets>(
    m: &Manager<C>,
    req: &Request,
    target: &Target,
) -> Option<String> {
    m.refusal(req, target).or_else(|| {
        crate::alloc::allocate(m.topology(), &m.checkpoint().state, req)
            .err()
            .map(|e| griffin_devices::Chain(&e).to_string())
    })
}

/// Pods and machine fakes for unit tests.
#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeCpusets;
    use crate::pods::testing::{kinds, Node};
    use griffin_devices::DeviceKind;

    /// [`super::reconcile`] with nothing kept.
    fn reconcile(
        m: &mut Manager<FakeCpusets>,
        root: &str,
        pods: &[PodInfo],
        assigned: &Assigned,
        wants: &dyn Wants,
    ) -> Vec<Outcome> {
        super::reconcile(m, root, pods, assigned, wants, &BTreeSet::new())
    }

    fn pod(uid: &str, qos: Qos, cpus: &[Option<u32>]) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("p{uid}"),
            qos,
            containers: cpus
                .iter()
                .enumerate()
                .map(|(i, n)| ContainerInfo {
                    name: format!("c{i}"),
                    whole_cpus: *n,
                    memory_bytes: 0,
                    id: Some(ContainerId {
                        runtime: "containerd".into(),
                        id: format!("{uid}{i}"),
                    }),
                    running: true,
                })
                .collect(),
            annotations: BTreeMap::new(),
            ending: false,
            ips: Vec::new(),
            host_network: false,
        }
    }

    const STATIC: StaticRule = StaticRule {
        enabled: true,
        policy: Policy::SingleNumaNode,
    };

    #[test]
    fn guaranteed_containers_are_pinned_and_the_others_share_the_rest() {
        let n = Node::new(4);
        let g = pod("aa", Qos::Guaranteed, &[Some(2)]);
        let b = pod("bb", Qos::Burstable, &[None]);
        let (gc, bc) = (n.start(&g, 0), n.start(&b, 0));
        let pods = [g.clone(), b.clone()];
        let mut m = n.open();
        let out = reconcile(&mut m, "", &pods, &Assigned::new(), &STATIC);
        assert_eq!(
            kinds(&out),
            [
                ("ns/paa/c0".into(), "pinned"),
                ("ns/pbb/c0".into(), "shared")
            ]
        );
        let pinned = n.cpus(&gc);
        assert_eq!(pinned.len(), 2);
        let mut all = n.cpus(&bc);
        assert!(
            pinned.iter().all(|c| !all.contains(c)),
            "shared pool excludes {pinned}"
        );
        all.union_with(&pinned);
        assert_eq!(all, CpuSet::from(&n.topo.online_cpus));
        // Idempotent: nothing to do, also after a restart.
        assert!(reconcile(&mut m, "", &pods, &Assigned::new(), &STATIC).is_empty());
        drop(m);
        let mut m = n.open();
        assert!(reconcile(&mut m, "", &pods, &Assigned::new(), &STATIC).is_empty());
        assert_eq!(n.cpus(&gc), pinned);
    }

    #[test]
    fn an_ended_pod_or_a_vanished_container_is_released_and_never_recreated() {
        let n = Node::new(4);
        let g = pod("aa", Qos::Guaranteed, &[Some(2)]);
        let b = pod("bb", Qos::Burstable, &[None]);
        let (gc, bc) = (n.start(&g, 0), n.start(&b, 0));
        let mut m = n.open();
        reconcile(
            &mut m,
            "",
            &[g.clone(), b.clone()],
            &Assigned::new(),
            &STATIC,
        );
        // The pinned pod ends: released, its CPUs back in the shared pool.
        let mut ended = g.clone();
        ended.ending = true;
        let out = reconcile(&mut m, "", &[ended, b.clone()], &Assigned::new(), &STATIC);
        assert_eq!(kinds(&out), [("ns/paa/c0".into(), "released")]);
        assert_eq!(n.cpus(&bc), CpuSet::from(&n.topo.online_cpus));
        // The runtime removes a container's cgroup before Griffin hears of
        // it: released, and its cgroup is not made again.
        n.fake.remove(&gc).unwrap();
        n.fake.remove(&bc).unwrap();
        let out = reconcile(
            &mut m,
            "",
            std::slice::from_ref(&b),
            &Assigned::new(),
            &STATIC,
        );
        assert_eq!(kinds(&out), [("ns/pbb/c0".into(), "released")]);
        assert!(!n.fake.cgroups().contains(&bc), "{:?}", n.fake.cgroups());
        assert!(m.list().is_empty());
    }

    #[test]
    fn an_allocation_made_at_creation_is_kept_until_its_container_runs() {
        let n = Node::new(4);
        let mut g = pod("aa", Qos::Guaranteed, &[Some(2)]);
        let mut m = n.open();
        // NRI: the cgroup does not exist yet, the pod's status does not
        // list the container as running.
        g.containers[0].running = false;
        let cg =
            cgroup::candidates("", g.qos, &g.uid, g.containers[0].id.as_ref().unwrap()).remove(0);
        let mut out = Vec::new();
        let want = STATIC.want(&g, &g.containers[0]);
        realize_one(
            &mut m,
            &g,
            &g.containers[0],
            &cg,
            &want,
            vec![],
            None,
            &mut out,
        );
        assert_eq!(kinds(&out), [("ns/paa/c0".into(), "pinned")]);
        assert!(!n.fake.cgroups().contains(&cg), "never made by Griffin");
        let (id, _) = held(&m)[&cg].clone();
        assert_eq!(m.effective(&id).unwrap().0.len(), 2);
        let keep = BTreeSet::from([cg.clone()]);
        let pods = [g.clone()];
        assert!(super::reconcile(&mut m, "", &pods, &Assigned::new(), &STATIC, &keep).is_empty());
        // The runtime made it with the CPUs; the container runs: as wanted.
        n.fake.mkdir(&cg);
        g.containers[0].running = true;
        let pods = [g.clone()];
        assert!(super::reconcile(&mut m, "", &pods, &Assigned::new(), &STATIC, &keep).is_empty());
        // Never started and no longer kept: released.
        n.fake.remove(&cg).unwrap();
        g.containers[0].running = false;
        let out = reconcile(&mut m, "", &[g], &Assigned::new(), &STATIC);
        assert_eq!(kinds(&out), [("ns/paa/c0".into(), "released")]);
    }

    #[test]
    fn a_refusal_is_reported_once_and_retried_when_cpus_free_up() {
        let n = Node::new(2);
        // 4 CPUs, the last shared one is never handed out: 3 exclusive at most.
        let big = pod("aa", Qos::Guaranteed, &[Some(3)]);
        let other = pod("bb", Qos::Guaranteed, &[Some(2)]);
        n.start(&big, 0);
        let oc = n.start(&other, 0);
        let pods = [big.clone(), other.clone()];
        let rule = StaticRule {
            enabled: true,
            policy: Policy::BestEffort,
        };
        let mut m = n.open();
        let out = reconcile(&mut m, "", &pods, &Assigned::new(), &rule);
        assert_eq!(
            kinds(&out),
            [
                ("ns/paa/c0".into(), "pinned"),
                ("ns/pbb/c0".into(), "refused"),
                ("ns/pbb/c0".into(), "shared")
            ],
            "{out:?}"
        );
        // Still refused: no churn, no second report.
        assert!(reconcile(&mut m, "", &pods, &Assigned::new(), &rule).is_empty());
        // The big one goes: the other gets its CPUs.
        let out = reconcile(
            &mut m,
            "",
            std::slice::from_ref(&other),
            &Assigned::new(),
            &rule,
        );
        assert_eq!(
            kinds(&out),
            [
                ("kubepods/podaa/aa0".into(), "released"),
                ("ns/pbb/c0".into(), "released"),
                ("ns/pbb/c0".into(), "pinned")
            ]
        );
        assert_eq!(n.cpus(&oc).len(), 2);
    }

    #[test]
    fn cpus_go_to_the_numa_node_of_the_assigned_device_which_stays_unclaimed() {
        let n = Node::new(4);
        let gpus: Vec<PciAddress> = n
            .topo
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Gpu)
            .map(|d| d.pci_address)
            .collect();
        for (i, gpu) in gpus.iter().enumerate() {
            let node = n.topo.device(*gpu).unwrap().numa_node.unwrap();
            let p = pod(&format!("a{i}"), Qos::Guaranteed, &[Some(2)]);
            let cg = n.start(&p, 0);
            let assigned: Assigned =
                [(("ns".into(), p.name.clone(), "c0".into()), vec![*gpu])].into();
            let mut m = n.open();
            let out = reconcile(&mut m, "", std::slice::from_ref(&p), &assigned, &STATIC);
            let Action::Pinned { mems, near, .. } = &out[0].action else {
                panic!("{out:?}")
            };
            assert_eq!(mems, &[node], "CPUs on the GPU's node {node}");
            assert_eq!(near, &[*gpu]);
            let node_cpus = &n
                .topo
                .numa_nodes
                .iter()
                .find(|x| x.id == node)
                .unwrap()
                .cpus;
            assert!(n.cpus(&cg).iter().all(|c| node_cpus.contains(c)));
            // The kubelet's device is not the allocation's to claim.
            assert!(m.checkpoint().state.taken_devices().is_empty());
            let mut ended = p.clone();
            ended.ending = true;
            reconcile(&mut m, "", &[ended], &assigned, &STATIC);
        }
    }

    /// The annotation rule and a pod asking for an isolated partition.
    fn isolated_pod() -> (accel::AccelRule, PodInfo) {
        let rule = accel::AccelRule {
            fallback: StaticRule {
                enabled: false,
                policy: Policy::BestEffort,
            },
        };
        let pod = testing::one_container(
            Some(r#"{"topologyAware": true, "isolation": "isolated"}"#),
            true,
            false,
        );
        (rule, pod)
    }

    #[test]
    fn isolation_isolated_makes_the_container_a_remote_partition_on_cgroup_v2_only() {
        let (rule, pod) = isolated_pod();
        let node = Node::with_version(2, crate::enforce::Version::V2);
        let cg = node.start(&pod, 0);
        let mut m = node.open();
        let out = reconcile(
            &mut m,
            "",
            std::slice::from_ref(&pod),
            &Assigned::new(),
            &rule,
        );
        assert_eq!(kinds(&out), [("ns/p/work".to_owned(), "pinned")]);
        let cpus = node.cpus(&cg);
        assert_eq!(cpus.len(), 1);
        assert!(node.fake.is_isolated(&cg), "{:?}", node.fake.log());
        // Every cgroup above it holds its CPU.
        let (pod_cg, _) = cg.rsplit_once('/').unwrap();
        let (qos_cg, _) = pod_cg.rsplit_once('/').unwrap_or((pod_cg, ""));
        for above in [pod_cg, qos_cg] {
            assert_eq!(node.fake.exclusive(above), cpus, "{above}");
        }
        // The pod ends: a member again, the CPU given back above it.
        let mut ended = pod.clone();
        ended.ending = true;
        let out = reconcile(&mut m, "", &[ended], &Assigned::new(), &rule);
        assert_eq!(kinds(&out), [("ns/p/work".to_owned(), "released")]);
        assert!(!node.fake.is_isolated(&cg));
        for above in [pod_cg, qos_cg] {
            assert!(node.fake.exclusive(above).is_empty(), "{above}");
        }
        // cgroup v1: refused, naming why; the container shares the pool.
        let node = Node::new(2);
        let cg = node.start(&pod, 0);
        let mut m = node.open();
        let out = reconcile(
            &mut m,
            "",
            std::slice::from_ref(&pod),
            &Assigned::new(),
            &rule,
        );
        assert_eq!(
            kinds(&out),
            [
                ("ns/p/work".to_owned(), "refused"),
                ("ns/p/work".to_owned(), "shared")
            ]
        );
        assert!(
            matches!(&out[0].action, Action::Refused { reason } if reason.contains("cgroup v2")),
            "{out:?}"
        );
        assert_eq!(node.cpus(&cg).len(), 4);
        let again = reconcile(
            &mut m,
            "",
            std::slice::from_ref(&pod),
            &Assigned::new(),
            &rule,
        );
        assert!(
            again.is_empty(),
            "refused once, not at every reconcile: {again:?}"
        );
    }

    #[test]
    fn an_isolated_container_allocated_at_creation_gets_its_partition_once_its_cgroup_exists() {
        let (rule, pod) = isolated_pod();
        let node = Node::with_version(2, crate::enforce::Version::V2);
        let mut m = node.open();
        // NRI: decided on the cgroup the runtime is about to make.
        let cg = cgroup::candidates(
            "",
            pod.qos,
            &pod.uid,
            pod.containers[0].id.as_ref().unwrap(),
        )
        .remove(0);
        let want = rule.want(&pod, &pod.containers[0]);
        let mut out = Vec::new();
        realize_one(
            &mut m,
            &pod,
            &pod.containers[0],
            &cg,
            &want,
            vec![],
            None,
            &mut out,
        );
        assert_eq!(kinds(&out), [("ns/p/work".to_owned(), "pinned")]);
        assert!(!node.fake.is_isolated(&cg));
        // The runtime makes the cgroup; the next reconcile makes the
        // partition, quietly.
        assert_eq!(node.start(&pod, 0), cg);
        let keep = BTreeSet::from([cg.clone()]);
        let out = super::reconcile(
            &mut m,
            "",
            std::slice::from_ref(&pod),
            &Assigned::new(),
            &rule,
            &keep,
        );
        assert!(out.is_empty(), "{out:?}");
        assert!(node.fake.is_isolated(&cg), "{:?}", node.fake.log());
    }

    #[test]
    fn without_the_rule_everything_is_shared_and_bad_uids_are_skipped() {
        let n = Node::new(2);
        let g = pod("aa", Qos::Guaranteed, &[Some(1)]);
        n.start(&g, 0);
        let mut m = n.open();
        let off = StaticRule {
            enabled: false,
            policy: Policy::None,
        };
        assert_eq!(
            kinds(&reconcile(
                &mut m,
                "",
                std::slice::from_ref(&g),
                &Assigned::new(),
                &off
            )),
            [("ns/paa/c0".into(), "shared")]
        );
        let mut bad = pod("x", Qos::Guaranteed, &[Some(1)]);
        bad.uid = "../griffin".into();
        assert!(reconcile(&mut m, "", &[g, bad], &Assigned::new(), &off).is_empty());
    }
}
