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
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
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
    /// Directory of the allocator checkpoint.
    pub state_dir: PathBuf,
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
    /// The last decoded checkpoint.
    cache: Mutex<Option<Cached>>,
}

/// A decoded checkpoint and the file version it came from.
#[derive(Debug)]
struct Cached {
    /// `None`: there was no checkpoint (an empty state).
    id: Option<FileId>,
    /// When the file was last looked at.
    checked: Instant,
    /// The file's mtime was over a second old when it was read: a later
    /// replacement cannot carry the same (coarse, per-tick) mtime, so an
    /// equal identity proves an equal file.
    settled: bool,
    bytes: Vec<u8>,
    state: Arc<State>,
}

/// What identifies one version of the checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileId {
    fn settled(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        now - self.mtime_ns > 1_000_000_000
    }

    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
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
    /// A node serving `topo` and the checkpoint in `state_dir`.
    pub fn new(
        topo: Topology,
        state_dir: PathBuf,
        reserved: CpuSet,
        node_name: String,
        cluster_name: String,
    ) -> Self {
        Self {
            current: RwLock::new(prepare(topo)),
            state_dir,
            reserved,
            node_name,
            cluster_name,
            ready: AtomicBool::new(true),
            metrics: crate::metrics::Metrics::default(),
            cache: Mutex::new(None),
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

    /// The current allocation state, read from the checkpoint.
    ///
    /// The file is looked at again at most every [`RECHECK`] (a `stat` per
    /// request was a measurable share of a score's cost); changes made
    /// through the daemon's control socket are seen at once
    /// ([`Node::invalidate`]), changes made behind its back within
    /// `RECHECK`. Decoding is skipped when the file is unchanged: same
    /// inode, size and mtime for a file settled before it was cached, else
    /// the same bytes (inode numbers are reused and mtimes are per clock
    /// tick, so identity alone could miss two quick replacements).
    pub fn state(&self) -> Result<Arc<State>, ApiError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.checked.elapsed() < RECHECK {
                return Ok(c.state.clone());
            }
        }
        let path = self.state_dir.join("checkpoint");
        let unavailable = |message: String| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message,
        };
        let checked = Instant::now();
        let id = match std::fs::metadata(&path) {
            Ok(m) => Some(FileId::of(&m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unavailable(format!("reading {}: {e}", path.display()))),
        };
        if let Some(c) = cache.as_mut() {
            if c.id == id && (id.is_none() || c.settled) {
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let (bytes, settled) = match id {
            Some(id) => (
                std::fs::read(&path)
                    .map_err(|e| unavailable(format!("reading {}: {e}", path.display())))?,
                id.settled(),
            ),
            None => (Vec::new(), true),
        };
        // `id` was taken before reading: if the file was replaced in between,
        // the cached identity is older than the bytes and a later look reads
        // again.
        if let Some(c) = cache.as_mut() {
            if c.id.is_some() && id.is_some() && c.bytes == bytes {
                c.id = id;
                c.settled = settled;
                c.checked = checked;
                return Ok(c.state.clone());
            }
        }
        let mut state = if id.is_some() {
            checkpoint::decode(&bytes)
                .map_err(|why| unavailable(format!("checkpoint {}: {why}", path.display())))?
                .state
        } else {
            State::default()
        };
        state.reserved = self.reserved.clone();
        let state = Arc::new(state);
        *cache = Some(Cached {
            id,
            checked,
            settled,
            bytes,
            state: state.clone(),
        });
        Ok(state)
    }

    /// Forgets the cached state: the next request reads the checkpoint.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
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

/// How long a look at the checkpoint file is trusted ([`Node::state`]).
pub const RECHECK: std::time::Duration = std::time::Duration::from_millis(1);

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
    if let Ok(state) = node.state() {
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
    let state = node.state()?;
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
    let state = node.state()?;
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
fn extender_score(
    node: &Node,
    body: &[u8],
) -> Result<(crate::extender::ExtenderArgs, crate::Score), ApiError> {
    let args: crate::extender::ExtenderArgs = from_json(body).map_err(ApiError::bad)?;
    let shape = crate::extender::pod_shape(&args.pod).map_err(ApiError::bad)?;
    let state = node.state()?;
    node.metrics.score_requests.inc();
    let cur = node.current();
    let s = score(&cur.alloc, &cur.topo, &state, &shape);
    Ok((args, s))
}

async fn extender_filter(
    AxState(node): AxState<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (args, s) = extender_score(&node, &body?)?;
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
    let (args, s) = extender_score(&node, &body?)?;
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
    let state = node.state()?;
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
    use griffin_runtime::checkpoint::{encode, Checkpoint};
    use proptest::prelude::*;

    fn node(dir: &std::path::Path) -> Node {
        let topo = griffin_tests::synthetic::Shape {
            packages: 1,
            nodes_per_package: 2,
            cores_per_node: 2,
            threads: 1,
            devices_per_node: vec![],
            memory_per_node: 1 << 30,
        }
        .topology();
        Node::new(
            topo,
            dir.to_owned(),
            CpuSet::default(),
            "n".into(),
            "c".into(),
        )
    }

    fn checkpoint_with(reserved_marker: &[u32]) -> Vec<u8> {
        // Allocations are what the state shows; the marker makes each
        // version distinct while keeping the encoded length equal.
        let mut cp = Checkpoint::default();
        for &cpu in reserved_marker {
            let id = format!("a{cpu:06}");
            cp.state.allocations.insert(
                id.clone(),
                griffin_runtime::alloc::Allocation {
                    id,
                    request: Default::default(),
                    placement: griffin_runtime::alloc::Placement {
                        cpus: CpuSet::from_ids([cpu]),
                        mems: vec![0],
                        devices: vec![],
                        memory_bytes: 0,
                        reasons: vec![],
                        cost: 0,
                    },
                },
            );
        }
        encode(&cp)
    }

    #[test]
    fn quick_same_length_rewrites_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let n = node(dir.path());
        let path = dir.path().join("checkpoint");
        // Past the re-check window, whatever the machine's speed.
        let later = || std::thread::sleep(RECHECK * 2);
        assert!(n.state().unwrap().allocations.is_empty());
        let (a, b) = (checkpoint_with(&[1]), checkpoint_with(&[2]));
        assert_eq!(a.len(), b.len());
        std::fs::write(&path, &a).unwrap();
        // Within the window the last look stands; invalidate() ends it.
        n.invalidate();
        assert!(n.state().unwrap().allocations.contains_key("a000001"));
        // Same inode, same length, same coarse mtime tick: only the bytes
        // tell the versions apart.
        std::fs::write(&path, &b).unwrap();
        later();
        let s = n.state().unwrap();
        assert!(s.allocations.contains_key("a000002"), "{s:?}");
        // Unchanged file: the same decoded state is handed out.
        later();
        assert!(Arc::ptr_eq(&s, &n.state().unwrap()));
        std::fs::remove_file(&path).unwrap();
        later();
        assert!(n.state().unwrap().allocations.is_empty());
        std::fs::write(&path, b"garbage").unwrap();
        later();
        assert_eq!(
            n.state().unwrap_err().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

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
