//! The controller against a scripted API server (tower-test): what it sends and how it
//! reacts to conflicts, validation errors and an API server that is down for a while.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower_test::mock::{self, Handle, SendResponse};
use weft_controller::allocator::Allocator;
use weft_controller::events::Events;
use weft_controller::metrics::Metrics;
use weft_controller::node::NodeCidrs;
use weft_controller::patch::{self, Outcome};
use weft_controller::reconcile::Reconciler;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, ApiHandle) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn respond(send: SendResponse<Response<Body>>, code: u16, body: Value) {
    let bytes = serde_json::to_vec(&body).unwrap();
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(bytes))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":reason,"reason":reason,"code":code})
}

fn node(name: &str, cidrs: &[&str]) -> Value {
    let mut spec = json!({});
    if let Some(first) = cidrs.first() {
        spec = json!({"podCIDR": first, "podCIDRs": cidrs});
    }
    json!({"apiVersion":"v1","kind":"Node","metadata":{"name":name,"uid":format!("uid-{name}"),
        "resourceVersion":"5"},"spec":spec,"status":{"images":[{"names":["x"],"sizeBytes":1}]}})
}

async fn body_json(req: Request<Body>) -> Value {
    let bytes = req.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn next(handle: &mut ApiHandle) -> (Request<Body>, SendResponse<Response<Body>>) {
    tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("client alive")
}

fn leader(v: bool) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(v);
    std::mem::forget(tx);
    rx
}

fn cidrs(s: &[&str]) -> Vec<ipnet::IpNet> {
    s.iter().map(|c| c.parse().unwrap()).collect()
}

#[tokio::test]
async fn patch_sends_merge_patch_with_field_manager() {
    let (client, mut handle) = mock_client();
    let api = kube::Api::<NodeCidrs>::all(client);
    let task = tokio::spawn(patch::assign(
        api,
        "n1".into(),
        cidrs(&["10.244.3.0/24", "fd00:10:244:3::/64"]),
        leader(true),
    ));
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
    assert!(
        req.uri()
            .query()
            .unwrap()
            .contains("fieldManager=weft-controller"),
        "{:?}",
        req.uri()
    );
    assert_eq!(
        req.headers()["content-type"],
        "application/merge-patch+json"
    );
    assert_eq!(
        body_json(req).await,
        json!({"spec":{"podCIDR":"10.244.3.0/24","podCIDRs":["10.244.3.0/24","fd00:10:244:3::/64"]}})
    );
    respond(
        send,
        200,
        node("n1", &["10.244.3.0/24", "fd00:10:244:3::/64"]),
    );
    match task.await.unwrap() {
        Outcome::Assigned(n) => assert_eq!(
            n.pod_cidrs().0,
            cidrs(&["10.244.3.0/24", "fd00:10:244:3::/64"])
        ),
        other => panic!("expected Assigned, got {other:?}"),
    }
}

async fn refused_then_reread(code: u16) {
    let (client, mut handle) = mock_client();
    let api = kube::Api::<NodeCidrs>::all(client);
    let task = tokio::spawn(patch::assign(
        api,
        "n1".into(),
        cidrs(&["10.244.3.0/24"]),
        leader(true),
    ));
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::PATCH);
    respond(
        send,
        code,
        status(code, if code == 409 { "Conflict" } else { "Invalid" }),
    );
    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/nodes/n1");
    respond(send, 200, node("n1", &["10.244.9.0/24"]));
    match task.await.unwrap() {
        Outcome::Refused(n) => assert_eq!(n.pod_cidrs().0, cidrs(&["10.244.9.0/24"])),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn conflict_409_rereads_the_node() {
    refused_then_reread(409).await;
}

#[tokio::test]
async fn invalid_422_rereads_the_node() {
    refused_then_reread(422).await;
}

#[tokio::test]
async fn server_error_is_transient_and_not_found_is_gone() {
    let (client, mut handle) = mock_client();
    let api = kube::Api::<NodeCidrs>::all(client);
    let task = tokio::spawn(patch::assign(
        api.clone(),
        "n1".into(),
        cidrs(&["10.244.3.0/24"]),
        leader(true),
    ));
    let (_, send) = next(&mut handle).await;
    respond(send, 503, status(503, "ServiceUnavailable"));
    assert!(matches!(task.await.unwrap(), Outcome::Transient(_)));
    let task = tokio::spawn(patch::assign(
        api,
        "n1".into(),
        cidrs(&["10.244.3.0/24"]),
        leader(true),
    ));
    let (_, send) = next(&mut handle).await;
    respond(send, 404, status(404, "NotFound"));
    assert!(matches!(task.await.unwrap(), Outcome::Gone));
}

#[tokio::test]
async fn no_patch_without_the_lease() {
    let (client, mut handle) = mock_client();
    let api = kube::Api::<NodeCidrs>::all(client);
    let out = patch::assign(api, "n1".into(), cidrs(&["10.244.3.0/24"]), leader(false)).await;
    assert!(matches!(out, Outcome::NotLeader));
    let nothing = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(
        !matches!(nothing, Ok(Some(_))),
        "a request was sent without the lease"
    );
}

/// The whole loop: list (one node adopted, one waiting), API down for the first patch,
/// the same value patched again after the retry, then a CIDRAssigned Event.
#[tokio::test]
async fn loop_rebuilds_then_allocates_retries_and_emits_event() {
    let (client, mut handle) = mock_client();
    let metrics = Arc::new(Metrics::default());
    let alloc = Allocator::from_config(&[("10.244.0.0/16".parse().unwrap(), 24)]);
    let events = Events::spawn(client.clone(), Some("test".into()), metrics.clone());
    let rec = Reconciler::new(client, alloc, events, metrics.clone(), leader(true), 8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rec.run(async move {
        let _ = stop_rx.await;
    }));

    let (req, send) = next(&mut handle).await;
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/api/v1/nodes");
    assert!(!req.uri().query().unwrap_or_default().contains("watch=true"));
    respond(
        send,
        200,
        json!({"apiVersion":"v1","kind":"NodeList","metadata":{"resourceVersion":"10"},
            "items":[node("old", &["10.244.0.0/24"]), node("new", &[])]}),
    );
    let mut parked = Vec::new(); // watch requests are held open
    let mut patches = 0;
    let mut event = None;
    while event.is_none() {
        let (req, send) = next(&mut handle).await;
        let query = req.uri().query().unwrap_or_default().to_string();
        match (req.method().clone(), req.uri().path().to_string()) {
            (http::Method::GET, p) if p == "/api/v1/nodes" && query.contains("watch=true") => {
                parked.push(send)
            }
            (http::Method::PATCH, p) if p == "/api/v1/nodes/new" => {
                patches += 1;
                assert!(metrics.is_ready(), "patched before the table was rebuilt");
                // "old" holds 10.244.0.0/24: the new node gets the next one, both times.
                assert_eq!(
                    body_json(req).await["spec"]["podCIDRs"],
                    json!(["10.244.1.0/24"])
                );
                if patches == 1 {
                    respond(send, 503, status(503, "ServiceUnavailable"));
                } else {
                    respond(send, 200, node("new", &["10.244.1.0/24"]));
                }
            }
            (http::Method::POST, p) if p == "/apis/events.k8s.io/v1/namespaces/default/events" => {
                let body = body_json(req).await;
                respond(send, 201, body.clone());
                event = Some(body);
            }
            (m, p) => panic!("unexpected request {m} {p}?{query}"),
        }
    }
    let event = event.unwrap();
    assert_eq!(event["reason"], "CIDRAssigned");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["kind"], "Node");
    assert_eq!(event["regarding"]["name"], "new");
    assert_eq!(event["reportingController"], "weft-controller");
    assert!(event["note"].as_str().unwrap().contains("10.244.1.0/24"));
    assert_eq!(patches, 2);
    let text = metrics.render();
    assert!(
        text.contains("weft_controller_allocations_total 1\n"),
        "{text}"
    );
    assert!(text.contains("weft_controller_errors_total 1\n"), "{text}");
    assert!(
        text.contains("weft_controller_subnets{family=\"ipv4\",state=\"used\"} 2.0\n"),
        "{text}"
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap();
    drop(parked);
}

/// An exhausted pool: a Warning CIDRNotAvailable, no patch, and no busy loop.
#[tokio::test]
async fn exhaustion_warns_once_and_waits() {
    let (client, mut handle) = mock_client();
    let metrics = Arc::new(Metrics::default());
    let alloc = Allocator::from_config(&[("10.244.0.0/24".parse().unwrap(), 24)]);
    let events = Events::spawn(client.clone(), None, metrics.clone());
    let rec = Reconciler::new(client, alloc, events, metrics.clone(), leader(true), 8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rec.run(async move {
        let _ = stop_rx.await;
    }));
    let (_, send) = next(&mut handle).await;
    respond(
        send,
        200,
        json!({"apiVersion":"v1","kind":"NodeList","metadata":{"resourceVersion":"10"},
            "items":[node("a", &["10.244.0.0/24"]), node("b", &[]), node("c", &["192.168.0.0/24"])]}),
    );
    let mut parked = Vec::new();
    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some((req, send))) = tokio::time::timeout_at(deadline, handle.next_request()).await
    {
        let query = req.uri().query().unwrap_or_default().to_string();
        match (req.method().clone(), req.uri().path().to_string()) {
            (http::Method::GET, _) if query.contains("watch=true") => parked.push(send),
            (http::Method::POST, p) if p.ends_with("/events") => {
                let body = body_json(req).await;
                reasons.push((
                    body["reason"].as_str().unwrap().to_string(),
                    body["regarding"]["name"].as_str().unwrap().to_string(),
                ));
                respond(send, 201, body);
            }
            (m, p) => panic!("unexpected request {m} {p}?{query}"),
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            ("CIDRConflict".to_string(), "c".to_string()),
            ("CIDRNotAvailable".to_string(), "b".to_string())
        ]
    );
    assert!(metrics
        .render()
        .contains("weft_controller_conflicts_total 1\n"));
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// A Node claiming a /17 where each node gets a /24: a Warning CIDRWrongSize on it, the
/// gauge says so, and nothing of the /17 is blocked: the waiting node gets the first /24,
/// which lies inside it.
#[tokio::test]
async fn wrong_size_pod_cidr_warns_and_blocks_nothing() {
    let (client, mut handle) = mock_client();
    let metrics = Arc::new(Metrics::default());
    let alloc = Allocator::from_config(&[("10.244.0.0/16".parse().unwrap(), 24)]);
    let events = Events::spawn(client.clone(), None, metrics.clone());
    let rec = Reconciler::new(client, alloc, events, metrics.clone(), leader(true), 8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rec.run(async move {
        let _ = stop_rx.await;
    }));
    let (_, send) = next(&mut handle).await;
    respond(
        send,
        200,
        json!({"apiVersion":"v1","kind":"NodeList","metadata":{"resourceVersion":"10"},
            "items":[node("greedy", &["10.244.0.0/17"]), node("new", &[])]}),
    );
    let mut parked = Vec::new();
    let mut warnings = Vec::new();
    let mut patched = None;
    while warnings.is_empty() || patched.is_none() {
        let (req, send) = next(&mut handle).await;
        let query = req.uri().query().unwrap_or_default().to_string();
        match (req.method().clone(), req.uri().path().to_string()) {
            (http::Method::GET, _) if query.contains("watch=true") => parked.push(send),
            (http::Method::PATCH, p) if p == "/api/v1/nodes/new" => {
                let body = body_json(req).await;
                patched = Some(body["spec"]["podCIDRs"].clone());
                respond(send, 200, node("new", &["10.244.0.0/24"]));
            }
            (http::Method::POST, p) if p.ends_with("/events") => {
                let body = body_json(req).await;
                if body["type"] == "Warning" {
                    warnings.push(body.clone());
                }
                respond(send, 201, body);
            }
            (m, p) => panic!("unexpected request {m} {p}?{query}"),
        }
    }
    assert_eq!(patched.unwrap(), json!(["10.244.0.0/24"]));
    let w = &warnings[0];
    assert_eq!(w["reason"], "CIDRWrongSize");
    assert_eq!(w["regarding"]["name"], "greedy");
    let note = w["note"].as_str().unwrap();
    assert!(
        note.contains("10.244.0.0/17") && note.contains("/24"),
        "{note}"
    );
    let text = metrics.render();
    assert!(
        text.contains("weft_controller_rejected_pod_cidrs{reason=\"wrong_size\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("weft_controller_subnets{family=\"ipv4\",state=\"used\"} 1.0\n"),
        "{text}"
    );
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}

/// Two Nodes claim one /24: the older keeps it whatever the names (the list comes in
/// name order, which a new Node can choose), and the Warning goes to the newer.
#[tokio::test]
async fn of_two_nodes_claiming_one_subnet_the_older_keeps_it() {
    let (client, mut handle) = mock_client();
    let metrics = Arc::new(Metrics::default());
    let alloc = Allocator::from_config(&[("10.244.0.0/16".parse().unwrap(), 24)]);
    let events = Events::spawn(client.clone(), None, metrics.clone());
    let rec = Reconciler::new(client, alloc, events, metrics.clone(), leader(true), 8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(rec.run(async move {
        let _ = stop_rx.await;
    }));
    let aged = |name: &str, created: &str| {
        let mut n = node(name, &["10.244.7.0/24"]);
        n["metadata"]["creationTimestamp"] = json!(created);
        n
    };
    let (_, send) = next(&mut handle).await;
    respond(
        send,
        200,
        json!({"apiVersion":"v1","kind":"NodeList","metadata":{"resourceVersion":"10"},
            "items":[aged("a-newcomer", "2026-06-01T00:00:00Z"), aged("z-veteran", "2024-01-01T00:00:00Z")]}),
    );
    let mut parked = Vec::new();
    let warning = loop {
        let (req, send) = next(&mut handle).await;
        let query = req.uri().query().unwrap_or_default().to_string();
        match (req.method().clone(), req.uri().path().to_string()) {
            (http::Method::GET, _) if query.contains("watch=true") => parked.push(send),
            (http::Method::POST, p) if p.ends_with("/events") => {
                let body = body_json(req).await;
                respond(send, 201, body.clone());
                break body;
            }
            (m, p) => panic!("unexpected request {m} {p}?{query}"),
        }
    };
    assert_eq!(warning["reason"], "CIDRConflict");
    assert_eq!(warning["regarding"]["name"], "a-newcomer");
    assert!(
        warning["note"].as_str().unwrap().contains("z-veteran"),
        "{warning}"
    );
    assert!(metrics
        .render()
        .contains("weft_controller_rejected_pod_cidrs{reason=\"overlap\"} 1\n"));
    stop_tx.send(()).unwrap();
    task.await.unwrap();
}
