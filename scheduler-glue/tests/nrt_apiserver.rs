//! The NodeResourceTopology publisher against a real kube-apiserver
//! (v1.20.2, `griffin_tests::apiserver`): the CRD installs from
//! `deploy/05-nrt-crd.yaml`, Griffin's service account with exactly the
//! grants of `deploy/10-rbac.yaml` creates and replaces the object, the API
//! server's schema validation accepts it (and refuses a malformed one), and
//! an allocation through the runtime's Manager is reflected (the latency is
//! printed, not asserted).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use griffin_devices::{DeviceKind, Topology};
use griffin_runtime::alloc::{DeviceWant, Policy, Request};
use griffin_runtime::checkpoint::{Store, Target};
use griffin_runtime::config::TopologyScope;
use griffin_runtime::cpuset::CpuSet;
use griffin_runtime::enforce::Version;
use griffin_runtime::fake::FakeCpusets;
use griffin_runtime::manager::Manager;
use griffin_runtime::plugin::backend::NodeBackend;
use griffin_runtime::pools::{PoolSpec, Pools};
use griffin_scheduler_glue::node::Node;
use griffin_scheduler_glue::nrt::{self, NodeResourceTopology, PodRef};
use griffin_tests::apiserver::{ApiServer, User};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(20);

fn deploy(file: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The YAML documents of a manifest, as JSON values.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(yaml)
        .map(|d| serde_json::Value::deserialize(d).expect("manifest document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Creates every object of a manifest (as admin), by its apiVersion/kind.
async fn create_all(client: &kube::Client, yaml: &str) {
    for doc in documents(yaml) {
        let obj: DynamicObject = serde_json::from_value(doc).expect("object");
        let tm = obj.types.clone().expect("apiVersion and kind");
        let (group, version) = tm
            .api_version
            .rsplit_once('/')
            .unwrap_or(("", &tm.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &tm.kind);
        let plural = format!("{}s", tm.kind.to_lowercase());
        let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let api: Api<DynamicObject> = match &obj.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", tm.kind, obj.metadata.name));
    }
}

/// Installs the CRD from deploy/ and waits until it is established.
async fn install_crd(client: &kube::Client) {
    create_all(client, &deploy("05-nrt-crd.yaml")).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let t = Instant::now();
    loop {
        let c = crds
            .get("noderesourcetopologies.topology.node.k8s.io")
            .await
            .expect("CRD");
        let established = c
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(t.elapsed() < DEADLINE, "CRD not established");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Griffin's namespace, service account and RBAC from deploy/.
async fn install_rbac(client: &kube::Client) {
    create_all(client, &deploy("00-namespace.yaml")).await;
    create_all(client, &deploy("10-rbac.yaml")).await;
}

fn topo() -> Topology {
    griffin_tests::synthetic::two_nodes_with_gpus(4 << 30)
}

fn resource<'a>(o: &'a NodeResourceTopology, zone: &str, name: &str) -> &'a nrt::ResourceInfo {
    o.zones
        .iter()
        .find(|z| z.name == zone)
        .and_then(|z| z.resources.iter().find(|r| r.name == name))
        .unwrap_or_else(|| panic!("{zone} has no {name}"))
}

fn available_cpus(o: &NodeResourceTopology) -> u64 {
    o.zones
        .iter()
        .flat_map(|z| &z.resources)
        .filter(|r| r.name == "cpu")
        .map(|r| r.available.parse::<u64>().unwrap())
        .sum()
}

fn attribute<'a>(o: &'a NodeResourceTopology, name: &str) -> Option<&'a str> {
    o.attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// Polls the object until `ok` holds; returns it and how long it took.
async fn wait_for(
    api: &Api<NodeResourceTopology>,
    name: &str,
    what: &str,
    ok: impl Fn(&NodeResourceTopology) -> bool,
) -> (NodeResourceTopology, Duration) {
    let t = Instant::now();
    loop {
        if let Ok(Some(o)) = api.get_opt(name).await {
            if ok(&o) {
                return (o, t.elapsed());
            }
        }
        assert!(
            t.elapsed() < DEADLINE,
            "{what}: not seen within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GRIFFIN_KUBE_BIN: run by cargo xtask e2e"]
async fn publisher_creates_the_object_and_follows_allocations() {
    let s = ApiServer::start().await;
    let admin = s.client();
    install_crd(&admin).await;
    install_rbac(&admin).await;
    // The Node the object is owned by.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(admin.clone());
    let node_obj = nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}
            }))
            .unwrap(),
        )
        .await
        .expect("creating the Node");

    // Griffin's side: node view, allocation manager on the in-memory
    // cpuset seam, device pools.
    let topo = topo();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let node = Arc::new(Node::new(
        topo.clone(),
        &store,
        CpuSet::new(),
        "worker-1".into(),
        "test".into(),
    ));
    let spec: PoolSpec = serde_json::from_value(
        serde_json::json!({"resource": "example.com/gpu", "kinds": ["gpu"]}),
    )
    .unwrap();
    let pools = Pools::discover(&topo, &[spec.to_def("pools[0]")]).unwrap();
    let plugins = Arc::new(NodeBackend::new(
        pools,
        &BTreeMap::new(),
        Duration::from_secs(120),
    ));
    let (pods_tx, pods) = tokio::sync::watch::channel(Some(BTreeSet::new()));
    let stop = CancellationToken::new();
    let settings = nrt::Settings {
        policy: Policy::SingleNumaNode,
        scope: TopologyScope::Container,
    };
    tokio::spawn(nrt::run(
        s.client_as(User::Griffin),
        nrt::Sources {
            node: node.clone(),
            plugins: Some(plugins),
            pods: Some(pods),
        },
        settings,
        nrt::Pace::default(),
        stop.clone(),
    ));

    // Created, owned by the Node, with the attributes scheduler-plugins
    // reads.
    let api: Api<NodeResourceTopology> = Api::all(admin.clone());
    let (o, took) = wait_for(&api, "worker-1", "object created", |_| true).await;
    println!(
        "object created {:.1} ms after the publisher started",
        took.as_secs_f64() * 1e3
    );
    let owner = o.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1, "{owner:?}");
    assert_eq!(owner[0].kind, "Node");
    assert_eq!(Some(&owner[0].uid), node_obj.metadata.uid.as_ref());
    assert_eq!(
        attribute(&o, "topologyManagerPolicy"),
        Some("single-numa-node")
    );
    assert_eq!(attribute(&o, "topologyManagerScope"), Some("container"));
    assert_eq!(
        attribute(&o, "nodeTopologyPodsFingerprint"),
        Some(nrt::fingerprint(&[]).as_str())
    );
    assert_eq!(o.zones.len(), 2);
    assert_eq!(available_cpus(&o), 8);
    for z in ["node-0", "node-1"] {
        let r = resource(&o, z, "example.com/gpu");
        assert_eq!(
            (
                r.capacity.as_str(),
                r.allocatable.as_str(),
                r.available.as_str()
            ),
            ("2", "2", "2"),
            "{z}"
        );
    }

    // An allocation through the Manager (what the control socket does),
    // then the daemon's change signal.
    let mut m = Manager::open(
        topo.clone(),
        dir.path(),
        FakeCpusets::new(Version::V2, CpuSet::from(&topo.online_cpus), vec![0, 1]),
        CpuSet::new(),
    )
    .unwrap();
    let v = m
        .allocate(
            Request {
                cpus: 3,
                devices: vec![DeviceWant::Kind {
                    kind: DeviceKind::Gpu,
                    count: 1,
                }],
                policy: Policy::SingleNumaNode,
                ..Request::default()
            },
            Target::None,
        )
        .unwrap();
    let zone = format!("node-{}", v.mems[0]);
    let t0 = Instant::now();
    node.invalidate();
    let (o, _) = wait_for(&api, "worker-1", "allocation reflected", |o| {
        available_cpus(o) == 5
    })
    .await;
    println!(
        "allocation of 3 CPUs and a GPU on {zone} reflected {:.1} ms after the change signal",
        t0.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(resource(&o, &zone, "cpu").available, "1");
    assert_eq!(resource(&o, &zone, "example.com/gpu").available, "1");

    // Released: back to 8.
    m.release(&v.id).unwrap();
    drop(m);
    let t0 = Instant::now();
    node.invalidate();
    wait_for(&api, "worker-1", "release reflected", |o| {
        available_cpus(o) == 8
    })
    .await;
    println!(
        "release reflected {:.1} ms after the change signal",
        t0.elapsed().as_secs_f64() * 1e3
    );

    // A pod starts running: the fingerprint follows.
    let pods = BTreeSet::from([PodRef {
        namespace: "default".into(),
        name: "web-1".into(),
    }]);
    let want = nrt::fingerprint(&pods);
    let t0 = Instant::now();
    pods_tx.send_replace(Some(pods));
    wait_for(&api, "worker-1", "fingerprint updated", |o| {
        attribute(o, "nodeTopologyPodsFingerprint") == Some(want.as_str())
    })
    .await;
    println!(
        "pod set change reflected {:.1} ms after it",
        t0.elapsed().as_secs_f64() * 1e3
    );
    stop.cancel();
}

#[tokio::test]
#[ignore = "needs GRIFFIN_KUBE_BIN: run by cargo xtask e2e"]
async fn the_apiserver_validates_objects_against_the_crd_schema() {
    let s = ApiServer::start().await;
    let admin = s.client();
    install_crd(&admin).await;
    let topo = topo();
    let state = griffin_runtime::alloc::State::new(CpuSet::new());
    let obj = nrt::build(&nrt::Input {
        node_name: "n1",
        topo: &topo,
        state: &state,
        pools: None,
        settings: nrt::Settings {
            policy: Policy::BestEffort,
            scope: TopologyScope::Pod,
        },
        pods: None,
    });
    let api: Api<NodeResourceTopology> = Api::all(admin.clone());
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("the built object is valid");
    // Nothing pruned: every field is in the schema.
    assert_eq!(created.zones, obj.zones);
    assert_eq!(created.attributes, obj.attributes);
    assert_eq!(created.topology_policies, obj.topology_policies);

    // A quantity that is no quantity, and a zone without its type, are
    // refused by the schema (422).
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(nrt::GROUP, nrt::VERSION, nrt::KIND),
        nrt::PLURAL,
    );
    let dynamic: Api<DynamicObject> = Api::all_with(admin.clone(), &ar);
    let mut bad = serde_json::to_value(&obj).unwrap();
    bad["metadata"]["name"] = "bad-quantity".into();
    bad["zones"][0]["resources"][0]["available"] = "lots".into();
    let mut no_type = serde_json::to_value(&obj).unwrap();
    no_type["metadata"]["name"] = "no-type".into();
    no_type["zones"][0].as_object_mut().unwrap().remove("type");
    for (what, v) in [("bad quantity", bad), ("zone without type", no_type)] {
        let o: DynamicObject = serde_json::from_value(v).unwrap();
        match dynamic.create(&PostParams::default(), &o).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{what}: {e:?}"),
            other => panic!("{what}: expected 422, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GRIFFIN_KUBE_BIN: run by cargo xtask e2e"]
async fn the_daemons_one_pod_watch_gives_the_fingerprint_its_running_pods() {
    use griffin_runtime::pods::watch::NodePods;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use kube::api::{DeleteParams, PostParams};
    let s = ApiServer::start().await;
    let admin = s.client();
    install_rbac(&admin).await;
    // The ServiceAccount admission plugin wants the namespace's default
    // account (no controller manager makes it here).
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap(),
    )
    .await
    .expect("creating the default ServiceAccount");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    // On worker-1: web-1 running, web-2 pending; on worker-2: other running.
    for (name, node, phase) in [
        ("web-1", "worker-1", Some("Running")),
        ("web-2", "worker-1", None),
        ("other", "worker-2", Some("Running")),
    ] {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": false,
                "containers": [{"name": "work", "image": "busybox"}],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
        if let Some(phase) = phase {
            let mut p = pods.get(name).await.unwrap();
            p.status = Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            pods.replace_status(name, &PostParams::default(), &p)
                .await
                .unwrap_or_else(|e| panic!("status of pod {name}: {e}"));
        }
    }
    // Griffin's service account, its grants: one watch, two readers.
    let stop = CancellationToken::new();
    let node_pods = NodePods::follow(s.client_as(User::Griffin), "worker-1", stop.clone());
    // Several readers wait for the first listing at once (the pods engine
    // and the fingerprint do): each is woken.
    let running = nrt::running_pods(&node_pods, stop.clone());
    let again = nrt::running_pods(&node_pods, stop.clone());
    let listed = tokio::time::timeout(DEADLINE, node_pods.listed()).await;
    assert!(matches!(listed, Ok(true)), "the first listing never came");
    let want = |names: &[&str]| -> BTreeSet<PodRef> {
        names
            .iter()
            .map(|n| PodRef {
                namespace: "default".into(),
                name: (*n).into(),
            })
            .collect()
    };
    let until = |rx: &tokio::sync::watch::Receiver<Option<BTreeSet<PodRef>>>, set| {
        let (mut rx, last) = (rx.clone(), rx.clone());
        async move {
            let got = tokio::time::timeout(DEADLINE, rx.wait_for(|s| s.as_ref() == Some(&set)))
                .await
                .map(|r| r.map(drop));
            assert!(
                matches!(got, Ok(Ok(()))),
                "running pods never became {set:?}: {:?}",
                *last.borrow()
            );
        }
    };
    until(&running, want(&["web-1"])).await;
    until(&again, want(&["web-1"])).await;
    assert_eq!(
        node_pods.store().len(),
        2,
        "the watch holds worker-1's pods only"
    );
    pods.delete("web-1", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    until(&running, want(&[])).await;
    stop.cancel();
}
