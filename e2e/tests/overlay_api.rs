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
