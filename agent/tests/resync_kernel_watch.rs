//! Hand-made deletions of weft's entries are repaired by the kernel notifications, not the
//! periodic resync: the whole agent runs in a throwaway netns against a scripted API
//! server with the resync interval set to an hour; a route, a neighbour and an FDB entry
//! deleted by hand come back within seconds.

use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::json;
use tokio::sync::oneshot;
use weft_agent::config::Opts;
use weft_common::annotations as ann;

mod scripted_api;
use scripted_api::*;

fn fdb(ns: &str) -> String {
    sh(&["bridge", "-n", ns, "fdb", "show", "dev", "weft.1"])
}

/// Answers the agent's requests for as long as it runs; watches are held open.
async fn serve(mut handle: Handle) {
    let own = node("n1", 1, json!({}));
    let peer = node(
        "n2",
        2,
        json!({ann::VTEP_MAC: "02:00:00:00:00:02", ann::PUBLIC_IP: "192.168.50.12"}),
    );
    let mut held = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let query = req.uri().query().unwrap_or("").to_string();
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, "/api/v1/nodes") if query.contains("watch=true") => held.push(send),
            (Method::GET, "/api/v1/nodes") if query.contains("fieldSelector") => reply(
                send,
                &json!({"metadata": {"resourceVersion": "5"}, "items": [own]}),
            ),
            (Method::GET, "/api/v1/nodes") => reply(
                send,
                &json!({"metadata": {"resourceVersion": "5"}, "items": [own, peer]}),
            ),
            (Method::PATCH | Method::GET, "/api/v1/nodes/n1" | "/api/v1/nodes/n1/status") => {
                reply(send, &own)
            }
            (m, p) => panic!("unexpected request {m} {p}?{query}"),
        }
    }
}

/// Polls `probe` until it holds or `within` has passed; returns how long it took.
fn wait_for(within: Duration, what: &str, probe: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !probe() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_deleted_by_hand_return_without_a_periodic_resync() {
    if !weft_common::require_root("entries_deleted_by_hand_return_without_a_periodic_resync") {
        return;
    }
    let ns = NetnsGuard::new("watch");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("net-conf.json"),
        // The datapath is under test; NetworkPolicy (which watches pods) is not.
        r#"{"clusterCIDRs":["10.244.0.0/16"],"networkPolicy":false}"#,
    )
    .unwrap();
    let (service, handle): (_, Handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut opts = Opts::for_node("n1");
    opts.config = dir.path().join("net-conf.json");
    opts.subnet_file = dir.path().join("subnet.env");
    opts.metrics_addr = "127.0.0.1:0".parse().unwrap();
    opts.resync_interval = Duration::from_secs(3600);
    let agent = spawn_agent(&ns.0, opts, service, async {
        let _ = stop_rx.await;
    });

    let n = ns.0.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let route = || ip(&n, "route show proto 87").contains("10.244.2.0/24 via 10.244.2.0");
        let neigh =
            || ip(&n, "neigh show dev weft.1").contains("10.244.2.0 lladdr 02:00:00:00:00:02");
        let fdb_entry = || fdb(&n).contains("02:00:00:00:00:02 dst 192.168.50.12");
        wait_for(Duration::from_secs(60), "first sync", || {
            route() && neigh() && fdb_entry()
        });

        ip(&n, "route del 10.244.2.0/24 proto 87");
        assert!(!route());
        let took = wait_for(Duration::from_secs(3), "route repaired", route);
        eprintln!("route repaired after {took:?}");

        ip(&n, "neigh del 10.244.2.0 dev weft.1");
        wait_for(Duration::from_secs(3), "neighbour repaired", neigh);

        sh(&[
            "bridge",
            "-n",
            &n,
            "fdb",
            "del",
            "02:00:00:00:00:02",
            "dev",
            "weft.1",
            "dst",
            "192.168.50.12",
        ]);
        wait_for(Duration::from_secs(3), "FDB entry repaired", fdb_entry);

        // Someone sets the device down: its routes vanish without a route notification.
        ip(&n, "link set weft.1 down");
        wait_for(Duration::from_secs(3), "device and route repaired", || {
            ip(&n, "link show weft.1").contains(",UP") && route()
        });
    });
    let result = checks.await;
    stop_tx.send(()).unwrap();
    let agent_result = agent.join().unwrap();
    server.abort();
    result.unwrap();
    agent_result.expect("agent exits cleanly on shutdown");
}

/// The premise of "no feedback loop": the kernel stamps route notifications with the
/// port id of the socket that asked for the change, so the agent's own changes are
/// ignored while the same change made by `ip` is reported.
#[test]
fn own_changes_are_ignored_hand_made_ones_are_reported() {
    if !weft_common::require_root("own_changes_are_ignored_hand_made_ones_are_reported") {
        return;
    }
    let ns = NetnsGuard::new("own");
    ip(
        &ns.0,
        "link add weft.1 type vxlan id 1 dstport 8472 nolearning",
    );
    ip(&ns.0, "link set weft.1 up");
    let name = ns.0.clone();
    block_on_in_netns(&ns.0, move || async move {
        use netlink_packet_route::route::RouteProtocol;
        use rtnetlink::sys::AsyncSocket;
        let (mut conn, handle, _) = rtnetlink::new_connection().unwrap();
        let port = conn
            .socket_mut()
            .socket_mut()
            .bind_auto()
            .unwrap()
            .port_number();
        tokio::spawn(conn);
        let ifindex = weft_common::bridge::link_by_name(&handle, "weft.1")
            .await
            .unwrap()
            .unwrap()
            .header
            .index;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let filter = weft_agent::kernel_watch::Filter {
            device: "weft.1".into(),
            ifindex,
            own_port: Some(port),
        };
        tokio::spawn(weft_agent::kernel_watch::subscribe(filter, tx).unwrap());
        let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix("10.244.2.0".parse().unwrap(), 24)
            .output_interface(ifindex)
            .protocol(RouteProtocol::Other(87))
            .build();
        handle.route().add(route).execute().await.unwrap();
        // Notifications arrive in order: had our own add been reported, it would
        // come first.
        let n = name.clone();
        tokio::task::spawn_blocking(move || ip(&n, "route del 10.244.2.0/24 proto 87"))
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a notification within 5 s")
            .unwrap();
        assert_eq!(first, "route deleted");
    })
    .join()
    .unwrap();
}
