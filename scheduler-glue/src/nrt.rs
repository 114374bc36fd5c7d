//! The node's NodeResourceTopology object (`topology.node.k8s.io/v1alpha2`,
//! the API of k8stopologyawareschedwg/noderesourcetopology-api), so that
//! cluster schedulers (scheduler-plugins' NodeResourceTopologyMatch) see
//! Griffin's view of the node.
//!
//! [`build`] is pure: topology, allocation state, device pools, settings
//! and the node's pods in; the object out. One zone per NUMA node, named
//! `node-N`, of type `Node`:
//!
//! * `costs`: `node-M` for every NUMA node M with the SLIT distance;
//! * `resources`: `cpu` (capacity: the zone's online CPUs; allocatable:
//!   those not reserved; available: those neither reserved nor exclusively
//!   allocated), `memory` (bytes: capacity and allocatable the node's
//!   MemTotal, available less what allocations account on it, split evenly
//!   over their memory nodes as `/v1/node` does), and each device pool's
//!   resource (capacity: the pool's devices on that NUMA node; allocatable:
//!   the healthy ones; available: the healthy ones neither held by a pod
//!   through the device plugin nor taken by an allocation). A device whose
//!   NUMA node is unknown is in no zone.
//!
//! Object attributes: `topologyManagerPolicy` and `topologyManagerScope`
//! (kubelet spellings: `none`, `best-effort`, `restricted`,
//! `single-numa-node`; `container`, `pod`), the deprecated
//! `topologyPolicies` list with the matching legacy value for older
//! readers, and, when the node's pods are known,
//! `nodeTopologyPodsFingerprint` with `nodeTopologyPodsFingerprintMethod`
//! `all` (see [`fingerprint`]).
//!
//! [`run`] keeps the object current: it rebuilds on every change the
//! daemon signals (allocations and holdings saved, re-discovery, device
//! pools rebuilt, the node's running pods) after a short coalescing pause,
//! writes it only when it differs from what was last written (and every
//! resync period anyway), by create or replace (get, then create or put
//! with the resource version), retrying failed writes with a doubling
//! back-off (logged, never fatal). The object is owned by the Node
//! (owner reference) once the Node could be read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use griffin_devices::Topology;
use griffin_runtime::alloc::{Policy, State};
use griffin_runtime::config::TopologyScope;
use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::pods::watch::NodePods;
use griffin_runtime::pools::Pools;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The API group.
pub const GROUP: &str = "topology.node.k8s.io";
/// The version published.
pub const VERSION: &str = "v1alpha2";
/// The kind.
pub const KIND: &str = "NodeResourceTopology";
/// The resource (plural) name.
pub const PLURAL: &str = "noderesourcetopologies";
/// The type of a NUMA node zone.
pub const ZONE_TYPE_NODE: &str = "Node";
/// Attribute: the topology manager policy.
pub const ATTR_POLICY: &str = "topologyManagerPolicy";
/// Attribute: the topology manager scope.
pub const ATTR_SCOPE: &str = "topologyManagerScope";
/// Attribute: the pod fingerprint.
pub const ATTR_FINGERPRINT: &str = "nodeTopologyPodsFingerprint";
/// Attribute: how the pod fingerprint was computed.
pub const ATTR_FINGERPRINT_METHOD: &str = "nodeTopologyPodsFingerprintMethod";
/// Fingerprint method: every pod of the set.
pub const METHOD_ALL: &str = "all";

/// `topology.node.k8s.io/v1alpha2` NodeResourceTopology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResourceTopology {
    /// `topology.node.k8s.io/v1alpha2`.
    pub api_version: String,
    /// `NodeResourceTopology`.
    pub kind: String,
    /// Name (the node's), owner, resource version.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Deprecated in v1alpha2 (kept for older readers): one legacy policy
    /// name.
    #[serde(default)]
    pub topology_policies: Vec<String>,
    /// One zone per NUMA node.
    #[serde(default)]
    pub zones: Vec<Zone>,
    /// Node-wide attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeInfo>,
}

/// A zone (here a NUMA node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// `node-N`.
    pub name: String,
    /// `Node`.
    #[serde(rename = "type")]
    pub zone_type: String,
    /// Enclosing zone (none here).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    /// Distances to every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs: Vec<CostInfo>,
    /// Zone attributes (none here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeInfo>,
    /// Resources of the zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceInfo>,
}

/// One resource of a zone; quantities are Kubernetes quantity strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceInfo {
    /// `cpu`, `memory` or a device resource name.
    pub name: String,
    /// What the zone has.
    pub capacity: String,
    /// What pods may use.
    pub allocatable: String,
    /// What is free for new pods.
    pub available: String,
}

/// The distance to a zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostInfo {
    /// `node-M`.
    pub name: String,
    /// SLIT distance (10: local).
    pub value: i64,
}

/// A name/value attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeInfo {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

impl kube::Resource for NodeResourceTopology {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A pod by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// The pod fingerprint of podfingerprint v001 (what scheduler-plugins
/// recomputes from the pods it knows on the node and compares): each pod
/// hashes to XXH64(name, seed = XXH64(namespace, seed 0)); the hashes are
/// sorted ascending, written as little-endian u64s and hashed with XXH64
/// (seed 0); the result, big-endian in lower-case hex, follows `pfp0` and
/// `v001`. The order of `pods` does not matter.
pub fn fingerprint<'a>(pods: impl IntoIterator<Item = &'a PodRef>) -> String {
    use xxhash_rust::xxh64::xxh64;
    let mut hashes: Vec<u64> = pods
        .into_iter()
        .map(|p| xxh64(p.name.as_bytes(), xxh64(p.namespace.as_bytes(), 0)))
        .collect();
    hashes.sort_unstable();
    let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
    let sum = xxh64(&bytes, 0);
    format!("pfp0v001{sum:016x}")
}

/// How Griffin places workloads, as the topology manager's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The policy Griffin applies.
    pub policy: Policy,
    /// Per container or per pod.
    pub scope: TopologyScope,
}

/// The kubelet's spelling of a scope.
pub fn scope_name(s: TopologyScope) -> &'static str {
    match s {
        TopologyScope::Container => "container",
        TopologyScope::Pod => "pod",
    }
}

/// The deprecated `topologyPolicies` value for a policy and scope.
pub fn legacy_policy(p: Policy, s: TopologyScope) -> &'static str {
    use TopologyScope::{Container, Pod};
    match (p, s) {
        (Policy::None, _) => "None",
        (Policy::BestEffort, Container) => "BestEffortContainerLevel",
        (Policy::BestEffort, Pod) => "BestEffortPodLevel",
        (Policy::Restricted, Container) => "RestrictedContainerLevel",
        (Policy::Restricted, Pod) => "RestrictedPodLevel",
        (Policy::SingleNumaNode, Container) => "SingleNUMANodeContainerLevel",
        (Policy::SingleNumaNode, Pod) => "SingleNUMANodePodLevel",
    }
}

/// The zone name of NUMA node `id`.
pub fn zone_name(id: u32) -> String {
    format!("node-{id}")
}

/// What [`build`] reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The Node's name (the object's name).
    pub node_name: &'a str,
    /// The discovered topology.
    pub topo: &'a Topology,
    /// The allocation state (allocations, reserved CPUs, holdings).
    pub state: &'a State,
    /// The device pools served, if any.
    pub pools: Option<&'a Pools>,
    /// Policy and scope.
    pub settings: Settings,
    /// The node's running pods, when known.
    pub pods: Option<&'a BTreeSet<PodRef>>,
}

fn resource(name: &str, capacity: u64, allocatable: u64, available: u64) -> ResourceInfo {
    ResourceInfo {
        name: name.to_owned(),
        capacity: capacity.to_string(),
        allocatable: allocatable.to_string(),
        available: available.to_string(),
    }
}

/// Builds the object (pure; see the module doc).
pub fn build(input: &Input<'_>) -> NodeResourceTopology {
    let Input {
        topo,
        state,
        settings,
        ..
    } = *input;
    let online = CpuSet::from(&topo.online_cpus);
    let mut allocatable = online.clone();
    allocatable.subtract(&state.reserved);
    let mut available = allocatable.clone();
    available.subtract(&state.exclusive());
    let mem_used = state.memory_by_node();
    let taken = state.taken_devices();
    let zones = topo
        .numa_nodes
        .iter()
        .map(|n| {
            let cpus = CpuSet::from(&n.cpus);
            let mut resources = vec![
                resource(
                    "cpu",
                    online.intersection(&cpus).len() as u64,
                    allocatable.intersection(&cpus).len() as u64,
                    available.intersection(&cpus).len() as u64,
                ),
                resource(
                    "memory",
                    n.memory_bytes,
                    n.memory_bytes,
                    n.memory_bytes
                        .saturating_sub(mem_used.get(&n.id).copied().unwrap_or(0)),
                ),
            ];
            for pool in input.pools.iter().flat_map(|p| p.iter()) {
                let held: HashSet<&str> = state
                    .plugin_devices
                    .get(&pool.resource)
                    .into_iter()
                    .flatten()
                    .map(|d| d.id.as_str())
                    .collect();
                let here: Vec<_> = pool
                    .devices
                    .iter()
                    .filter(|d| d.device_numa_node == Some(n.id))
                    .collect();
                if here.is_empty() {
                    continue;
                }
                let healthy = here.iter().filter(|d| d.healthy).count() as u64;
                let free = here
                    .iter()
                    .filter(|d| {
                        d.healthy
                            && !held.contains(d.id.as_str())
                            && !taken.contains(&d.pci_address)
                    })
                    .count() as u64;
                resources.push(resource(&pool.resource, here.len() as u64, healthy, free));
            }
            let costs = topo
                .numa_nodes
                .iter()
                .zip(&n.distances)
                .map(|(m, d)| CostInfo {
                    name: zone_name(m.id),
                    value: i64::from(*d),
                })
                .collect();
            Zone {
                name: zone_name(n.id),
                zone_type: ZONE_TYPE_NODE.into(),
                parent: String::new(),
                costs,
                attributes: Vec::new(),
                resources,
            }
        })
        .collect();
    let mut attributes = vec![
        AttributeInfo {
            name: ATTR_POLICY.into(),
            value: settings.policy.name().into(),
        },
        AttributeInfo {
            name: ATTR_SCOPE.into(),
            value: scope_name(settings.scope).into(),
        },
    ];
    if let Some(pods) = input.pods {
        attributes.push(AttributeInfo {
            name: ATTR_FINGERPRINT.into(),
            value: fingerprint(pods),
        });
        attributes.push(AttributeInfo {
            name: ATTR_FINGERPRINT_METHOD.into(),
            value: METHOD_ALL.into(),
        });
    }
    NodeResourceTopology {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        metadata: ObjectMeta {
            name: Some(input.node_name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "griffin".to_owned(),
            )])),
            ..Default::default()
        },
        topology_policies: vec![legacy_policy(settings.policy, settings.scope).into()],
        zones,
        attributes,
    }
}

/// The running pods of the node `pods` follows (the daemon's one pod
/// watch, [`NodePods`]): `None` until its first full listing, then the set
/// of pods whose phase is `Running` (the pods scheduler-plugins
/// fingerprints), updated with every change, until `stop`.
pub fn running_pods(
    pods: &NodePods,
    stop: CancellationToken,
) -> watch::Receiver<Option<BTreeSet<PodRef>>> {
    let (tx, rx) = watch::channel(None);
    let (pods, mut changes) = (pods.clone(), pods.changes());
    let fut = async move {
        if !pods.listed().await {
            return;
        }
        let store = pods.store();
        loop {
            let now: BTreeSet<PodRef> = store
                .state()
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .map(|p| PodRef {
                    namespace: p.metadata.namespace.clone().unwrap_or_default(),
                    name: p.metadata.name.clone().unwrap_or_default(),
                })
                .collect();
            tx.send_if_modified(|s| {
                let changed = s.as_ref() != Some(&now);
                if changed {
                    *s = Some(now);
                }
                changed
            });
            if changes.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::spawn(stop.run_until_cancelled_owned(fut));
    rx
}

/// What [`run`] publishes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The daemon's node view (topology, allocation state, change signal).
    pub node: Arc<crate::node::Node>,
    /// The device plugin backend, when pools are served.
    pub plugins: Option<Arc<griffin_runtime::plugin::backend::NodeBackend>>,
    /// The node's running pods (see [`running_pods`]), when followed.
    pub pods: Option<watch::Receiver<Option<BTreeSet<PodRef>>>>,
}

/// How [`run`] paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Coalescing pause after a change before building.
    pub coalesce: Duration,
    /// The object is written at least this often (and rebuilt: changes
    /// made behind the daemon's back, e.g. `griffin alloc --no-daemon`).
    pub resync: Duration,
    /// First retry delay after a failed write (doubling).
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            coalesce: Duration::from_millis(20),
            resync: Duration::from_secs(60),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A write of the object failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The allocation state could not be read.
    #[error("allocation state: {0}")]
    State(String),
    /// The API server refused or could not be reached.
    #[error("writing NodeResourceTopology {name}")]
    Api {
        /// The object's name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Creates the object, or replaces it (with the stored resource version).
pub async fn create_or_replace(
    api: &kube::Api<NodeResourceTopology>,
    obj: &NodeResourceTopology,
) -> Result<NodeResourceTopology, kube::Error> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let pp = kube::api::PostParams::default();
    match api.get_opt(&name).await? {
        None => api.create(&pp, obj).await,
        Some(cur) => {
            let mut obj = obj.clone();
            obj.metadata.resource_version = cur.metadata.resource_version;
            api.replace(&name, &pp, &obj).await
        }
    }
}

/// The owner reference to Node `name`, if it can be read.
async fn node_owner(client: &kube::Client, name: &str) -> Option<OwnerReference> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get_opt(name).await {
        Ok(Some(n)) => Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.to_owned(),
            uid: n.metadata.uid?,
            ..Default::default()
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(node = name, error = %griffin_devices::Chain(&e), "cannot read the Node for the owner reference");
            None
        }
    }
}

/// The object for the sources' current state.
async fn current(
    src: &Sources,
    settings: Settings,
    owner: Option<&OwnerReference>,
) -> Result<NodeResourceTopology, PublishError> {
    let state = src
        .node
        .state()
        .await
        .map_err(|e| PublishError::State(e.0))?;
    let topo = src.node.topo();
    let pools = src.plugins.as_ref().map(|b| b.pools());
    let pods = src.pods.as_ref().and_then(|p| p.borrow().clone());
    let mut obj = build(&Input {
        node_name: &src.node.node_name,
        topo: &topo,
        state: &state,
        pools: pools.as_deref(),
        settings,
        pods: pods.as_ref(),
    });
    obj.metadata.owner_references = owner.map(|o| vec![o.clone()]);
    Ok(obj)
}

/// Keeps the node's object current until `stop` (see the module doc).
/// Each write is logged at debug level with the time from the change that
/// caused it.
pub async fn run(
    client: kube::Client,
    src: Sources,
    settings: Settings,
    pace: Pace,
    stop: CancellationToken,
) {
    let api: kube::Api<NodeResourceTopology> = kube::Api::all(client.clone());
    let mut changes = src.node.watch_changes();
    let mut plugin_changes = src.plugins.as_ref().map(|b| {
        use griffin_runtime::plugin::Backend;
        b.watch()
    });
    let mut pods = src.pods.clone();
    let mut owner = None;
    let mut written: Option<NodeResourceTopology> = None;
    let mut last_write = Instant::now();
    let mut failures = 0u32;
    let mut retry_in: Option<Duration> = Some(Duration::ZERO);
    loop {
        let wait = retry_in.unwrap_or(pace.resync.saturating_sub(last_write.elapsed()));
        let changed_at = tokio::select! {
            () = stop.cancelled() => return,
            r = changes.changed() => { if r.is_err() { return; } Instant::now() }
            Some(()) = async { match plugin_changes.as_mut() {
                Some(c) => c.changed().await.ok(),
                None => std::future::pending().await,
            } } => Instant::now(),
            Some(()) = async { match pods.as_mut() {
                Some(c) => c.changed().await.ok(),
                None => std::future::pending().await,
            } } => Instant::now(),
            () = tokio::time::sleep(wait) => Instant::now(),
        };
        tokio::time::sleep(pace.coalesce).await;
        // Marks every signal seen: what is built now covers them.
        changes.borrow_and_update();
        if let Some(c) = plugin_changes.as_mut() {
            c.borrow_and_update();
        }
        if let Some(c) = pods.as_mut() {
            c.borrow_and_update();
        }
        if owner.is_none() {
            owner = node_owner(&client, &src.node.node_name).await;
        }
        let obj = match current(&src, settings, owner.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %griffin_devices::Chain(&e), "NodeResourceTopology not built; retrying");
                failures += 1;
                retry_in = Some(backoff(&pace, failures));
                continue;
            }
        };
        let due = last_write.elapsed() >= pace.resync;
        if written.as_ref() == Some(&obj) && !due && retry_in.is_none() {
            continue;
        }
        match create_or_replace(&api, &obj).await {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        "NodeResourceTopology written again after failures"
                    );
                }
                tracing::debug!(
                    node = %src.node.node_name,
                    ms = changed_at.elapsed().as_secs_f64() * 1e3,
                    "NodeResourceTopology written"
                );
                written = Some(obj);
                last_write = Instant::now();
                failures = 0;
                retry_in = None;
            }
            Err(e) => {
                failures += 1;
                let delay = backoff(&pace, failures);
                let e = PublishError::Api {
                    name: src.node.node_name.clone(),
                    source: e,
                };
                tracing::warn!(error = %griffin_devices::Chain(&e), failures, retry_ms = delay.as_millis() as u64, "NodeResourceTopology not written; retrying");
                retry_in = Some(delay);
            }
        }
    }
}

fn backoff(pace: &Pace, failures: u32) -> Duration {
    pace.backoff_min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(pace.backoff_max)
}

/// Starts [`run`] with `client`, the pod fingerprint following `pods`
/// (the daemon's pod watch).
pub fn start(
    client: kube::Client,
    pods: &NodePods,
    node: Arc<crate::node::Node>,
    plugins: Option<Arc<griffin_runtime::plugin::backend::NodeBackend>>,
    settings: Settings,
    pace: Pace,
    stop: CancellationToken,
) {
    let pods = running_pods(pods, stop.clone());
    tokio::spawn(run(
        client,
        Sources {
            node,
            plugins,
            pods: Some(pods),
        },
        settings,
        pace,
        stop,
    ));
}

#[cfg(test)]
mod tests;
