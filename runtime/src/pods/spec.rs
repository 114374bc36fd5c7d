//! What Griffin needs of a pod object (pure): its identity, QoS class,
//! containers with their CPU and memory asks and runtime ids, and its
//! annotations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;

use crate::quantity::Quantity;

/// The pod's QoS class, as the kubelet computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Qos {
    /// Every container has CPU and memory limits equal to its requests.
    Guaranteed,
    /// Neither.
    Burstable,
    /// No container asks for CPU or memory at all.
    BestEffort,
}

/// A container's runtime id, as the kubelet reports it
/// (`containerd://<id>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ContainerId {
    /// `containerd`, `cri-o`, `docker`.
    pub runtime: String,
    /// The id (64 hex digits for the runtimes above).
    pub id: String,
}

impl ContainerId {
    /// Parses `runtime://id`; `None` for anything else, or an id that could
    /// not name a cgroup (a path separator, `.` or `..`, empty).
    pub fn parse(s: &str) -> Option<Self> {
        let (runtime, id) = s.split_once("://")?;
        let ok = |x: &str| {
            !x.is_empty()
                && x != "."
                && x != ".."
                && x.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        (ok(runtime) && ok(id)).then(|| Self {
            runtime: runtime.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// Whether a pod uid can be part of a cgroup name (the API server's are
/// UUIDs): letters, digits and `-` only.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// One (app) container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// Its name in the pod spec.
    pub name: String,
    /// Whole CPUs when its CPU request equals its limit and is a whole
    /// number (what the kubelet's static policy pins); `None` otherwise.
    pub whole_cpus: Option<u32>,
    /// Its memory limit, else its request, bytes (0: none).
    pub memory_bytes: u64,
    /// The runtime's id, once the kubelet reports it.
    pub id: Option<ContainerId>,
    /// Whether it is running now.
    pub running: bool,
}

/// A pod of this node, as far as Griffin is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `status.qosClass` when set, else computed from the spec.
    pub qos: Qos,
    /// App containers (init containers do not get allocations).
    pub containers: Vec<ContainerInfo>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Deleted (a deletion timestamp) or finished (`Succeeded`/`Failed`).
    pub ending: bool,
    /// `status.podIPs` (else `status.podIP`); empty until assigned.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod shares the node's network namespace.
    pub host_network: bool,
}

impl PodInfo {
    /// `namespace/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads a pod object; `None` without a uid or name (not a stored pod).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let md = &pod.metadata;
        let uid = md.uid.clone().filter(|u| !u.is_empty())?;
        let name = md.name.clone().filter(|n| !n.is_empty())?;
        let spec = pod.spec.as_ref()?;
        let status = pod.status.as_ref();
        let statuses = status
            .and_then(|s| s.container_statuses.as_ref())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let containers = spec
            .containers
            .iter()
            .map(|c| {
                let st = statuses.iter().find(|s| s.name == c.name);
                ContainerInfo {
                    name: c.name.clone(),
                    whole_cpus: whole_cpus(c),
                    memory_bytes: memory_bytes(c),
                    id: st
                        .and_then(|s| s.container_id.as_deref())
                        .and_then(ContainerId::parse),
                    running: st
                        .and_then(|s| s.state.as_ref())
                        .is_some_and(|s| s.running.is_some()),
                }
            })
            .collect();
        let qos = match status.and_then(|s| s.qos_class.as_deref()) {
            Some("Guaranteed") => Qos::Guaranteed,
            Some("Burstable") => Qos::Burstable,
            Some("BestEffort") => Qos::BestEffort,
            _ => qos_of(
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten()),
            ),
        };
        let phase = status.and_then(|s| s.phase.as_deref());
        Some(Self {
            uid,
            namespace: md.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
            qos,
            containers,
            annotations: md.annotations.clone().unwrap_or_default(),
            ending: md.deletion_timestamp.is_some()
                || matches!(phase, Some("Succeeded" | "Failed")),
            ips: status
                .and_then(|s| {
                    s.pod_ips
                        .as_ref()
                        .map(|l| l.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>())
                        .filter(|l| !l.is_empty())
                        .or_else(|| s.pod_ip.as_deref().map(|i| vec![i]))
                })
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.parse().ok())
                .collect(),
            host_network: spec.host_network == Some(true),
        })
    }
}

/// A resource quantity of a container: (request, limit). A request left
/// out defaults to the limit, as the API server does.
fn ask(c: &Container, resource: &str) -> (Option<Quantity>, Option<Quantity>) {
    let get =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.and_then(|m| m.get(resource))
                .and_then(|q| Quantity::parse(&q.0).ok())
        };
    let r = c.resources.as_ref();
    let limit = get(r.and_then(|r| r.limits.as_ref()));
    let request = get(r.and_then(|r| r.requests.as_ref())).or_else(|| limit.clone());
    (request, limit)
}

fn whole_cpus(c: &Container) -> Option<u32> {
    let (Some(req), Some(lim)) = ask(c, "cpu") else {
        return None;
    };
    let (r, l) = (req.milli_ceil(), lim.milli_ceil());
    (r == l && r > 0 && r % 1000 == 0)
        .then(|| u32::try_from(r / 1000).ok())
        .flatten()
}

fn memory_bytes(c: &Container) -> u64 {
    let (req, lim) = ask(c, "memory");
    lim.or(req).map_or(0, |q| q.value_ceil())
}

/// The kubelet's QoS rule over every container (init ones included).
fn qos_of<'a>(containers: impl Iterator<Item = &'a Container>) -> Qos {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        for res in ["cpu", "memory"] {
            let (req, lim) = ask(c, res);
            any |= req.as_ref().is_some_and(|q| !q.is_zero())
                || lim.as_ref().is_some_and(|q| !q.is_zero());
            match (req, lim) {
                (Some(r), Some(l)) if r.milli_ceil() == l.milli_ceil() && !l.is_zero() => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => Qos::BestEffort,
        (true, true) => Qos::Guaranteed,
        (true, false) => Qos::Burstable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    fn base(resources: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1",
                         "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "resources": resources}]},
        })
    }

    #[test]
    fn guaranteed_whole_cpus_are_read_like_the_kubelet() {
        let p = PodInfo::from_pod(&pod(base(serde_json::json!({
            "limits": {"cpu": "2", "memory": "1Gi"}
        }))))
        .unwrap();
        assert_eq!(p.qos, Qos::Guaranteed, "requests default to limits");
        assert_eq!(p.containers[0].whole_cpus, Some(2));
        assert_eq!(p.containers[0].memory_bytes, 1 << 30);
        assert_eq!(p.key(), "ns/p");
        assert_eq!(p.annotations["a"], "b");
        assert!(!p.ending);
    }

    #[test]
    fn fractional_or_unequal_cpus_are_not_whole() {
        for (res, qos) in [
            (
                serde_json::json!({"limits": {"cpu": "1500m", "memory": "1Gi"}}),
                Qos::Guaranteed,
            ),
            (
                serde_json::json!({"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}),
                Qos::Burstable,
            ),
            (serde_json::json!({}), Qos::BestEffort),
        ] {
            let p = PodInfo::from_pod(&pod(base(res.clone()))).unwrap();
            assert_eq!(p.containers[0].whole_cpus, None, "{res}");
            assert_eq!(p.qos, qos, "{res}");
        }
    }

    #[test]
    fn status_gives_ids_running_qos_and_ending() {
        let mut j = base(serde_json::json!({"requests": {"cpu": "1"}}));
        j["status"] = serde_json::json!({
            "qosClass": "Burstable", "phase": "Succeeded",
            "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                "restartCount": 0, "containerID": "containerd://0123abcd",
                "state": {"running": {"startedAt": "2026-12-01T00:00:00Z"}}}]
        });
        let p = PodInfo::from_pod(&pod(j)).unwrap();
        assert_eq!(
            p.containers[0].id,
            Some(ContainerId {
                runtime: "containerd".into(),
                id: "0123abcd".into()
            })
        );
        assert!(p.containers[0].running);
        assert!(p.ending);
        assert_eq!(p.qos, Qos::Burstable);
    }

    #[test]
    fn container_ids_that_could_escape_a_cgroup_path_are_refused() {
        for bad in [
            "containerd://../x",
            "containerd://a/b",
            "containerd://",
            "x",
            "://a",
            "c://..",
        ] {
            assert_eq!(ContainerId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_pod_without_uid_or_spec_is_not_read() {
        assert!(PodInfo::from_pod(&pod(serde_json::json!({"metadata": {"name": "p"}}))).is_none());
    }
}
