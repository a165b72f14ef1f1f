//! What the agent writes on its own Node: the VTEP annotations (metadata only, merge
//! patch) and the NetworkUnavailable=False condition (strategic merge patch), both as
//! field manager `weft-agent` through the `nodes/status` subresource.
//!
//! The agent may patch `nodes/status` only, not `nodes` (manifests/rbac-agent.yaml): the
//! status subresource resets spec but keeps metadata changes, so the annotations go
//! through it too. The ValidatingAdmissionPolicy in manifests/admission-agent.yaml then
//! lets the agent change only `weft.dev/*` annotations and this condition, and only on the
//! Node its pod runs on.
//!
//! Node status conditions are a list merged by `type` under a strategic merge patch, so
//! the patch below touches only the NetworkUnavailable entry and leaves the kubelet's
//! Ready/MemoryPressure/... conditions alone. A JSON merge patch would replace the whole
//! list, which is why it is not used here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use weft_common::annotations::{self as ann, Mac};

/// Type of the node condition the network plugin owns.
pub const NETWORK_UNAVAILABLE: &str = "NetworkUnavailable";
pub const CONDITION_MESSAGE: &str = "weft-agent programmed the VXLAN overlay on this node";

/// The MAC this node published before (kept across restarts so peers' entries stay
/// valid). A bad value is ignored: the datapath then keeps or picks its own.
pub fn published_mac(annotations: &BTreeMap<String, String>) -> Option<Mac> {
    annotations.get(ann::VTEP_MAC).and_then(|m| m.parse().ok())
}

/// The public IP to publish: the operator's override when set and valid, else the
/// detected underlay address. The error names a bad override (the detected one is used).
pub fn public_ip(
    detected: IpAddr,
    annotations: &BTreeMap<String, String>,
) -> (IpAddr, Option<String>) {
    match annotations.get(ann::PUBLIC_IP_OVERRIDE) {
        None => (detected, None),
        Some(text) => match text.trim().parse() {
            Ok(ip) => (ip, None),
            Err(_) => (
                detected,
                Some(format!(
                    "annotation {}: {text:?} is not an IP address",
                    ann::PUBLIC_IP_OVERRIDE
                )),
            ),
        },
    }
}

/// The annotations this node should carry: its VTEP (one device serves every pod CIDR,
/// IPv4 and IPv6) once it has a pod CIDR, and the VNI.
pub fn desired_annotations(
    mac: Mac,
    public_ip: IpAddr,
    vni: u32,
    pod_cidrs: &[IpNet],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if !pod_cidrs.is_empty() {
        out.insert(ann::VTEP_MAC.to_string(), mac.to_string());
        out.insert(ann::PUBLIC_IP.to_string(), public_ip.to_string());
    }
    out.insert(ann::VNI.to_string(), vni.to_string());
    out
}

/// True when some desired annotation is missing or different on the Node.
pub fn needs_publish(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> bool {
    desired.iter().any(|(k, v)| current.get(k) != Some(v))
}

/// The JSON merge patch body: metadata.annotations only (sent to nodes/status).
pub fn annotations_patch(desired: &BTreeMap<String, String>) -> Value {
    json!({ "metadata": { "annotations": desired } })
}

/// The strategic merge patch body for nodes/status.
pub fn condition_patch(now: Time) -> Value {
    json!({
        "status": {
            "conditions": [{
                "type": NETWORK_UNAVAILABLE,
                "status": "False",
                "reason": ann::CONDITION_REASON,
                "message": CONDITION_MESSAGE,
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]
        }
    })
}

/// True when the Node already says the network is available because of weft.
pub fn condition_is_set(conditions: &[NodeCondition]) -> bool {
    conditions.iter().any(|c| {
        c.type_ == NETWORK_UNAVAILABLE
            && c.status == "False"
            && c.reason.as_deref() == Some(ann::CONDITION_REASON)
    })
}

fn params() -> PatchParams {
    PatchParams {
        field_manager: Some(ann::AGENT_FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Writes the annotations on the Node (merge patch of metadata through nodes/status, as
/// `weft-agent`).
pub async fn publish_annotations(
    api: &Api<Node>,
    node: &str,
    desired: &BTreeMap<String, String>,
) -> kube::Result<()> {
    api.patch_status(node, &params(), &Patch::Merge(annotations_patch(desired)))
        .await
        .map(drop)
}

/// Sets NetworkUnavailable=False (reason WeftIsUp) unless the Node already has it, so
/// the transition time stays that of the real transition. Returns true when it patched.
pub async fn set_network_available(api: &Api<Node>, node: &str) -> kube::Result<bool> {
    let current = api.get_status(node).await?;
    let conditions = current
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    if condition_is_set(&conditions) {
        return Ok(false);
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    api.patch_status(node, &params(), &Patch::Strategic(condition_patch(now)))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn mac() -> Mac {
        "02:00:00:00:00:01".parse().unwrap()
    }

    #[test]
    fn desired_annotations_are_the_vtep_and_the_vni_for_any_family() {
        let ip: IpAddr = "192.168.0.11".parse().unwrap();
        let v4 = desired_annotations(mac(), ip, 1, &["10.244.1.0/24".parse().unwrap()]);
        assert_eq!(
            v4,
            ann_map(&[
                (ann::VTEP_MAC, "02:00:00:00:00:01"),
                (ann::PUBLIC_IP, "192.168.0.11"),
                (ann::VNI, "1")
            ])
        );
        let dual = desired_annotations(
            mac(),
            ip,
            7,
            &[
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
        );
        assert_eq!(dual.len(), 3);
        assert_eq!(dual[ann::VTEP_MAC], "02:00:00:00:00:01");
        assert_eq!(dual[ann::VNI], "7");
        // An IPv6-only node has the same VTEP keys; no pod CIDR yet: only the VNI.
        let v6 = desired_annotations(mac(), ip, 1, &["fd00:10:244:1::/64".parse().unwrap()]);
        assert_eq!(v6.len(), 3);
        assert_eq!(desired_annotations(mac(), ip, 1, &[]).len(), 1);
    }

    #[test]
    fn override_wins_and_a_bad_override_is_reported() {
        let detected: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(public_ip(detected, &BTreeMap::new()), (detected, None));
        let a = ann_map(&[(ann::PUBLIC_IP_OVERRIDE, "203.0.113.9")]);
        assert_eq!(public_ip(detected, &a).0.to_string(), "203.0.113.9");
        let a = ann_map(&[(ann::PUBLIC_IP_OVERRIDE, "nat-box")]);
        let (ip, err) = public_ip(detected, &a);
        assert_eq!(ip, detected);
        assert!(err.unwrap().contains(ann::PUBLIC_IP_OVERRIDE));
    }

    #[test]
    fn published_mac_is_reused_when_valid() {
        assert_eq!(
            published_mac(&ann_map(&[(ann::VTEP_MAC, "02:00:00:00:00:01")])),
            Some(mac())
        );
        assert_eq!(published_mac(&ann_map(&[(ann::VTEP_MAC, "garbage")])), None);
        assert_eq!(published_mac(&BTreeMap::new()), None);
    }

    #[test]
    fn publish_only_when_something_differs() {
        let desired = ann_map(&[(ann::VTEP_MAC, "02:00:00:00:00:01"), (ann::VNI, "1")]);
        let mut current = desired.clone();
        current.insert("other".into(), "x".into());
        assert!(!needs_publish(&current, &desired));
        current.insert(ann::VNI.into(), "2".into());
        assert!(needs_publish(&current, &desired));
        assert!(needs_publish(&BTreeMap::new(), &desired));
    }

    #[test]
    fn annotations_patch_touches_metadata_only() {
        let desired = ann_map(&[(ann::VTEP_MAC, "02:00:00:00:00:01")]);
        assert_eq!(
            annotations_patch(&desired),
            json!({"metadata": {"annotations": {"weft.dev/vtep-mac": "02:00:00:00:00:01"}}})
        );
    }

    #[test]
    fn every_published_annotation_is_one_the_admission_policy_allows() {
        // manifests/admission-agent.yaml lets the agent change weft.dev/* keys only.
        let ip: IpAddr = "192.168.0.11".parse().unwrap();
        let cidrs = ["10.244.1.0/24".parse().unwrap()];
        let desired = desired_annotations(mac(), ip, 1, &cidrs);
        assert!(!desired.is_empty());
        for key in annotations_patch(&desired)["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(key.starts_with(ann::PREFIX), "{key} is not a weft.dev/ key");
        }
    }

    #[test]
    fn condition_patch_is_one_entry_merged_by_type() {
        let now = Time("2025-01-02T03:04:05Z".parse().unwrap());
        assert_eq!(
            condition_patch(now),
            json!({"status": {"conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "WeftIsUp",
                "message": CONDITION_MESSAGE,
                "lastTransitionTime": "2025-01-02T03:04:05Z",
                "lastHeartbeatTime": "2025-01-02T03:04:05Z",
            }]}})
        );
    }

    #[test]
    fn condition_is_set_only_for_false_with_our_reason() {
        let cond = |status: &str, reason: &str| NodeCondition {
            type_: NETWORK_UNAVAILABLE.into(),
            status: status.into(),
            reason: Some(reason.into()),
            ..NodeCondition::default()
        };
        assert!(condition_is_set(&[cond("False", "WeftIsUp")]));
        assert!(!condition_is_set(&[cond("True", "NoRouteCreated")]));
        assert!(!condition_is_set(&[cond("False", "FlannelIsUp")]));
        assert!(!condition_is_set(&[]));
    }
}
