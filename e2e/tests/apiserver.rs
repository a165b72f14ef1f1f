//! The harness itself against a real etcd + kube-apiserver: it starts, serves the admin,
//! issues service-account tokens that RBAC then governs, and leaves nothing behind.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use weft_e2e::fixtures::{kubelet_like_node, node_ip};
use weft_e2e::harness::{client_from, ControlPlane};

#[tokio::test]
async fn control_plane_serves_admin_and_service_accounts_then_stops() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let nodes: Api<Node> = Api::all(cp.client().await.unwrap());
    nodes
        .create(
            &PostParams::default(),
            &kubelet_like_node("harness-node", node_ip(1)),
        )
        .await
        .expect("admin creates a kubelet-like Node");
    let got = nodes.get("harness-node").await.unwrap();
    assert_eq!(got.status.unwrap().images.unwrap().len(), 85);

    // A service account without any RoleBinding is authenticated but may not list Nodes.
    let kc = cp
        .service_account_kubeconfig("weft-system", "nobody")
        .await
        .unwrap();
    let sa_nodes: Api<Node> = Api::all(client_from(&kc).await.unwrap());
    match sa_nodes.list(&Default::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("expected 403 for a service account without RBAC, got {other:?}"),
    }

    let dir = cp.dir.clone();
    let log = cp.log_path("kube-apiserver");
    assert!(log.is_file());
    drop(cp);
    assert!(!dir.exists(), "control plane directory removed on drop");
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        leftover.stdout.is_empty(),
        "no process of this control plane survives"
    );
}
