//! The requests the agent sends to the API server, checked against a scripted mock
//! (tower-test): exact paths, query parameters, content types and bodies.

use std::collections::BTreeMap;

use futures::StreamExt;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Node;
use kube::client::Body;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{json, Value};
use weft_agent::metrics::Metrics;
use weft_agent::nodes::{NodeLite, SlimNode};
use weft_agent::{publish, run};
use weft_common::annotations as ann;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// The next request: method, path, query pairs, content type, JSON body (Null if none).
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
}

async fn next(handle: &mut Handle, reply: Value) -> Seen {
    let (req, send) = handle.next_request().await.expect("a request");
    let uri = req.uri().clone();
    let query = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%3D", "=").replace("%2F", "/"))
        })
        .collect();
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    Seen {
        method,
        path: uri.path().to_string(),
        query,
        content_type,
        body,
    }
}

fn node(name: &str, extra: Value) -> Value {
    let mut n = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "7"},
        "spec": {},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.11"}]},
    });
    if let (Some(obj), Some(more)) = (n.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    n
}

#[tokio::test]
async fn annotations_are_a_metadata_merge_patch_of_the_status_subresource() {
    let (client, mut handle) = mock();
    let api: Api<Node> = Api::all(client);
    let desired = publish::desired_annotations(
        "02:00:00:00:00:01".parse().unwrap(),
        "192.168.0.11".parse().unwrap(),
        1,
        &["10.244.1.0/24".parse().unwrap()],
    );
    let call =
        tokio::spawn(async move { publish::publish_annotations(&api, "n1", &desired).await });
    let seen = next(&mut handle, node("n1", json!({}))).await;
    call.await.unwrap().unwrap();
    assert_eq!(seen.method, Method::PATCH);
    // nodes/status: the agent may not patch `nodes` (manifests/rbac-agent.yaml).
    assert_eq!(seen.path, "/api/v1/nodes/n1/status");
    assert_eq!(
        seen.query.get("fieldManager").map(String::as_str),
        Some(ann::AGENT_FIELD_MANAGER)
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        seen.body,
        json!({"metadata": {"annotations": {
            "weft.dev/vtep-mac": "02:00:00:00:00:01",
            "weft.dev/public-ip": "192.168.0.11",
            "weft.dev/vni": "1",
        }}})
    );
}

#[tokio::test]
async fn condition_is_a_strategic_merge_patch_of_the_status_subresource() {
    let (client, mut handle) = mock();
    let api: Api<Node> = Api::all(client);
    let call = tokio::spawn(async move { publish::set_network_available(&api, "n1").await });
    let existing = node(
        "n1",
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated"},
        ]}}),
    );
    let get = next(&mut handle, existing).await;
    assert_eq!(
        (get.method, get.path.as_str()),
        (Method::GET, "/api/v1/nodes/n1/status")
    );
    let patch = next(&mut handle, node("n1", json!({}))).await;
    assert!(call.await.unwrap().unwrap(), "patched");
    assert_eq!(patch.method, Method::PATCH);
    assert_eq!(patch.path, "/api/v1/nodes/n1/status");
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some("weft-agent")
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    let conditions = patch.body["status"]["conditions"].as_array().unwrap();
    assert_eq!(
        conditions.len(),
        1,
        "only our entry; the list is merged by type"
    );
    let c = &conditions[0];
    assert_eq!(
        (c["type"].as_str(), c["status"].as_str()),
        (Some("NetworkUnavailable"), Some("False"))
    );
    assert_eq!(c["reason"], "WeftIsUp");
    assert!(
        c["lastTransitionTime"].as_str().unwrap().ends_with('Z'),
        "{c}"
    );
    assert_eq!(
        patch.body.as_object().unwrap().len(),
        1,
        "status only: {}",
        patch.body
    );
}

#[tokio::test]
async fn condition_already_set_is_left_alone() {
    let (client, mut handle) = mock();
    let api: Api<Node> = Api::all(client);
    let call = tokio::spawn(async move { publish::set_network_available(&api, "n1").await });
    let existing = node(
        "n1",
        json!({"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "WeftIsUp"},
        ]}}),
    );
    next(&mut handle, existing).await;
    assert!(!call.await.unwrap().unwrap(), "no patch");
}

fn list(items: Vec<Value>, rv: &str, cont: Option<&str>) -> Value {
    json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": rv, "continue": cont}, "items": items})
}

#[tokio::test]
async fn start_up_watches_the_own_node_until_it_has_pod_cidrs() {
    let (client, mut handle) = mock();
    let api: Api<SlimNode> = Api::all(client);
    let metrics = Metrics::default();
    let wait = tokio::spawn(async move { run::wait_for_pod_cidrs(&api, "n1", &metrics).await });

    let l = next(&mut handle, list(vec![node("n1", json!({}))], "10", None)).await;
    assert_eq!(l.path, "/api/v1/nodes");
    assert_eq!(
        l.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=n1")
    );
    assert!(!l.query.contains_key("watch"));

    // The watch (not a poll) delivers the update that assigns the pod CIDR.
    let (req, send) = handle.next_request().await.unwrap();
    let q = req.uri().query().unwrap().to_string();
    assert!(
        q.contains("watch=true") && q.contains("resourceVersion=10"),
        "{q}"
    );
    let event = json!({"type": "MODIFIED", "object": node("n1", json!({
        "metadata": {"name": "n1", "resourceVersion": "11", "annotations": {
            ann::VTEP_MAC: "02:00:00:00:00:01", "unrelated": "x"}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
    }))});
    let mut line = serde_json::to_vec(&event).unwrap();
    line.push(b'\n');
    send.send_response(Response::builder().body(Body::from(line)).unwrap());

    let lite: NodeLite = wait.await.unwrap().unwrap();
    assert_eq!(lite.name, "n1");
    assert_eq!(
        lite.pod_cidrs,
        vec!["10.244.1.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert_eq!(
        lite.internal_ips,
        vec!["192.168.0.11".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        publish::published_mac(&lite.annotations)
            .unwrap()
            .to_string(),
        "02:00:00:00:00:01"
    );
    assert!(!lite.annotations.contains_key("unrelated"));
}

#[tokio::test]
async fn node_list_is_paged_and_read_into_slim_nodes() {
    let (client, mut handle) = mock();
    let api: Api<SlimNode> = Api::all(client);
    let mut events = Box::pin(watcher(api, run::node_watch_config()));
    let reader = tokio::spawn(async move {
        let mut names = Vec::new();
        while let Some(e) = events.next().await {
            match e.unwrap() {
                watcher::Event::InitApply(n) => names.push(n.metadata.name.unwrap()),
                watcher::Event::InitDone => return names,
                _ => {}
            }
        }
        names
    });
    let first = next(
        &mut handle,
        list(
            vec![node("a", json!({})), node("b", json!({}))],
            "20",
            Some("tok"),
        ),
    )
    .await;
    assert_eq!(first.query.get("limit").map(String::as_str), Some("50"));
    let second = next(&mut handle, list(vec![node("c", json!({}))], "20", None)).await;
    assert_eq!(
        second.query.get("continue").map(String::as_str),
        Some("tok")
    );
    assert_eq!(reader.await.unwrap(), ["a", "b", "c"]);
}
