//! Kubernetes Events on Nodes: CIDRAssigned, CIDRNotAvailable, CIDRConflict,
//! CIDRWrongSize.
//!
//! Events are best effort: the reconcile loop hands them to a background publisher
//! through a bounded queue and never waits on the API server for them.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

pub const REASON_ASSIGNED: &str = "CIDRAssigned";
pub const REASON_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// A pod CIDR outside the cluster CIDRs, overlapping another Node's, or unparsable.
pub const REASON_CONFLICT: &str = "CIDRConflict";
/// A pod CIDR inside the cluster CIDR that is not one node subnet (a /17 where each node
/// gets a /24): not recorded, so it blocks no other node's subnet.
pub const REASON_WRONG_SIZE: &str = "CIDRWrongSize";

const QUEUE: usize = 4096;
const PARALLEL: usize = 8;

/// One Event to publish about a Node.
#[derive(Debug)]
pub struct NodeEvent {
    pub node: ObjectReference,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Sends Events; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<NodeEvent>,
}

impl Events {
    /// Starts the publisher task. `instance` tells replicas apart (the pod name).
    pub fn spawn(client: kube::Client, instance: Option<String>, metrics: Arc<Metrics>) -> Events {
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: weft_common::annotations::CONTROLLER_FIELD_MANAGER.into(),
                instance,
            },
        );
        let (tx, rx) = mpsc::channel::<NodeEvent>(QUEUE);
        tokio::spawn(async move {
            tokio_stream_from(rx)
                .for_each_concurrent(PARALLEL, |ev| {
                    let recorder = recorder.clone();
                    let metrics = metrics.clone();
                    async move { publish(&recorder, ev, &metrics).await }
                })
                .await;
        });
        Events { tx }
    }

    /// Queues `ev`; drops it (with a log line) when the queue is full.
    pub fn send(&self, ev: NodeEvent) {
        if let Err(e) = self.tx.try_send(ev) {
            tracing::debug!(error = %e, "event queue full, event dropped");
        }
    }

    pub fn assigned(&self, node: ObjectReference, note: String) {
        self.send(NodeEvent {
            node,
            warning: false,
            reason: REASON_ASSIGNED,
            note,
        });
    }

    pub fn not_available(&self, node: ObjectReference, note: String) {
        self.send(NodeEvent {
            node,
            warning: true,
            reason: REASON_NOT_AVAILABLE,
            note,
        });
    }

    /// A Warning that a pod CIDR of the Node was refused (`reason`: one of
    /// [`REASON_CONFLICT`], [`REASON_WRONG_SIZE`]).
    pub fn rejected(&self, node: ObjectReference, reason: &'static str, note: String) {
        self.send(NodeEvent {
            node,
            warning: true,
            reason,
            note,
        });
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn publish(recorder: &Recorder, ev: NodeEvent, metrics: &Metrics) {
    let event = Event {
        type_: if ev.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: ev.reason.into(),
        note: Some(ev.note),
        action: "AllocatePodCIDR".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &ev.node).await {
        Metrics::inc(&metrics.errors);
        tracing::warn!(node = ev.node.name.as_deref().unwrap_or_default(), reason = ev.reason, error = %e, "cannot publish event");
    }
}
