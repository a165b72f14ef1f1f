//! The Nodes both agents watch: kubelet-like objects (~20 KB) with a pod CIDR and both
//! annotation sets, as weft-agent and flanneld on those nodes would have published them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use weft_common::annotations::{self as weft, Mac};
use weft_e2e::fixtures::node_ip;

use super::agents::Kind;
use crate::bench::agent::{rss_node, rss_pod_cidr};

/// flannel's annotation prefix (`--kube-annotation-prefix`, default).
const FLANNEL: &str = "flannel.alpha.coreos.com";
/// Requests in flight when creating, deleting or patching many Nodes.
const CONCURRENCY: usize = 32;
/// flanneld's own Node takes the last /24 of the cluster CIDR; weft-agent's the first.
const FLANNEL_NODE_INDEX: u32 = (1 << 14) - 1;

pub fn name(k: u32) -> String {
    format!("bench-node-{k:05}")
}

/// Remote node `k`'s pod CIDR (a /24 of the cluster CIDR).
pub fn pod_cidr(k: u32) -> ipnet::Ipv4Net {
    rss_pod_cidr(k).parse().expect("a valid /24")
}

/// Remote node `k`'s VTEP MAC in generation `gen` (a burst changes every node's MAC).
pub fn vtep_mac(k: u32, gen: u8) -> Mac {
    Mac([0x02, gen, 0x57, (k >> 16) as u8, (k >> 8) as u8, k as u8])
}

/// Sets both annotation sets for a VTEP at (`ip`, `mac`), VNI 1.
fn annotate(ann: &mut BTreeMap<String, String>, ip: Ipv4Addr, mac: Mac) {
    ann.insert(weft::VTEP_MAC.into(), mac.to_string());
    ann.insert(weft::PUBLIC_IP.into(), ip.to_string());
    ann.insert(weft::VNI.into(), "1".into());
    // As flannel v0.28.10's kube subnet manager writes them (pkg/subnet/kube): the vxlan
    // backend's data is its vxlanLeaseAttrs struct marshalled as JSON.
    ann.insert(format!("{FLANNEL}/backend-type"), "vxlan".into());
    ann.insert(
        format!("{FLANNEL}/backend-data"),
        format!(r#"{{"VNI":1,"VtepMAC":"{mac}"}}"#),
    );
    ann.insert(format!("{FLANNEL}/public-ip"), ip.to_string());
    ann.insert(format!("{FLANNEL}/kube-subnet-manager"), "true".into());
}

/// Remote node `k` (>= 1).
pub fn remote_node(k: u32, gen: u8) -> Node {
    let ip = node_ip(k);
    let mut node = rss_node(&name(k), ip, k, true);
    annotate(
        node.metadata
            .annotations
            .get_or_insert_with(Default::default),
        ip,
        vtep_mac(k, gen),
    );
    node
}

/// The Node an agent runs as: a pod CIDR, no annotations (the agent publishes its own).
pub fn own_node(kind: Kind, ip: Ipv4Addr) -> Node {
    let k = match kind {
        Kind::Weft => 0,
        Kind::Flannel => FLANNEL_NODE_INDEX,
    };
    rss_node(kind.node_name(), ip, k, false)
}

pub struct Cluster {
    pub api: Api<Node>,
    /// The MAC generation the remote Nodes carry now.
    pub gen: u8,
}

impl Cluster {
    pub async fn create(&self, ks: impl Iterator<Item = u32>) -> Result<()> {
        let gen = self.gen;
        futures::stream::iter(ks)
            .map(|k| {
                let api = self.api.clone();
                async move {
                    api.create(&PostParams::default(), &remote_node(k, gen))
                        .await
                        .with_context(|| format!("create {}", name(k)))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    pub async fn delete(&self, ks: impl Iterator<Item = u32>) -> Result<()> {
        futures::stream::iter(ks)
            .map(|k| {
                let api = self.api.clone();
                async move {
                    api.delete(&name(k), &DeleteParams::default())
                        .await
                        .with_context(|| format!("delete {}", name(k)))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Moves every listed node to the next MAC generation (both annotation sets).
    pub async fn next_macs(&mut self, ks: impl Iterator<Item = u32>) -> Result<()> {
        self.gen = self.gen.wrapping_add(1);
        let gen = self.gen;
        futures::stream::iter(ks)
            .map(|k| {
                let api = self.api.clone();
                async move {
                    let mut ann = BTreeMap::new();
                    annotate(&mut ann, node_ip(k), vtep_mac(k, gen));
                    let patch = serde_json::json!({"metadata": {"annotations": ann}});
                    api.patch(&name(k), &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .with_context(|| format!("patch {}", name(k)))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_for_each(|_| async { Ok(()) })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_nodes_carry_both_annotation_sets() {
        let node = remote_node(7, 3);
        let ann = node.metadata.annotations.unwrap();
        assert_eq!(ann["weft.dev/vtep-mac"], "02:03:57:00:00:07");
        assert_eq!(
            ann["flannel.alpha.coreos.com/backend-data"],
            r#"{"VNI":1,"VtepMAC":"02:03:57:00:00:07"}"#
        );
        assert_eq!(ann["flannel.alpha.coreos.com/public-ip"], "10.0.0.17");
        assert_eq!(ann["weft.dev/public-ip"], "10.0.0.17");
        assert_eq!(ann["flannel.alpha.coreos.com/kube-subnet-manager"], "true");
        let spec = node.spec.unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("100.64.7.0/24"));
        assert_eq!(pod_cidr(7).to_string(), "100.64.7.0/24");
        let own = own_node(Kind::Flannel, Ipv4Addr::new(192, 168, 84, 2));
        assert_eq!(
            own.spec.unwrap().pod_cidr.as_deref(),
            Some("100.127.255.0/24")
        );
    }
}
