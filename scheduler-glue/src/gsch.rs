//! GS-Scheduler worker-agent compatibility (its own listener, default port
//! 8787), replacing the agent that pinged with ICMP on every request:
//!
//! * `GET /monitoring/clusters/<cluster>/latency` → `{"result": <ms>}`: the
//!   average RTT to the cluster's masters;
//! * `GET /monitoring/near-nodes/latency?pingSize=N&pingCount=M` →
//!   `{"result": [{"node_name", "node_ip", "latency"}, ...]}` ascending;
//! * `GET /v1/gsch/resources?gpu=necessary|unnecessary` (also on the main
//!   listener) → `{"cluster_name", "node_name", "cpu", "memory",
//!   "nvidia.com/gpu", "score"}`.
//!
//! Errors are `{"Error": {"ErrorCode": <code>, "Message": <text>}}`.
//! Latency comes from background probes ([`run_probes`]: TCP connect time,
//! cached with its age); a request only averages the newest `pingCount`
//! cached samples. `pingSize` is accepted for compatibility and validated;
//! a TCP connect carries no payload, so it does not change the probe.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use griffin_devices::DeviceKind;
use griffin_runtime::config::Probes;
use serde::{Deserialize, Serialize};

use crate::node::Node;
use crate::{score, DeviceCount, Shape};

/// Cached RTT samples per peer.
#[derive(Debug, Default)]
pub struct RttCache {
    samples: Mutex<BTreeMap<SocketAddr, (VecDeque<f64>, Instant)>>,
}

impl RttCache {
    /// Records one sample (ms), keeping the newest `keep`.
    pub fn record(&self, peer: SocketAddr, ms: f64, keep: usize) {
        let mut m = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (q, at) = m
            .entry(peer)
            .or_insert_with(|| (VecDeque::new(), Instant::now()));
        q.push_back(ms);
        while q.len() > keep {
            q.pop_front();
        }
        *at = Instant::now();
    }

    /// Average of the newest `count` samples and the age of the newest.
    pub fn average(&self, peer: SocketAddr, count: usize) -> Option<(f64, Duration)> {
        let m = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (q, at) = m.get(&peer)?;
        let n = count.clamp(1, q.len().max(1));
        let newest: Vec<f64> = q.iter().rev().take(n).copied().collect();
        if newest.is_empty() {
            return None;
        }
        Some((
            newest.iter().sum::<f64>() / newest.len() as f64,
            at.elapsed(),
        ))
    }
}

/// Probes every peer of `probes` forever (one TCP connect each per round).
pub async fn run_probes(probes: Probes, cache: Arc<RttCache>) {
    let peers: Vec<SocketAddr> = probes
        .clusters
        .values()
        .flatten()
        .copied()
        .chain(probes.near_nodes.iter().map(|p| p.addr))
        .collect();
    if peers.is_empty() {
        return;
    }
    let timeout = Duration::from_millis(probes.timeout_ms);
    let mut tick = tokio::time::interval(Duration::from_millis(probes.interval_ms));
    loop {
        tick.tick().await;
        for &peer in &peers {
            let t = Instant::now();
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(peer)).await {
                Ok(Ok(_)) => cache.record(peer, t.elapsed().as_secs_f64() * 1e3, probes.keep),
                Ok(Err(e)) => tracing::debug!(%peer, "probe: {e}"),
                Err(_) => tracing::debug!(%peer, "probe: timed out"),
            }
        }
    }
}

/// A GS-Scheduler error.
#[derive(Debug)]
pub struct GschError(StatusCode, String);

impl IntoResponse for GschError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            error_code: u16,
            message: String,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            error: Inner,
        }
        let body = Body {
            error: Inner {
                error_code: self.0.as_u16(),
                message: self.1,
            },
        };
        (self.0, Json(body)).into_response()
    }
}

/// What the GS-Scheduler routes serve from.
#[derive(Debug)]
pub struct Gsch {
    /// The node.
    pub node: Arc<Node>,
    /// Probe peers.
    pub probes: Probes,
    /// Probe results.
    pub cache: Arc<RttCache>,
}

#[derive(Serialize)]
struct Result_<T> {
    result: T,
}

/// The GS-Scheduler listener's router.
pub fn router(g: Arc<Gsch>) -> Router {
    Router::new()
        .route(
            "/monitoring/clusters/{cluster}/latency",
            get(cluster_latency),
        )
        .route("/monitoring/near-nodes/latency", get(near_nodes))
        .route("/v1/gsch/resources", get(resources))
        .fallback(|| async { GschError(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(g)
}

/// The resources route alone, for the main listener.
pub fn resources_router(g: Arc<Gsch>) -> Router {
    Router::new()
        .route("/v1/gsch/resources", get(resources))
        .with_state(g)
}

/// A response with the GS-Scheduler error body (for
/// [`crate::serve::guard`]).
pub fn error_body(status: StatusCode, message: String) -> Response {
    GschError(status, message).into_response()
}

async fn cluster_latency(
    AxState(g): AxState<Arc<Gsch>>,
    cluster: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, GschError> {
    let Path(cluster) = cluster.map_err(|e| GschError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let masters = g.probes.clusters.get(&cluster).ok_or_else(|| {
        GschError(
            StatusCode::NOT_FOUND,
            format!("cluster {cluster:?} is not configured"),
        )
    })?;
    let samples: Vec<f64> = masters
        .iter()
        .filter_map(|&m| g.cache.average(m, g.probes.keep).map(|(ms, _)| ms))
        .collect();
    if samples.is_empty() {
        return Err(GschError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no RTT sample for cluster {cluster:?} yet"),
        ));
    }
    let avg = samples.iter().sum::<f64>() / samples.len() as f64;
    Ok(Json(Result_ { result: avg }).into_response())
}

/// `pingSize`/`pingCount` (strings, so a bad value is our 400, not axum's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NearQuery {
    #[serde(rename = "pingSize")]
    ping_size: Option<String>,
    #[serde(rename = "pingCount")]
    ping_count: Option<String>,
}

fn bounded(name: &str, v: Option<&str>, default: usize, max: usize) -> Result<usize, GschError> {
    let Some(v) = v else { return Ok(default) };
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(GschError(
            StatusCode::BAD_REQUEST,
            format!("{name}: {v:?} is not a number in 1..={max}"),
        )),
    }
}

/// One near node's latency.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NearNode {
    /// Node name.
    pub node_name: String,
    /// Its IP.
    pub node_ip: String,
    /// Average RTT, ms.
    pub latency: f64,
}

async fn near_nodes(
    AxState(g): AxState<Arc<Gsch>>,
    q: Result<Query<NearQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GschError> {
    let Query(q) = q.map_err(|e| GschError(StatusCode::BAD_REQUEST, e.body_text()))?;
    bounded("pingSize", q.ping_size.as_deref(), 64, 65507)?;
    let count = bounded("pingCount", q.ping_count.as_deref(), 3, 1024)?;
    let mut result: Vec<NearNode> = g
        .probes
        .near_nodes
        .iter()
        .filter_map(|p| {
            let (ms, _) = g.cache.average(p.addr, count)?;
            Some(NearNode {
                node_name: p.name.clone(),
                node_ip: p.addr.ip().to_string(),
                latency: ms,
            })
        })
        .collect();
    result.sort_by(|a, b| a.latency.total_cmp(&b.latency));
    Ok(Json(Result_ { result }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourcesQuery {
    gpu: Option<String>,
}

/// `GET /v1/gsch/resources`.
#[derive(Debug, Serialize)]
pub struct Resources {
    /// Cluster name.
    pub cluster_name: String,
    /// Node name.
    pub node_name: String,
    /// Exclusive CPUs requested, percent of allocatable.
    pub cpu: f64,
    /// Memory requested, percent of the node's memory.
    pub memory: f64,
    /// Free GPUs.
    #[serde(rename = "nvidia.com/gpu")]
    pub gpu: usize,
    /// Griffin's fit score (0..100) for one CPU (and one GPU when necessary).
    pub score: u8,
}

async fn resources(
    AxState(g): AxState<Arc<Gsch>>,
    q: Result<Query<ResourcesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, GschError> {
    let Query(q) = q.map_err(|e| GschError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let need_gpu = match q.gpu.as_deref() {
        None | Some("unnecessary") => false,
        Some("necessary") => true,
        Some(v) => {
            return Err(GschError(
                StatusCode::BAD_REQUEST,
                format!("gpu: {v:?} is not necessary or unnecessary"),
            ))
        }
    };
    let node = &g.node;
    let state = node
        .state()
        .await
        .map_err(|e| GschError(StatusCode::SERVICE_UNAVAILABLE, e.0))?;
    let summary = node.summary(&state);
    let pct = |used: f64, total: f64| {
        if total > 0.0 {
            100.0 * used / total
        } else {
            0.0
        }
    };
    let cur = node.current();
    let topo = &cur.topo;
    let mem_total: u64 = topo.numa_nodes.iter().map(|n| n.memory_bytes).sum();
    let mem_used: u64 = state
        .allocations
        .values()
        .map(|a| a.placement.memory_bytes)
        .sum();
    let shape = Shape {
        cpus: 1,
        memory: 0,
        devices: if need_gpu {
            vec![DeviceCount {
                kind: DeviceKind::Gpu,
                count: 1,
            }]
        } else {
            vec![]
        },
        policy: Default::default(),
        topology_aware: true,
    };
    let s = score(&cur.alloc, topo, &state, &shape);
    Ok(Json(Resources {
        cluster_name: node.cluster_name.clone(),
        node_name: node.node_name.clone(),
        cpu: pct(
            (summary.cpus.allocatable - summary.cpus.free_exclusive) as f64,
            summary.cpus.allocatable as f64,
        ),
        memory: pct(mem_used as f64, mem_total as f64),
        gpu: summary.devices.get("gpu").map_or(0, |d| d.free),
        score: s.score,
    })
    .into_response())
}
