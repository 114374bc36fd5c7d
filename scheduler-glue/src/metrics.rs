//! `GET /metrics`: Prometheus text exposition (prometheus-client). Counters
//! and the latency histogram are updated by the handlers; allocation gauges
//! are read from the checkpoint at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use griffin_ebpf::split::Split;
use griffin_ebpf::{Counter as Counter_, Counters};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

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
        let mut r = Registry::with_prefix("griffin");
        Self {
            score_requests: registered(
                &mut r,
                "score_requests",
                "Shapes scored",
                Counter::default(),
            ),
            // 10 µs .. ~80 ms.
            score_seconds: registered(
                &mut r,
                "score_duration_seconds",
                "Time to answer a score request",
                Histogram::new(exponential_buckets(1e-5, 2.0, 14)),
            ),
            discovery_seconds: registered(
                &mut r,
                "discovery_duration_seconds",
                "Duration of the last discovery",
                Gauge::default(),
            ),
            discoveries: registered(&mut r, "discoveries", "Discoveries run", Counter::default()),
            allocations: registered(
                &mut r,
                "allocations",
                "Allocations in the checkpoint",
                Gauge::default(),
            ),
            free_cpus: registered(
                &mut r,
                "free_cpus",
                "CPUs free for exclusive allocation per NUMA node",
                Family::default(),
            ),
            free_memory_bytes: registered(
                &mut r,
                "free_memory_bytes",
                "Memory not accounted to allocations per NUMA node",
                Family::default(),
            ),
            registry: Mutex::new(r),
        }
    }
}

/// `metric`, registered in `r` under `name` (metrics are handles: the
/// registry keeps a clone).
fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// The XDP counters of the daemon's splits, read from the BPF maps at
/// scrape time: frames and bytes by action, by outcome (parse failures,
/// fallbacks, no match) and by rule id of the active rule set.
#[derive(Debug)]
pub struct XdpCollector(pub Vec<Split>);

impl prometheus_client::collector::Collector for XdpCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut snapshot = Vec::new();
        for s in &self.0 {
            match s.counters() {
                Ok(c) => snapshot.push((s.iface(), c)),
                Err(e) => {
                    tracing::warn!(iface = %s.iface(), error = %griffin_devices::Chain(&e), "reading XDP counters")
                }
            }
        }
        type Get = fn(&Counters) -> Vec<(String, Counter_)>;
        let families: [(&str, &str, &str, Get); 3] = [
            ("xdp_action", "action", "Frames (and bytes) by XDP action", |c| {
                let a = &c.actions;
                [("pass", a.pass), ("drop", a.drop), ("redirect", a.redirect), ("xsk", a.xsk), ("cpu", a.cpu)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            }),
            ("xdp_frames", "outcome", "Frames that failed to parse, fell back to the stack for a missing target, or matched no rule", |c| {
                vec![
                    ("parse_failure".into(), c.parse_failures),
                    ("fallback".into(), c.fallbacks),
                    ("no_match".into(), c.no_match),
                ]
            }),
            ("xdp_rule", "rule", "Frames (and bytes) per rule id of the active rule set (from zero at each rule change)", |c| {
                c.rules.iter().map(|(id, v)| (id.to_string(), *v)).collect()
            }),
        ];
        for (name, key, help, get) in families {
            for (suffix, bytes) in [("packets", false), ("bytes", true)] {
                let full = format!("{name}_{suffix}");
                let mut family =
                    encoder.encode_descriptor(&full, help, None, MetricType::Counter)?;
                for (iface, c) in &snapshot {
                    for (label, v) in get(c) {
                        let labels = [("iface", (*iface).to_owned()), (key, label)];
                        let value = if bytes { v.bytes } else { v.packets };
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The counters of the daemon's AF_XDP relays, read at scrape time:
/// `relay_frames{relay, iface, outcome}` (received, delivered,
/// dropped_consumer, dropped_not_udp, dropped_kernel) and
/// `relay_delivered_bytes{relay, iface}` and `relay_sends{relay, iface}`.
#[derive(Debug)]
pub struct RelayCollector(pub Vec<griffin_runtime::relay::RelayHandle>);

impl prometheus_client::collector::Collector for RelayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats: Vec<_> = self.0.iter().map(|h| h.stats()).collect();
        let mut family = encoder.encode_descriptor(
            "relay_frames",
            "Frames an AF_XDP relay received, delivered, or dropped (consumer absent or full, no UDP payload, or by the kernel before the relay)",
            None,
            MetricType::Counter,
        )?;
        for s in &stats {
            for (outcome, v) in [
                ("received", s.received),
                ("delivered", s.delivered),
                ("dropped_consumer", s.dropped_consumer),
                ("dropped_not_udp", s.dropped_not_udp),
                ("dropped_kernel", s.kernel_dropped),
            ] {
                let labels = [
                    ("relay", s.name.clone()),
                    ("iface", s.iface.clone()),
                    ("outcome", outcome.to_owned()),
                ];
                ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "relay_delivered_bytes",
            "Payload bytes an AF_XDP relay delivered",
            None,
            MetricType::Counter,
        )?;
        for s in &stats {
            let labels = [("relay", s.name.clone()), ("iface", s.iface.clone())];
            ConstCounter::new(s.delivered_bytes).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "relay_sends",
            "sendmsg calls of an AF_XDP relay to its datagram destination (a UDP GSO send carries several datagrams)",
            None,
            MetricType::Counter,
        )?;
        for s in &stats {
            let labels = [("relay", s.name.clone()), ("iface", s.iface.clone())];
            ConstCounter::new(s.sends).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
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

    /// Adds metrics read at scrape time by `c` (e.g. [`XdpCollector`]).
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
