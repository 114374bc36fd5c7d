//! Kubernetes scheduler extender verbs for this node: `POST /filter`
//! (`ExtenderArgs` → `ExtenderFilterResult`) and `POST /prioritize`
//! (`ExtenderArgs` → `HostPriorityList`, scores 0–10).
//!
//! The kube-scheduler's `extender/v1` Go types carry no json tags, so it
//! writes the Go field names (`{"Pod": …, "Nodes": …, "NodeNames": …}`)
//! and reads answers case-insensitively; older schedulers wrote
//! `pod`/`nodes`/`nodenames`. Requests are read the way Go's decoder reads
//! them ([`crate::gojson`]: field names case-insensitive, later duplicates
//! win, unknown keys ignored); answers use the Go field names (`Nodes`,
//! `NodeNames`, `FailedNodes`, `FailedAndUnresolvableNodes`, `Error`,
//! `Host`, `Score`). The pod inside keeps the Kubernetes API's own json
//! names (`spec`, `containers`, …), also matched case-insensitively.
//!
//! A per-node daemon judges only its own node: other candidate nodes pass
//! the filter untouched and get no priority entry from it. The pod's shape
//! is its effective request ([`pod_shape`]): whole `cpu` → exclusive CPUs
//! (fractional CPU → shared pool, 0 exclusive), `memory`, `nvidia.com/gpu`.

use std::collections::BTreeMap;

use griffin_devices::DeviceKind;
use griffin_runtime::quantity::Quantity;
use serde::{Deserialize, Serialize};

use crate::gojson::Schema;
use crate::{DeviceCount, Shape};

/// `ExtenderArgs`.
#[derive(Debug, Deserialize)]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    #[serde(rename = "Pod")]
    pub pod: Pod,
    /// Candidate nodes (when the scheduler sends whole objects).
    #[serde(rename = "Nodes", default)]
    pub nodes: Option<NodeList>,
    /// Candidate node names (node cache capable schedulers).
    #[serde(rename = "NodeNames", default)]
    pub nodenames: Option<Vec<String>>,
}

const REQUESTS: Schema = Schema::Struct {
    fields: &[("requests", Schema::Map(&Schema::Any))],
    keep_unknown: false,
};
const CONTAINER: Schema = Schema::Struct {
    fields: &[("resources", REQUESTS)],
    keep_unknown: false,
};
const NAMED: Schema = Schema::Struct {
    fields: &[("name", Schema::Any)],
    keep_unknown: true,
};
const NODE: Schema = Schema::Struct {
    fields: &[("metadata", NAMED)],
    keep_unknown: true,
};
/// What of `ExtenderArgs` is read, with the names Go would match.
const ARGS: Schema = Schema::Struct {
    fields: &[
        (
            "Pod",
            Schema::Struct {
                fields: &[(
                    "spec",
                    Schema::Struct {
                        fields: &[
                            ("containers", Schema::Array(&CONTAINER)),
                            ("initContainers", Schema::Array(&CONTAINER)),
                            ("overhead", Schema::Map(&Schema::Any)),
                        ],
                        keep_unknown: false,
                    },
                )],
                keep_unknown: false,
            },
        ),
        (
            "Nodes",
            Schema::Struct {
                fields: &[("items", Schema::Array(&NODE))],
                keep_unknown: true,
            },
        ),
        ("NodeNames", Schema::Any),
    ],
    keep_unknown: false,
};

/// Parses an `ExtenderArgs` body as the kube-scheduler sends it (pure; the
/// error names the field path, e.g. `Pod.spec.containers[0]: …`).
pub fn parse_args(body: &[u8]) -> Result<ExtenderArgs, String> {
    let v = crate::gojson::parse(body, &ARGS).map_err(|e| e.to_string())?;
    crate::request::from_value(v)
}

/// The parts of a `v1.Pod` the shape needs.
#[derive(Debug, Default, Deserialize)]
pub struct Pod {
    /// `spec`.
    #[serde(default)]
    pub spec: PodSpec,
}

/// `spec.containers`, `spec.initContainers`, `spec.overhead`.
#[derive(Debug, Default, Deserialize)]
pub struct PodSpec {
    /// Containers.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Init containers (run one at a time, before the containers).
    #[serde(default, rename = "initContainers")]
    pub init_containers: Vec<Container>,
    /// Pod overhead (RuntimeClass), added to the request.
    #[serde(default)]
    pub overhead: BTreeMap<String, String>,
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

/// `ExtenderFilterResult`, with the Go field names.
#[derive(Debug, Default, Serialize)]
pub struct ExtenderFilterResult {
    /// Nodes that pass (when whole objects were sent).
    #[serde(rename = "Nodes", skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeList>,
    /// Names that pass.
    #[serde(rename = "NodeNames", skip_serializing_if = "Option::is_none")]
    pub nodenames: Option<Vec<String>>,
    /// Node → why it fails.
    #[serde(rename = "FailedNodes", skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_nodes: BTreeMap<String, String>,
    /// Node → why it fails whatever preemption does.
    #[serde(
        rename = "FailedAndUnresolvableNodes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// Error for the whole call.
    #[serde(rename = "Error", skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One `HostPriority`, with the Go field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPriority {
    /// Node name.
    #[serde(rename = "Host")]
    pub host: String,
    /// 0..=10.
    #[serde(rename = "Score")]
    pub score: i64,
}

/// The pod's request shape (pure; errors name the container and resource).
///
/// The effective request is the kube-scheduler's: per resource, the larger
/// of the containers' sum and the largest init container (they run one at
/// a time, before the containers), plus the pod overhead. Quantities are
/// read as the API server reads them ([`griffin_runtime::quantity`]): a
/// whole `cpu` asks for that many exclusive CPUs, a fractional one for the
/// shared pool (0 exclusive; that the shared pool is large enough is the
/// kube-scheduler's own fit check); sums too large for any node saturate,
/// so the allocator rejects them instead of their being mistaken for a
/// small or fractional request. `nvidia.com/gpu` must be whole (as the API
/// server requires of extended resources).
pub fn pod_shape(pod: &Pod) -> Result<Shape, String> {
    let spec = &pod.spec;
    let mut sum = Amounts::default();
    for (i, c) in spec.containers.iter().enumerate() {
        let a = Amounts::of(
            &c.resources.requests,
            &format!("containers[{i}].resources.requests"),
        )?;
        sum = sum.plus(a);
    }
    for (i, c) in spec.init_containers.iter().enumerate() {
        let a = Amounts::of(
            &c.resources.requests,
            &format!("initContainers[{i}].resources.requests"),
        )?;
        sum = sum.max(a);
    }
    let Amounts {
        cpu_milli,
        mem,
        gpu,
    } = sum.plus(Amounts::of(&spec.overhead, "overhead")?);
    // More than any node has (or than milli-CPUs can count): no fraction
    // left to speak of, an impossible exclusive request.
    let huge = cpu_milli / 1000 > u64::from(crate::request::MAX_CPUS);
    let cpus = if huge || cpu_milli.is_multiple_of(1000) {
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

/// Requested amounts of the resources the shape reads.
#[derive(Debug, Default, Clone, Copy)]
struct Amounts {
    cpu_milli: u64,
    mem: u64,
    gpu: u64,
}

impl Amounts {
    /// The amounts of one resource list; `at` is its path under `Pod.spec`.
    fn of(list: &BTreeMap<String, String>, at: &str) -> Result<Self, String> {
        let mut a = Self::default();
        for (name, v) in list {
            let field = || format!("Pod.spec.{at}.{name}");
            let q = Quantity::parse_json(v).map_err(|e| format!("{}: {e}", field()))?;
            if q.is_negative() {
                return Err(format!("{}: {v:?} is negative", field()));
            }
            match name.as_str() {
                "cpu" => a.cpu_milli = q.milli_ceil(),
                "memory" => a.mem = q.value_ceil(),
                "nvidia.com/gpu" => {
                    if !q.milli_ceil().is_multiple_of(1000) {
                        return Err(format!("{}: {v:?} is not a whole count", field()));
                    }
                    a.gpu = q.value_ceil();
                }
                _ => {}
            }
        }
        Ok(a)
    }

    fn plus(self, o: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.saturating_add(o.cpu_milli),
            mem: self.mem.saturating_add(o.mem),
            gpu: self.gpu.saturating_add(o.gpu),
        }
    }

    fn max(self, o: Self) -> Self {
        Self {
            cpu_milli: self.cpu_milli.max(o.cpu_milli),
            mem: self.mem.max(o.mem),
            gpu: self.gpu.max(o.gpu),
        }
    }
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
        assert!(
            e.contains("Pod.spec.containers[0].resources.requests.memory"),
            "{e}"
        );
    }

    /// Issue 15: what kube-scheduler v1.20 sends (Go field names, no json
    /// tags) is read, as are the tagged names of older schedulers; the
    /// effective request counts init containers and overhead.
    #[test]
    fn args_are_read_as_go_reads_them() {
        let body = br#"{"Pod": {"metadata": {"name": "p"}, "spec": {
            "containers": [{"resources": {"requests": {"cpu": "1"}}}, {"resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}],
            "overhead": {"memory": "1Mi"}}},
            "Nodes": null, "NodeNames": ["n1", "n2"]}"#;
        let args = parse_args(body).unwrap();
        assert_eq!(
            args.nodenames.as_deref(),
            Some(&["n1".to_owned(), "n2".to_owned()][..])
        );
        assert!(args.nodes.is_none());
        let s = pod_shape(&args.pod).unwrap();
        assert_eq!(
            (s.cpus, s.memory),
            (3, (1 << 30) + (1 << 20)),
            "max(sum, init) + overhead"
        );
        let old = parse_args(br#"{"pod": {"Spec": {"CONTAINERS": [{"resources": {"requests": {"cpu": "2"}}}]}}, "nodenames": ["n"], "extra": 1}"#).unwrap();
        assert_eq!(pod_shape(&old.pod).unwrap().cpus, 2);
        assert_eq!(candidates(&old), ["n"]);
        let nodes = parse_args(
            br#"{"Pod": {}, "nodes": {"Items": [{"Metadata": {"Name": "n3"}, "status": {}}]}}"#,
        )
        .unwrap();
        assert_eq!(candidates(&nodes), ["n3"]);
        for (body, needle) in [
            (&br#"{}"#[..], "missing field `Pod`"),
            (br#"{"Pod": null}"#, "Pod: invalid type: null"),
            (br#"{"Pod": {"spec": {"initContainers": [{"resources": {"requests": {"cpu": "x"}}}]}}}"#, "Pod.spec.initContainers[0].resources.requests.cpu"),
            (br#"{"Pod": {}, "NodeNames": "n1"}"#, "NodeNames: invalid type"),
        ] {
            let e = parse_args(body).and_then(|a| pod_shape(&a.pod).map(|_| ())).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        let out = serde_json::to_value([HostPriority {
            host: "n".into(),
            score: 3,
        }])
        .unwrap();
        assert_eq!(out, serde_json::json!([{"Host": "n", "Score": 3}]));
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
                e.starts_with("Pod.spec.containers[0].resources.requests.cpu: "),
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
            serde_json::json!({"NodeNames": [], "FailedNodes": {"me": "x"}})
        );
    }
}
