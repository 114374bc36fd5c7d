//! `GET /metrics`: Prometheus text exposition (prometheus-client). Counters
//! and the latency histogram are updated by the handlers; allocation gauges
//! are read from the checkpoint at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label of per-NUMA-node series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NumaLabel {
    /// Node id.
    pub numa_node: u32,
}

/// The daemon's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Shapes scored (each shape of a batch counts).
    pub score_requests: Counter,
    /// Time to answer a score request.
    pub score_seconds: Histogram,
    /// Last discovery's duration.
    pub discovery_seconds: Gauge<f64, AtomicU64>,
    /// Discoveries run (start, SIGHUP, uevents).
    pub discoveries: Counter,
    /// Allocations in the checkpoint.
    pub allocations: Gauge,
    /// CPUs free for exclusive allocation per NUMA node.
    pub free_cpus: Family<NumaLabel, Gauge>,
    /// Memory not accounted to allocations per NUMA node.
    pub free_memory_bytes: Family<NumaLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("griffin")),
            score_requests: Counter::default(),
            // 10 µs .. ~80 ms.
            score_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 14)),
            discovery_seconds: Gauge::default(),
            discoveries: Counter::default(),
            allocations: Gauge::default(),
            free_cpus: Family::default(),
            free_memory_bytes: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register("score_requests", "Shapes scored", m.score_requests.clone());
            r.register(
                "score_duration_seconds",
                "Time to answer a score request",
                m.score_seconds.clone(),
            );
            r.register(
                "discovery_duration_seconds",
                "Duration of the last discovery",
                m.discovery_seconds.clone(),
            );
            r.register("discoveries", "Discoveries run", m.discoveries.clone());
            r.register(
                "allocations",
                "Allocations in the checkpoint",
                m.allocations.clone(),
            );
            r.register(
                "free_cpus",
                "CPUs free for exclusive allocation per NUMA node",
                m.free_cpus.clone(),
            );
            r.register(
                "free_memory_bytes",
                "Memory not accounted to allocations per NUMA node",
                m.free_memory_bytes.clone(),
            );
        }
        m
    }
}

impl Metrics {
    /// Sets the gauges from a node summary.
    pub fn observe(&self, s: &crate::summary::NodeSummary) {
        self.allocations.set(s.allocations as i64);
        for n in &s.numa_nodes {
            let l = NumaLabel { numa_node: n.id };
            let free = griffin_devices::parse::cpulist(&n.free_cpus).map_or(0, |c| c.len());
            self.free_cpus.get_or_create(&l).set(free as i64);
            self.free_memory_bytes
                .get_or_create(&l)
                .set(i64::try_from(n.memory_free_bytes).unwrap_or(i64::MAX));
        }
    }

    /// Adds metrics read at scrape time by `c` (e.g. the XDP counters,
    /// which live in BPF maps).
    pub fn register_collector(&self, c: Box<dyn prometheus_client::collector::Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register_collector(c);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}
