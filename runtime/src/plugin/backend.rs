//! The daemon's device plugin backend: the node's pools ([`Pools`]), which
//! of their devices pods hold ([`Holdings`]) and the free exclusive CPUs
//! per NUMA node, behind the [`Backend`] the gRPC server serves from.
//!
//! Allocate answers from memory (the kubelet waits on it while a pod is
//! admitted) and marks the holdings dirty; [`maintain`] persists them to
//! the checkpoint off that path, and corrects them from the kubelet's
//! PodResources. A crash between an Allocate and its save loses nothing:
//! PodResources lists the device, and the next [`maintain`] round holds it
//! again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::alloc::HeldDevice;
use crate::plugin::holdings::{Holdings, Listed};
use crate::plugin::podresources::PodResourcesClient;
use crate::plugin::{Backend, ContainerDevices, Snapshot};
use crate::pools::Pools;

/// See the module doc.
#[derive(Debug)]
pub struct NodeBackend {
    inner: Mutex<Inner>,
    snapshot: watch::Sender<Snapshot>,
    /// Woken when the holdings changed and are not saved yet.
    dirty: Notify,
}

#[derive(Debug)]
struct Inner {
    pools: Arc<Pools>,
    holdings: Holdings,
    free_cpus: BTreeMap<u32, usize>,
}

impl NodeBackend {
    /// A backend serving `pools`, starting from the holdings `saved` in
    /// the checkpoint.
    pub fn new(pools: Pools, saved: &BTreeMap<String, Vec<HeldDevice>>, grace: Duration) -> Self {
        let (snapshot, _) = watch::channel(pools.snapshot());
        Self {
            inner: Mutex::new(Inner {
                pools: Arc::new(pools),
                holdings: Holdings::new(saved, grace),
                free_cpus: BTreeMap::new(),
            }),
            snapshot,
            dirty: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the pools (after a re-discovery); ListAndWatch streams get
    /// the new devices when anything they show changed.
    pub fn set_pools(&self, pools: Pools) {
        let snap = pools.snapshot();
        self.lock().pools = Arc::new(pools);
        self.snapshot.send_if_modified(|cur| {
            let changed = **cur != *snap;
            if changed {
                *cur = snap;
            }
            changed
        });
    }

    /// The pools served now.
    pub fn pools(&self) -> Arc<Pools> {
        self.lock().pools.clone()
    }

    /// Sets the free exclusive CPUs per NUMA node preferences weigh.
    pub fn set_free_cpus(&self, free: BTreeMap<u32, usize>) {
        self.lock().free_cpus = free;
    }

    /// The holdings, in their checkpoint form.
    pub fn holdings(&self) -> BTreeMap<String, Vec<HeldDevice>> {
        self.lock().holdings.to_saved()
    }

    /// Applies what PodResources listed; returns whether holdings changed.
    pub fn observe(&self, listed: &Listed, now: Instant) -> bool {
        let mut g = self.lock();
        let pools = g.pools.clone();
        let ours: BTreeSet<String> = pools.iter().map(|p| p.resource.clone()).collect();
        g.holdings.observe(listed, &ours, now, |r, id| {
            pools.pool(r)?.device(id).map(|d| d.pci_address)
        })
    }

    /// Waits until an Allocate changed the holdings.
    pub async fn changed(&self) {
        self.dirty.notified().await;
    }
}

impl Backend for NodeBackend {
    fn watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.subscribe()
    }

    fn prefer(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Result<Vec<String>, String> {
        let (pools, free) = {
            let g = self.lock();
            (g.pools.clone(), g.free_cpus.clone())
        };
        let p = pools
            .prefer(resource, available, must_include, size, &free)
            .map_err(|e| e.to_string())?;
        tracing::debug!(resource, ids = ?p.ids, cost = p.cost, reason = %p.reason, "preferred allocation");
        Ok(p.ids)
    }

    fn allocate(&self, resource: &str, ids: &[String]) -> Result<ContainerDevices, String> {
        let mut g = self.lock();
        let pools = g.pools.clone();
        let out = pools.allocate(resource, ids).map_err(|e| e.to_string())?;
        let devs: Vec<(String, Option<griffin_devices::PciAddress>)> = ids
            .iter()
            .map(|id| {
                let addr = pools
                    .pool(resource)
                    .and_then(|p| p.device(id))
                    .map(|d| d.pci_address);
                (id.clone(), addr)
            })
            .collect();
        g.holdings.allocate(resource, &devs, Instant::now());
        drop(g);
        tracing::info!(resource, ?ids, "allocated");
        self.dirty.notify_one();
        Ok(out)
    }
}

/// Rebuilds the pools from `defs` on every topology `rx` receives (after
/// a re-discovery) and on every new fault of `faults`, until the topology
/// sender is gone, with the devices of `faults` unhealthy (the faults of
/// GPUs reset since are forgotten first). A failed build keeps the pools
/// served.
pub async fn follow_topology(
    backend: Arc<NodeBackend>,
    mut rx: watch::Receiver<Arc<griffin_devices::Topology>>,
    defs: Vec<crate::pools::PoolDef>,
    faults: crate::gpuhealth::Faults,
) {
    let mut new_faults = faults.subscribe();
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            // `faults` holds the sender: this never ends.
            _ = new_faults.changed() => {}
        }
        new_faults.borrow_and_update();
        let topo = rx.borrow_and_update().clone();
        let defs = defs.clone();
        faults.forget_reset(&topo);
        let faults = faults.snapshot();
        match tokio::task::spawn_blocking(move || {
            Pools::discover_with_faults(&topo, &defs, &faults)
        })
        .await
        {
            Ok(Ok(p)) => backend.set_pools(p),
            Ok(Err(e)) => {
                tracing::error!(error = %griffin_devices::Chain(&e), "device pools not rebuilt; serving the previous ones")
            }
            Err(e) => tracing::error!(error = %e, "device pool task failed"),
        }
    }
}

/// Device ids by resource in a PodResources listing.
pub fn listed(pods: &[crate::plugin::podresources::PodResources]) -> Listed {
    let mut out = Listed::new();
    for d in pods
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
    {
        out.entry(d.resource_name.clone())
            .or_default()
            .extend(d.device_ids.iter().cloned());
    }
    out
}

/// Keeps the holdings true and saved until `stop`: every `period`, and at
/// once after an Allocate, asks PodResources (when there is a socket)
/// which devices pods hold, and saves changed holdings with `save` (run on
/// a blocking thread, given `None` when nothing changed; it returns an
/// error message, and a failed save is tried again next round).
///
/// `save` also returns the free exclusive CPUs per NUMA node after the
/// save, which preferences weigh.
pub async fn maintain<S>(
    backend: Arc<NodeBackend>,
    pod_resources: Option<PodResourcesClient>,
    save: S,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) where
    S: Fn(Option<BTreeMap<String, Vec<HeldDevice>>>) -> Result<BTreeMap<u32, usize>, String>
        + Send
        + Sync
        + 'static,
{
    let save = Arc::new(save);
    let mut saved = backend.holdings();
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = backend.changed() => {}
            () = tokio::time::sleep(period) => {}
        }
        if let Some(c) = &pod_resources {
            match c.list().await {
                Ok(pods) => {
                    if backend.observe(&listed(&pods), Instant::now()) {
                        tracing::info!("device holdings corrected from PodResources");
                    }
                    last_error = None;
                }
                Err(e) => {
                    let msg = griffin_devices::Chain(&e).to_string();
                    if last_error.as_ref() != Some(&msg) {
                        tracing::warn!(error = %msg, "cannot list pod resources; holdings kept as they are");
                        last_error = Some(msg);
                    }
                }
            }
        }
        let now = backend.holdings();
        let changed = (now != saved).then(|| now.clone());
        let s = save.clone();
        match tokio::task::spawn_blocking(move || s(changed)).await {
            Ok(Ok(free)) => {
                saved = now;
                backend.set_free_cpus(free);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "cannot save device holdings; retrying"),
            Err(e) => tracing::error!(error = %e, "device holdings save task failed"),
        }
    }
}
