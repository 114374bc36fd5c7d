//! The read-only node-score HTTP endpoint (`GET /v1/node`, `POST /v1/score`,
//! `POST /v1/score:batch`, `GET /healthz`, `GET /readyz`, and the scheduler
//! extender verbs `POST /filter`, `POST /prioritize` of [`crate::extender`]).
//!
//! Client mistakes are answered `400` (malformed JSON, wrong types, unknown
//! fields, absurd numbers) or `413` (body over the configured limit) with
//! `{"error": "..."}` naming the field; never a panic or a `500`. The node's
//! allocation state is read from the allocator checkpoint on every request
//! (read-only: the daemon never takes the allocator lock, so `griffin alloc`
//! keeps working beside it). The decoded state is cached: see [`Node::state`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use griffin_devices::{DeviceKind, Topology};
use griffin_runtime::alloc::{Allocator, State};
use griffin_runtime::checkpoint;
use griffin_runtime::cpuset::CpuSet;
use serde::Serialize;

use crate::{score, Shape};

/// Largest number of shapes in one `POST /v1/score:batch`.
pub const MAX_BATCH: usize = 256;
/// Largest CPU count a shape may ask for.
pub const MAX_CPUS: u32 = 1 << 16;
/// Largest device count per kind a shape may ask for.
pub const MAX_DEVICES: u32 = 1 << 12;
/// Largest memory a shape may ask for (1 PiB).
pub const MAX_MEMORY: u64 = 1 << 50;

/// What the endpoint serves from.
#[derive(Debug)]
pub struct Node {
    /// The discovered topology and an allocator prepared for it; replaced
    /// together on re-discovery.
    current: RwLock<Arc<Current>>,
    /// CPUs never handed out exclusively.
    pub reserved: CpuSet,
    /// Reported node name.
    pub node_name: String,
    /// Reported cluster name.
    pub cluster_name: String,
    /// Cleared while shutting down (`/readyz` then answers 503).
    pub ready: AtomicBool,
    /// Metrics served on `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The allocator checkpoint, read and cached.
    checkpoint: Arc<checkpoint::Reader>,
}

/// An HTTP error: status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        Self {
            status,
            message: if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body too large".into()
            } else {
                r.body_text()
            },
        }
    }
}

impl Node {
    /// A node serving `topo` and the checkpoint of `store`.
    pub fn new(
        topo: Topology,
        store: &checkpoint::Store,
        reserved: CpuSet,
        node_name: String,
        cluster_name: String,
    ) -> Self {
        Self {
            current: RwLock::new(prepare(topo)),
            checkpoint: Arc::new(checkpoint::Reader::new(store, reserved.clone())),
            reserved,
            node_name,
            cluster_name,
            ready: AtomicBool::new(true),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The current topology.
    pub fn topo(&self) -> Arc<Topology> {
        self.current().topo.clone()
    }

    /// The current topology with its prepared allocator.
    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the topology after a re-discovery.
    pub fn set_topo(&self, topo: Topology) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = prepare(topo);
    }

    /// The current allocation state, read from the checkpoint (see
    /// [`checkpoint::Reader`] for when the file is looked at again). A
    /// look at the file runs on a blocking thread, never on the async
    /// worker serving the other routes; an unusable checkpoint is `503`.
    pub async fn state(&self) -> Result<Arc<State>, ApiError> {
        if let Some(s) = self.checkpoint.fresh() {
            return Ok(s);
        }
        let unavailable = |message: String| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
        };
        let reader = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || reader.state())
            .await
            .map_err(|e| unavailable(format!("reading the checkpoint: {e}")))?
            .map_err(|e| unavailable(griffin_devices::Chain(&e).to_string()))
    }

    /// Forgets the cached state: the next request reads the checkpoint.
    pub fn invalidate(&self) {
        self.checkpoint.invalidate();
    }
}

/// A topology and the allocator prepared for it (built once per discovery).
#[derive(Debug)]
pub struct Current {
    /// The topology.
    pub topo: Arc<Topology>,
    /// The allocator deciding on it.
    pub alloc: Allocator<'static>,
}

fn prepare(topo: Topology) -> Arc<Current> {
    let topo = Arc::new(topo);
    Arc::new(Current {
        topo: topo.clone(),
        alloc: Allocator::shared(topo),
    })
}

/// Strict JSON: the error names the field path (`devices[0].count: ...`).
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// Parses and bounds-checks one shape (pure; the 400 message names the field).
pub fn parse_shape(body: &[u8]) -> Result<Shape, String> {
    // Plain serde first; the path-tracking parser only to explain a failure.
    let shape: Shape = match serde_json::from_slice(body) {
        Ok(s) => s,
        Err(_) => from_json(body)?,
    };
    check_shape(&shape)?;
    Ok(shape)
}

/// Parses a batch: `{"shapes": [...]}` (pure).
pub fn parse_batch(body: &[u8]) -> Result<Vec<Shape>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        shapes: Vec<Shape>,
    }
    let b: Batch = from_json(body)?;
    if b.shapes.len() > MAX_BATCH {
        return Err(format!(
            "shapes: {} shapes, at most {MAX_BATCH}",
            b.shapes.len()
        ));
    }
    for (i, s) in b.shapes.iter().enumerate() {
        check_shape(s).map_err(|e| format!("shapes[{i}].{e}"))?;
    }
    Ok(b.shapes)
}

fn check_shape(s: &Shape) -> Result<(), String> {
    if s.cpus > MAX_CPUS {
        return Err(format!("cpus: {} is more than {MAX_CPUS}", s.cpus));
    }
    if s.memory > MAX_MEMORY {
        return Err(format!("memory: {} is more than {MAX_MEMORY}", s.memory));
    }
    if s.devices.len() > 64 {
        return Err("devices: more than 64 entries".into());
    }
    for (i, d) in s.devices.iter().enumerate() {
        if d.count > MAX_DEVICES {
            return Err(format!(
                "devices[{i}].count: {} is more than {MAX_DEVICES}",
                d.count
            ));
        }
    }
    Ok(())
}

/// The router, with the request body limit.
pub fn router(node: Arc<Node>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/node", get(node_summary))
        .route("/v1/score", post(score_one))
        .route("/v1/score:batch", post(score_batch))
        .route("/metrics", get(metrics))
        .route("/filter", post(extender_filter))
        .route("/prioritize", post(extender_prioritize))
        .fallback(|| async {
            ApiError {
                status: StatusCode::NOT_FOUND,
                message: "no such route".into(),
            }
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(node)
}

async fn metrics(AxState(node): AxState<Arc<Node>>) -> Response {
    if let Ok(state) = node.state().await {
        node.metrics.observe(&summary(&node, &state));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.encode(),
    )
        .into_response()
}

async fn readyz(AxState(node): AxState<Arc<Node>>) -> Response {
    if node.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn score_one(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let shape = parse_shape(&body?).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc();
    let cur = node.current();
    let out = Json(score(&cur.alloc, &cur.topo, &state, &shape)).into_response();
    node.metrics
        .score_seconds
        .observe(t.elapsed().as_secs_f64());
    Ok(out)
}

async fn score_batch(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let t = Instant::now();
    let shapes = parse_batch(&body?).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc_by(shapes.len() as u64);
    let cur = node.current();
    let scores: Vec<_> = shapes
        .iter()
        .map(|s| score(&cur.alloc, &cur.topo, &state, s))
        .collect();
    #[derive(Serialize)]
    struct Out<T> {
        scores: Vec<T>,
    }
    let out = Json(Out { scores }).into_response();
    node.metrics
        .score_seconds
        .observe(t.elapsed().as_secs_f64());
    Ok(out)
}

/// Parses `ExtenderArgs` and scores the pod's shape on this node.
async fn extender_score(
    node: &Node,
    body: &[u8],
) -> Result<(crate::extender::ExtenderArgs, crate::Score), ApiError> {
    let args: crate::extender::ExtenderArgs = from_json(body).map_err(ApiError::bad)?;
    let shape = crate::extender::pod_shape(&args.pod).map_err(ApiError::bad)?;
    let state = node.state().await?;
    node.metrics.score_requests.inc();
    let cur = node.current();
    let s = score(&cur.alloc, &cur.topo, &state, &shape);
    Ok((args, s))
}

async fn extender_filter(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (args, s) = extender_score(&node, &body?).await?;
    let fits = if s.feasible {
        Ok(())
    } else {
        Err(format!("griffin: {}", s.reasons.join("; ")))
    };
    Ok(Json(crate::extender::filter(args, &node.node_name, fits)).into_response())
}

async fn extender_prioritize(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (args, s) = extender_score(&node, &body?).await?;
    let list: Vec<crate::extender::HostPriority> = crate::extender::candidates(&args)
        .into_iter()
        .filter(|n| *n == node.node_name)
        .map(|n| crate::extender::HostPriority {
            host: n.to_owned(),
            score: (i64::from(s.score) + 5) / 10,
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET /v1/node`.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Node name.
    pub node_name: String,
    /// Cluster name.
    pub cluster_name: String,
    /// `ok` (the checkpoint is readable).
    pub health: &'static str,
    /// CPU capacity.
    pub cpus: CpuSummary,
    /// Per NUMA node.
    pub numa_nodes: Vec<NumaSummary>,
    /// Devices by kind (bridges left out).
    pub devices: BTreeMap<String, DeviceSummary>,
    /// Number of allocations.
    pub allocations: usize,
}

/// CPU counts.
#[derive(Debug, Serialize)]
pub struct CpuSummary {
    /// Online CPUs.
    pub capacity: usize,
    /// Online minus reserved.
    pub allocatable: usize,
    /// Allocatable and not exclusively allocated.
    pub free_exclusive: usize,
    /// Reserved CPUs (cpulist).
    pub reserved: String,
}

/// One NUMA node.
#[derive(Debug, Serialize)]
pub struct NumaSummary {
    /// Node id.
    pub id: u32,
    /// CPUs (cpulist).
    pub cpus: String,
    /// CPUs free for exclusive allocation (cpulist).
    pub free_cpus: String,
    /// Memory of the node.
    pub memory_bytes: u64,
    /// Memory not accounted to allocations.
    pub memory_free_bytes: u64,
}

/// Devices of one kind.
#[derive(Debug, Serialize)]
pub struct DeviceSummary {
    /// How many.
    pub total: usize,
    /// Not held by an allocation.
    pub free: usize,
}

/// Builds the node summary (pure over topology and state).
pub fn summary(node: &Node, state: &State) -> NodeSummary {
    let topo = &*node.topo();
    let online = CpuSet::from(&topo.online_cpus);
    let mut allocatable = online.clone();
    allocatable.subtract(&state.reserved);
    let mut free = state.shared_pool(topo);
    free.subtract(&state.reserved);
    let mut mem_used: BTreeMap<u32, u64> = BTreeMap::new();
    let mut held = std::collections::BTreeSet::new();
    for a in state.allocations.values() {
        let p = &a.placement;
        let share = p.memory_bytes / p.mems.len().max(1) as u64;
        for m in &p.mems {
            *mem_used.entry(*m).or_default() += share;
        }
        held.extend(p.devices.iter().copied());
    }
    let numa_nodes = topo
        .numa_nodes
        .iter()
        .map(|n| NumaSummary {
            id: n.id,
            cpus: n.cpus.to_string(),
            free_cpus: free.intersection(&CpuSet::from(&n.cpus)).to_string(),
            memory_bytes: n.memory_bytes,
            memory_free_bytes: n
                .memory_bytes
                .saturating_sub(mem_used.get(&n.id).copied().unwrap_or(0)),
        })
        .collect();
    let mut devices: BTreeMap<String, DeviceSummary> = BTreeMap::new();
    for d in topo.devices.iter().filter(|d| d.kind != DeviceKind::Bridge) {
        let e = devices
            .entry(d.kind.to_string())
            .or_insert(DeviceSummary { total: 0, free: 0 });
        e.total += 1;
        if !held.contains(&d.pci_address) {
            e.free += 1;
        }
    }
    NodeSummary {
        node_name: node.node_name.clone(),
        cluster_name: node.cluster_name.clone(),
        health: "ok",
        cpus: CpuSummary {
            capacity: online.len(),
            allocatable: allocatable.len(),
            free_exclusive: free.len(),
            reserved: state.reserved.to_string(),
        },
        numa_nodes,
        devices,
        allocations: state.allocations.len(),
    }
}

async fn node_summary(AxState(node): AxState<Arc<Node>>) -> Result<Response, ApiError> {
    let state = node.state().await?;
    Ok(Json(summary(&node, &state)).into_response())
}

/// Serves `router` on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLES: &[&str] = &[
        r#"{"cpus": 2, "memory": 1073741824, "devices": [{"kind": "nic-vf", "count": 2}], "policy": "single-numa-node", "topology_aware": true}"#,
        r#"{"shapes": [{"cpus": 1}, {"cpus": 64, "devices": [{"kind": "gpu", "count": 1}]}]}"#,
        r#"{"pod": {"metadata": {"name": "p"}, "spec": {"containers": [{"resources": {"requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}}}]}}, "nodenames": ["n1", "n2"]}"#,
    ];

    fn every_parser(body: &[u8]) {
        if let Ok(s) = parse_shape(body) {
            assert!(s.cpus <= MAX_CPUS && s.memory <= MAX_MEMORY);
        }
        if let Ok(b) = parse_batch(body) {
            assert!(b.len() <= MAX_BATCH);
        }
        if let Ok(args) = from_json::<crate::extender::ExtenderArgs>(body) {
            let _ = crate::extender::pod_shape(&args.pod);
        }
    }

    proptest! {
        /// Mangled valid requests: errors or bounded values, never a panic.
        #[test]
        fn mangled_requests_never_panic(
            sample in 0..SAMPLES.len(),
            cut in 0usize..400,
            edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
            splice in prop_oneof![
                Just(String::new()),
                Just("-1".to_owned()),
                Just("1e308".to_owned()),
                Just("18446744073709551616".to_owned()),
                Just("null".to_owned()),
                Just("\"\\u0000\"".to_owned()),
                Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_owned()),
                "[ -~]{0,20}",
            ],
        ) {
            let mut body = SAMPLES[sample].as_bytes().to_vec();
            body.truncate(cut.max(1).min(body.len()));
            for (at, byte) in edits {
                let i = usize::from(at) % body.len();
                body[i] = byte;
            }
            let at = cut % (body.len() + 1);
            body.splice(at..at, splice.bytes());
            every_parser(&body);
        }

        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            every_parser(&body);
        }
    }
}
