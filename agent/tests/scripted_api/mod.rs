//! Scaffolding for the tests that run the whole agent in-process against a scripted API
//! server (tower-test) and a real datapath in a throwaway network namespace.
#![allow(dead_code)]

use std::process::Command;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(ns: &str, args: &str) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    sh(&v)
}

pub struct NetnsGuard(pub String);

impl NetnsGuard {
    pub fn new(tag: &str) -> Self {
        let name = format!("wa-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let g = NetnsGuard(name);
        ip(&g.0, "link set lo up");
        ip(&g.0, "link add v0 type veth peer name v1");
        ip(&g.0, "addr add 192.168.50.11/24 dev v0");
        ip(&g.0, "link set v0 up");
        ip(&g.0, "link set v1 up");
        g
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

pub fn node(name: &str, third: u8, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "5", "annotations": annotations},
        "spec": {"podCIDR": format!("10.244.{third}.0/24"), "podCIDRs": [format!("10.244.{third}.0/24")]},
        "status": {"addresses": [{"type": "InternalIP", "address": format!("192.168.50.{}", 10 + third)}]},
    })
}

pub fn reply(send: tower_test::mock::SendResponse<Response<Body>>, v: &Value) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(v).unwrap()))
            .unwrap(),
    );
}

/// Runs the future `make` builds on a current-thread runtime, on a thread inside the
/// named netns (the future is built there, so it need not be `Send`).
pub fn block_on_in_netns<T, F, Fut>(ns: &str, make: F) -> std::thread::JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let ns_path = std::path::PathBuf::from(format!("/var/run/netns/{ns}"));
    std::thread::spawn(move || {
        weft_common::netns::Netns::open(&ns_path)
            .unwrap()
            .enter()
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(make())
    })
}

/// The whole agent with `opts`, in the named netns, talking to the scripted API server
/// behind `service`, until `shutdown` completes.
pub fn spawn_agent(
    ns: &str,
    opts: weft_agent::config::Opts,
    service: tower_test::mock::Mock<Request<Body>, Response<Body>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    block_on_in_netns(ns, move || async move {
        let client = kube::Client::new(service, "default");
        weft_agent::run::run_with(opts, Some(client), shutdown).await
    })
}
