//! Setting a Node's pod CIDRs: one merge patch of spec.podCIDR and spec.podCIDRs, and
//! what its answer means for the allocation table.

use ipnet::IpNet;
use kube::api::{Patch, PatchParams};
use kube::Api;
use tokio::sync::watch;
use weft_common::annotations::CONTROLLER_FIELD_MANAGER;

use crate::node::NodeCidrs;

/// How a patch ended.
#[derive(Debug)]
pub enum Outcome {
    /// The API server now holds these pod CIDRs for the node (ours, unless it raced).
    Assigned(NodeCidrs),
    /// Refused (409/422): the node as re-read afterwards; it may already hold a podCIDR.
    Refused(NodeCidrs),
    /// The node does not exist any more.
    Gone,
    /// Not sent: this replica is not the leader (any more).
    NotLeader,
    /// The API server was unreachable or failed (5xx, 429, transport): the patch may or
    /// may not have been applied; retry the same value.
    Transient(kube::Error),
    /// Refused for another reason (4xx): not applied.
    Rejected(kube::Error),
}

/// The merge patch body: primary family first in both fields.
pub fn body(cidrs: &[IpNet]) -> serde_json::Value {
    let all: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    serde_json::json!({
        "spec": {
            "podCIDR": all.first(),
            "podCIDRs": all,
        }
    })
}

/// Patches `node` with `cidrs` unless leadership was lost; on 409/422 re-reads it.
pub async fn assign(
    api: Api<NodeCidrs>,
    node: String,
    cidrs: Vec<IpNet>,
    leader: watch::Receiver<bool>,
) -> Outcome {
    if !*leader.borrow() {
        return Outcome::NotLeader;
    }
    let params = PatchParams {
        field_manager: Some(CONTROLLER_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let err = match api.patch(&node, &params, &Patch::Merge(body(&cidrs))).await {
        Ok(n) => return Outcome::Assigned(n),
        Err(e) => e,
    };
    match status_code(&err) {
        Some(404) => Outcome::Gone,
        Some(409 | 422) => match api.get_opt(&node).await {
            Ok(Some(n)) => Outcome::Refused(n),
            Ok(None) => Outcome::Gone,
            Err(e) => Outcome::Transient(e),
        },
        Some(429) | Some(500..) | None => Outcome::Transient(err),
        Some(_) => Outcome::Rejected(err),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
