//! What the daemon's HTTP endpoints serve from: the discovered topology
//! with its prepared allocator (replaced on re-discovery), the allocation
//! state read from the checkpoint (read-only: the daemon never takes the
//! allocator lock, so `griffin alloc` keeps working beside it; the decoded
//! state is cached, see [`checkpoint::Reader`]), the node's names, its
//! metrics and the pods' acceleration records.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use griffin_devices::Topology;
use griffin_runtime::accel::AccelerationBook;
use griffin_runtime::alloc::{Allocator, State};
use griffin_runtime::checkpoint;
use griffin_runtime::cpuset::CpuSet;

use crate::metrics::Metrics;
use crate::summary::NodeSummary;

/// The allocation state cannot be read (the message names the file); the
/// endpoints answer 503 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

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
    pub metrics: Metrics,
    /// The pods' acceleration records served on `/v1/accelerations`: the
    /// engine realizing requests writes through a clone of this handle.
    pub accelerations: Arc<AccelerationBook>,
    /// The allocator checkpoint, read and cached.
    checkpoint: Arc<checkpoint::Reader>,
    /// Each topology set after a re-discovery.
    topo_changes: tokio::sync::watch::Sender<Arc<Topology>>,
    /// Counts changes of what the node publishes: each re-discovery and
    /// each [`Node::invalidate`] (allocations, holdings saved).
    changes: tokio::sync::watch::Sender<u64>,
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
        let current = prepare(topo);
        let (topo_changes, _) = tokio::sync::watch::channel(current.topo.clone());
        Self {
            topo_changes,
            changes: tokio::sync::watch::Sender::new(0),
            current: RwLock::new(current),
            checkpoint: Arc::new(checkpoint::Reader::new(store, reserved.clone())),
            reserved,
            node_name,
            cluster_name,
            ready: AtomicBool::new(true),
            metrics: Metrics::default(),
            accelerations: Arc::default(),
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
        let current = prepare(topo);
        let topo = current.topo.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = current;
        self.topo_changes.send_replace(topo);
        self.changes.send_modify(|n| *n += 1);
    }

    /// The topologies set from now on (one value per re-discovery).
    pub fn watch_topology(&self) -> tokio::sync::watch::Receiver<Arc<Topology>> {
        self.topo_changes.subscribe()
    }

    /// The current allocation state, read from the checkpoint (see
    /// [`checkpoint::Reader`] for when the file is looked at again). A look
    /// at the file runs on a blocking thread, never on the async worker
    /// serving the other routes.
    pub async fn state(&self) -> Result<Arc<State>, Unavailable> {
        if let Some(s) = self.checkpoint.fresh() {
            return Ok(s);
        }
        let reader = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || reader.state())
            .await
            .map_err(|e| Unavailable(format!("reading the checkpoint: {e}")))?
            .map_err(|e| Unavailable(griffin_devices::Chain(&e).to_string()))
    }

    /// Forgets the cached state: the next request reads the checkpoint.
    /// Called after every change of the allocation state made through the
    /// daemon; subscribers of [`Node::watch_changes`] are woken.
    pub fn invalidate(&self) {
        self.checkpoint.invalidate();
        self.changes.send_modify(|n| *n += 1);
    }

    /// A signal for every change of the topology or of the allocation
    /// state made through the daemon (the value is a counter).
    pub fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The node summary of `GET /v1/node` for `state`.
    pub fn summary(&self, state: &State) -> NodeSummary {
        crate::summary::summary(&self.topo(), state, &self.node_name, &self.cluster_name)
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
/// How long re-discovery waits for a burst of changes to end.
pub const QUIET: std::time::Duration = std::time::Duration::from_millis(200);

impl Node {
    /// Discovers the node below `root` again after each change received
    /// (SIGHUP, uevents), coalescing bursts (creating 64 VFs is hundreds of
    /// uevents): it waits until changes have been [`QUIET`] for a moment,
    /// then discovers once. A failed discovery keeps the previous topology.
    /// Returns when every sender is gone.
    pub async fn follow_changes(
        self: Arc<Self>,
        root: PathBuf,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        while let Some(first) = changes.recv().await {
            let mut coalesced = 1usize;
            while let Ok(Some(_)) = tokio::time::timeout(QUIET, changes.recv()).await {
                coalesced += 1;
            }
            let t = Instant::now();
            let r = {
                let root = root.clone();
                tokio::task::spawn_blocking(move || griffin_devices::discover(&root)).await
            };
            match r {
                Ok(Ok(topo)) => {
                    let elapsed = t.elapsed();
                    tracing::info!(
                        reason = %first,
                        coalesced,
                        cpus = topo.online_cpus.len(),
                        devices = topo.devices.len(),
                        ms = elapsed.as_secs_f64() * 1e3,
                        "re-discovered the node"
                    );
                    self.set_topo(topo);
                    self.metrics.discovery_seconds.set(elapsed.as_secs_f64());
                    self.metrics.discoveries.inc();
                }
                Ok(Err(e)) => tracing::error!(
                    reason = %first,
                    root = %root.display(),
                    error = %griffin_devices::Chain(&e),
                    "re-discovery failed; keeping the previous topology"
                ),
                Err(e) => tracing::error!(error = %e, "re-discovery task failed"),
            }
        }
    }
}
