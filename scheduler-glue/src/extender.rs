//! Kubernetes scheduler extender verbs for this node: `POST /filter`
//! (`ExtenderArgs` → `ExtenderFilterResult`) and `POST /prioritize`
//! (`ExtenderArgs` → `HostPriorityList`, scores 0–10). JSON field names are
//! the kube-scheduler extender v1 API's (`pod`, `nodes`, `nodenames`,
//! `failedNodes`, `failedAndUnresolvableNodes`, `error`, `host`, `score`).
//!
//! A per-node daemon judges only its own node: other candidate nodes pass
//! the filter untouched and get no priority entry from it. The pod's shape
//! is the sum of its containers' requests ([`pod_shape`]): whole `cpu` →
//! exclusive CPUs (fractional CPU → shared pool, 0 exclusive), `memory`,
//! `nvidia.com/gpu`.

use std::collections::BTreeMap;

use griffin_devices::DeviceKind;
use griffin_runtime::quantity::Quantity;
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

/// The pod's request shape (pure; errors name the container and resource).
///
/// Quantities are read as the API server reads them
/// ([`griffin_runtime::quantity`]): a whole `cpu` sum asks for that many
/// exclusive CPUs, a fractional one for the shared pool (0 exclusive; that
/// the shared pool is large enough is the kube-scheduler's own fit check);
/// sums too large for any node saturate, so the allocator rejects them
/// instead of their being mistaken for a small or fractional request.
/// `nvidia.com/gpu` must be whole (as the API server requires of extended
/// resources).
pub fn pod_shape(pod: &Pod) -> Result<Shape, String> {
    let (mut cpu_milli, mut mem, mut gpu) = (0u64, 0u64, 0u64);
    for (i, c) in pod.spec.containers.iter().enumerate() {
        for (name, v) in &c.resources.requests {
            let field = || format!("pod.spec.containers[{i}].resources.requests.{name}");
            let q = Quantity::parse_json(v).map_err(|e| format!("{}: {e}", field()))?;
            if q.is_negative() {
                return Err(format!("{}: {v:?} is negative", field()));
            }
            match name.as_str() {
                "cpu" => cpu_milli = cpu_milli.saturating_add(q.milli_ceil()),
                "memory" => mem = mem.saturating_add(q.value_ceil()),
                "nvidia.com/gpu" => {
                    if q.milli_ceil() % 1000 != 0 {
                        return Err(format!("{}: {v:?} is not a whole count", field()));
                    }
                    gpu = gpu.saturating_add(q.value_ceil());
                }
                _ => {}
            }
        }
    }
    // More than any node has (or than milli-CPUs can count): no fraction
    // left to speak of, an impossible exclusive request.
    let huge = cpu_milli / 1000 > u64::from(crate::request::MAX_CPUS);
    let cpus = if huge || cpu_milli % 1000 == 0 {
        u32::try_from(cpu_milli / 1000).unwrap_or(u32::MAX)
    } else {
        0
    };
    Ok(Shape {
        cpus,
        memory: mem,
        devices: if gpu > 0 {
            vec![DeviceCount {
                kind: DeviceKind::Gpu,
                count: u32::try_from(gpu).unwrap_or(u32::MAX),
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

    fn cpu_pod(cpu: &str) -> Pod {
        serde_json::from_value(serde_json::json!(
            {"spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}}
        ))
        .unwrap()
    }

    /// Issue 14 D5: on a 4-CPU node, CPU requests too large for it (also in
    /// exponent and exa forms) are infeasible, never a shared-pool fit.
    #[test]
    fn impossible_cpu_requests_are_infeasible() {
        let topo = griffin_tests::synthetic::Shape {
            packages: 1,
            nodes_per_package: 1,
            cores_per_node: 4,
            threads: 1,
            devices_per_node: vec![],
            memory_per_node: 1 << 30,
        }
        .topology();
        let alloc = griffin_runtime::alloc::Allocator::new(&topo);
        let state = griffin_runtime::alloc::State::default();
        for cpu in [
            "5",
            "65537",
            "1e5",
            "1E",
            "1e300",
            "99999999999999999999999m",
            "100Ei",
            "1.5e300",
        ] {
            let shape = pod_shape(&cpu_pod(cpu)).unwrap();
            assert!(shape.cpus >= 5, "{cpu}: {shape:?}");
            let s = crate::score(&alloc, &topo, &state, &shape);
            assert!(!s.feasible && s.score == 0, "{cpu}: {s:?}");
        }
        for (cpu, exclusive) in [
            ("3", 3),
            ("2000m", 2),
            ("1500m", 0),
            ("1e-3", 0),
            ("0.5", 0),
        ] {
            let shape = pod_shape(&cpu_pod(cpu)).unwrap();
            assert_eq!(shape.cpus, exclusive, "{cpu}");
            assert!(
                crate::score(&alloc, &topo, &state, &shape).feasible,
                "{cpu}"
            );
        }
        for bad in ["-1", "1K", "lots", "1 Gi"] {
            let e = pod_shape(&cpu_pod(bad)).unwrap_err();
            assert!(
                e.starts_with("pod.spec.containers[0].resources.requests.cpu: "),
                "{e}"
            );
        }
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
