//! Kubernetes scheduler extender verbs for this node: `POST /filter`
//! (`ExtenderArgs` → `ExtenderFilterResult`) and `POST /prioritize`
//! (`ExtenderArgs` → `HostPriorityList`, scores 0–10). JSON field names are
//! the kube-scheduler extender v1 API's (`pod`, `nodes`, `nodenames`,
//! `failedNodes`, `failedAndUnresolvableNodes`, `error`, `host`, `score`).
//!
//! A per-node daemon judges only its own node: other candidate nodes pass
//! the filter untouched and get no priority entry from it. The pod's shape
//! is the sum of its containers' requests: whole `cpu` → exclusive CPUs
//! (fractional CPU → shared pool, 0 exclusive), `memory`, `nvidia.com/gpu`.

use std::collections::BTreeMap;

use griffin_devices::DeviceKind;
use serde::{Deserialize, Serialize};

use crate::{DeviceCount, Shape};

/// `ExtenderArgs`.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    pub pod: Pod,
    /// Candidate nodes (when the scheduler sends whole objects).
    #[serde(default)]
    pub nodes: Option<NodeList>,
    /// Candidate node names (node cache capable schedulers).
    #[serde(default)]
    pub nodenames: Option<Vec<String>>,
}

/// The parts of a `v1.Pod` the shape needs.
#[derive(Debug, Default, Deserialize)]
pub struct Pod {
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `spec.containers`.
#[derive(Debug, Default, Deserialize)]
pub struct PodSpec {
    /// Containers.
    #[serde(default)]
    pub containers: Vec<Container>,
}

/// `resources.requests` of one container.
#[derive(Debug, Default, Deserialize)]
pub struct Container {
    /// Resources.
    #[serde(default)]
    pub resources: Resources,
}

/// `requests` (and `limits`, ignored).
#[derive(Debug, Default, Deserialize)]
pub struct Resources {
    /// Requests by resource name.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
}

/// `v1.NodeList`: items are echoed back unchanged, only the name is read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    /// Nodes.
    pub items: Vec<serde_json::Value>,
    /// Anything else of the list (kind, apiVersion, metadata).
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// `ExtenderFilterResult`.
#[derive(Debug, Default, Serialize)]
pub struct ExtenderFilterResult {
    /// Nodes that pass (when whole objects were sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Names that pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
    /// Node → why it fails.
    #[serde(rename = "failedNodes", skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Node → why it fails whatever preemption does.
    #[serde(
        rename = "failedAndUnresolvableNodes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// Error for the whole call.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One `HostPriority`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    /// Node name.
    pub host: String,
    /// 0..=10.
    pub score: i64,
}

/// A Kubernetes quantity (`500m`, `2`, `1.5Gi`, `1e3`) as a number (pure).
pub fn quantity(q: &str) -> Result<f64, String> {
    let q = q.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mul) = suffixes
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1.0));
    let valid = !num.is_empty()
        && num
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e'));
    match num.parse::<f64>() {
        Ok(v) if valid && v.is_finite() && v >= 0.0 => Ok(v * mul),
        _ => Err(format!("{q:?} is not a quantity")),
    }
}

/// The pod's request shape (pure; errors name the container and resource).
pub fn pod_shape(pod: &Pod) -> Result<Shape, String> {
    let (mut cpu, mut mem, mut gpu) = (0.0, 0.0, 0.0);
    for (i, c) in pod.spec.containers.iter().enumerate() {
        for (name, v) in &c.resources.requests {
            let n = quantity(v)
                .map_err(|e| format!("pod.spec.containers[{i}].resources.requests.{name}: {e}"))?;
            match name.as_str() {
                "cpu" => cpu += n,
                "memory" => mem += n,
                "nvidia.com/gpu" => gpu += n,
                _ => {}
            }
        }
    }
    let whole = |v: f64| v.fract() == 0.0 && v <= f64::from(crate::request::MAX_CPUS);
    if !whole(gpu) {
        return Err(format!("nvidia.com/gpu: {gpu} is not a whole count"));
    }
    if mem > crate::request::MAX_MEMORY as f64 {
        return Err(format!("memory: {mem} is too large"));
    }
    Ok(Shape {
        cpus: if whole(cpu) { cpu as u32 } else { 0 },
        memory: mem as u64,
        devices: if gpu > 0.0 {
            vec![DeviceCount {
                kind: DeviceKind::Gpu,
                count: gpu as u32,
            }]
        } else {
            vec![]
        },
        policy: Default::default(),
        topology_aware: true,
    })
}

fn node_name(item: &serde_json::Value) -> Option<&str> {
    item.get("metadata")?.get("name")?.as_str()
}

/// The filter verdict for `args`, given this node's name and whether (and
/// why not) the pod fits here.
pub fn filter(args: ExtenderArgs, me: &str, fits: Result<(), String>) -> ExtenderFilterResult {
    let mut out = ExtenderFilterResult::default();
    let keep = |name: &str| name != me || fits.is_ok();
    let mine_listed = args.nodenames.iter().flatten().any(|n| n == me)
        || args
            .nodes
            .iter()
            .flat_map(|l| &l.items)
            .any(|i| node_name(i) == Some(me));
    if let Some(names) = args.nodenames {
        out.nodenames = Some(names.into_iter().filter(|n| keep(n)).collect());
    }
    if let Some(mut list) = args.nodes {
        list.items.retain(|i| node_name(i).is_none_or(&keep));
        out.nodes = Some(list);
    }
    if let (true, Err(why)) = (mine_listed, fits) {
        out.failed_nodes.insert(me.to_owned(), why);
    }
    out
}

/// The candidate names of `args`.
pub fn candidates(args: &ExtenderArgs) -> Vec<&str> {
    let mut v: Vec<&str> = args
        .nodenames
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    v.extend(
        args.nodes
            .iter()
            .flat_map(|l| &l.items)
            .filter_map(node_name),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("2").unwrap(), 2.0);
        assert_eq!(quantity("500m").unwrap(), 0.5);
        assert_eq!(quantity("1Gi").unwrap(), 1073741824.0);
        assert_eq!(quantity("1.5G").unwrap(), 1.5e9);
        assert_eq!(quantity("1e3").unwrap(), 1000.0);
        for bad in ["", "m", "-1", "1x", "NaN", "inf", "1 Gi", "0x10"] {
            assert!(quantity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pod_shapes() {
        let pod: Pod = serde_json::from_str(
            r#"{"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "2", "memory": "1Gi", "nvidia.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}]}}"#,
        )
        .unwrap();
        let s = pod_shape(&pod).unwrap();
        assert_eq!((s.cpus, s.memory), (3, 1 << 30));
        assert_eq!(s.devices[0].count, 1);
        let frac: Pod = serde_json::from_str(
            r#"{"spec": {"containers": [{"resources": {"requests": {"cpu": "1500m"}}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            pod_shape(&frac).unwrap().cpus,
            0,
            "fractional CPU: shared pool"
        );
        let bad: Pod = serde_json::from_str(
            r#"{"spec": {"containers": [{"resources": {"requests": {"memory": "lots"}}}]}}"#,
        )
        .unwrap();
        let e = pod_shape(&bad).unwrap_err();
        assert!(e.contains("containers[0].resources.requests.memory"), "{e}");
    }

    #[test]
    fn filter_judges_only_this_node() {
        let args = |names: &[&str]| ExtenderArgs {
            pod: Pod::default(),
            nodes: None,
            nodenames: Some(names.iter().map(|s| s.to_string()).collect()),
        };
        let r = filter(args(&["a", "me", "b"]), "me", Ok(()));
        assert_eq!(r.nodenames.unwrap(), ["a", "me", "b"]);
        let r = filter(args(&["a", "me"]), "me", Err("no room".into()));
        assert_eq!(r.nodenames.unwrap(), ["a"]);
        assert_eq!(r.failed_nodes["me"], "no room");
        let r = filter(args(&["a"]), "me", Err("no room".into()));
        assert!(r.failed_nodes.is_empty(), "not a candidate: nothing to say");
        let v = serde_json::to_value(filter(args(&["me"]), "me", Err("x".into()))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"nodenames": [], "failedNodes": {"me": "x"}})
        );
    }
}
