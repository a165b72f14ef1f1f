//! Three netns "nodes" with weft-agent inside each, weft-controller on the host, all
//! against a real kube-apiserver with the service accounts and RBAC of `manifests/`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use weft_e2e::overlay::Overlay;

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ip <args>` inside node `i`.
fn topo_ip(o: &Overlay, i: usize, args: &[&str]) -> String {
    topo_ip_bin(o, i, "ip", args)
}

fn topo_ip_bin(o: &Overlay, i: usize, bin: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &o.topo.nodes[i].netns, bin])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The VTEP MAC of node `i`'s weft.1.
fn weft_routes_mac(o: &Overlay, i: usize) -> String {
    let text = topo_ip(o, i, &["-j", "link", "show", "weft.1"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_overlay_against_real_api_server() {
    if !weft_common::require_root("three_node_overlay_against_real_api_server") {
        return;
    }
    let mut o = Overlay::start(3, 2)
        .await
        .expect("overlay starts and every node gets ready");

    // Every node got its own pod subnet, and every pod an address in it.
    let cidrs: Vec<String> = (0..3).map(|i| o.node_pod_cidr(i).unwrap()).collect();
    let mut unique = cidrs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "distinct node subnets: {cidrs:?}");
    for p in &o.pods {
        let net: ipnet::Ipv4Net = cidrs[p.node].parse().unwrap();
        assert!(
            net.contains(&p.ip),
            "pod {} on node {} has {}",
            p.netns,
            p.node,
            p.ip
        );
    }

    // Every pod reaches every pod on every other node, and is seen with its own pod IP.
    o.start_probes().unwrap();
    for from in 0..o.pods.len() {
        for to in 0..o.pods.len() {
            if o.pods[from].node == o.pods[to].node {
                continue;
            }
            let seen = o
                .connect(from, to)
                .unwrap_or_else(|e| panic!("pod {from} -> pod {to}: {e:#}"));
            let seen_ip: IpAddr = seen.rsplit_once(':').unwrap().0.parse().unwrap();
            assert_eq!(
                seen_ip,
                IpAddr::V4(o.pods[from].ip),
                "no NAT between pods {from} -> {to}"
            );
        }
    }

    // Dual-stack: every pod has an IPv6 address too, and reaches every remote pod over
    // IPv6 through the same VXLAN device.
    for from in 0..o.pods.len() {
        for to in 0..o.pods.len() {
            if o.pods[from].node == o.pods[to].node {
                continue;
            }
            let dst = o.pods[to]
                .ip6
                .unwrap_or_else(|| panic!("pod {to} got no IPv6 address"));
            let out = o.ping(from, IpAddr::V6(dst), 1, "0.2").unwrap();
            assert!(
                out.status.success(),
                "pod {from} -> pod {to} over IPv6 ({dst}): {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }

    // Hostile Nodes (made with an admin token here; before weft's admission policy any
    // node's agent token could do it): none may touch the underlay or take a node's pods,
    // and none may keep an agent from turning ready (the restart below checks that).
    let underlay = ipnet::Ipv4Net::new(o.topo.nodes[0].ip, 24).unwrap().trunc();
    let node2_mac = weft_routes_mac(&o, 1);
    let hostile = [
        (
            "evil-underlay",
            underlay.to_string(),
            "02:ee:00:00:00:01".to_string(),
        ),
        (
            "evil-half",
            "128.0.0.0/1".into(),
            "02:ee:00:00:00:02".into(),
        ),
        (
            "evil-dup-cidr",
            cidrs[1].clone(),
            "02:ee:00:00:00:03".into(),
        ),
        ("evil-dup-mac", "10.244.250.0/24".into(), node2_mac),
        (
            "evil-bcast-mac",
            "10.244.251.0/24".into(),
            "ff:ff:ff:ff:ff:ff".into(),
        ),
    ];
    let admin = o.cp.client().await.unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(admin.clone());
    for (k, (name, cidr, mac)) in hostile.iter().enumerate() {
        let mut n = weft_e2e::fixtures::kubelet_like_node(
            name,
            std::net::Ipv4Addr::new(192, 168, 79, 200 + k as u8),
        );
        let spec = n.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(cidr.clone());
        spec.pod_cidrs = Some(vec![cidr.clone()]);
        let ann = n.metadata.annotations.get_or_insert_with(Default::default);
        ann.insert("weft.dev/vtep-mac".into(), mac.clone());
        ann.insert(
            "weft.dev/public-ip".into(),
            format!("192.168.79.{}", 200 + k),
        );
        ann.insert("weft.dev/vni".into(), "1".into());
        nodes
            .create(&kube::api::PostParams::default(), &n)
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(admin, "default");
    let mut warned = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while warned.len() < hostile.len() {
        assert!(
            Instant::now() < deadline,
            "Warning Events so far: {warned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let list = events.list(&Default::default()).await.unwrap();
        warned = hostile
            .iter()
            .map(|h| h.0)
            .filter(|name| {
                list.items.iter().any(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(*name)
                        && e.reason.as_deref().is_some_and(|r| r.starts_with("Weft"))
                        && e.reporting_controller.as_deref() == Some("weft-agent")
                })
            })
            .collect();
    }
    for i in 0..3 {
        let connected = topo_ip(&o, i, &["route", "show", &underlay.to_string()]);
        assert!(connected.contains("proto kernel"), "node {i}: {connected}");
        let routes = o.weft_routes(i).unwrap();
        for bad in [
            "128.0.0.0",
            "10.244.250.",
            "10.244.251.",
            &underlay.to_string(),
        ] {
            assert!(!routes.contains(bad), "node {i} routes {bad}: {routes}");
        }
        let fdb = topo_ip_bin(&o, i, "bridge", &["fdb", "show", "dev", "weft.1"]);
        assert!(!fdb.contains("192.168.79.20"), "node {i} FDB: {fdb}");
    }

    // Killing and restarting an agent loses no packet of a continuous cross-node ping.
    let target = IpAddr::V4(o.pods[2].ip); // a pod on node 2
    let pinger = {
        let netns = o.pods[0].netns.clone();
        std::thread::spawn(move || {
            std::process::Command::new("ip")
                .args([
                    "netns", "exec", &netns, "ping", "-c", "300", "-i", "0.01", "-W", "1",
                ])
                .arg(target.to_string())
                .output()
                .unwrap()
        })
    };
    o.restart_agent(1).unwrap();
    o.wait_node_ready(1, Duration::from_secs(30)).await.unwrap();
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(" 0% packet loss"),
        "ping during agent restart lost packets:\n{text}"
    );

    // Deleting a Node object removes its entries on the other nodes.
    let gone = o.node_pod_cidr(2).unwrap();
    assert!(
        o.weft_routes(0).unwrap().contains(&gone),
        "route to node-3 present before"
    );
    o.delete_node_object(2).await.unwrap();
    for i in 0..2 {
        wait_until(
            &format!("node {i} to drop node-3's route"),
            Duration::from_secs(15),
            || !o.weft_routes(i).unwrap().contains(&gone),
        )
        .await;
    }
}
