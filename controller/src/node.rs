//! The small projection of a Node the controller keeps: name, uid and pod CIDRs.
//!
//! Nodes weigh 15-30 KB (images, conditions, managed fields); the controller needs a few
//! dozen bytes of each. Deserialising the list and watch answers straight into this
//! type drops everything else while parsing, so 5000 Nodes cost kilobytes, not 100 MB.

use std::borrow::Cow;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Deserializer, Serialize};

/// A Node reduced to what allocation needs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NodeCidrs {
    #[serde(deserialize_with = "slim_meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeCidrsSpec,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct NodeCidrsSpec {
    #[serde(rename = "podCIDR", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs", default, skip_serializing_if = "Vec::is_empty")]
    pub pod_cidrs: Vec<String>,
}

/// Keeps name, uid, resourceVersion and creationTimestamp (which of two Nodes claiming
/// one subnet came first); skips labels, annotations and managed fields.
fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Slim {
        name: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        creation_timestamp: Option<Time>,
    }
    let s = Slim::deserialize(d)?;
    Ok(ObjectMeta {
        name: s.name,
        uid: s.uid,
        resource_version: s.resource_version,
        creation_timestamp: s.creation_timestamp,
        ..ObjectMeta::default()
    })
}

impl kube::Resource for NodeCidrs {
    type DynamicType = ();
    type Scope = kube::core::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Node".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
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

impl NodeCidrs {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// Oldest first: creation time, then UID (both set by the API server, so a Node
    /// cannot choose to sort before one that exists already; the name can be chosen).
    pub fn age_key(&self) -> (Option<&Time>, Option<&str>) {
        (
            self.metadata.creation_timestamp.as_ref(),
            self.metadata.uid.as_deref(),
        )
    }

    /// True when the API server holds any pod CIDR for the node: it can't be changed.
    pub fn has_pod_cidr(&self) -> bool {
        self.spec.pod_cidr.as_deref().is_some_and(|s| !s.is_empty())
            || !self.spec.pod_cidrs.is_empty()
    }

    /// The pod CIDRs (podCIDRs, or podCIDR when only that is set), parsed; the strings
    /// that do not parse come back in the second list.
    pub fn pod_cidrs(&self) -> (Vec<IpNet>, Vec<String>) {
        let raw: Vec<&str> = if self.spec.pod_cidrs.is_empty() {
            self.spec
                .pod_cidr
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect()
        } else {
            self.spec.pod_cidrs.iter().map(String::as_str).collect()
        };
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for s in raw {
            match s.parse::<IpNet>() {
                Ok(n) => good.push(n),
                Err(_) => bad.push(s.to_string()),
            }
        }
        (good, bad)
    }
}

/// The reference Events point at.
pub fn node_ref(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: uid.map(Into::into),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_drops_the_heavy_parts() {
        let json = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","uid":"u1",
            "resourceVersion":"7","labels":{"a":"b"},"managedFields":[{"manager":"kubelet"}]},
            "spec":{"podCIDR":"10.244.1.0/24","podCIDRs":["10.244.1.0/24","fd00::/64"],
            "providerID":"x"},"status":{"images":[{"names":["big"],"sizeBytes":1}]}}"#;
        let n: NodeCidrs = serde_json::from_str(json).unwrap();
        assert_eq!(n.name(), "n1");
        assert_eq!(n.metadata.uid.as_deref(), Some("u1"));
        assert!(n.metadata.creation_timestamp.is_none());
        assert!(n.metadata.labels.is_none() && n.metadata.managed_fields.is_none());
        assert!(n.has_pod_cidr());
        let (good, bad) = n.pod_cidrs();
        assert_eq!(good.len(), 2);
        assert!(bad.is_empty());
    }

    #[test]
    fn older_nodes_sort_first_whatever_their_names() {
        let node = |name: &str, created: &str| -> NodeCidrs {
            serde_json::from_str(&format!(
                r#"{{"metadata":{{"name":"{name}","uid":"u-{name}","creationTimestamp":"{created}"}}}}"#
            ))
            .unwrap()
        };
        let mut list = [
            node("a-new", "2026-03-01T00:00:00Z"),
            node("z-old", "2025-01-01T00:00:00Z"),
        ];
        list.sort_by(|x, y| x.age_key().cmp(&y.age_key()));
        assert_eq!(list[0].name(), "z-old");
    }

    #[test]
    fn pod_cidr_alone_and_garbage() {
        let n: NodeCidrs =
            serde_json::from_str(r#"{"metadata":{"name":"n"},"spec":{"podCIDR":"nope"}}"#).unwrap();
        assert!(n.has_pod_cidr());
        assert_eq!(n.pod_cidrs(), (vec![], vec!["nope".to_string()]));
        let empty: NodeCidrs = serde_json::from_str(r#"{"metadata":{"name":"n"}}"#).unwrap();
        assert!(!empty.has_pod_cidr());
    }
}
