//! `GET /v1/accelerations`: the node's acceleration book as JSON, `[]`
//! while no engine has written to it, records sorted by namespace, name and
//! uid; other methods are refused with the router's JSON error.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use griffin_runtime::accel::{AccelerationRecord, ContainerRecord, Outcome, PodRef, VfRecord};
use griffin_scheduler_glue::{http, node};
use tower::ServiceExt;

fn node(state: &std::path::Path) -> Arc<node::Node> {
    let topo = griffin_tests::synthetic::Shape {
        packages: 1,
        nodes_per_package: 2,
        cores_per_node: 2,
        threads: 1,
        devices_per_node: vec![],
        memory_per_node: 1 << 30,
    }
    .topology();
    let store = griffin_runtime::checkpoint::Store::open(state).unwrap();
    Arc::new(node::Node::new(
        topo,
        &store,
        Default::default(),
        "n".into(),
        "c".into(),
    ))
}

async fn call(node: &Arc<node::Node>, method: Method) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri("/v1/accelerations")
        .body(Body::empty())
        .unwrap();
    let res = http::router(node.clone(), 1 << 10)
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    // An empty body (axum's 405 before the daemon's guard) reads as null.
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

fn record(namespace: &str, name: &str, uid: &str, outcome: Outcome) -> AccelerationRecord {
    AccelerationRecord {
        pod: PodRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        },
        request: griffin_runtime::accel::parse(
            "Acceleration:\n  topologyAware: true\n  communication: '[\"SRIOV\"]'\n",
        )
        .unwrap(),
        containers: vec![ContainerRecord {
            name: "app".into(),
            cpus: griffin_runtime::cpuset::CpuSet::from_ids([2, 3]),
            mems: vec![1],
            devices: [(
                "intel.com/sriov".to_owned(),
                vec!["0000:3b:02.1".to_owned()],
            )]
            .into(),
            vf: Some(VfRecord {
                pci_address: "0000:3b:02.1".parse().unwrap(),
                netdev: Some("net1".into()),
                netns: Some("/var/run/netns/cni-1".into()),
            }),
            xdp_rules: vec![4],
        }],
        outcome,
        at: "2026-12-01T21:00:00Z".parse().unwrap(),
    }
}

#[tokio::test]
async fn the_book_is_served_sorted() {
    let state = tempfile::tempdir().unwrap();
    let node = node(state.path());
    assert_eq!(
        call(&node, Method::GET).await,
        (StatusCode::OK, serde_json::json!([]))
    );
    // What the engine does with its handle.
    let book = node.accelerations.clone();
    book.set(record("web", "b", "u2", Outcome::Realized));
    book.set(record(
        "db",
        "z",
        "u1",
        Outcome::Failed {
            reason: "no VF left".into(),
        },
    ));
    book.set(record("web", "a", "u3", Outcome::Released));
    let (status, body) = call(&node, Method::GET).await;
    assert_eq!(status, StatusCode::OK);
    let pods: Vec<(&str, &str, &str)> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["pod"]["namespace"].as_str().unwrap(),
                r["pod"]["name"].as_str().unwrap(),
                r["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [
            ("db", "z", "failed"),
            ("web", "a", "released"),
            ("web", "b", "realized")
        ]
    );
    let first = &body[0];
    assert_eq!(first["reason"], "no VF left");
    assert_eq!(first["at"], "2026-12-01T21:00:00Z");
    assert_eq!(first["request"]["placement"], "best-effort");
    assert_eq!(first["containers"][0]["cpus"], serde_json::json!([2, 3]));
    assert_eq!(first["containers"][0]["vf"]["pci_address"], "0000:3b:02.1");
    // What a client reads back is what the engine wrote.
    let back: Vec<AccelerationRecord> = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(back, book.snapshot());
    assert!(back[0].request.topology_aware);
    // Read-only.
    let (status, _) = call(&node, Method::POST).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
