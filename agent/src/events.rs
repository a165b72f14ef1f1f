//! Warning Events: on Nodes the agent refuses as peers (see [`crate::peers::validate`])
//! and on NetworkPolicies it cannot enforce as written (see [`crate::policy::Problem`]).
//!
//! Best effort: the loops queue a warning once when it first appears (or changes) and
//! never wait on the API server; a full queue drops the Event.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::peers::Rejection;
use crate::policy::Problem;

const QUEUE: usize = 1024;
const PARALLEL: usize = 4;

/// One Warning Event to publish.
#[derive(Clone, Debug)]
pub struct Warning {
    pub regarding: ObjectReference,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

impl From<Rejection> for Warning {
    fn from(r: Rejection) -> Warning {
        Warning {
            regarding: node_ref(&r.node),
            reason: r.reason.event_reason(),
            action: "ValidatePeer",
            note: format!("weft does not route to this node: {}", r.detail),
        }
    }
}

impl From<&Problem> for Warning {
    fn from(p: &Problem) -> Warning {
        Warning {
            regarding: ObjectReference {
                api_version: Some("networking.k8s.io/v1".into()),
                kind: Some("NetworkPolicy".into()),
                namespace: Some(p.policy.namespace.clone()),
                name: Some(p.policy.name.clone()),
                ..Default::default()
            },
            reason: "PolicyNotEnforceable",
            action: "CompilePolicy",
            note: p.to_string(),
        }
    }
}

/// Starts the publisher; `node` (this agent's node) names the reporting instance.
pub fn spawn(client: kube::Client, node: &str) -> mpsc::Sender<Warning> {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: weft_common::annotations::AGENT_FIELD_MANAGER.into(),
            instance: Some(node.to_owned()),
        },
    );
    let (tx, mut rx) = mpsc::channel::<Warning>(QUEUE);
    tokio::spawn(async move {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .for_each_concurrent(PARALLEL, |w| {
                let recorder = recorder.clone();
                async move { publish(&recorder, w).await }
            })
            .await;
    });
    tx
}

/// The reference an Event about Node `name` points at.
pub fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

async fn publish(recorder: &Recorder, w: Warning) {
    let event = Event {
        type_: EventType::Warning,
        reason: w.reason.into(),
        note: Some(w.note),
        action: w.action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &w.regarding).await {
        tracing::debug!(regarding = ?w.regarding.name, error = %e, "cannot publish the Event");
    }
}
