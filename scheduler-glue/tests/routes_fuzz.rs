//! Both routers as the daemon composes them (guards included), driven
//! in-process with random paths, query strings, methods and bodies: every
//! answer is one of the documented statuses with the router's JSON error
//! body, never a panic, a 500 or a plain-text error. `PROPTEST_CASES` sets
//! the number of requests (the long campaign runs millions).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use griffin_scheduler_glue::{gsch, http, node, serve};
use proptest::prelude::*;
use tower::ServiceExt;

fn routers(state: &std::path::Path) -> (axum::Router, axum::Router) {
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
    let node = Arc::new(node::Node::new(
        topo,
        &store,
        Default::default(),
        "n".into(),
        "c".into(),
    ));
    let mut probes = griffin_runtime::config::Probes::default();
    probes
        .clusters
        .insert("c1".into(), vec!["127.0.0.1:9".parse().unwrap()]);
    let g = Arc::new(gsch::Gsch {
        node: node.clone(),
        probes,
        cache: Arc::default(),
    });
    let limits = serve::Limits::for_files(1024, 2);
    (
        serve::guard(
            http::router(node, 64 << 10).merge(gsch::resources_router(g.clone())),
            limits,
            http::error_body,
        ),
        serve::guard(gsch::router(g), limits, gsch::error_body),
    )
}

const PATHS: &[&str] = &[
    "/v1/node",
    "/v1/accelerations",
    "/v1/score",
    "/v1/score:batch",
    "/filter",
    "/prioritize",
    "/healthz",
    "/metrics",
    "/v1/gsch/resources",
    "/monitoring/clusters/c1/latency",
    "/monitoring/clusters/%FF/latency",
    "/monitoring/near-nodes/latency",
];

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

async fn check(router: &axum::Router, gs: bool, method: Method, uri: &str, body: Vec<u8>) {
    let Ok(req) = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return; // not a request hyper would parse either
    };
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{method} {uri}: {status} {text}"
    );
    if status.is_client_error() || status.is_server_error() {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} not JSON ({e}): {text}"));
        // The GS-Scheduler routes answer in their own error shape, on the
        // main listener too (which serves /v1/gsch/resources).
        let gs_shape = v["Error"]["ErrorCode"] == status.as_u16();
        if gs {
            assert!(gs_shape, "{uri}: {text}");
        } else {
            let gs_route = uri.starts_with("/v1/gsch/");
            assert!(
                v["error"].is_string() || (gs_route && gs_shape),
                "{uri}: {text}"
            );
        }
    }
}

proptest! {
    #[test]
    fn any_request_gets_a_documented_answer(
        path in 0..PATHS.len(),
        segment in proptest::collection::vec(any::<u8>(), 0..12),
        query in proptest::option::of("[a-zA-Z=&%0-9]{0,40}"),
        known_query in proptest::option::of((
            prop_oneof![Just("pingSize"), Just("pingCount"), Just("cpus"), Just("x")],
            "[-0-9a-z%]{0,12}",
        )),
        method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE), Just(Method::PUT)],
        body in proptest::collection::vec(any::<u8>(), 0..64),
        gs in any::<bool>(),
    ) {
        let state = tempfile::tempdir().unwrap();
        let (main, gsch) = routers(state.path());
        let mut uri = PATHS[path].replace("c1", &if segment.is_empty() { "c1".into() } else { percent(&segment) });
        if let Some(q) = query {
            uri.push('?');
            uri.push_str(&q);
        }
        if let Some((k, v)) = known_query {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str(&format!("{k}={v}"));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(if gs { &gsch } else { &main }, gs, method, &uri, body));
    }
}
