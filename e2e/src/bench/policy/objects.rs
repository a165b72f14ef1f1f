//! The cluster the policy bench loads into the API server, as pure data: which pod goes
//! where with which labels and addresses, and the NetworkPolicies in their realistic mix.
//!
//! Pod `p` (0..[`PODS`]) lives in namespace `p % NAMESPACES` as its `p / NAMESPACES`-th
//! pod. Pods 0..4 are the measured ones: the target (node-1, selected by
//! [`TARGET_POLICIES`] policies), its client (node-2), and the same pair on the two nodes
//! without policy (node-3, node-4); then node-1's other pods; the rest belong to nodes
//! that exist only as API objects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

pub const NAMESPACES: usize = 200;
pub const PODS: usize = 5000;
pub const NODES: usize = 100;
/// Pods of the node under test (node-1), each a real netns made by the CNI plugin.
pub const LOCAL_PODS: usize = 110;
pub const POLICIES: usize = 1000;
/// Policies in the target's namespace, all selecting the target pod.
pub const TARGET_POLICIES: usize = 100;
/// Nodes with a weft-agent: node-1 and node-2 with NetworkPolicy, node-3 and node-4 without.
pub const REAL_NODES: usize = 4;
/// The target pod's TCP ports: iperf3 and the connect-time listener.
pub const IPERF_PORT: u16 = 5201;
pub const CONNECT_PORT: u16 = 7777;
/// Pods of the real nodes other than node-1: target and client without policy, client.
const FIRST_FAKE_POD: usize = LOCAL_PODS + REAL_NODES - 1;
const FAKE_NODES: usize = NODES - REAL_NODES;

/// The pod whose label the label-change samples toggle, and the policy whose peers it
/// joins (`role: r-0`): a pod of an API-only node in the target's namespace.
pub const LABEL_POD: usize = NAMESPACES;
pub const LABEL_POLICY: &str = "target-000";
/// The pod whose address the IP-change samples move, a peer of this policy (`role: r-4`).
pub const IP_POD: usize = 2 * NAMESPACES;
pub const IP_POLICY: &str = "target-004";
/// The namespace of the policy-change samples: node-1's pod 4 is in it.
pub const CHANGE_NAMESPACE: usize = 4;

pub fn namespace(n: usize) -> String {
    format!("ns-{n:03}")
}

pub fn pod_name(p: usize) -> String {
    format!("pod-{p:04}")
}

pub fn fake_node_name(f: usize) -> String {
    format!("node-x{f:02}")
}

/// Where pod `p` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A real netns: the overlay's pod with this index on real node `node`.
    Real { node: usize, overlay_pod: usize },
    /// A pod of API-only node `node`, the `slot`-th there.
    Fake { node: usize, slot: usize },
}

/// The overlay creates node-1's [`LOCAL_PODS`] pods first, then one on each other node.
pub fn placement(p: usize) -> Placement {
    match p {
        0 => Placement::Real {
            node: 0,
            overlay_pod: 0,
        },
        1..=3 => Placement::Real {
            node: p,
            overlay_pod: LOCAL_PODS + p - 1,
        },
        _ if p < FIRST_FAKE_POD => Placement::Real {
            node: 0,
            overlay_pod: p - 3,
        },
        _ => Placement::Fake {
            node: (p - FIRST_FAKE_POD) % FAKE_NODES,
            slot: (p - FIRST_FAKE_POD) / FAKE_NODES,
        },
    }
}

/// API-only node `f`'s pod CIDRs: the /24 and /64 numbered `100 + f` of the overlay's
/// cluster CIDRs (the controller hands the real nodes the first ones).
pub fn fake_node_cidrs(f: usize) -> [String; 2] {
    let k = 100 + f;
    [
        format!("10.244.{k}.0/24"),
        format!("fd00:10:244:{k:x}::/64"),
    ]
}

/// Host `host` of API-only node `f`'s pod CIDRs, both families.
pub fn fake_pod_ips(f: usize, host: usize) -> [IpAddr; 2] {
    let k = (100 + f) as u16;
    [
        IpAddr::V4(Ipv4Addr::new(10, 244, k as u8, host as u8)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0x244, k, 0, 0, 0, host as u16)),
    ]
}

/// A fake pod's first address: host 2 onwards (.1 is a gateway).
pub fn fake_host(slot: usize) -> usize {
    slot + 2
}

pub fn namespace_object(n: usize) -> Value {
    let env = ["prod", "staging", "dev"][n % 3];
    json!({"metadata": {"name": namespace(n), "labels": {"team": format!("team-{}", n % 20), "env": env}}})
}

const TIERS: [&str; 3] = ["frontend", "backend", "db"];

fn labels(p: usize) -> Value {
    let (n, j) = (p % NAMESPACES, p / NAMESPACES);
    match p {
        0 => json!({"app": "target"}),
        1 => json!({"app": "client", "role": "client", "tier": "frontend"}),
        IP_POD => json!({"app": format!("app-{}", (j + n) % 5), "role": "r-4"}),
        _ => json!({
            "app": format!("app-{}", (j + n) % 5),
            "tier": TIERS[(j + 2 * n) % 3],
            "pod-template-hash": format!("{:08x}", n * 7919),
        }),
    }
}

/// Pod `p` on node `node_name`, shaped like a Deployment's pod (one container with
/// named ports, resources, env, a probe): what the API server stores and streams.
pub fn pod_object(p: usize, node_name: &str) -> Value {
    let n = p % NAMESPACES;
    let mut ports = vec![
        json!({"name": "http", "containerPort": 8080, "protocol": "TCP"}),
        json!({"name": "metrics", "containerPort": 9090, "protocol": "TCP"}),
    ];
    if p == 0 {
        ports.push(json!({"name": "iperf", "containerPort": IPERF_PORT, "protocol": "TCP"}));
        ports.push(json!({"name": "probe", "containerPort": CONNECT_PORT, "protocol": "TCP"}));
    }
    json!({
        "metadata": {"name": pod_name(p), "namespace": namespace(n), "labels": labels(p)},
        "spec": {
            "nodeName": node_name,
            "containers": [{
                "name": "app",
                "image": format!("registry.example.com/team-{}/service-{}:v1.{}", n % 20, n, p % 7),
                "ports": ports,
                "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "NAMESPACE", "value": namespace(n)}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
            }],
        },
    })
}

/// The status a kubelet would report once the pod runs with `ips`.
pub fn pod_status(ips: &[IpAddr], host_ip: &str) -> Value {
    let ips: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
    json!({"status": {"phase": "Running", "hostIP": host_ip, "podIP": ips[0]["ip"], "podIPs": ips}})
}

/// Every NetworkPolicy, as (namespace index, object).
pub fn policies() -> Vec<(usize, Value)> {
    let mut v: Vec<(usize, Value)> = (0..TARGET_POLICIES)
        .map(|i| (0, target_policy(i)))
        .collect();
    // The other namespaces share the rest: four kinds each, a fifth in the first ones.
    let rest = POLICIES - TARGET_POLICIES;
    let per = rest / (NAMESPACES - 1);
    let extra = rest % (NAMESPACES - 1);
    for n in 1..NAMESPACES {
        let kinds = per + usize::from(n <= extra);
        v.extend((0..kinds).map(|k| (n, namespace_policy(n, k))));
    }
    v
}

fn policy(name: &str, n: usize, spec: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace(n)}, "spec": spec})
}

/// The target's policies. Only the last lets the client in (with ICMP, so iperf3's
/// reachability ping passes): a new connection runs through every other policy's chain
/// first, the worst case of this mix.
fn target_policy(i: usize) -> Value {
    let name = format!("target-{i:03}");
    let team = |i: usize| json!({"matchLabels": {"team": format!("team-{}", 2 + i % 18)}});
    let from = match (i, i % 4) {
        (99, _) => json!([{"from": [{"namespaceSelector": {"matchLabels": {"team": "team-1"}},
                                     "podSelector": {"matchLabels": {"role": "client"}}}]}]),
        (_, 0) => json!([{"from": [{"podSelector": {"matchLabels": {"role": format!("r-{i}")}}}],
                          "ports": [{"port": IPERF_PORT}]}]),
        (_, 1) => json!([{"from": [{"namespaceSelector": team(i)}],
                          "ports": [{"port": "iperf"}, {"port": "probe"}]}]),
        (_, 2) => json!([{"from": [{"ipBlock": {"cidr": format!("172.16.{i}.0/24"),
                                               "except": [format!("172.16.{i}.128/25")]}}],
                          "ports": [{"port": 7000, "endPort": 7999}]}]),
        _ => json!([{"from": [{"namespaceSelector": team(i),
                               "podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend"]}]}}]}]),
    };
    policy(
        &name,
        0,
        json!({"podSelector": {"matchLabels": {"app": "target"}}, "ingress": from}),
    )
}

/// Kind `k` of namespace `n`'s policies: default-deny, podSelector on a named port,
/// namespace and pod selector on a port range, egress by ipBlock and to kube-system's
/// DNS, ipBlock and matchExpressions on named and numeric ports.
fn namespace_policy(n: usize, k: usize) -> Value {
    let app = |a: usize| json!({"matchLabels": {"app": format!("app-{a}")}});
    let spec = match k {
        0 => json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        1 => json!({"podSelector": app(1),
                    "ingress": [{"from": [{"podSelector": app(0)}], "ports": [{"port": "http"}]}]}),
        2 => json!({"podSelector": app(2),
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": format!("team-{}", (n + 1) % 20)}},
                                           "podSelector": {"matchLabels": {"tier": "frontend"}}}],
                                 "ports": [{"protocol": "TCP", "port": 8080, "endPort": 8090}]}]}),
        3 => json!({"podSelector": app(3), "policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": [format!("10.244.{}.0/24", n % 256)]}}]},
                               {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        _ => json!({"podSelector": app(4),
                    "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}},
                                          {"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["frontend", "backend"]}]}}],
                                 "ports": [{"port": "metrics"}, {"protocol": "TCP", "port": 8443}]}]}),
    };
    let names = [
        "default-deny",
        "app-1-http",
        "app-2-team",
        "app-3-egress",
        "app-4-mixed",
    ];
    policy(names[k.min(4)], n, spec)
}

/// The `k`-th policy of the policy-change samples: it selects node-1's pod in
/// [`CHANGE_NAMESPACE`] and lets in `peer`.
pub fn change_policy(k: usize, peer: Ipv4Addr) -> Value {
    policy(
        &format!("bench-change-{k}"),
        CHANGE_NAMESPACE,
        json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": format!("{peer}/32")}}]}]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        assert_eq!(policies().len(), POLICIES);
        let local = (0..PODS)
            .filter(|&p| matches!(placement(p), Placement::Real { node: 0, .. }))
            .count();
        assert_eq!(local, LOCAL_PODS);
        let real: Vec<usize> = (0..PODS)
            .filter_map(|p| match placement(p) {
                Placement::Real { overlay_pod, .. } => Some(overlay_pod),
                Placement::Fake { .. } => None,
            })
            .collect();
        let mut sorted = real.clone();
        sorted.sort();
        assert_eq!(sorted, (0..LOCAL_PODS + 3).collect::<Vec<_>>());
        let max_slot = (0..PODS)
            .filter_map(|p| match placement(p) {
                Placement::Fake { slot, .. } => Some(slot),
                Placement::Real { .. } => None,
            })
            .max()
            .unwrap();
        assert!(fake_host(max_slot) < 200, "fake pods stay below host 200");
        assert!(matches!(placement(LABEL_POD), Placement::Fake { .. }));
        assert!(matches!(placement(IP_POD), Placement::Fake { .. }));
        assert_eq!(CHANGE_NAMESPACE % NAMESPACES, 4);
        assert!(matches!(
            placement(CHANGE_NAMESPACE),
            Placement::Real { node: 0, .. }
        ));
    }
}
