//! Warning Events on Nodes the agent refuses as peers (see [`crate::peers::validate`]).
//!
//! Best effort: the reconcile loop queues a rejection once when it first appears (or its
//! reason changes) and never waits on the API server; a full queue drops the Event.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::peers::Rejection;

const QUEUE: usize = 1024;
const PARALLEL: usize = 4;

/// Starts the publisher; `node` (this agent's node) names the reporting instance.
pub fn spawn(client: kube::Client, node: &str) -> mpsc::Sender<Rejection> {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: weft_common::annotations::AGENT_FIELD_MANAGER.into(),
            instance: Some(node.to_owned()),
        },
    );
    let (tx, mut rx) = mpsc::channel::<Rejection>(QUEUE);
    tokio::spawn(async move {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .for_each_concurrent(PARALLEL, |r| {
                let recorder = recorder.clone();
                async move { publish(&recorder, r).await }
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

async fn publish(recorder: &Recorder, r: Rejection) {
    let event = Event {
        type_: EventType::Warning,
        reason: r.reason.event_reason().into(),
        note: Some(format!("weft does not route to this node: {}", r.detail)),
        action: "ValidatePeer".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &node_ref(&r.node)).await {
        tracing::debug!(node = %r.node, error = %e, "cannot publish the rejection Event");
    }
}
