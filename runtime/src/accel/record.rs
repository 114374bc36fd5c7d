//! What was realized for each pod's acceleration request, read-only for
//! everyone but the engine that realizes them: the [`AccelerationBook`]
//! (served as `GET /v1/accelerations` and listed by `griffin
//! accelerations`).
//!
//! The engine [`AccelerationBook::set`]s a pod's [`AccelerationRecord`]
//! after each transaction (realized, or failed and rolled back) and when it
//! releases the pod; readers take [`AccelerationBook::snapshot`]s, sorted by
//! namespace, name and uid, or wait for changes with
//! [`AccelerationBook::changes`].

use std::collections::BTreeMap;
use std::sync::RwLock;

use griffin_devices::PciAddress;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::request::AccelerationRequest;
use crate::cpuset::CpuSet;

/// The pod a record is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodRef {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// The SR-IOV virtual function a container got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfRecord {
    /// Its PCI address.
    pub pci_address: PciAddress,
    /// Its network interface (as named where it is now), when it has one.
    pub netdev: Option<String>,
    /// The network namespace Griffin moved it into (e.g. the pod sandbox's
    /// `/var/run/netns/...` path); `None` when Griffin did not move it.
    pub netns: Option<String>,
}

/// What one container got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// The container's name.
    pub name: String,
    /// Its exclusive CPUs (JSON: their ids, ascending).
    pub cpus: CpuSet,
    /// Its memory NUMA nodes, ascending.
    pub mems: Vec<u32>,
    /// Devices by resource name (`nvidia.com/gpu`), ids as the device
    /// plugin names them, ascending.
    pub devices: BTreeMap<String, Vec<String>>,
    /// Its virtual function, for `communication: SRIOV`.
    pub vf: Option<VfRecord>,
    /// Ids of the XDP rules steering its flows.
    pub xdp_rules: Vec<u32>,
}

/// Where a pod's request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Outcome {
    /// Everything requested is in place.
    Realized,
    /// A step failed; what earlier steps did was rolled back.
    Failed {
        /// Why (names the step, container or device).
        reason: String,
    },
    /// The pod is gone and everything was given back.
    Released,
}

/// One pod's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelerationRecord {
    /// The pod.
    pub pod: PodRef,
    /// Its request, parsed.
    pub request: AccelerationRequest,
    /// Per container, by name.
    pub containers: Vec<ContainerRecord>,
    /// `state`: `realized`, `failed` (with `reason`) or `released`.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// When the outcome was reached (RFC 3339, UTC).
    pub at: Timestamp,
}

/// The records of the node's pods, keyed by pod uid. Thread-safe: the
/// engine writes, HTTP handlers and the NRT publisher read.
#[derive(Debug)]
pub struct AccelerationBook {
    records: RwLock<BTreeMap<String, AccelerationRecord>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for AccelerationBook {
    fn default() -> Self {
        Self::new()
    }
}

impl AccelerationBook {
    /// An empty book.
    pub fn new() -> Self {
        Self {
            records: RwLock::new(BTreeMap::new()),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// Records `record`, replacing the pod's earlier one (same uid); the
    /// containers are kept sorted by name.
    pub fn set(&self, mut record: AccelerationRecord) {
        record.containers.sort_by(|a, b| a.name.cmp(&b.name));
        self.write().insert(record.pod.uid.clone(), record);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Forgets the pod with `uid` (after its release has been visible for
    /// as long as the engine wants); its record, if it had one.
    pub fn remove(&self, uid: &str) -> Option<AccelerationRecord> {
        let old = self.write().remove(uid);
        if old.is_some() {
            self.changes.send_modify(|n| *n += 1);
        }
        old
    }

    /// The record of the pod with `uid`.
    pub fn get(&self, uid: &str) -> Option<AccelerationRecord> {
        self.read().get(uid).cloned()
    }

    /// Every record, sorted by namespace, name and uid.
    pub fn snapshot(&self) -> Vec<AccelerationRecord> {
        let mut all: Vec<AccelerationRecord> = self.read().values().cloned().collect();
        all.sort_by(|a, b| a.pod.cmp(&b.pod));
        all
    }

    /// How many pods have a record.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no pod has a record.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// A counter bumped on every change (for publishers that follow the
    /// book).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, AccelerationRecord>> {
        self.records.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, AccelerationRecord>> {
        self.records.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(namespace: &str, name: &str, uid: &str, containers: &[&str]) -> AccelerationRecord {
        AccelerationRecord {
            pod: PodRef {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.into(),
            },
            request: crate::accel::parse("compute: GPU").unwrap(),
            containers: containers
                .iter()
                .map(|c| ContainerRecord {
                    name: (*c).into(),
                    cpus: CpuSet::from_ids([1, 2, 3, 8]),
                    mems: vec![0],
                    devices: [("nvidia.com/gpu".to_owned(), vec!["GPU-1".to_owned()])].into(),
                    vf: None,
                    xdp_rules: vec![],
                })
                .collect(),
            outcome: Outcome::Realized,
            at: "2026-12-01T21:00:00.5Z".parse().unwrap(),
        }
    }

    #[test]
    fn snapshots_are_sorted_and_follow_changes() {
        let book = AccelerationBook::new();
        let mut changes = book.changes();
        assert!(book.is_empty() && book.snapshot().is_empty());
        book.set(record("web", "b", "u1", &["z", "a"]));
        book.set(record("db", "a", "u2", &[]));
        book.set(record("web", "a", "u3", &[]));
        assert!(changes.has_changed().unwrap());
        let names: Vec<(String, String)> = book
            .snapshot()
            .into_iter()
            .map(|r| (r.pod.namespace, r.pod.name))
            .collect();
        assert_eq!(
            names,
            [("db", "a"), ("web", "a"), ("web", "b")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        // Containers by name.
        let c: Vec<String> = book
            .get("u1")
            .unwrap()
            .containers
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(c, ["a", "z"]);
        // The same uid replaces; a release is a state, not a removal.
        changes.mark_unchanged();
        let mut released = record("web", "b", "u1", &[]);
        released.outcome = Outcome::Released;
        book.set(released.clone());
        assert!(changes.has_changed().unwrap());
        assert_eq!(book.len(), 3);
        assert_eq!(book.get("u1"), Some(released.clone()));
        changes.mark_unchanged();
        assert_eq!(book.remove("u1"), Some(released));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        assert_eq!(book.remove("u1"), None);
        assert!(!changes.has_changed().unwrap());
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn records_are_json_with_rfc3339_times() {
        let mut r = record("web", "b", "u1", &["app"]);
        r.outcome = Outcome::Failed {
            reason: "no free GPU".into(),
        };
        r.containers[0].vf = Some(VfRecord {
            pci_address: "0000:3b:02.1".parse().unwrap(),
            netdev: Some("net1".into()),
            netns: None,
        });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["reason"], "no free GPU");
        assert_eq!(v["at"], "2026-12-01T21:00:00.5Z");
        assert_eq!(v["containers"][0]["cpus"], serde_json::json!([1, 2, 3, 8]));
        assert_eq!(v["containers"][0]["vf"]["pci_address"], "0000:3b:02.1");
        assert_eq!(v["containers"][0]["devices"]["nvidia.com/gpu"][0], "GPU-1");
        assert_eq!(v["request"]["compute"][0], "GPU");
        let back: AccelerationRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let v = serde_json::to_value(record("a", "b", "c", &[])).unwrap();
        assert_eq!(v["state"], "realized");
        assert!(v.get("reason").is_none());
    }
}
