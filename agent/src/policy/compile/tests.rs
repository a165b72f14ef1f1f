//! The compiler, table by table: defaulting, isolation, peers, ports, bad content, and
//! every example of the Kubernetes NetworkPolicy documentation.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};

use super::super::error::{Effect, PolicyError};
use super::super::model::{Direction, NamedPort, NamespaceInfo, PodInfo, PolicyKey, Protocol};
use super::super::ranges::{AddrRanges, PortRange};
use super::super::rules::{NamedElement, Peers, PolicyRules, Ports, Rule, RuleModel};
use super::compile;
use crate::policy::fixtures::{ip, ns, pod, policy};

const NODE: &str = "node-1";

fn key(ns: &str, name: &str) -> PolicyKey {
    PolicyKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

/// Peers from "a" or "a-b" strings of either family.
fn peers(list: &[&str]) -> Peers {
    let mut r = AddrRanges::default();
    for s in list {
        let (lo, hi) = s.split_once('-').unwrap_or((s, s));
        match (ip(lo), ip(hi)) {
            (IpAddr::V4(a), IpAddr::V4(b)) => r.v4.push((a, b)),
            (IpAddr::V6(a), IpAddr::V6(b)) => r.v6.push((a, b)),
            _ => panic!("mixed range {s}"),
        }
    }
    Peers::Only(r)
}

fn tcp(first: u16, last: u16) -> PortRange {
    PortRange {
        protocol: Protocol::Tcp,
        first,
        last,
    }
}

fn numeric(list: &[PortRange]) -> Ports {
    Ports::Only {
        numeric: list.to_vec(),
        named: None,
    }
}

fn rule(index: usize, peers: Peers, ports: Ports) -> Rule {
    Rule {
        index,
        peers,
        ports,
    }
}

fn entry<'m>(m: &'m RuleModel, ns: &str, name: &str, d: Direction) -> &'m PolicyRules {
    m.policies
        .get(&(key(ns, name), d))
        .unwrap_or_else(|| panic!("no {ns}/{name} {d} in {:#?}", m.policies.keys()))
}

/// The docs' cast: `default` holds db (local), frontend (local) and a remote frontend;
/// `myproject` (labelled project=myproject) a remote pod; `other` one more.
fn cast() -> (Vec<PodInfo>, Vec<NamespaceInfo>) {
    let mut host = pod("default", "host", NODE, &[("role", "db")], &["192.168.0.1"]);
    host.host_network = true;
    let pods = vec![
        pod(
            "default",
            "db",
            NODE,
            &[("role", "db")],
            &["10.244.1.10", "fd00:1::10"],
        ),
        pod(
            "default",
            "fe",
            NODE,
            &[("role", "frontend")],
            &["10.244.1.11"],
        ),
        pod(
            "default",
            "fe2",
            "node-2",
            &[("role", "frontend")],
            &["10.244.2.11"],
        ),
        pod(
            "myproject",
            "mp",
            "node-2",
            &[("role", "x")],
            &["10.244.2.20"],
        ),
        pod(
            "other",
            "o",
            "node-3",
            &[("role", "frontend")],
            &["10.244.3.30"],
        ),
        host,
    ];
    let namespaces = vec![
        ns("default", &[]),
        ns("myproject", &[("project", "myproject")]),
        ns("other", &[("user", "alice")]),
    ];
    (pods, namespaces)
}

fn run(policies: &[NetworkPolicy]) -> RuleModel {
    let (pods, namespaces) = cast();
    compile(policies, &pods, &namespaces, NODE)
}

#[test]
fn docs_test_network_policy() {
    let p = policy(
        "default",
        "test-network-policy",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [
                    {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                    {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                    {"podSelector": {"matchLabels": {"role": "frontend"}}},
                ],
                "ports": [{"protocol": "TCP", "port": 6379}],
            }],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "ports": [{"protocol": "TCP", "port": 5978}],
            }],
        }),
    );
    let m = run(&[p]);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    let db = ips(&["10.244.1.10", "fd00:1::10"]);
    assert_eq!(m.ingress_isolated, db);
    assert_eq!(m.egress_isolated, db);
    let ingress = entry(&m, "default", "test-network-policy", Direction::Ingress);
    assert_eq!(ingress.id, "default.test-network-policy");
    assert_eq!(ingress.targets, db);
    // The hostNetwork "db" is neither a target nor a peer.
    assert_eq!(
        ingress.rules,
        [rule(
            0,
            peers(&[
                "10.244.1.11",
                "10.244.2.11",
                "10.244.2.20",
                "172.17.0.0-172.17.0.255",
                "172.17.2.0-172.17.255.255",
            ]),
            numeric(&[tcp(6379, 6379)]),
        )]
    );
    let egress = entry(&m, "default", "test-network-policy", Direction::Egress);
    assert_eq!(
        egress.rules,
        [rule(
            0,
            peers(&["10.0.0.0-10.0.0.255"]),
            numeric(&[tcp(5978, 5978)])
        )]
    );
}

#[test]
fn docs_default_policies() {
    let all = json!({});
    // (spec, ingress isolated, egress isolated, ingress rules, egress rules)
    let cases = [
        // default-deny-ingress
        (
            json!({"podSelector": all, "policyTypes": ["Ingress"]}),
            true,
            false,
            Some(vec![]),
            None,
        ),
        // allow-all-ingress
        (
            json!({"podSelector": all, "ingress": [{}], "policyTypes": ["Ingress"]}),
            true,
            false,
            Some(vec![rule(0, Peers::Any, Ports::Any)]),
            None,
        ),
        // default-deny-egress
        (
            json!({"podSelector": all, "policyTypes": ["Egress"]}),
            false,
            true,
            None,
            Some(vec![]),
        ),
        // allow-all-egress
        (
            json!({"podSelector": all, "egress": [{}], "policyTypes": ["Egress"]}),
            false,
            true,
            None,
            Some(vec![rule(0, Peers::Any, Ports::Any)]),
        ),
        // default-deny-all
        (
            json!({"podSelector": all, "policyTypes": ["Ingress", "Egress"]}),
            true,
            true,
            Some(vec![]),
            Some(vec![]),
        ),
    ];
    let local = ips(&["10.244.1.10", "fd00:1::10", "10.244.1.11"]);
    for (i, (spec, ing, eg, ing_rules, eg_rules)) in cases.into_iter().enumerate() {
        let m = run(&[policy("default", "p", spec)]);
        assert!(m.problems.is_empty(), "case {i}");
        assert_eq!(m.ingress_isolated.is_empty(), !ing, "case {i}");
        assert_eq!(m.egress_isolated.is_empty(), !eg, "case {i}");
        for (d, want) in [
            (Direction::Ingress, ing_rules),
            (Direction::Egress, eg_rules),
        ] {
            let got = m.policies.get(&(key("default", "p"), d));
            assert_eq!(got.map(|e| &e.rules), want.as_ref(), "case {i} {d}");
            if let Some(e) = got {
                assert_eq!(e.targets, local, "case {i} {d}: every local pod of default");
            }
        }
    }
}

#[test]
fn policy_types_defaulting() {
    let egress_rule = json!([{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]);
    let ingress_rule = json!([{}]);
    // (spec, ingress isolated, egress isolated)
    let cases = [
        (json!({}), true, false),
        (json!({"policyTypes": []}), true, false),
        (json!({"egress": egress_rule}), true, true),
        (json!({"egress": []}), true, false),
        (
            json!({"ingress": ingress_rule, "egress": egress_rule}),
            true,
            true,
        ),
        (
            json!({"policyTypes": ["Egress"], "ingress": ingress_rule}),
            false,
            true,
        ),
        (
            json!({"policyTypes": ["Ingress"], "egress": egress_rule}),
            true,
            false,
        ),
    ];
    for (i, (spec, ing, eg)) in cases.into_iter().enumerate() {
        let m = run(&[policy("default", "p", spec.clone())]);
        assert_eq!(!m.ingress_isolated.is_empty(), ing, "case {i}: {spec}");
        assert_eq!(!m.egress_isolated.is_empty(), eg, "case {i}: {spec}");
        let has = |d| m.policies.contains_key(&(key("default", "p"), d));
        assert_eq!((has(Direction::Ingress), has(Direction::Egress)), (ing, eg));
    }
    let m = run(&[policy(
        "default",
        "p",
        json!({"policyTypes": ["Ingress", "Sideways"]}),
    )]);
    assert!(!m.ingress_isolated.is_empty());
    assert_eq!(m.problems.len(), 1);
    assert_eq!(
        m.problems[0].error,
        PolicyError::UnknownPolicyType("Sideways".into())
    );
    assert_eq!(m.problems[0].effect, Effect::ValueIgnored);
}

#[test]
fn docs_namespace_and_pod_selector_together_or_apart() {
    let peer_both = json!({
        "namespaceSelector": {"matchLabels": {"user": "alice"}},
        "podSelector": {"matchLabels": {"role": "frontend"}},
    });
    let peer_ns = json!({"namespaceSelector": {"matchLabels": {"user": "alice"}}});
    let peer_pod = json!({"podSelector": {"matchLabels": {"role": "frontend"}}});
    // (from, peers)
    let cases = [
        // Together: frontends in alice's namespaces only.
        (json!([peer_both]), peers(&["10.244.3.30"])),
        // Apart: alice's namespaces' pods, or frontends of the policy's namespace.
        (
            json!([peer_ns, peer_pod]),
            peers(&["10.244.1.11", "10.244.2.11", "10.244.3.30"]),
        ),
        // An empty namespaceSelector is every namespace.
        (
            json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "frontend"}}}]),
            peers(&["10.244.1.11", "10.244.2.11", "10.244.3.30"]),
        ),
        // The name label, though no namespace stores it.
        (
            json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "myproject"}}}]),
            peers(&["10.244.2.20"]),
        ),
        (
            json!([{"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["default", "other"]}
            ]}}]),
            peers(&["10.244.2.20"]),
        ),
        // An empty podSelector is every pod of the policy's namespace.
        (
            json!([{"podSelector": {}}]),
            peers(&["10.244.1.10", "10.244.1.11", "10.244.2.11", "fd00:1::10"]),
        ),
    ];
    for (i, (from, want)) in cases.into_iter().enumerate() {
        let spec = json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": from}],
        });
        let m = run(&[policy("default", "p", spec)]);
        assert!(m.problems.is_empty(), "case {i}: {:?}", m.problems);
        let e = entry(&m, "default", "p", Direction::Ingress);
        assert_eq!(e.rules, [rule(0, want, Ports::Any)], "case {i}");
    }
}

#[test]
fn docs_end_port_and_port_forms() {
    let spec = |ports: Value| {
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": ports}],
        })
    };
    let udp = |first, last| PortRange {
        protocol: Protocol::Udp,
        first,
        last,
    };
    let sctp = |first, last| PortRange {
        protocol: Protocol::Sctp,
        first,
        last,
    };
    let cases = [
        (
            json!([{"protocol": "TCP", "port": 32000, "endPort": 32768}]),
            vec![tcp(32000, 32768)],
        ),
        (json!([{"port": 80}]), vec![tcp(80, 80)]),
        (json!([{"protocol": "UDP"}]), vec![udp(0, 65535)]),
        (
            json!([{"protocol": "SCTP", "port": 9}, {"port": 70, "endPort": 90}, {"port": 80}]),
            vec![tcp(70, 90), sctp(9, 9)],
        ),
    ];
    for (i, (ports, want)) in cases.into_iter().enumerate() {
        let m = run(&[policy("default", "p", spec(ports))]);
        assert!(m.problems.is_empty(), "case {i}");
        let e = entry(&m, "default", "p", Direction::Egress);
        assert_eq!(e.rules[0].ports, numeric(&want), "case {i}");
    }
}

#[test]
fn rules_with_only_ports_or_only_peers() {
    let m = run(&[policy(
        "default",
        "p",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [
                {"ports": [{"port": 5432}]},
                {"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]},
                {"from": [], "ports": []},
            ],
        }),
    )]);
    let e = entry(&m, "default", "p", Direction::Ingress);
    assert_eq!(
        e.rules,
        [
            rule(0, Peers::Any, numeric(&[tcp(5432, 5432)])),
            rule(1, peers(&["10.244.1.11", "10.244.2.11"]), Ports::Any),
            rule(2, Peers::Any, Ports::Any),
        ]
    );
}

#[test]
fn union_of_policies_and_locality() {
    let db = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"ports": [{"port": 1}]}]});
    let fe =
        json!({"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"]});
    let remote = json!({"podSelector": {}});
    let m = run(&[
        policy("default", "a", db.clone()),
        policy("default", "b", db),
        policy("default", "c", fe),
        // Selects only pods of other nodes: not compiled here.
        policy("myproject", "d", remote),
    ]);
    assert_eq!(m.ingress_isolated, ips(&["10.244.1.10", "fd00:1::10"]));
    assert_eq!(m.egress_isolated, ips(&["10.244.1.11"]));
    let keys: Vec<_> = m.policies.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            (key("default", "a"), Direction::Ingress),
            (key("default", "b"), Direction::Ingress),
            (key("default", "c"), Direction::Egress),
        ]
    );
}

#[test]
fn bad_content_is_rejected_per_rule() {
    let rules = json!([
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["fd00::/64"]}}]},
        {"ports": [{"port": 0}]},
        {"ports": [{"port": 90, "endPort": 80}]},
        {"from": [{}]},
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]},
        {"from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}], "ports": [{"port": 443}]},
    ]);
    let spec = json!({"podSelector": {"matchLabels": {"role": "db"}}, "ingress": rules});
    let fine = json!({"podSelector": {"matchLabels": {"role": "frontend"}}, "ingress": [{}]});
    let m = run(&[
        policy("default", "bad", spec),
        policy("default", "fine", fine),
    ]);
    let want = [
        PolicyError::InvalidCidr {
            cidr: "10.0.0.0/33".into(),
        },
        PolicyError::InvalidExcept {
            cidr: "10.0.0.0/8".into(),
            except: "11.0.0.0/16".into(),
        },
        PolicyError::InvalidExcept {
            cidr: "10.0.0.0/8".into(),
            except: "10.0.0.0/8".into(),
        },
        PolicyError::InvalidExcept {
            cidr: "10.0.0.0/8".into(),
            except: "fd00::/64".into(),
        },
        PolicyError::InvalidPort(0),
        PolicyError::EndPortBelowPort { port: 90, end: 80 },
        PolicyError::InvalidPeer,
        PolicyError::InvalidPeer,
    ];
    assert_eq!(m.problems.len(), want.len(), "{:#?}", m.problems);
    for (i, (p, e)) in m.problems.iter().zip(want).enumerate() {
        assert_eq!(p.policy, key("default", "bad"));
        assert_eq!((p.direction, p.rule), (Some(Direction::Ingress), Some(i)));
        assert_eq!(p.error, e, "rule {i}");
        assert_eq!(p.effect, Effect::RuleIgnored);
    }
    // The good rule of the bad policy stands, at its own index, and the pods stay
    // isolated; the other policy is untouched.
    let bad = entry(&m, "default", "bad", Direction::Ingress);
    assert_eq!(
        bad.rules,
        [rule(
            8,
            peers(&["10.1.0.0-10.1.255.255"]),
            numeric(&[tcp(443, 443)])
        )]
    );
    assert!(m.ingress_isolated.contains(&ip("10.244.1.10")));
    let fine = entry(&m, "default", "fine", Direction::Ingress);
    assert_eq!(fine.rules, [rule(0, Peers::Any, Ports::Any)]);
}

#[test]
fn malformed_selectors_match_nothing_and_are_reported() {
    let bad_sel = json!({"matchExpressions": [{"key": "role", "operator": "In", "values": []}]});
    // A policy whose podSelector is malformed selects nothing: no isolation.
    let m = run(&[policy("default", "p", json!({"podSelector": bad_sel}))]);
    assert!(m.ingress_isolated.is_empty() && m.policies.is_empty());
    assert_eq!(m.problems.len(), 1);
    assert_eq!(m.problems[0].effect, Effect::PolicyIgnored);
    // A malformed peer selector: that peer matches nothing, the rest of the rule stands.
    let spec = json!({
        "podSelector": {"matchLabels": {"role": "db"}},
        "ingress": [{"from": [
            {"namespaceSelector": {"matchExpressions": [{"key": "x", "operator": "Near"}]}},
            {"podSelector": bad_sel},
            {"ipBlock": {"cidr": "10.9.0.0/16"}},
        ]}],
    });
    let m = run(&[policy("default", "p", spec)]);
    let e = entry(&m, "default", "p", Direction::Ingress);
    assert_eq!(
        e.rules,
        [rule(0, peers(&["10.9.0.0-10.9.255.255"]), Ports::Any)]
    );
    let effects: Vec<_> = m.problems.iter().map(|p| (p.rule, p.effect)).collect();
    assert_eq!(
        effects,
        [
            (Some(0), Effect::MatchesNothing),
            (Some(0), Effect::MatchesNothing)
        ]
    );
    // A policy without identity is ignored whole.
    let mut anon = policy("default", "x", json!({}));
    anon.metadata.namespace = None;
    let m = run(&[anon]);
    assert!(m.policies.is_empty());
    assert_eq!(m.problems[0].error, PolicyError::NoIdentity);
}

#[test]
fn named_ports_resolve_per_target_for_ingress_and_per_destination_for_egress() {
    let (mut pods, namespaces) = cast();
    let named = |name: &str, protocol, port| NamedPort {
        name: name.into(),
        protocol,
        port,
    };
    // Two local db pods serving "db" on different ports; a remote one on a third.
    pods[0].named_ports = vec![
        named("db", Protocol::Tcp, 5432),
        named("dns", Protocol::Udp, 53),
    ];
    let mut db2 = pod("default", "db2", NODE, &[("role", "db")], &["10.244.1.12"]);
    db2.named_ports = vec![named("db", Protocol::Tcp, 6432)];
    let mut db3 = pod(
        "default",
        "db3",
        "node-2",
        &[("role", "db")],
        &["10.244.2.12"],
    );
    db3.named_ports = vec![named("db", Protocol::Tcp, 7432)];
    let mut other = pod(
        "other",
        "odb",
        "node-3",
        &[("role", "db")],
        &["10.244.3.12"],
    );
    other.named_ports = vec![named("db", Protocol::Tcp, 8432)];
    pods.extend([db2, db3, other]);
    let ingress = policy(
        "default",
        "in",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"ports": [{"port": "db"}, {"port": "dns"}, {"protocol": "UDP", "port": "dns"}]}],
        }),
    );
    let egress = policy(
        "default",
        "out",
        json!({
            "podSelector": {"matchLabels": {"role": "frontend"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"role": "db"}}}], "ports": [{"port": "db"}, {"port": 9}]},
                {"ports": [{"port": "db"}]},
                {"to": [{"ipBlock": {"cidr": "10.244.3.0/24"}}], "ports": [{"port": "db"}]},
            ],
        }),
    );
    let m = compile(&[ingress, egress], &pods, &namespaces, NODE);
    assert!(m.problems.is_empty(), "{:?}", m.problems);
    let el = |a: &str, protocol, port| NamedElement {
        addr: ip(a),
        protocol,
        port,
    };
    let want_in = Ports::Only {
        numeric: vec![],
        named: Some(BTreeSet::from([
            el("10.244.1.10", Protocol::Tcp, 5432),
            el("10.244.1.10", Protocol::Udp, 53),
            el("10.244.1.12", Protocol::Tcp, 6432),
            el("fd00:1::10", Protocol::Tcp, 5432),
            el("fd00:1::10", Protocol::Udp, 53),
        ])),
    };
    let e = entry(&m, "default", "in", Direction::Ingress);
    assert_eq!(
        e.rules[0].ports, want_in,
        "a TCP \"dns\" matches no UDP port"
    );
    let e = entry(&m, "default", "out", Direction::Egress);
    let same_ns = [
        el("10.244.1.10", Protocol::Tcp, 5432),
        el("10.244.1.12", Protocol::Tcp, 6432),
        el("10.244.2.12", Protocol::Tcp, 7432),
        el("fd00:1::10", Protocol::Tcp, 5432),
    ];
    assert_eq!(
        e.rules[0].ports,
        Ports::Only {
            numeric: vec![tcp(9, 9)],
            named: Some(BTreeSet::from(same_ns)),
        }
    );
    let mut everywhere = BTreeSet::from(same_ns);
    everywhere.insert(el("10.244.3.12", Protocol::Tcp, 8432));
    assert_eq!(
        e.rules[1].ports,
        Ports::Only {
            numeric: vec![],
            named: Some(everywhere),
        }
    );
    assert_eq!(
        e.rules[2].ports,
        Ports::Only {
            numeric: vec![],
            named: Some(BTreeSet::from([el("10.244.3.12", Protocol::Tcp, 8432)])),
        }
    );
}

#[test]
fn ip_blocks_of_either_family() {
    let m = run(&[policy(
        "default",
        "p",
        json!({
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": [
                {"ipBlock": {"cidr": "fd00:2::/64", "except": ["fd00:2::/65"]}},
                {"ipBlock": {"cidr": "192.168.1.77/24"}},
            ]}],
        }),
    )]);
    let e = entry(&m, "default", "p", Direction::Ingress);
    assert_eq!(
        e.rules[0].peers,
        peers(&[
            "192.168.1.0-192.168.1.255",
            "fd00:2::8000:0:0:0-fd00:2::ffff:ffff:ffff:ffff"
        ])
    );
}
