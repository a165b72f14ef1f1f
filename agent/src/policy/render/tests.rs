use serde_json::json;

use super::*;
use crate::policy::compile;
use crate::policy::diff::{diff, Update};
use crate::policy::fixtures::{ns, pod, policy};
use crate::policy::model::{NamedPort, PodInfo, Protocol};
use crate::policy::nfnl::Op;

const NODE: &str = "n1";

fn pods() -> Vec<PodInfo> {
    let mut db = pod(
        "default",
        "db",
        NODE,
        &[("role", "db")],
        &["10.244.1.10", "fd00:1::10"],
    );
    db.named_ports = vec![NamedPort {
        name: "pg".into(),
        protocol: Protocol::Tcp,
        port: 5432,
    }];
    vec![
        db,
        pod(
            "default",
            "fe",
            "n2",
            &[("role", "frontend")],
            &["10.244.2.11"],
        ),
    ]
}

fn build(
    policies: &[k8s_openapi::api::networking::v1::NetworkPolicy],
    pods: &[PodInfo],
) -> Ruleset {
    let model = compile(policies, pods, &[ns("default", &[])], NODE);
    assert!(model.problems.is_empty(), "{:?}", model.problems);
    Ruleset::build(&model)
}

fn docs_policy() -> k8s_openapi::api::networking::v1::NetworkPolicy {
    policy(
        "default",
        "test-network-policy",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [
                    {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                    {"podSelector": {"matchLabels": {"role": "frontend"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 6379}, {"port": "pg"}],
            }],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 5978}],
            }],
        }),
    )
}

#[test]
fn the_docs_example_as_a_script() {
    let rs = build(&[docs_policy()], &pods());
    let want = r#"add table inet weft-policy
delete table inet weft-policy
add table inet weft-policy
add counter inet weft-policy ingress_dropped
add counter inet weft-policy egress_dropped
add set inet weft-policy eg.default.test-network-policy.0.peers4 { type ipv4_addr; flags interval; elements = { 10.0.0.0-10.0.0.255 } }
add set inet weft-policy eg.default.test-network-policy.0.peers6 { type ipv6_addr; flags interval; }
add set inet weft-policy eg.default.test-network-policy.0.ports { type inet_proto . inet_service; flags interval; elements = { tcp . 5978 } }
add set inet weft-policy eg.default.test-network-policy.targets4 { type ipv4_addr; elements = { 10.244.1.10 } }
add set inet weft-policy eg.default.test-network-policy.targets6 { type ipv6_addr; elements = { fd00:1::10 } }
add set inet weft-policy in.default.test-network-policy.0.named4 { type ipv4_addr . inet_proto . inet_service; elements = { 10.244.1.10 . tcp . 5432 } }
add set inet weft-policy in.default.test-network-policy.0.named6 { type ipv6_addr . inet_proto . inet_service; elements = { fd00:1::10 . tcp . 5432 } }
add set inet weft-policy in.default.test-network-policy.0.peers4 { type ipv4_addr; flags interval; elements = { 10.244.2.11, 172.17.0.0-172.17.0.255, 172.17.2.0-172.17.255.255 } }
add set inet weft-policy in.default.test-network-policy.0.peers6 { type ipv6_addr; flags interval; }
add set inet weft-policy in.default.test-network-policy.0.ports { type inet_proto . inet_service; flags interval; elements = { tcp . 6379 } }
add set inet weft-policy in.default.test-network-policy.targets4 { type ipv4_addr; elements = { 10.244.1.10 } }
add set inet weft-policy in.default.test-network-policy.targets6 { type ipv6_addr; elements = { fd00:1::10 } }
add set inet weft-policy isolated.eg4 { type ipv4_addr; elements = { 10.244.1.10 } }
add set inet weft-policy isolated.eg6 { type ipv6_addr; elements = { fd00:1::10 } }
add set inet weft-policy isolated.in4 { type ipv4_addr; elements = { 10.244.1.10 } }
add set inet weft-policy isolated.in6 { type ipv6_addr; elements = { fd00:1::10 } }
add chain inet weft-policy eg.default.test-network-policy { comment "default/test-network-policy egress"; }
add chain inet weft-policy egress { type filter hook forward priority 10; policy accept; }
add chain inet weft-policy in.default.test-network-policy { comment "default/test-network-policy ingress"; }
add chain inet weft-policy ingress { type filter hook forward priority 11; policy accept; }
add rule inet weft-policy eg.default.test-network-policy ip daddr @eg.default.test-network-policy.0.peers4 meta l4proto . th dport @eg.default.test-network-policy.0.ports accept
add rule inet weft-policy eg.default.test-network-policy ip6 daddr @eg.default.test-network-policy.0.peers6 meta l4proto . th dport @eg.default.test-network-policy.0.ports accept
add rule inet weft-policy egress ct state established,related accept
add rule inet weft-policy egress icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
add rule inet weft-policy egress ip saddr @eg.default.test-network-policy.targets4 jump eg.default.test-network-policy
add rule inet weft-policy egress ip6 saddr @eg.default.test-network-policy.targets6 jump eg.default.test-network-policy
add rule inet weft-policy egress ip saddr @isolated.eg4 counter name egress_dropped drop
add rule inet weft-policy egress ip6 saddr @isolated.eg6 counter name egress_dropped drop
add rule inet weft-policy in.default.test-network-policy ip saddr @in.default.test-network-policy.0.peers4 meta l4proto . th dport @in.default.test-network-policy.0.ports accept
add rule inet weft-policy in.default.test-network-policy ip6 saddr @in.default.test-network-policy.0.peers6 meta l4proto . th dport @in.default.test-network-policy.0.ports accept
add rule inet weft-policy in.default.test-network-policy ip saddr @in.default.test-network-policy.0.peers4 ip daddr . meta l4proto . th dport @in.default.test-network-policy.0.named4 accept
add rule inet weft-policy in.default.test-network-policy ip6 saddr @in.default.test-network-policy.0.peers6 ip6 daddr . meta l4proto . th dport @in.default.test-network-policy.0.named6 accept
add rule inet weft-policy ingress ct state established,related accept
add rule inet weft-policy ingress icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
add rule inet weft-policy ingress ip daddr @in.default.test-network-policy.targets4 jump in.default.test-network-policy
add rule inet weft-policy ingress ip6 daddr @in.default.test-network-policy.targets6 jump in.default.test-network-policy
add rule inet weft-policy ingress ip daddr @isolated.in4 counter name ingress_dropped drop
add rule inet weft-policy ingress ip6 daddr @isolated.in6 counter name ingress_dropped drop
"#;
    let got = rs.script();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got, want);
}

#[test]
fn any_peer_and_any_port_rules_have_no_sets() {
    let p = policy(
        "default",
        "p",
        json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{}, {"ports": [{"protocol": "UDP", "port": 53}]}],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]},
                {"ports": [{"port": "pg"}]},
            ],
        }),
    );
    let rs = build(&[p], &pods());
    let chain = |n: &str| rs.chains[n].rules.clone();
    assert_eq!(
        chain("in.default.p"),
        [
            "accept",
            "meta l4proto . th dport @in.default.p.1.ports accept"
        ]
    );
    assert_eq!(
        chain("eg.default.p"),
        [
            "ip daddr @eg.default.p.0.peers4 accept",
            "ip6 daddr @eg.default.p.0.peers6 accept",
            // Egress named ports are resolved on destination pods: no peer match.
            "ip daddr . meta l4proto . th dport @eg.default.p.1.named4 accept",
            "ip6 daddr . meta l4proto . th dport @eg.default.p.1.named6 accept",
        ]
    );
    assert!(!rs.sets.contains_key("in.default.p.0.peers4"));
    assert!(!rs.sets.contains_key("in.default.p.1.peers4"));
    assert_eq!(
        rs.sets["eg.default.p.1.named4"].elements,
        BTreeSet::from(["10.244.1.10 . tcp . 5432".to_string()])
    );
}

#[test]
fn isolation_without_rules_has_no_policy_chain() {
    let deny = policy(
        "default",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let rs = build(&[deny], &pods());
    assert_eq!(
        rs.chains.keys().collect::<Vec<_>>(),
        [CHAIN_EGRESS, CHAIN_INGRESS]
    );
    assert_eq!(
        rs.sets["isolated.eg4"].elements,
        BTreeSet::from(["10.244.1.10".to_string()])
    );
    assert!(rs.sets["isolated.in4"].elements.is_empty());
}

#[test]
fn comments_are_safe_whatever_the_names() {
    assert_eq!(comment("ns/a\"b; drop"), "ns/a?b? drop");
}

/// A label change of a pod touches elements only: no chain, no table.
#[test]
fn a_label_change_is_element_changes_only() {
    let policies = [docs_policy()];
    let mut pods = pods();
    pods.push(pod(
        "default",
        "db2",
        NODE,
        &[("role", "db")],
        &["10.244.1.12"],
    ));
    let before = build(&policies, &pods);
    pods[2].labels.insert("role".into(), "frontend".into());
    let after = build(&policies, &pods);
    let Update::Elements(changes) = diff(&before, &after) else {
        panic!("not element changes only");
    };
    let mut got: Vec<(Op, &str, Vec<&str>)> = changes
        .iter()
        .map(|c| {
            (
                c.op,
                c.set.as_str(),
                c.elements.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    // Deletions come first: an interval set never holds two overlapping ranges.
    assert!(got
        .iter()
        .rev()
        .skip_while(|c| c.0 == Op::Add)
        .all(|c| c.0 == Op::Delete));
    got.sort();
    let ip = vec!["10.244.1.12"];
    assert_eq!(
        got,
        [
            (
                Op::Add,
                "in.default.test-network-policy.0.peers4",
                ip.clone()
            ),
            (
                Op::Delete,
                "eg.default.test-network-policy.targets4",
                ip.clone()
            ),
            (
                Op::Delete,
                "in.default.test-network-policy.targets4",
                ip.clone()
            ),
            (Op::Delete, "isolated.eg4", ip.clone()),
            (Op::Delete, "isolated.in4", ip),
        ]
    );
}

/// A policy starting to select a pod of this node brings its chain and sets; the
/// dispatch chain is rewritten, nothing else.
#[test]
fn a_policy_arriving_adds_its_chain_and_sets() {
    let before = build(&[], &pods());
    let after = build(&[docs_policy()], &pods());
    let Update::Structural(up) = diff(&before, &after) else {
        panic!("not structural");
    };
    // Only additions: nothing before or after the script.
    assert!(up.narrow.is_empty() && up.widen.is_empty(), "{up:?}");
    let script = &up.script;
    assert!(!script.contains("table"));
    let flushed: Vec<&str> = script.lines().filter(|l| l.starts_with("flush")).collect();
    assert_eq!(
        flushed,
        [
            "flush chain inet weft-policy egress",
            "flush chain inet weft-policy ingress"
        ]
    );
    // 12 new sets, and the target pod joining the 4 isolation sets, all declared with
    // their elements: no `add element`, which would make nft read every set's elements.
    assert_eq!(
        script.lines().filter(|l| l.starts_with("add set")).count(),
        16
    );
    assert!(script.contains(
        "add set inet weft-policy isolated.in4 { type ipv4_addr; elements = { 10.244.1.10 } }"
    ));
    assert!(!script.contains("element inet"));
    assert!(!script.contains("delete"));
    // And the way back deletes exactly what came; the pod leaves isolation last.
    let Update::Structural(back) = diff(&after, &before) else {
        panic!("not structural");
    };
    assert!(back.narrow.is_empty(), "{back:?}");
    let widened: Vec<&str> = back.widen.iter().map(|c| c.set.as_str()).collect();
    assert_eq!(
        widened,
        [
            "isolated.eg4",
            "isolated.eg6",
            "isolated.in4",
            "isolated.in6"
        ]
    );
    assert!(back.widen.iter().all(|c| c.op == Op::Delete));
    let back = &back.script;
    assert_eq!(
        back.lines().filter(|l| l.starts_with("delete set")).count(),
        12
    );
    assert_eq!(
        back.lines()
            .filter(|l| l.starts_with("delete chain"))
            .count(),
        2
    );
}

#[test]
fn a_replacement_keeps_the_drop_counters() {
    let rs = Ruleset::default();
    let kept = [crate::firewall::NamedCounter {
        name: COUNTER_INGRESS.into(),
        packets: 12,
        bytes: 840,
    }];
    let script = rs.script_keeping(&kept);
    assert!(
        script.contains("add counter inet weft-policy ingress_dropped { packets 12 bytes 840 }\n"),
        "{script}"
    );
    assert!(
        script.contains("add counter inet weft-policy egress_dropped\n"),
        "{script}"
    );
    assert_eq!(rs.script(), rs.script_keeping(&[]));
}
