//! The real thing: `weft-e2e up` (a 3-node cluster on this machine, weft applied),
//! `weft-e2e test` (the connectivity suite) and `weft-e2e down`, which runs whatever
//! happened before it.
//!
//! Needs root, docker (scripts/start-docker.sh), the Kubernetes components and containerd
//! 2 (scripts/build-k8s.sh, scripts/build-containerd.sh) and Go (CoreDNS is built on
//! first use). `up` rebuilds the weft image when it is older than the release binaries.
//! Takes a few minutes warm. Fails loudly when a prerequisite is missing, unless
//! WEFT_SKIP_CLUSTER=1 is set explicitly.

use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_weft-e2e");

fn prerequisites_or_skip() -> bool {
    weft_e2e::cluster::test_preflight().unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `weft-e2e down` when dropped: after a failed `up` or `test` as well.
struct Down;

impl Drop for Down {
    fn drop(&mut self) {
        let t = Instant::now();
        let ok = Command::new(BIN)
            .arg("down")
            .status()
            .is_ok_and(|s| s.success());
        eprintln!(
            "weft-e2e down: {} in {:.1} s",
            if ok { "ok" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        if !ok && !std::thread::panicking() {
            panic!("weft-e2e down failed");
        }
    }
}

fn step(args: &[&str]) -> f64 {
    let t = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run weft-e2e {}: {e}", args.join(" ")));
    let secs = t.elapsed().as_secs_f64();
    eprintln!("weft-e2e {}: {status} in {secs:.1} s", args.join(" "));
    assert!(status.success(), "weft-e2e {} failed", args.join(" "));
    secs
}

fn kubectl(kubeconfig: &str, args: &[&str]) -> String {
    let bin = weft_e2e::harness::bin("kubectl").expect("kubectl");
    let out = Command::new(bin)
        .arg(format!("--kubeconfig={kubeconfig}"))
        .args(args)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The control plane is on the pod network as on a real cluster: the host is a Node
/// (Ready, tainted, with a pod CIDR) whose agent routes every worker's pod CIDR, so the
/// API server reaches pods; and the guard keeps cluster traffic on the machine.
fn control_plane_on_pod_network(kubeconfig: &str) {
    use weft_e2e::cluster::{CLUSTER_CIDR, CONTROL_PLANE, CONTROL_PLANE_ROLE};
    let node: serde_json::Value = serde_json::from_str(&kubectl(
        kubeconfig,
        &["get", "node", CONTROL_PLANE, "-o", "json"],
    ))
    .expect("node JSON");
    let ready = node["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    assert!(ready, "{CONTROL_PLANE} is Ready");
    let taints = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t["key"] == CONTROL_PLANE_ROLE && t["effect"] == "NoSchedule"),
        "{CONTROL_PLANE} is tainted: {taints:?}"
    );
    assert!(node["metadata"]["labels"][CONTROL_PLANE_ROLE].is_string());
    assert!(
        node["spec"]["podCIDR"].is_string(),
        "{CONTROL_PLANE} has a pod CIDR"
    );

    // One weft route per worker in the host's routing table.
    let workers: Vec<String> = kubectl(
        kubeconfig,
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR}{\"\\n\"}{end}",
        ],
    )
    .lines()
    .filter(|l| !l.starts_with(CONTROL_PLANE))
    .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
    .collect();
    let routes = Command::new("ip")
        .args(["route", "show", "proto", "87"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    for cidr in &workers {
        assert!(
            routes.contains(cidr.as_str()),
            "host route for {cidr}: {routes}"
        );
    }

    // The host reaches a pod on a worker directly, over the overlay: a probe pod (it
    // serves TCP on 7000) pinned to the first worker.
    let overrides = r#"{"spec":{"nodeName":"weft-e2e-1"}}"#;
    kubectl(
        kubeconfig,
        &[
            "run",
            "host-reach",
            &format!("--image={}", weft_e2e::cluster::PROBE_IMAGE),
            "--image-pull-policy=Never",
            "--restart=Never",
            &format!("--overrides={overrides}"),
        ],
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let ip = loop {
        let ip = kubectl(
            kubeconfig,
            &["get", "pod", "host-reach", "-o", "jsonpath={.status.podIP}"],
        );
        if let Ok(ip) = ip.trim().parse::<std::net::IpAddr>() {
            let addr = std::net::SocketAddr::new(ip, 7000);
            if std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                .is_ok()
            {
                break ip;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the host cannot reach the probe pod's IP {ip:?} on weft-e2e-1"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let route = Command::new("ip")
        .args(["route", "get", &ip.to_string()])
        .output()
        .expect("ip route get");
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("dev weft.1"),
        "host -> {ip} over the overlay: {route}"
    );
    eprintln!(
        "host -> pod {ip}:7000 on weft-e2e-1 connected: {}",
        route.trim()
    );
    kubectl(kubeconfig, &["delete", "pod", "host-reach", "--wait=false"]);

    let unreachable = Command::new("ip")
        .args(["route", "show", "type", "unreachable"])
        .output()
        .expect("ip route");
    assert!(
        String::from_utf8_lossy(&unreachable.stdout).contains(CLUSTER_CIDR),
        "guard route for {CLUSTER_CIDR}"
    );
    let guard = Command::new("nft")
        .args([
            "list",
            "table",
            "inet",
            weft_e2e::cluster::node::GUARD_TABLE,
        ])
        .output()
        .expect("nft");
    assert!(guard.status.success(), "guard table on the host");
}

#[test]
fn local_cluster_up_test_down() {
    if !prerequisites_or_skip() {
        return;
    }
    let _down = Down;
    let up = step(&["up"]);
    let kubeconfig =
        weft_e2e::cluster::Layout::new(weft_e2e::cluster::state_dir()).admin_kubeconfig();
    let kubeconfig = kubeconfig.display().to_string();
    control_plane_on_pod_network(&kubeconfig);
    let test = step(&["test", "--kubeconfig", &kubeconfig]);
    // Kubernetes' own network conformance specs, on the same cluster.
    let conformance = step(&["conformance", "--kubeconfig", &kubeconfig]);
    // And a representative subset of its NetworkPolicy specs (all of them:
    // `weft-e2e conformance --netpol`).
    let netpol = step(&[
        "conformance",
        "--kubeconfig",
        &kubeconfig,
        "--focus",
        weft_e2e::conformance::NETPOL_CI_FOCUS,
    ]);
    eprintln!(
        "up {up:.1} s, test {test:.1} s, conformance {conformance:.1} s, netpol subset {netpol:.1} s"
    );
}
