//! The NetworkPolicy loop (`weft_agent::policy::enforce`) against the real kernel: an
//! [`Enforcer`] on a thread inside a node netns, fed watch events through a channel (the
//! watches themselves are tested against a real API server in weft-e2e), with the
//! `inet weft-policy` table read back with `nft -j` after each step.
//!
//! What it shows: nothing is loaded before all three watches have listed; a pod label
//! change is an in-place update (the table keeps its handle); a hand edit is repaired by
//! the next update or the periodic full replacement; a stopped agent leaves the table
//! enforcing, and its successor keeps it until its own lists are complete, then replaces
//! it in one transaction. The CNI plugin's gate opens with the first table and shuts
//! when the agent stops.

mod datapath_support;

use std::sync::Arc;
use std::time::Duration;

use datapath_support::{exec, in_netns, poll, NetnsGuard};
use futures::StreamExt;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, Event};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_agent::metrics::Metrics;
use weft_agent::policy::enforce::Enforcer;
use weft_agent::policy::inputs::Input;
use weft_agent::policy::objects::{SlimNamespace, SlimPod};
use weft_common::policy_gate::{self, Gate};

const NODE: &str = "n1";
const WAIT: Duration = Duration::from_secs(10);

type Feed = mpsc::UnboundedSender<Result<Input, watcher::Error>>;

/// An enforcer running in `ns` until its feed is dropped.
struct Running {
    feed: Option<Feed>,
    metrics: Arc<Metrics>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(ns: &str, resync: Duration, gate: Option<std::path::PathBuf>) -> Running {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let enforcer = Enforcer {
            node: NODE.into(),
            metrics: metrics.clone(),
            warnings: None,
            resync,
            gate,
        };
        let thread = in_netns(ns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let result = rt.block_on(enforcer.run(stream.boxed()));
            assert!(result.is_err(), "the loop ends only with its watches");
        });
        Running {
            feed: Some(tx),
            metrics,
            thread: Some(thread),
        }
    }

    fn send(&self, input: Input) {
        self.feed.as_ref().unwrap().send(Ok(input)).unwrap();
    }

    fn syncs(&self) -> u64 {
        self.metrics.policy_syncs().0
    }

    /// Waits until the loop has completed more than `n` table updates.
    fn wait_syncs_above(&self, n: u64) {
        poll("a NetworkPolicy table update", WAIT, || {
            (self.syncs() > n).then_some(())
        });
    }

    fn stop(mut self) {
        self.feed.take();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn pod(name: &str, node: &str, ip: &str, app: &str) -> SlimPod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
        "status": {"phase": "Running", "podIPs": [{"ip": ip}]}
    }))
    .unwrap()
}

fn namespace(name: &str) -> SlimNamespace {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn web_policy() -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "web-from-client", "namespace": "default"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                         "ports": [{"port": "http"}]}]
        }
    }))
    .unwrap()
}

/// Lists of all three kinds, as a fresh watch delivers them.
fn list_all(r: &Running, pods: Vec<SlimPod>, policies: Vec<NetworkPolicy>) {
    r.send(Input::Pod(Event::Init));
    for p in pods {
        r.send(Input::Pod(Event::InitApply(p)));
    }
    r.send(Input::Pod(Event::InitDone));
    r.send(Input::Namespace(Event::Init));
    r.send(Input::Namespace(Event::InitApply(namespace("default"))));
    r.send(Input::Namespace(Event::InitDone));
    r.send(Input::Policy(Event::Init));
    for p in policies {
        r.send(Input::Policy(Event::InitApply(p)));
    }
    r.send(Input::Policy(Event::InitDone));
}

/// `nft <args>` in `ns`, which must succeed.
fn nft(ns: &str, args: &str) {
    let out = exec(ns, &format!("nft {args}"));
    assert!(
        out.status.success(),
        "nft {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn table(ns: &str) -> Option<Value> {
    let out = exec(ns, "nft -j list table inet weft-policy");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn table_handle(doc: &Value) -> u64 {
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["table"]["handle"].as_u64())
        .expect("table handle")
}

/// The elements of the table's sets whose names end with `suffix`, across sets.
fn elements(doc: &Value, suffix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in doc["nftables"].as_array().unwrap() {
        let set = &item["set"];
        if !set["name"].as_str().is_some_and(|n| n.ends_with(suffix)) {
            continue;
        }
        for e in set["elem"].as_array().into_iter().flatten() {
            out.push(match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
    }
    out.sort();
    out
}

#[test]
fn the_loop_programs_updates_repairs_and_hands_over_without_a_window() {
    let mut guard = NetnsGuard::default();
    let ns = guard.add("wpe-n1".into());
    let web = || pod("web", NODE, "10.244.1.2", "web");
    let client = |app| pod("client", "n2", "10.244.2.7", app);

    // Before the policy list is complete, nothing is loaded, and the CNI plugin's gate
    // stays shut.
    let dir = tempfile::tempdir().unwrap();
    let lock = policy_gate::lock_path(&dir.path().join("subnet.env"));
    std::fs::write(&lock, "").unwrap();
    let first = Running::start(&ns, Duration::from_secs(3600), Some(lock.clone()));
    first.send(Input::Pod(Event::InitApply(web())));
    first.send(Input::Pod(Event::InitDone));
    first.send(Input::Namespace(Event::InitDone));
    first.send(Input::Policy(Event::Apply(web_policy())));
    // A negative check: give the loop time it would need to act (it acts in ms).
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        table(&ns).is_none(),
        "a table loaded before the lists completed"
    );
    assert_eq!(first.syncs(), 0);

    list_all(&first, vec![web(), client("client")], vec![web_policy()]);
    first.wait_syncs_above(0);
    let doc = table(&ns).expect("the table is loaded");
    assert_eq!(elements(&doc, "isolated.in4"), ["10.244.1.2"]);
    assert_eq!(elements(&doc, ".peers4"), ["10.244.2.7"]);
    let handle = table_handle(&doc);
    assert_eq!(policy_gate::probe(&lock).unwrap(), Gate::Enforced);

    // The client relabelled out of the peers: an update in place.
    let before = first.syncs();
    first.send(Input::Pod(Event::Apply(client("other"))));
    first.wait_syncs_above(before);
    let doc = table(&ns).unwrap();
    assert!(elements(&doc, ".peers4").is_empty());
    assert_eq!(
        table_handle(&doc),
        handle,
        "the table was replaced, not updated"
    );

    // And back in: another update in place.
    let before = first.syncs();
    first.send(Input::Pod(Event::Apply(client("client"))));
    first.wait_syncs_above(before);
    let doc = table(&ns).unwrap();
    assert_eq!(elements(&doc, ".peers4"), ["10.244.2.7"]);
    assert_eq!(table_handle(&doc), handle);

    // Hand edits (the peers and the isolation emptied), then a change whose update no
    // longer fits the table (it deletes a peer that is gone): the loop falls back to a
    // replacement, which restores the isolation.
    for set in ["isolated.in4", "in.default.web-from-client.0.peers4"] {
        nft(&ns, &format!("flush set inet weft-policy {set}"));
    }
    let before = first.syncs();
    first.send(Input::Pod(Event::Apply(client("other"))));
    first.wait_syncs_above(before);
    let doc = table(&ns).unwrap();
    assert_eq!(elements(&doc, "isolated.in4"), ["10.244.1.2"]);
    assert!(elements(&doc, ".peers4").is_empty());
    assert_ne!(
        table_handle(&doc),
        handle,
        "the table should have been replaced"
    );
    first.send(Input::Pod(Event::Apply(client("client"))));

    // The agent stops: the table stays and keeps enforcing; new pods wait.
    first.stop();
    assert_eq!(policy_gate::probe(&lock).unwrap(), Gate::NotEnforced);
    let doc = table(&ns).expect("the table outlives the agent");
    assert_eq!(elements(&doc, "isolated.in4"), ["10.244.1.2"]);

    // Its successor, with the policy deleted meanwhile: until its policy list is
    // complete the old table stands untouched; then it is replaced whole.
    let second = Running::start(&ns, Duration::from_millis(500), None);
    second.send(Input::Pod(Event::InitApply(web())));
    second.send(Input::Pod(Event::InitDone));
    second.send(Input::Namespace(Event::InitDone));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(second.syncs(), 0);
    assert_eq!(
        elements(&table(&ns).unwrap(), "isolated.in4"),
        ["10.244.1.2"]
    );
    second.send(Input::Policy(Event::InitDone));
    second.wait_syncs_above(0);
    let doc = table(&ns).unwrap();
    assert!(elements(&doc, "isolated.in4").is_empty());
    assert!(elements(&doc, ".peers4").is_empty());

    // The policy comes back; a hand-deleted element is restored by the periodic full
    // replacement (every 500 ms here) with no change in the cluster.
    second.send(Input::Policy(Event::Apply(web_policy())));
    poll("the policy loaded", WAIT, || {
        (elements(&table(&ns)?, "isolated.in4") == ["10.244.1.2"]).then_some(())
    });
    nft(
        &ns,
        "delete element inet weft-policy isolated.in4 { 10.244.1.2 }",
    );
    poll("the hand edit repaired", WAIT, || {
        (elements(&table(&ns)?, "isolated.in4") == ["10.244.1.2"]).then_some(())
    });
    second.stop();
}
