//! weft's nftables table, `inet weft`, applied through `nft -j -f -` as one transaction
//! (add, delete and recreate the table with its full contents), so the ruleset is always
//! either the old one or the new one and never touches any other table.
//!
//! * chain `forward` (filter, hook forward, priority filter): accept traffic from and to
//!   the cluster CIDRs. nftables runs every base chain on a hook, so this accept cannot
//!   undo a `drop` in another table (e.g. Docker's iptables FORWARD policy); it makes weft
//!   independent of a drop policy in its own table only. [`crate::iptables`] puts the same
//!   accepts into the iptables FORWARD chain for that.
//! * chain `postrouting` (nat, hook postrouting, priority srcnat): packets carrying
//!   kube-proxy's masquerade mark `0x4000` are left to kube-proxy (return); pod-to-pod
//!   traffic (source and destination in a cluster CIDR) is never NATed, so source pod IPs
//!   survive; pod traffic to anything outside the cluster CIDRs (multicast excepted) is
//!   masqueraded to the node's address (`fully-random`).
//!
//! Masquerade off: no table at all ([`remove`]).

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::datapath::Error;

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "weft";
/// kube-proxy's masquerade mark (`--masquerade-bit 14`).
pub const KUBE_PROXY_MASQ_MARK: u32 = 0x4000;

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
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

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": expr}}})
}

fn multicast(net: &IpNet) -> IpNet {
    match net {
        IpNet::V4(_) => "224.0.0.0/4".parse().expect("literal"),
        IpNet::V6(_) => "ff00::/8".parse().expect("literal"),
    }
}

/// The whole `inet weft` table as one `nft -j` document that replaces the old one.
pub fn render(cluster_cidrs: &[IpNet]) -> Value {
    let mut cmds = vec![
        json!({"add": {"table": table()}}),
        json!({"delete": {"table": table()}}),
        json!({"add": {"table": table()}}),
        json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": "forward",
            "type": "filter", "hook": "forward", "prio": 0, "policy": "accept",
        }}}),
        json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": "postrouting",
            "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept",
        }}}),
    ];
    for net in cluster_cidrs {
        cmds.push(rule(
            "forward",
            vec![prefix_match("saddr", net, false), json!({"accept": null})],
        ));
        cmds.push(rule(
            "forward",
            vec![prefix_match("daddr", net, false), json!({"accept": null})],
        ));
    }
    let mark = KUBE_PROXY_MASQ_MARK;
    cmds.push(rule(
        "postrouting",
        vec![
            json!({"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, mark]}, "right": mark}}),
            json!({"return": null}),
        ],
    ));
    for net in cluster_cidrs {
        cmds.push(rule(
            "postrouting",
            vec![
                prefix_match("saddr", net, false),
                prefix_match("daddr", net, false),
                json!({"return": null}),
            ],
        ));
    }
    for net in cluster_cidrs {
        cmds.push(rule(
            "postrouting",
            vec![
                prefix_match("saddr", net, false),
                prefix_match("daddr", &multicast(net), true),
                json!({"masquerade": {"flags": ["fully-random"]}}),
            ],
        ));
    }
    json!({ "nftables": cmds })
}

/// The document that removes the table (and succeeds when there is none).
pub fn render_remove() -> Value {
    json!({"nftables": [{"add": {"table": table()}}, {"delete": {"table": table()}}]})
}

fn run_nft(doc: &Value, op: &str) -> Result<(), Error> {
    let fail = |reason: String| Error::Firewall {
        op: op.into(),
        reason,
    };
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run nft: {e}")))?;
    let text = doc.to_string();
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(|e| fail(format!("writing to nft: {e}")))?;
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "nft exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Replaces the `inet weft` table in the calling thread's network namespace.
pub fn apply(cluster_cidrs: &[IpNet]) -> Result<(), Error> {
    run_nft(&render(cluster_cidrs), "replace table inet weft")
}

/// Removes the `inet weft` table; no table is success.
pub fn remove() -> Result<(), Error> {
    run_nft(&render_remove(), "delete table inet weft")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(doc: &Value, chain: &str) -> Vec<Value> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"]["rule"].as_object())
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    #[test]
    fn replaces_the_table_in_one_document() {
        let doc = render(&["10.244.0.0/16".parse().unwrap()]);
        let cmds = doc["nftables"].as_array().unwrap();
        assert_eq!(
            cmds[0],
            json!({"add": {"table": {"family": "inet", "name": "weft"}}})
        );
        assert_eq!(
            cmds[1],
            json!({"delete": {"table": {"family": "inet", "name": "weft"}}})
        );
        assert_eq!(
            cmds[2],
            json!({"add": {"table": {"family": "inet", "name": "weft"}}})
        );
        // Nothing outside our table.
        for c in cmds {
            let body = c.as_object().unwrap().values().next().unwrap();
            let obj = body.as_object().unwrap().values().next().unwrap();
            let t = obj.get("table").or_else(|| obj.get("name")).unwrap();
            assert_eq!(t, "weft");
        }
    }

    #[test]
    fn pod_to_pod_returns_before_masquerade_and_kube_proxy_mark_is_left_alone() {
        let doc = render(&[
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ]);
        let nat = rules(&doc, "postrouting");
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
        let fwd = rules(&doc, "forward");
        assert_eq!(fwd.len(), 4);
        assert!(fwd.iter().all(|r| r[1] == json!({"accept": null})));
    }
}
