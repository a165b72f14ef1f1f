//! Nodes as the agent keeps them: a small projection of each Node object, the store the
//! watch feeds, and the desired peer set handed to the datapath.
//!
//! A Node object is 15-30 KB (images, conditions, managed fields). The watch deserializes
//! each one into [`SlimNode`], which reads only the fields weft needs and skips the rest
//! while parsing, so no whole Node is ever held; the store keeps one [`NodeLite`] (a few
//! hundred bytes) per node. Comparing projections is also what makes a heartbeat (a
//! status-only update) a no-op for the datapath.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};
use weft_common::annotations::{self as ann, vtep_from};

use crate::peers::{Age, Peer, PeerChange, Reason, Rejection};

/// Node annotations the agent reads; every other annotation is dropped while parsing.
pub const WATCHED_ANNOTATIONS: [&str; 4] = [
    ann::VTEP_MAC,
    ann::PUBLIC_IP,
    ann::VNI,
    ann::PUBLIC_IP_OVERRIDE,
];

/// A Node as read from the API server with only the fields weft uses: name,
/// resourceVersion (the watch resumes from it), weft's annotations, spec.podCIDR(s) and
/// status.addresses. Values stay strings so one bad field cannot fail a whole list page.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNode {
    #[serde(deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimSpec>,
    #[serde(default)]
    pub status: Option<SlimStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimSpec {
    #[serde(default, rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimStatus {
    #[serde(default)]
    pub addresses: Option<Vec<SlimAddress>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

fn slim_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        name: Option<String>,
        resource_version: Option<String>,
        uid: Option<String>,
        creation_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
        annotations: Option<BTreeMap<String, String>>,
    }
    let m = Meta::deserialize(d)?;
    let annotations = m.annotations.map(|mut a| {
        a.retain(|k, _| WATCHED_ANNOTATIONS.contains(&k.as_str()));
        a
    });
    Ok(ObjectMeta {
        name: m.name,
        resource_version: m.resource_version,
        uid: m.uid,
        creation_timestamp: m.creation_timestamp,
        annotations,
        ..ObjectMeta::default()
    })
}

impl kube::Resource for SlimNode {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "nodes".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the agent keeps of a Node. Two projections are equal exactly when nothing the
/// datapath or the publisher cares about changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeLite {
    pub name: String,
    /// spec.podCIDRs (spec.podCIDR when the list is absent), in the API's order.
    pub pod_cidrs: Vec<IpNet>,
    /// Only the keys of [`WATCHED_ANNOTATIONS`].
    pub annotations: BTreeMap<String, String>,
    /// status.addresses of type InternalIP, in the API's order.
    pub internal_ips: Vec<IpAddr>,
    /// Values that could not be used (bad CIDR, bad annotation), to log on change.
    pub problems: Vec<String>,
    /// The first problem that makes the node unusable as a peer (a pod CIDR or a VTEP
    /// annotation that does not parse).
    pub malformed: Option<String>,
    /// Creation time and UID: who came first when two Nodes claim the same thing.
    pub age: Age,
}

impl NodeLite {
    pub fn from_slim(node: &SlimNode) -> NodeLite {
        let mut problems = Vec::new();
        let spec = node.spec.clone().unwrap_or_default();
        let raw_cidrs = match spec.pod_cidrs {
            Some(list) if !list.is_empty() => list,
            _ => spec.pod_cidr.into_iter().collect(),
        };
        let pod_cidrs = raw_cidrs
            .iter()
            .filter_map(|s| match s.trim().parse::<IpNet>() {
                Ok(net) => Some(net),
                Err(_) => {
                    problems.push(format!("spec.podCIDRs: {s:?} is not a CIDR"));
                    None
                }
            })
            .collect();
        let mut malformed = problems.first().cloned();
        let internal_ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| match a.address.trim().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    problems.push(format!(
                        "status.addresses: InternalIP {:?} is not an IP",
                        a.address
                    ));
                    None
                }
            })
            .collect();
        let annotations: BTreeMap<String, String> = node
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| WATCHED_ANNOTATIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Err(e) = vtep_from(&annotations) {
            malformed = malformed.or_else(|| Some(e.clone()));
            problems.push(e);
        }
        let age = Age {
            created: node
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            uid: node.metadata.uid.clone().unwrap_or_default(),
        };
        NodeLite {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidrs,
            annotations,
            internal_ips,
            problems,
            malformed,
            age,
        }
    }

    /// The peer this node is for the datapath: `None` until it has a pod CIDR and a
    /// published VTEP; a rejection when one of those does not parse. Whether the values
    /// are acceptable is [`crate::peers::validate`]'s business.
    pub fn to_candidate(&self) -> Option<Result<Peer, Rejection>> {
        if let Some(problem) = &self.malformed {
            return Some(Err(Rejection {
                node: self.name.clone(),
                reason: Reason::Malformed,
                detail: problem.clone(),
            }));
        }
        self.to_peer().map(Ok)
    }

    /// The peer this node is for the datapath, unchecked: `None` until it has a pod CIDR
    /// and a published (and parseable) VTEP.
    pub fn to_peer(&self) -> Option<Peer> {
        if self.pod_cidrs.is_empty() {
            return None;
        }
        let vtep = vtep_from(&self.annotations).ok().flatten()?;
        // The InternalIP of the VTEP's family, for direct routing.
        let node_ip = self
            .internal_ips
            .iter()
            .find(|ip| ip.is_ipv4() == vtep.public_ip.is_ipv4())
            .or(self.internal_ips.first())
            .copied();
        Some(Peer {
            name: self.name.clone(),
            pod_cidrs: self.pod_cidrs.clone(),
            vtep: Some(vtep),
            node_ip,
            age: self.age.clone(),
            vni: self.annotations.get(ann::VNI).cloned(),
        })
    }
}

/// The candidate peers (every node but `self_name` that is complete, sorted by name; not
/// validated yet) and the nodes left out because a value does not parse.
pub fn build_peers<'a>(
    nodes: impl IntoIterator<Item = &'a NodeLite>,
    self_name: &str,
) -> (Vec<Peer>, Vec<Rejection>) {
    let mut peers = Vec::new();
    let mut rejected = Vec::new();
    for candidate in nodes
        .into_iter()
        .filter(|n| n.name != self_name)
        .filter_map(NodeLite::to_candidate)
    {
        match candidate {
            Ok(p) => peers.push(p),
            Err(r) => rejected.push(r),
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    (peers, rejected)
}

/// The agent's view of all Nodes, fed by watcher events.
#[derive(Debug, Default)]
pub struct NodeStore {
    nodes: BTreeMap<String, NodeLite>,
    /// Each node's [`NodeLite::to_candidate`], kept up to date with `nodes` one node at a
    /// time: a sync borrows them instead of rebuilding 5000 peers (a millisecond) for
    /// every change.
    candidates: BTreeMap<String, Result<Peer, Rejection>>,
    /// The list being received after a (re)start of the watch; swapped in at InitDone.
    relisting: Option<BTreeMap<String, NodeLite>>,
    listed: bool,
    /// For each node whose candidate changed since the last [`NodeStore::take_changes`],
    /// the candidate it had then (`None`: none, or malformed), so a sync can check and
    /// plan those peers alone. `None` when unknown: before the first take, and after a
    /// relist that changed anything.
    changed: Option<BTreeMap<String, Option<Peer>>>,
}

impl NodeStore {
    /// Applies one watch event. Returns true when the set of projections changed (and
    /// on the first completed list), i.e. when the datapath needs a sync.
    pub fn apply(&mut self, event: watcher::Event<SlimNode>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(node) => {
                let lite = NodeLite::from_slim(&node);
                let relisting = self.relisting.get_or_insert_with(BTreeMap::new);
                relisting.insert(lite.name.clone(), lite);
                false
            }
            watcher::Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                for lite in fresh.values() {
                    if self.nodes.get(&lite.name) != Some(lite) {
                        log_problems(lite);
                    }
                }
                let changed = !self.listed || fresh != self.nodes;
                if changed {
                    self.changed = None;
                    self.candidates = fresh
                        .values()
                        .filter_map(|n| Some((n.name.clone(), n.to_candidate()?)))
                        .collect();
                }
                self.nodes = fresh;
                self.listed = true;
                tracing::debug!(nodes = self.nodes.len(), changed, "Node list complete");
                changed
            }
            watcher::Event::Apply(node) => {
                let lite = NodeLite::from_slim(&node);
                if self.nodes.get(&lite.name) == Some(&lite) {
                    return false;
                }
                log_problems(&lite);
                let name = lite.name.clone();
                self.note_change(&name);
                match lite.to_candidate() {
                    Some(c) => self.candidates.insert(name.clone(), c),
                    None => self.candidates.remove(&name),
                };
                let old = self.nodes.insert(name.clone(), lite);
                tracing::debug!(node = %name, new = old.is_none(), "Node changed");
                true
            }
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.unwrap_or_default();
                self.note_change(&name);
                let removed = self.nodes.remove(&name).is_some();
                self.candidates.remove(&name);
                if removed {
                    tracing::debug!(node = %name, "Node deleted");
                }
                removed
            }
        }
    }

    /// True once a complete list has been received: before that, a sync would remove
    /// the entries of nodes not yet seen.
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    pub fn get(&self, name: &str) -> Option<&NodeLite> {
        self.nodes.get(name)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Remembers `name`'s candidate as it is now, unless it changed already since the
    /// last take (the sync must see the one it knew).
    fn note_change(&mut self, name: &str) {
        let Some(changed) = &mut self.changed else {
            return;
        };
        if !changed.contains_key(name) {
            let old = self.candidates.get(name).and_then(|c| c.as_ref().ok());
            changed.insert(name.to_owned(), old.cloned());
        }
    }

    /// The nodes changed since the last call, each with the candidate it had then;
    /// `None` when that is not known (the first call, a relist that changed anything):
    /// the whole candidate set must be checked. The next call reports from now on.
    pub fn take_changes(&mut self) -> Option<BTreeMap<String, Option<Peer>>> {
        self.changed.replace(BTreeMap::new())
    }

    /// `taken` (from [`NodeStore::take_changes`]) as the datapath needs it: each node's
    /// candidate then and now, leaving out `self_name`.
    pub fn changes<'a>(
        &'a self,
        taken: &'a BTreeMap<String, Option<Peer>>,
        self_name: &str,
    ) -> Vec<PeerChange<'a>> {
        taken
            .iter()
            .filter(|(name, _)| *name != self_name)
            .map(|(name, old)| PeerChange {
                name,
                old: old.as_ref(),
                new: self.candidates.get(name).and_then(|c| c.as_ref().ok()),
            })
            .collect()
    }

    /// What [`build_peers`] returns, borrowed from the store.
    pub fn peers(&self, self_name: &str) -> (Vec<&Peer>, Vec<Rejection>) {
        let mut peers = Vec::with_capacity(self.candidates.len());
        let mut rejected = Vec::new();
        for (name, candidate) in &self.candidates {
            match candidate {
                _ if name == self_name => {}
                Ok(p) => peers.push(p),
                Err(r) => rejected.push(r.clone()),
            }
        }
        (peers, rejected)
    }
}

fn log_problems(lite: &NodeLite) {
    for problem in &lite.problems {
        tracing::warn!(node = %lite.name, problem = %problem, "ignoring a bad value on a Node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weft_common::annotations::{Mac, Vtep};

    /// A Node as the API server sends it, with the bulky fields weft ignores.
    fn node_json(name: &str, cidrs: &[&str], mac: Option<&str>, ip: &str) -> serde_json::Value {
        let mut annotations = json!({
            "node.alpha.kubernetes.io/ttl": "0",
            "kubectl.kubernetes.io/last-applied-configuration": "x".repeat(2000),
        });
        if let Some(mac) = mac {
            annotations[ann::VTEP_MAC] = json!(mac);
            annotations[ann::PUBLIC_IP] = json!(ip);
            annotations[ann::VNI] = json!("1");
        }
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "resourceVersion": "42",
                "uid": "u-1",
                "labels": {"kubernetes.io/hostname": name},
                "annotations": annotations,
                "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"podCIDR": cidrs.first(), "podCIDRs": cidrs, "providerID": "kind://x"},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": name},
                    {"type": "InternalIP", "address": ip},
                ],
                "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2024-01-01T00:00:00Z"}],
                "images": [{"names": ["registry/x:1"], "sizeBytes": 1000}],
                "nodeInfo": {"kubeletVersion": "v1.34.0"},
            },
        })
    }

    fn slim(v: serde_json::Value) -> SlimNode {
        serde_json::from_value(v).unwrap()
    }

    fn lite(name: &str, cidrs: &[&str], mac: Option<&str>, ip: &str) -> NodeLite {
        NodeLite::from_slim(&slim(node_json(name, cidrs, mac, ip)))
    }

    #[test]
    fn projection_keeps_only_what_weft_uses() {
        let s = slim(node_json(
            "n1",
            &["10.244.1.0/24"],
            Some("02:00:00:00:00:01"),
            "192.168.0.11",
        ));
        assert_eq!(s.metadata.resource_version.as_deref(), Some("42"));
        assert!(s.metadata.managed_fields.is_none() && s.metadata.labels.is_none());
        let l = NodeLite::from_slim(&s);
        assert_eq!(l.name, "n1");
        assert_eq!(l.pod_cidrs, vec!["10.244.1.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(
            l.internal_ips,
            vec!["192.168.0.11".parse::<IpAddr>().unwrap()]
        );
        let keys: Vec<&str> = l.annotations.keys().map(String::as_str).collect();
        assert_eq!(keys, [ann::PUBLIC_IP, ann::VNI, ann::VTEP_MAC]);
        assert!(l.problems.is_empty());
    }

    #[test]
    fn projection_of_a_k8s_openapi_node() {
        // The typed Node serialized by k8s-openapi reads back the same way.
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(node_json(
            "n2",
            &["10.244.2.0/24", "fd00::/64"],
            None,
            "fd01::2",
        ))
        .unwrap();
        let l = NodeLite::from_slim(&slim(serde_json::to_value(&node).unwrap()));
        assert_eq!(l.pod_cidrs.len(), 2);
        assert!(l.annotations.is_empty());
    }

    #[test]
    fn projection_falls_back_to_pod_cidr_and_reports_bad_values() {
        let l = NodeLite::from_slim(&slim(json!({
            "metadata": {"name": "n3", "annotations": {
                ann::VTEP_MAC: "zz", ann::PUBLIC_IP: "10.0.0.1"}},
            "spec": {"podCIDR": "10.244.3.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "bogus"}]},
        })));
        assert_eq!(l.pod_cidrs, vec!["10.244.3.0/24".parse::<IpNet>().unwrap()]);
        assert!(l.internal_ips.is_empty());
        assert_eq!(l.problems.len(), 2, "{:?}", l.problems);
        assert!(l.problems.iter().any(|p| p.contains(ann::VTEP_MAC)));
        let bad = NodeLite::from_slim(&slim(json!({
            "metadata": {"name": "n4"}, "spec": {"podCIDRs": ["10.244.4.0/33"]}})));
        assert!(bad.pod_cidrs.is_empty());
        assert!(bad.problems[0].contains("10.244.4.0/33"));
        // No spec or status at all is fine too.
        let bare = NodeLite::from_slim(&slim(json!({"metadata": {"name": "n5"}})));
        assert!(bare.pod_cidrs.is_empty() && bare.internal_ips.is_empty());
    }

    #[test]
    fn peers_exclude_self_and_incomplete_nodes() {
        let nodes = [
            lite(
                "b",
                &["10.244.2.0/24"],
                Some("02:00:00:00:00:02"),
                "192.168.0.12",
            ),
            lite(
                "me",
                &["10.244.1.0/24"],
                Some("02:00:00:00:00:01"),
                "192.168.0.11",
            ),
            lite("no-cidr", &[], Some("02:00:00:00:00:03"), "192.168.0.13"),
            lite("no-vtep", &["10.244.4.0/24"], None, "192.168.0.14"),
            lite(
                "a",
                &["10.244.5.0/24"],
                Some("02:00:00:00:00:05"),
                "192.168.0.15",
            ),
        ];
        let (peers, rejected) = build_peers(&nodes, "me");
        assert!(rejected.is_empty());
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            peers[1],
            Peer {
                name: "b".into(),
                pod_cidrs: vec!["10.244.2.0/24".parse().unwrap()],
                vtep: Some(Vtep {
                    mac: "02:00:00:00:00:02".parse::<Mac>().unwrap(),
                    public_ip: "192.168.0.12".parse().unwrap()
                }),
                node_ip: Some("192.168.0.12".parse().unwrap()),
                age: Age {
                    created: None,
                    uid: "u-1".into()
                },
                vni: Some("1".into()),
            }
        );
    }

    #[test]
    fn unparseable_values_are_rejections_and_age_is_read() {
        let mut v = node_json(
            "bad",
            &["10.244.2.0/24"],
            Some("ff:ff:ff:ff:ff:zz"),
            "192.168.0.12",
        );
        v["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:10Z");
        let bad = NodeLite::from_slim(&slim(v));
        assert_eq!(bad.age.created, Some(1_704_067_210));
        assert_eq!(bad.age.uid, "u-1");
        let ok = lite(
            "ok",
            &["10.244.3.0/24"],
            Some("02:00:00:00:00:03"),
            "192.168.0.13",
        );
        let no_cidr = NodeLite::from_slim(&slim(json!({
            "metadata": {"name": "n4"}, "spec": {"podCIDRs": ["10.244.4.0/33"]}})));
        let (peers, rejected) = build_peers(&[bad, ok, no_cidr], "me");
        assert_eq!(peers.len(), 1);
        let got: Vec<(&str, Reason)> = rejected
            .iter()
            .map(|r| (r.node.as_str(), r.reason))
            .collect();
        assert_eq!(got, [("bad", Reason::Malformed), ("n4", Reason::Malformed)]);
        assert!(rejected[0].detail.contains(ann::VTEP_MAC));
        assert!(rejected[1].detail.contains("10.244.4.0/33"));
    }

    #[test]
    fn peer_uses_override_and_picks_the_internal_ip_of_the_vtep_family() {
        let mut l = lite(
            "p",
            &["10.244.2.0/24"],
            Some("02:00:00:00:00:02"),
            "fd01::2",
        );
        l.internal_ips.push("192.168.0.2".parse().unwrap());
        l.annotations
            .insert(ann::PUBLIC_IP.into(), "192.168.0.2".into());
        l.annotations
            .insert(ann::PUBLIC_IP_OVERRIDE.into(), "203.0.113.2".into());
        let p = l.to_peer().unwrap();
        assert_eq!(p.vtep.unwrap().public_ip.to_string(), "203.0.113.2");
        assert_eq!(p.node_ip.unwrap().to_string(), "192.168.0.2");
    }

    fn ev_apply(v: serde_json::Value) -> watcher::Event<SlimNode> {
        watcher::Event::Apply(slim(v))
    }

    #[test]
    fn store_syncs_only_on_relevant_changes() {
        let mut store = NodeStore::default();
        let n1 = node_json(
            "n1",
            &["10.244.1.0/24"],
            Some("02:00:00:00:00:01"),
            "192.168.0.11",
        );
        assert!(!store.apply(watcher::Event::Init));
        assert!(!store.apply(watcher::Event::InitApply(slim(n1.clone()))));
        assert!(!store.is_listed());
        assert!(
            store.apply(watcher::Event::InitDone),
            "first complete list needs a sync"
        );
        assert!(store.is_listed());
        assert_eq!(store.len(), 1);

        // A heartbeat: new resourceVersion, new condition times, other annotations.
        let mut beat = n1.clone();
        beat["metadata"]["resourceVersion"] = json!("43");
        beat["status"]["conditions"][0]["lastHeartbeatTime"] = json!("2024-01-01T00:00:10Z");
        beat["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"] = json!("5");
        assert!(
            !store.apply(ev_apply(beat)),
            "a heartbeat must not trigger a sync"
        );

        let mut moved = n1.clone();
        moved["metadata"]["annotations"][ann::VTEP_MAC] = json!("02:00:00:00:00:99");
        assert!(store.apply(ev_apply(moved.clone())));
        assert!(!store.apply(ev_apply(moved)), "same projection again");

        let n2 = node_json("n2", &["10.244.2.0/24"], None, "192.168.0.12");
        assert!(store.apply(ev_apply(n2.clone())));
        assert!(store.apply(watcher::Event::Delete(slim(n2.clone()))));
        assert!(
            !store.apply(watcher::Event::Delete(slim(n2))),
            "unknown node"
        );
    }

    #[test]
    fn relist_replaces_the_set_and_reports_whether_it_changed() {
        let mut store = NodeStore::default();
        let n1 = node_json(
            "n1",
            &["10.244.1.0/24"],
            Some("02:00:00:00:00:01"),
            "192.168.0.11",
        );
        let n2 = node_json(
            "n2",
            &["10.244.2.0/24"],
            Some("02:00:00:00:00:02"),
            "192.168.0.12",
        );
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(slim(n1.clone())),
            watcher::Event::InitApply(slim(n2)),
        ] {
            store.apply(e);
        }
        assert!(store.apply(watcher::Event::InitDone));
        // Same objects again: nothing to do.
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(slim(n1.clone())));
        assert_eq!(
            store.len(),
            2,
            "the old set serves until the new list is complete"
        );
        // n2 was deleted while the watch was down: the relist drops it.
        assert!(store.apply(watcher::Event::InitDone));
        assert_eq!(store.len(), 1);
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(slim(n1)));
        assert!(!store.apply(watcher::Event::InitDone));
        assert_eq!(store.peers("me").0.len(), 1);
        assert_eq!(store.peers("n1").0.len(), 0);
    }

    #[test]
    fn the_store_s_peers_follow_every_change() {
        let mut store = NodeStore::default();
        let same = |store: &NodeStore| {
            let (peers, rejected) = store.peers("me");
            let peers: Vec<Peer> = peers.into_iter().cloned().collect();
            assert_eq!((peers, rejected), build_peers(store.nodes.values(), "me"));
        };
        let n = |name: &str, third: u8, mac: Option<&str>| {
            slim(node_json(
                name,
                &[&format!("10.244.{third}.0/24")],
                mac,
                &format!("192.168.0.{third}"),
            ))
        };
        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(n(
            "me",
            1,
            Some("02:00:00:00:00:01"),
        )));
        store.apply(watcher::Event::InitApply(n(
            "a",
            2,
            Some("02:00:00:00:00:02"),
        )));
        store.apply(watcher::Event::InitApply(n("b", 3, None)));
        store.apply(watcher::Event::InitDone);
        same(&store);
        assert_eq!(store.peers("me").0.len(), 1);
        for e in [
            watcher::Event::Apply(n("b", 3, Some("02:00:00:00:00:03"))),
            watcher::Event::Apply(n("c", 4, Some("not a mac"))),
            watcher::Event::Apply(n("a", 2, Some("02:00:00:00:00:22"))),
            watcher::Event::Delete(n("b", 3, None)),
            watcher::Event::Apply(n("c", 4, Some("02:00:00:00:00:04"))),
        ] {
            store.apply(e);
            same(&store);
        }
        let (peers, _) = store.peers("me");
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(peers[0].vtep.unwrap().mac.to_string(), "02:00:00:00:00:22");
    }
}
