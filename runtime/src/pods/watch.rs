//! The daemon's side of [`super::reconcile`]: the node's pods from the API
//! server ([`NodePods`]: a watch filtered on `spec.nodeName`, kept in a
//! reflector store, shared with the NodeResourceTopology publisher), the
//! devices the kubelet assigned from PodResources, a reconcile
//! on every pod event and every resync period, and what happened reported
//! in the log and as events on the pods.
//!
//! Nothing is released before the first complete list of the node's pods
//! has arrived: a restarted daemon never mistakes "not listed yet" for
//! "gone".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use griffin_devices::PciAddress;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use griffin_kubelet_api::nri::{
    CreateContainerRequest, CreateContainerResponse, RemoveContainerRequest,
};

use super::accel::{devices, Devices};
use super::{cgroup, Action, Assigned, ContainerId, Outcome, PodInfo, Wants};
use crate::cpuset::CpuSet;
use crate::enforce::Cpusets;
use crate::manager::Manager;
use crate::plugin::podresources::PodResourcesClient;

/// Opens the allocation manager for one reconcile (see the daemon).
pub type Open<C> =
    Arc<dyn Fn() -> Result<Manager<C>, crate::control::BoxError> + Send + Sync + 'static>;

/// Maps a device id of a resource to its PCI function (the pools).
pub type AddressOf = Arc<dyn Fn(&str, &str) -> Option<PciAddress> + Send + Sync + 'static>;

/// Told every reconcile's outcomes, the pods they were decided on and
/// the devices PodResources listed per container.
pub type OnOutcomes = Arc<dyn Fn(&[Outcome], &[PodInfo], &Devices) + Send + Sync>;

/// The pods of this node, followed with one watch (filtered on
/// `spec.nodeName`, kept in a reflector store) for every reader of the
/// daemon: the pods engine ([`run`]) and the NodeResourceTopology
/// publisher's pod fingerprint. Clones share the watch.
#[derive(Clone)]
pub struct NodePods {
    store: reflector::Store<Pod>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// Set with the first complete listing. (The store's own
    /// `wait_until_ready` wakes one waiting task only: its value is behind
    /// a oneshot receiver, which keeps the last poller's waker.)
    listed: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for NodePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodePods")
            .field("pods", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl NodePods {
    /// Starts following the pods of node `node` until `stop`; the watch
    /// restarts with back-off after errors (logged).
    pub fn follow(client: Client, node: &str, stop: CancellationToken) -> Self {
        let api: Api<Pod> = Api::all(client);
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        let (store, writer) = reflector::store();
        let (tx, changes) = tokio::sync::watch::channel(0u64);
        let (listed_tx, listed) = tokio::sync::watch::channel(false);
        let stream = reflector(writer, watcher(api, cfg))
            .default_backoff()
            .for_each(move |ev| {
                match ev {
                    Ok(ev) => {
                        if matches!(ev, watcher::Event::InitDone) {
                            listed_tx.send_replace(true);
                        }
                        tx.send_modify(|n| *n = n.wrapping_add(1));
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch"),
                }
                std::future::ready(())
            });
        tokio::spawn(stop.run_until_cancelled_owned(stream));
        Self {
            store,
            changes,
            listed,
        }
    }

    /// The pods as the watch holds them (empty until the first listing:
    /// see [`NodePods::listed`]).
    pub fn store(&self) -> &reflector::Store<Pod> {
        &self.store
    }

    /// Waits for the first complete listing of the node's pods; `false`
    /// when the watch ended before (its daemon stopping). Any number of
    /// tasks may wait.
    pub async fn listed(&self) -> bool {
        self.listed.clone().wait_for(|l| *l).await.is_ok()
    }

    /// Changes with every event of the watch.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }
}

/// What [`run`] needs.
pub struct Settings<C: Cpusets> {
    /// This node's name (`spec.nodeName` of its pods).
    pub node_name: String,
    /// Opens the manager.
    pub open: Open<C>,
    /// What containers want.
    pub wants: Arc<dyn Wants + Send + Sync>,
    /// The kubelet's PodResources, when it can be asked.
    pub pod_resources: Option<PodResourcesClient>,
    /// Device id → PCI function.
    pub address_of: AddressOf,
    /// Full reconcile period.
    pub resync: Duration,
    /// The kubelet's `--cgroup-root`.
    pub kubelet_cgroup_root: String,
    /// Called with every reconcile's outcomes (after logging), e.g. to
    /// keep a record of what was realized.
    pub on_outcomes: OnOutcomes,
    /// The container runtime's NRI socket, when containers are to be
    /// created with their CPUs (see [`AtCreation`]).
    pub nri: Option<crate::nri::Settings>,
    /// Moves assigned VFs into their pods' network namespaces
    /// (`communication`, see [`super::netns`]); `None`: never.
    pub netns: Option<Arc<dyn super::netns::Netns + Send + Sync>>,
    /// Steers pods' `flows` to them with XDP (see [`super::flows`]);
    /// with no data interface configured, pods with `flows` are told so.
    pub flows: super::flows::Flows,
}

impl<C: Cpusets> std::fmt::Debug for Settings<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("node_name", &self.node_name)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

/// Realizes the node's pods (followed by `pods`) until `stop` (see the
/// module doc).
pub async fn run<C: Cpusets + Send + 'static>(
    client: Client,
    pods: NodePods,
    s: Settings<C>,
    stop: CancellationToken,
) {
    let store = pods.store().clone();
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch = {
        let (changed, mut changes) = (changed.clone(), pods.changes());
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                changed.notify_one();
            }
        })
    };
    tokio::select! {
        () = stop.cancelled() => { watch.abort(); return; }
        listed = pods.listed() => if !listed {
            tracing::error!("pod watch ended before listing the node's pods");
            return;
        },
    }
    tracing::info!(node = %s.node_name, pods = store.len(), "pods of this node listed");
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "griffin".into(),
            instance: Some(s.node_name.clone()),
        },
    );
    let fresh: Fresh = Arc::default();
    // The rule, with the pods held back after a rollback in the shared
    // pool, for reconciles and containers' creation alike.
    let wants = Arc::new(super::txn::Held::new(
        s.wants.clone(),
        Arc::default(),
        s.flows.clone(),
    ));
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel();
    let nri_task = s.nri.clone().map(|nri| {
        let h = Arc::new(AtCreation {
            store: store.clone(),
            open: s.open.clone(),
            wants: wants.clone(),
            pod_resources: s.pod_resources.clone(),
            address_of: s.address_of.clone(),
            kubelet_root: s.kubelet_cgroup_root.clone(),
            runtime: std::sync::Mutex::default(),
            fresh: fresh.clone(),
            report: report_tx,
            changed: changed.clone(),
        });
        tokio::spawn(crate::nri::run(nri, h, stop.clone()))
    });
    let mut last_podresources_error: Option<String> = None;
    let mut kubelet_warned = false;
    loop {
        let pods = pods_of(&store);
        let (assigned, devs) = match &s.pod_resources {
            None => (Assigned::new(), Devices::new()),
            Some(c) => match c.list().await {
                Ok(list) if kubelet_assigns_cpus(&list) => {
                    if !kubelet_warned {
                        tracing::warn!("the kubelet's CPU manager assigns CPUs (PodResources lists cpu_ids): container cpusets are left to it; run the kubelet with --cpu-manager-policy=none for Griffin to realize pods");
                        kubelet_warned = true;
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(s.resync) => continue,
                    }
                }
                Ok(list) => {
                    if kubelet_warned {
                        tracing::info!("the kubelet no longer assigns CPUs: Griffin realizes pods");
                        kubelet_warned = false;
                    }
                    last_podresources_error = None;
                    (assigned(&list, &*s.address_of), devices(&list))
                }
                Err(e) => {
                    let msg = griffin_devices::Chain(&e).to_string();
                    if last_podresources_error.as_ref() != Some(&msg) {
                        tracing::warn!(error = %msg, "PodResources: CPUs are placed without the devices the kubelet assigned");
                        last_podresources_error = Some(msg);
                    }
                    (Assigned::new(), Devices::new())
                }
            },
        };
        let t = Instant::now();
        let open = s.open.clone();
        let pods_for = pods.clone();
        let root = s.kubelet_cgroup_root.clone();
        let keep = keep_fresh(&fresh, &pods);
        let net = s.netns.clone();
        let flows = s.flows.clone();
        let held = wants.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut m = open().map_err(|e| griffin_devices::Chain(&*e).to_string())?;
            let steps = super::txn::Steps {
                kubelet_root: &root,
                assigned: &assigned,
                keep: &keep,
                netns: net.as_deref().map(|n| n as &dyn super::netns::Netns),
                flows: &flows,
            };
            Ok::<_, String>(super::txn::realize(&mut m, &held, &steps, &pods_for))
        })
        .await;
        match result {
            Ok(Ok(out)) => report(&recorder, &out, &pods, &devs, t.elapsed(), &s.on_outcomes).await,
            Ok(Err(e)) => tracing::error!(error = %e, "pods: cannot open the allocation manager"),
            Err(e) => tracing::error!(error = %e, "pods: reconcile task failed"),
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                // Decided at a container's creation: reported like a
                // reconcile's (the pods as they are now).
                Some((out, devs, took)) = report_rx.recv() => {
                    let pods = pods_of(&store);
                    report(&recorder, &out, &pods, &devs, took, &s.on_outcomes).await;
                    continue;
                }
                () = changed.notified() => {
                    // Events come in bursts (a pod's status changes several
                    // times as it starts): one reconcile for the burst.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                () = tokio::time::sleep(s.resync) => {}
            }
            break;
        }
        if stop.is_cancelled() {
            break;
        }
    }
    watch.abort();
    if let Some(t) = nri_task {
        let _ = t.await;
    }
}

/// The pods the watch holds now, as Griffin sees them.
fn pods_of(store: &reflector::Store<Pod>) -> Vec<PodInfo> {
    store
        .state()
        .iter()
        .filter_map(|p| PodInfo::from_pod(p))
        .collect()
}

/// Logs outcomes, posts their events on their pods and tells
/// `on_outcomes`.
async fn report(
    recorder: &Recorder,
    out: &[Outcome],
    pods: &[PodInfo],
    devs: &Devices,
    took: Duration,
    on_outcomes: &OnOutcomes,
) {
    for o in out {
        log(o, took);
        if let Some(ev) = event(o) {
            if let Some(r) = reference(pods, o) {
                if let Err(e) = recorder.publish(&ev, &r).await {
                    tracing::warn!(pod = %o.pod, error = %e, "cannot post an event");
                }
            }
        }
    }
    on_outcomes(out, pods, devs);
}

/// A container given an allocation at creation (NRI), not yet seen
/// running: when, its pod's uid, its name.
#[derive(Debug, Clone)]
struct Created {
    at: Instant,
    pod_uid: String,
    container: String,
}

/// Container cgroups given an allocation at creation, by cgroup.
type Fresh = Arc<std::sync::Mutex<BTreeMap<String, Created>>>;

/// How long an allocation made at creation is kept without its container
/// being seen running (the pod's status reaches the API server and then
/// Griffin's watch seconds after the runtime created the container).
const FRESH_FOR: Duration = Duration::from_secs(60);

/// The cgroups whose allocation made at creation is kept: younger than
/// [`FRESH_FOR`], their pod still listed and not ending, their container
/// not seen running yet (from then on the usual rules apply). Others are
/// forgotten.
fn keep_fresh(fresh: &Fresh, pods: &[PodInfo]) -> std::collections::BTreeSet<String> {
    let mut f = fresh.lock().unwrap_or_else(|e| e.into_inner());
    f.retain(|_, c| {
        c.at.elapsed() < FRESH_FOR
            && pods.iter().any(|p| {
                p.uid == c.pod_uid
                    && !p.ending
                    && !p
                        .containers
                        .iter()
                        .any(|k| k.name == c.container && k.running)
            })
    });
    f.keys().cloned().collect()
}

/// The pods engine's NRI handler: a container of this node's pods is
/// created with the CPUs and memory nodes the same rule gives it after
/// it started ([`super::realize_one`]), so it never runs elsewhere. The
/// allocation targets the cgroup the runtime is about to make; the
/// reconcile then finds it as wanted.
struct AtCreation<C: Cpusets> {
    store: reflector::Store<Pod>,
    open: Open<C>,
    wants: Arc<dyn Wants + Send + Sync>,
    pod_resources: Option<PodResourcesClient>,
    address_of: AddressOf,
    kubelet_root: String,
    /// The runtime's name from `Configure` (`containerd`, `cri-o`).
    runtime: std::sync::Mutex<String>,
    fresh: Fresh,
    report: tokio::sync::mpsc::UnboundedSender<(Vec<Outcome>, Devices, Duration)>,
    changed: Arc<tokio::sync::Notify>,
}

impl<C: Cpusets + Send + 'static> AtCreation<C> {
    /// The pod by uid from the watch, waiting up to 1 s: the kubelet and
    /// Griffin hear of a pod from the same API server, the kubelet may be
    /// first.
    async fn pod(&self, uid: &str) -> Option<PodInfo> {
        for _ in 0..20 {
            let found = pods_of(&self.store).into_iter().find(|p| p.uid == uid);
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn adjust(
        &self,
        req: CreateContainerRequest,
    ) -> Result<Option<(CpuSet, Vec<u32>)>, String> {
        let t = Instant::now();
        let (Some(pod), Some(ctr)) = (req.pod, req.container) else {
            return Err("a request without its pod or container".into());
        };
        let Some(info) = self.pod(&pod.uid).await else {
            return Err(format!(
                "pod {}/{} ({}) not known from the API server yet",
                pod.namespace, pod.name, pod.uid
            ));
        };
        if info.ending {
            return Ok(None);
        }
        // Init containers are not given allocations.
        let Some(mut c) = info.containers.iter().find(|c| c.name == ctr.name).cloned() else {
            return Ok(None);
        };
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let id = ContainerId {
            runtime: if runtime.is_empty() {
                "containerd".into()
            } else {
                runtime
            },
            id: ctr.id.clone(),
        };
        c.id = Some(id.clone());
        let cands = cgroup::candidates(&self.kubelet_root, info.qos, &info.uid, &id);
        let path = ctr
            .linux
            .as_ref()
            .map(|l| l.cgroups_path.as_str())
            .unwrap_or_default();
        let Some(cg) = cgroup::from_runtime(path, &cands).cloned() else {
            return Err(format!(
                "container cgroup {path:?} is none the kubelet makes ({cands:?})"
            ));
        };
        let (near, devs) = match &self.pod_resources {
            None => (Vec::new(), Devices::new()),
            Some(pr) => match pr.list().await {
                // The kubelet's CPU manager places containers: left to it.
                Ok(list) if kubelet_assigns_cpus(&list) => return Ok(None),
                Ok(list) => {
                    let near = assigned(&list, &*self.address_of)
                        .remove(&(info.namespace.clone(), info.name.clone(), c.name.clone()))
                        .unwrap_or_default();
                    (near, devices(&list))
                }
                Err(e) => {
                    tracing::warn!(error = %griffin_devices::Chain(&e), "NRI: PodResources: CPUs are placed without the devices the kubelet assigned");
                    (Vec::new(), Devices::new())
                }
            },
        };
        let want = self.wants.want(&info, &c);
        let open = self.open.clone();
        let cg2 = cg.clone();
        let info2 = info.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut m = open().map_err(|e| griffin_devices::Chain(&*e).to_string())?;
            let mut out = Vec::new();
            let cur = super::held(&m).get(&cg2).cloned();
            super::realize_one(&mut m, &info2, &c, &cg2, &want, near, cur, &mut out);
            let eff = super::held(&m)
                .get(&cg2)
                .and_then(|(id, _)| m.effective(id));
            Ok::<_, String>((out, eff))
        })
        .await
        .map_err(|e| e.to_string())?;
        let (out, eff) = r?;
        self.fresh.lock().unwrap_or_else(|e| e.into_inner()).insert(
            cg.clone(),
            Created {
                at: Instant::now(),
                pod_uid: info.uid.clone(),
                container: ctr.name.clone(),
            },
        );
        if let Some((cpus, mems)) = &eff {
            tracing::info!(pod = %info.key(), container = %ctr.name, cgroup = %cg, cpus = %cpus, mems = ?mems, took_ms = t.elapsed().as_secs_f64() * 1e3, "NRI: container created with its CPUs");
        }
        let _ = self.report.send((out, devs, t.elapsed()));
        Ok(eff)
    }
}

impl<C: Cpusets + Send + 'static> crate::nri::Handler for AtCreation<C> {
    fn configured(&self, runtime_name: &str, _runtime_version: &str) {
        *self.runtime.lock().unwrap_or_else(|e| e.into_inner()) = runtime_name.to_owned();
    }

    async fn create_container(&self, req: CreateContainerRequest) -> CreateContainerResponse {
        let name = req
            .container
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        match self.adjust(req).await {
            Ok(Some((cpus, mems))) => CreateContainerResponse {
                adjust: Some(crate::nri::cpuset_adjustment(&cpus, &mems)),
                update: vec![],
                evict: vec![],
            },
            Ok(None) => CreateContainerResponse::default(),
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "NRI: container created unadjusted; it is pinned after it starts");
                CreateContainerResponse::default()
            }
        }
    }

    fn container_removed(&self, req: &RemoveContainerRequest) {
        if let Some(c) = &req.container {
            self.fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|cg, _| !cg.contains(&c.id));
        }
        self.changed.notify_one();
    }
}

/// Whether the kubelet's own CPU manager assigns CPUs: its static policy
/// lists every container's CPUs in PodResources (its exclusive ones or the
/// shared pool), the `none` policy none. Two managers writing the same
/// cpusets would undo each other, so Griffin then leaves pods alone.
pub fn kubelet_assigns_cpus(list: &[crate::plugin::podresources::PodResources]) -> bool {
    list.iter()
        .flat_map(|p| &p.containers)
        .any(|c| !c.cpu_ids.is_empty())
}

/// The devices PodResources lists per container, as PCI functions.
pub fn assigned(
    list: &[crate::plugin::podresources::PodResources],
    address_of: &(dyn Fn(&str, &str) -> Option<PciAddress> + Send + Sync),
) -> Assigned {
    let mut out: Assigned = BTreeMap::new();
    for p in list {
        for c in &p.containers {
            let addrs: Vec<PciAddress> = c
                .devices
                .iter()
                .flat_map(|d| {
                    d.device_ids
                        .iter()
                        .filter_map(|id| address_of(&d.resource_name, id))
                })
                .collect();
            if !addrs.is_empty() {
                out.insert((p.namespace.clone(), p.name.clone(), c.name.clone()), addrs);
            }
        }
    }
    out
}

fn log(o: &Outcome, took: Duration) {
    let ms = took.as_secs_f64() * 1e3;
    match &o.action {
        Action::Pinned {
            id,
            cpus,
            mems,
            near,
        } => {
            tracing::info!(pod = %o.pod, container = %o.container, cgroup = %o.cgroup, allocation = %id, cpus = %cpus, mems = ?mems, near = ?near, reconcile_ms = ms, "container pinned")
        }
        Action::Shared { id } => {
            tracing::info!(pod = %o.pod, container = %o.container, allocation = %id, "container in the shared pool")
        }
        Action::Refused { reason } => {
            tracing::warn!(pod = %o.pod, container = %o.container, reason = %reason, "exclusive CPUs refused; the container runs in the shared pool")
        }
        Action::Released { id } => {
            tracing::info!(pod = %o.pod, container = %o.container, cgroup = %o.cgroup, allocation = %id, "container allocation released")
        }
        Action::Failed { error } => {
            tracing::error!(pod = %o.pod, container = %o.container, error = %error, "pod realization step failed; retried at the next reconcile")
        }
        Action::Moved {
            vf,
            netdev,
            rdma,
            netns,
        } => {
            tracing::info!(pod = %o.pod, container = %o.container, vf = %vf, netdev = ?netdev, rdma = ?rdma, netns = %netns, "VF moved into the pod's network namespace")
        }
        Action::MoveFailed { vf, error } => {
            tracing::error!(pod = %o.pod, container = %o.container, vf = %vf, error = %error, "VF not moved; retried at the next reconcile")
        }
        Action::Steered { iface, via, rules } => {
            tracing::info!(pod = %o.pod, iface = %iface, via = %via, rules = ?rules, "pod's flows steered to it by XDP")
        }
        Action::SteerFailed { error } => {
            tracing::error!(pod = %o.pod, error = %error, "pod's flows not steered; retried at the next reconcile")
        }
        Action::RolledBack {
            reason,
            retry_in_s,
            not_undone,
            ..
        } => {
            tracing::error!(pod = %o.pod, reason = %reason, retry_in_s, not_undone = ?not_undone, "pod's acceleration rolled back after a failed step")
        }
    }
}

/// The event an outcome posts on its pod, if any.
pub fn event(o: &Outcome) -> Option<Event> {
    let (type_, reason, note) = match &o.action {
        Action::Pinned { cpus, mems, .. } => (
            EventType::Normal,
            "Pinned",
            format!(
                "container {}: exclusive CPUs {cpus}, memory nodes {mems:?}",
                o.container
            ),
        ),
        Action::Refused { reason } => (
            EventType::Warning,
            "AccelerationRefused",
            format!("container {}: {reason}", o.container),
        ),
        Action::Failed { error }
        | Action::MoveFailed { error, .. }
        | Action::SteerFailed { error } => (
            EventType::Warning,
            "AccelerationFailed",
            format!("container {}: {error}", o.container),
        ),
        Action::Moved { vf, netdev, .. } => (
            EventType::Normal,
            "VfMoved",
            format!(
                "container {}: VF {vf}{} moved into the pod's network namespace",
                o.container,
                netdev
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ),
        ),
        Action::Steered { iface, via, rules } => (
            EventType::Normal,
            "FlowsSteered",
            format!(
                "flows steered by XDP on {iface} to the pod's interface via {via} (rules {rules:?})"
            ),
        ),
        Action::RolledBack {
            reason,
            retry_in_s,
            not_undone,
            ..
        } => (
            EventType::Warning,
            "AccelerationRolledBack",
            format!(
                "all of the pod's acceleration undone after a failed step ({reason}){}; tried again in {retry_in_s} s",
                if not_undone.is_empty() {
                    String::new()
                } else {
                    format!("; not undone: {}", not_undone.join("; "))
                }
            ),
        ),
        Action::Shared { .. } | Action::Released { .. } => return None,
    };
    // The API server refuses notes over 1 kB.
    let mut note = note;
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Some(Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Realize".into(),
        secondary: None,
    })
}

fn reference(pods: &[PodInfo], o: &Outcome) -> Option<ObjectReference> {
    let p = pods.iter().find(|p| p.uid == o.pod_uid)?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(p.name.clone()),
        namespace: Some(p.namespace.clone()),
        uid: Some(p.uid.clone()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::podresources as pr;

    #[test]
    fn an_allocation_made_at_creation_is_kept_until_its_container_runs_or_its_pod_ends() {
        let pod = |running: bool, ending: bool| {
            crate::pods::testing::one_container(None, running, ending)
        };
        let made = |fresh: &Fresh| {
            fresh.lock().unwrap().insert(
                "kubepods/podu1/c1".into(),
                Created {
                    at: Instant::now(),
                    pod_uid: "u1".into(),
                    container: "work".into(),
                },
            );
        };
        let fresh: Fresh = Arc::default();
        made(&fresh);
        assert_eq!(keep_fresh(&fresh, &[pod(false, false)]).len(), 1);
        assert_eq!(keep_fresh(&fresh, &[pod(false, false)]).len(), 1);
        // Seen running: the usual rules from now on.
        assert!(keep_fresh(&fresh, &[pod(true, false)]).is_empty());
        assert!(keep_fresh(&fresh, &[pod(false, false)]).is_empty());
        // The pod ends or goes before its container ran: not kept.
        made(&fresh);
        assert!(keep_fresh(&fresh, &[pod(false, true)]).is_empty());
        made(&fresh);
        assert!(keep_fresh(&fresh, &[]).is_empty());
    }

    #[test]
    fn podresources_devices_become_pci_functions_per_container() {
        let list = vec![pr::PodResources {
            name: "p".into(),
            namespace: "ns".into(),
            containers: vec![
                pr::ContainerResources {
                    name: "c".into(),
                    devices: vec![pr::ResourceDevices {
                        resource_name: "griffin.dev/vf".into(),
                        device_ids: vec!["0000:01:00.1".into(), "unknown".into()],
                        numa_nodes: vec![],
                    }],
                    cpu_ids: vec![],
                    memory: vec![],
                },
                pr::ContainerResources {
                    name: "none".into(),
                    devices: vec![],
                    cpu_ids: vec![],
                    memory: vec![],
                },
            ],
        }];
        let a = assigned(&list, &|r: &str, id: &str| {
            (r == "griffin.dev/vf").then(|| id.parse().ok()).flatten()
        });
        assert_eq!(
            a,
            [(
                ("ns".into(), "p".into(), "c".into()),
                vec!["0000:01:00.1".parse().unwrap()]
            )]
            .into()
        );
    }

    #[test]
    fn cpu_ids_in_podresources_mean_the_kubelet_assigns_cpus() {
        let c = |cpu_ids: Vec<u32>| pr::ContainerResources {
            name: "c".into(),
            devices: vec![],
            cpu_ids,
            memory: vec![],
        };
        let pod = |cs| pr::PodResources {
            name: "p".into(),
            namespace: "ns".into(),
            containers: cs,
        };
        assert!(!kubelet_assigns_cpus(&[pod(vec![c(vec![]), c(vec![])])]));
        assert!(kubelet_assigns_cpus(&[pod(vec![c(vec![]), c(vec![1])])]));
        assert!(!kubelet_assigns_cpus(&[]));
    }

    #[test]
    fn refusals_and_failures_are_warnings_on_the_pod_under_1kb() {
        let o = Outcome {
            pod: "ns/p".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            cgroup: "kubepods/podu/x".into(),
            action: Action::Refused {
                reason: "é".repeat(900),
            },
        };
        let e = event(&o).unwrap();
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(e.reason, "AccelerationRefused");
        assert!(e.note.as_ref().unwrap().len() <= 1000);
        let shared = Outcome {
            action: Action::Shared { id: "s1".into() },
            ..o
        };
        assert!(event(&shared).is_none());
    }
}
