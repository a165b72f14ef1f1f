//! The `inet weft` table as `nft -j` documents (pure).
//!
//! * set `vxlan_peers_v4` / `vxlan_peers_v6`: the underlay addresses of the accepted
//!   peers, kept by [`super::vxlan`] element by element.
//! * chain `input` (filter, hook input): VXLAN (UDP to the configured port) is accepted
//!   only from those sets; from the node bridge (a pod) or from anyone else it is counted
//!   and dropped. Without this, any host on the underlay and any pod could inject frames
//!   into the overlay with any source pod IP.
//! * chain `forward` (filter, hook forward): pod traffic to the VXLAN port of any node is
//!   counted and dropped; then traffic from and to the cluster CIDRs is accepted.
//!   nftables runs every base chain on a hook, so an accept here cannot undo a `drop` in
//!   another table (e.g. Docker's iptables FORWARD policy); [`crate::iptables`] puts the
//!   same accepts into the iptables FORWARD chain for that.
//! * chain `postrouting` (nat, hook postrouting, priority srcnat), only with masquerade:
//!   packets carrying kube-proxy's masquerade mark `0x4000` are left to kube-proxy
//!   (return); pod-to-pod traffic (source and destination in a cluster CIDR) is never
//!   NATed, so source pod IPs survive; pod traffic to anything outside the cluster CIDRs
//!   (multicast excepted) is masqueraded to the node's address (`fully-random`).
//!
//! [`render`] updates the table in place: chains are flushed and refilled, sets and
//! counters are declared but never emptied, so an agent restart does not open a window in
//! which the peers' VXLAN packets are dropped. [`render_fresh`] rebuilds it from nothing
//! (when the in-place update fails, e.g. a chain was changed by hand).

use ipnet::IpNet;
use serde_json::{json, Value};

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "weft";
/// kube-proxy's masquerade mark (`--masquerade-bit 14`).
pub const KUBE_PROXY_MASQ_MARK: u32 = 0x4000;
pub const SET_V4: &str = "vxlan_peers_v4";
pub const SET_V6: &str = "vxlan_peers_v6";
/// VXLAN packets from non-peers dropped at input.
pub const COUNTER_FOREIGN: &str = "vxlan_dropped";
/// Pod packets to a VXLAN port dropped (input or forward).
pub const COUNTER_FROM_PODS: &str = "vxlan_from_pods_dropped";

/// What the table depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub cluster_cidrs: Vec<IpNet>,
    pub masquerade: bool,
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// The node bridge: packets from it come from pods.
    pub bridge: String,
}

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
}

fn obj(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

fn prefix_match(field: &str, net: &IpNet, negate: bool) -> Value {
    let protocol = match net {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    json!({"match": {
        "op": if negate { "!=" } else { "==" },
        "left": {"payload": {"protocol": protocol, "field": field}},
        "right": {"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}},
    }})
}

fn udp_dport(port: u16) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": port}})
}

fn iifname(name: &str) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": name}})
}

fn saddr_in_set(protocol: &str, set: &str) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": protocol, "field": "saddr"}}, "right": format!("@{set}")}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn multicast(net: &IpNet) -> IpNet {
    match net {
        IpNet::V4(_) => "224.0.0.0/4".parse().expect("literal"),
        IpNet::V6(_) => "ff00::/8".parse().expect("literal"),
    }
}

fn base_chain(name: &str, ty: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": FAMILY, "table": TABLE, "name": name,
        "type": ty, "hook": hook, "prio": prio, "policy": "accept",
    }}})
}

const CHAINS: [(&str, &str, &str, i32); 3] = [
    ("input", "filter", "input", 0),
    ("forward", "filter", "forward", 0),
    ("postrouting", "nat", "postrouting", 100),
];

/// The declarations both documents share: sets and counters (kept if present).
fn declarations() -> Vec<Value> {
    vec![
        json!({"add": {"set": {"family": FAMILY, "table": TABLE, "name": SET_V4, "type": "ipv4_addr"}}}),
        json!({"add": {"set": {"family": FAMILY, "table": TABLE, "name": SET_V6, "type": "ipv6_addr"}}}),
        json!({"add": {"counter": obj(COUNTER_FOREIGN)}}),
        json!({"add": {"counter": obj(COUNTER_FROM_PODS)}}),
    ]
}

fn rules(spec: &TableSpec) -> Vec<Value> {
    let port = spec.vxlan_port;
    let drop_counted = |counter: &str| vec![json!({"counter": counter}), json!({"drop": null})];
    let mut cmds = Vec::new();
    // input: pods first (their source is a pod IP, never in the sets, but they get their
    // own counter), then the peers, then everyone else.
    let mut from_pods = vec![iifname(&spec.bridge), udp_dport(port)];
    from_pods.extend(drop_counted(COUNTER_FROM_PODS));
    cmds.push(rule("input", from_pods.clone()));
    cmds.push(rule(
        "input",
        vec![
            udp_dport(port),
            saddr_in_set("ip", SET_V4),
            json!({"accept": null}),
        ],
    ));
    cmds.push(rule(
        "input",
        vec![
            udp_dport(port),
            saddr_in_set("ip6", SET_V6),
            json!({"accept": null}),
        ],
    ));
    let mut foreign = vec![udp_dport(port)];
    foreign.extend(drop_counted(COUNTER_FOREIGN));
    cmds.push(rule("input", foreign));

    cmds.push(rule("forward", from_pods));
    for net in &spec.cluster_cidrs {
        cmds.push(rule(
            "forward",
            vec![prefix_match("saddr", net, false), json!({"accept": null})],
        ));
        cmds.push(rule(
            "forward",
            vec![prefix_match("daddr", net, false), json!({"accept": null})],
        ));
    }
    if !spec.masquerade {
        return cmds;
    }
    let mark = KUBE_PROXY_MASQ_MARK;
    cmds.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, mark]}, "right": mark}}),
            json!({"return": null}),
        ],
    ));
    for net in &spec.cluster_cidrs {
        cmds.push(rule(
            "postrouting",
            vec![
                prefix_match("saddr", net, false),
                prefix_match("daddr", net, false),
                json!({"return": null}),
            ],
        ));
    }
    for net in &spec.cluster_cidrs {
        cmds.push(rule(
            "postrouting",
            vec![
                prefix_match("saddr", net, false),
                prefix_match("daddr", &multicast(net), true),
                json!({"masquerade": {"flags": ["fully-random"]}}),
            ],
        ));
    }
    cmds
}

/// Brings an existing (or missing) table to `spec` in one transaction, keeping the sets'
/// elements and the counters.
pub fn render(spec: &TableSpec) -> Value {
    let mut cmds = vec![json!({"add": {"table": table()}})];
    cmds.extend(declarations());
    for (name, ty, hook, prio) in CHAINS {
        cmds.push(base_chain(name, ty, hook, prio));
        cmds.push(json!({"flush": {"chain": obj(name)}}));
        if name == "postrouting" && !spec.masquerade {
            cmds.push(json!({"delete": {"chain": obj(name)}}));
        }
    }
    cmds.extend(rules(spec));
    json!({ "nftables": cmds })
}

/// The whole table from nothing, replacing whatever is there (sets start empty).
pub fn render_fresh(spec: &TableSpec) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": table()}}),
        json!({"delete": {"table": table()}}),
        json!({"add": {"table": table()}}),
    ];
    cmds.extend(declarations());
    for (name, ty, hook, prio) in CHAINS {
        if name != "postrouting" || spec.masquerade {
            cmds.push(base_chain(name, ty, hook, prio));
        }
    }
    cmds.extend(rules(spec));
    json!({ "nftables": cmds })
}

/// The document that removes the table (and succeeds when there is none).
pub fn render_remove() -> Value {
    json!({"nftables": [{"add": {"table": table()}}, {"delete": {"table": table()}}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(masquerade: bool) -> TableSpec {
        TableSpec {
            cluster_cidrs: vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
            ],
            masquerade,
            vxlan_port: 8472,
            bridge: "weft0".into(),
        }
    }

    fn rules_of(doc: &Value, chain: &str) -> Vec<Value> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    fn touches_only_our_table(doc: &Value) {
        for c in doc["nftables"].as_array().unwrap() {
            let body = c.as_object().unwrap().values().next().unwrap();
            let obj = body.as_object().unwrap().values().next().unwrap();
            let t = obj.get("table").or_else(|| obj.get("name")).unwrap();
            assert!(
                t == "weft" || obj.get("table") == Some(&json!("weft")),
                "{c}"
            );
        }
    }

    #[test]
    fn in_place_update_keeps_sets_and_never_deletes_the_table() {
        let doc = render(&spec(true));
        touches_only_our_table(&doc);
        let cmds = doc["nftables"].as_array().unwrap();
        assert!(!cmds.iter().any(|c| c.get("delete").is_some()));
        assert!(!cmds.iter().any(|c| c["flush"].get("set").is_some()));
        assert!(cmds.iter().any(|c| c["add"]["set"]["name"] == SET_V4));
        let flushed: Vec<&Value> = cmds
            .iter()
            .filter_map(|c| c["flush"]["chain"].get("name"))
            .collect();
        assert_eq!(flushed, ["input", "forward", "postrouting"]);
        // Without masquerade the nat chain goes, emptied first.
        let off = render(&spec(false));
        let last_ops: Vec<String> = off["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.to_string().contains("postrouting"))
            .map(|c| c.as_object().unwrap().keys().next().unwrap().clone())
            .collect();
        assert_eq!(last_ops, ["add", "flush", "delete"]);
        assert!(rules_of(&off, "postrouting").is_empty());
        let fresh = render_fresh(&spec(true));
        touches_only_our_table(&fresh);
        assert_eq!(fresh["nftables"][1]["delete"]["table"]["name"], "weft");
    }

    #[test]
    fn vxlan_is_accepted_only_from_peers_and_never_from_pods() {
        let doc = render(&spec(true));
        let input = rules_of(&doc, "input");
        assert_eq!(input.len(), 4);
        assert_eq!(input[0][0]["match"]["right"], "weft0");
        assert_eq!(input[0][1]["match"]["right"], 8472);
        assert_eq!(input[0][2], json!({"counter": COUNTER_FROM_PODS}));
        assert_eq!(input[0][3], json!({"drop": null}));
        assert_eq!(input[1][1]["match"]["right"], "@vxlan_peers_v4");
        assert_eq!(input[2][1]["match"]["left"]["payload"]["protocol"], "ip6");
        assert_eq!(input[3][1], json!({"counter": COUNTER_FOREIGN}));
        assert_eq!(input[3][2], json!({"drop": null}));
        let fwd = rules_of(&doc, "forward");
        assert_eq!(
            fwd[0], input[0],
            "pods' VXLAN to other nodes is dropped first"
        );
        assert_eq!(fwd.len(), 5);
        assert!(fwd[1..].iter().all(|r| r[1] == json!({"accept": null})));
    }

    #[test]
    fn pod_to_pod_returns_before_masquerade_and_kube_proxy_mark_is_left_alone() {
        let doc = render(&spec(true));
        let nat = rules_of(&doc, "postrouting");
        assert_eq!(nat.len(), 5);
        assert_eq!(nat[0][0]["match"]["right"], 0x4000);
        assert_eq!(nat[0][1], json!({"return": null}));
        assert_eq!(nat[1][0]["match"]["right"]["prefix"]["addr"], "10.244.0.0");
        assert_eq!(nat[1][1]["match"]["left"]["payload"]["field"], "daddr");
        assert_eq!(nat[1][2], json!({"return": null}));
        assert_eq!(nat[2][0]["match"]["left"]["payload"]["protocol"], "ip6");
        let masq = &nat[3];
        assert_eq!(masq[1]["match"]["op"], "!=");
        assert_eq!(masq[1]["match"]["right"]["prefix"]["addr"], "224.0.0.0");
        assert!(masq[2].get("masquerade").is_some());
        assert_eq!(nat[4][1]["match"]["right"]["prefix"]["addr"], "ff00::");
    }
}
