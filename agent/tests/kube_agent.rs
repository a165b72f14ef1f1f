//! The whole agent in-process against a scripted API server (tower-test) and a real
//! kernel datapath in a throwaway network namespace: start-up order, the MAC kept from
//! the Node annotation, the annotations and condition patches, peers programmed from the
//! Node list, and a shutdown that leaves the datapath in place.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use weft_agent::config::Opts;
use weft_common::annotations as ann;

mod scripted_api;
use scripted_api::*;

/// Runs the agent for node n1 in `ns` until it has published its annotations and set
/// the condition (which it does only after the first successful sync); returns the
/// annotations patch.
async fn run_agent(ns: &str, dir: &std::path::Path, own_annotations: Value) -> Value {
    let (service, mut handle): (_, Handle) =
        tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut opts = Opts::for_node("n1");
    opts.config = dir.join("net-conf.json");
    opts.subnet_file = dir.join("subnet.env");
    opts.metrics_addr = "127.0.0.1:0".parse().unwrap();
    let agent = spawn_agent(ns, opts, service, async {
        let _ = stop_rx.await;
    });

    let own = node("n1", 1, own_annotations);
    let peer = node(
        "n2",
        2,
        json!({ann::VTEP_MAC: "02:00:00:00:00:02", ann::PUBLIC_IP: "192.168.50.12"}),
    );
    let mut published = Value::Null;
    let mut held = Vec::new();
    let mut condition_set = false;
    let script = async {
        while !condition_set || published.is_null() {
            let (req, send) = handle.next_request().await.expect("agent stopped early");
            let query = req.uri().query().unwrap_or("").to_string();
            let path = req.uri().path().to_string();
            let method = req.method().clone();
            let body = req.into_body().collect_bytes().await.unwrap();
            match (method, path.as_str()) {
                (Method::GET, "/api/v1/nodes") if query.contains("watch=true") => held.push(send),
                (Method::GET, "/api/v1/nodes") if query.contains("fieldSelector") => reply(
                    send,
                    &json!({"metadata": {"resourceVersion": "5"}, "items": [own]}),
                ),
                (Method::GET, "/api/v1/nodes") => {
                    assert!(query.contains("limit=50"), "{query}");
                    reply(
                        send,
                        &json!({"metadata": {"resourceVersion": "5"}, "items": [own, peer]}),
                    )
                }
                (Method::GET, "/api/v1/nodes/n1/status") => reply(send, &own),
                // Both writes go through nodes/status: the annotations (metadata) and
                // the condition (status).
                (Method::PATCH, "/api/v1/nodes/n1/status") => {
                    let patch: Value = serde_json::from_slice(&body).unwrap();
                    if patch.get("metadata").is_some() {
                        published = patch;
                    } else {
                        assert_eq!(patch["status"]["conditions"][0]["reason"], "WeftIsUp");
                        condition_set = true;
                    }
                    reply(send, &own);
                }
                (m, p) => panic!("unexpected request {m} {p}?{query}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), script)
        .await
        .expect("the agent set the condition within 60 s");
    stop_tx.send(()).unwrap();
    agent
        .join()
        .unwrap()
        .expect("agent exits cleanly on shutdown");
    drop(held);
    published
}

#[tokio::test]
async fn agent_programs_peers_publishes_and_keeps_its_mac() {
    if !weft_common::require_root("agent_programs_peers_publishes_and_keeps_its_mac") {
        return;
    }
    let ns = NetnsGuard::new("kube");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("net-conf.json"),
        // The datapath's API calls are scripted here; NetworkPolicy (which watches
        // pods) is tested in policy_enforcer.rs and against a real API server.
        r#"{"clusterCIDRs":["10.244.0.0/16"],"networkPolicy":false}"#,
    )
    .unwrap();

    // First start: no MAC published yet; the agent publishes the device's.
    let published = run_agent(&ns.0, dir.path(), json!({})).await;
    let ann_of = |v: &Value, k: &str| {
        v["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let link = ip(&ns.0, "link show weft.1");
    let mac = ann_of(&published, ann::VTEP_MAC);
    assert!(link.contains(&mac) && !mac.is_empty(), "{mac} vs {link}");
    assert_eq!(ann_of(&published, ann::PUBLIC_IP), "192.168.50.11");
    assert_eq!(ann_of(&published, ann::VNI), "1");
    // Shutdown left the datapath in place, with the peer's route and the subnet file.
    let routes = ip(&ns.0, "route show proto 87");
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink"),
        "{routes}"
    );
    let sf = weft_common::subnet_file::NodeSubnet::read(&dir.path().join("subnet.env")).unwrap();
    assert_eq!(sf.mtu, 1450, "veth MTU 1500 minus the VXLAN overhead");

    // Restart after the device was lost: the MAC published on the Node is reused.
    ip(&ns.0, "link del weft.1");
    let kept = "02:aa:bb:cc:dd:01";
    let published = run_agent(
        &ns.0,
        dir.path(),
        json!({ann::VTEP_MAC: kept, ann::PUBLIC_IP: "192.168.50.11", ann::VNI: "1",
               ann::PUBLIC_IP_OVERRIDE: "203.0.113.11"}),
    )
    .await;
    assert!(ip(&ns.0, "link show weft.1").contains(kept));
    // Only the override-derived public IP differed, so that is what was re-published.
    assert_eq!(ann_of(&published, ann::PUBLIC_IP), "203.0.113.11");
    assert_eq!(ann_of(&published, ann::VTEP_MAC), kept);
}

#[tokio::test]
async fn agent_exits_when_its_node_comes_back_with_another_pod_cidr() {
    if !weft_common::require_root("agent_exits_when_its_node_comes_back_with_another_pod_cidr") {
        return;
    }
    let ns = NetnsGuard::new("recidr");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("net-conf.json"),
        // The datapath's API calls are scripted here; NetworkPolicy (which watches
        // pods) is tested in policy_enforcer.rs and against a real API server.
        r#"{"clusterCIDRs":["10.244.0.0/16"],"networkPolicy":false}"#,
    )
    .unwrap();
    let (service, mut handle): (_, Handle) =
        tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut opts = Opts::for_node("n1");
    opts.config = dir.path().join("net-conf.json");
    opts.subnet_file = dir.path().join("subnet.env");
    opts.metrics_addr = "127.0.0.1:0".parse().unwrap();
    let agent = spawn_agent(&ns.0, opts, service, std::future::pending());

    let own = node("n1", 1, json!({}));
    let mut unallocated = own.clone();
    unallocated["spec"] = json!({});
    unallocated["metadata"]["resourceVersion"] = json!("7");
    let mut moved = node("n1", 3, json!({}));
    moved["metadata"]["resourceVersion"] = json!("8");
    let mut deleted = own.clone();
    deleted["metadata"]["resourceVersion"] = json!("6");
    // Deleted, re-registered without a pod CIDR, then given another one.
    let events: String = [
        ("DELETED", &deleted),
        ("ADDED", &unallocated),
        ("MODIFIED", &moved),
    ]
    .iter()
    .map(|(t, o)| json!({"type": t, "object": o}).to_string() + "\n")
    .collect();
    let mut held = Vec::new();
    let mut sent_events = false;
    let script = async {
        // Answers until the agent exits and drops its client.
        while let Some((req, send)) = handle.next_request().await {
            let query = req.uri().query().unwrap_or("").to_string();
            let path = req.uri().path().to_string();
            let method = req.method().clone();
            match (method, path.as_str()) {
                (Method::GET, "/api/v1/nodes")
                    if query.contains("watch=true")
                        && !query.contains("fieldSelector")
                        && !sent_events =>
                {
                    sent_events = true;
                    send.send_response(
                        Response::builder()
                            .body(Body::from(events.clone().into_bytes()))
                            .unwrap(),
                    );
                }
                (Method::GET, "/api/v1/nodes") if query.contains("watch=true") => held.push(send),
                (Method::GET, "/api/v1/nodes") => reply(
                    send,
                    &json!({"metadata": {"resourceVersion": "5"}, "items": [own]}),
                ),
                (Method::GET, "/api/v1/nodes/n1/status")
                | (Method::PATCH, "/api/v1/nodes/n1/status") => reply(send, &own),
                (m, p) => panic!("unexpected request {m} {p}?{query}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), script)
        .await
        .expect("the agent exited within 60 s");
    assert!(sent_events);
    let err = agent
        .join()
        .unwrap()
        .expect_err("the agent exits on a new pod CIDR");
    let changed = err
        .downcast_ref::<weft_agent::reconcile::PodCidrsChanged>()
        .unwrap_or_else(|| panic!("not PodCidrsChanged: {err:#}"));
    assert_eq!(changed.from, vec!["10.244.1.0/24".parse().unwrap()]);
    assert_eq!(changed.to, vec!["10.244.3.0/24".parse().unwrap()]);
    // The datapath was kept meanwhile and is left for the restarted agent to rebuild.
    assert!(ip(&ns.0, "addr show dev weft0").contains("10.244.1.1/24"));
    drop(held);
}
