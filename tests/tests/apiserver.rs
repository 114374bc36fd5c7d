//! The API server harness itself: it starts, serves both users as RBAC
//! says, and stops its processes when dropped.

use griffin_tests::apiserver::{ApiServer, User};

#[tokio::test]
#[ignore = "needs GRIFFIN_KUBE_BIN: run by cargo xtask e2e"]
async fn apiserver_serves_admin_and_refuses_griffin_without_rbac() {
    let s = ApiServer::start().await;
    let admin = s.client();
    let v = admin.apiserver_version().await.expect("version");
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "20"), "{v:?}");
    // The API server's bootstrap controller makes `default` shortly after
    // it serves (seen: the other three namespaces first).
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let names: Vec<String> = ns
            .list(&Default::default())
            .await
            .expect("list namespaces")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        if names.iter().any(|n| n == "default") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no namespace default within 30 s: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // No RBAC grant yet: Griffin's service account is refused.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(s.client_as(User::Griffin));
    match nodes.get("anything").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("expected 403 for griffin, got {other:?}"),
    }
    let pids: Vec<u32> = s.pids();
    let dir = s.path().to_owned();
    drop(s);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|st| st.contains(") Z ")),
            "process {pid} still runs after drop"
        );
    }
    assert!(!dir.exists(), "{} left after drop", dir.display());
}
