//! The NetworkPolicy loop: watch events in, the `inet weft-policy` table out.
//!
//! Each turn folds every event already queued into [`Inputs`], then, once all three
//! watches have listed, compiles, renders and writes the difference from what the table
//! holds ([`super::diff`]: element changes over nfnetlink, one batch; chain changes
//! through `nft`). There is no debounce: the first change after a quiet
//! spell is applied at once, and what arrives while a load runs is folded into the next
//! one, so a burst costs a few loads, not one per event.
//!
//! No window at start or restart: the table is never removed or flushed by a starting
//! agent. Until the first complete list of pods, namespaces and policies, the table left
//! by the previous agent keeps enforcing; then it is replaced in one transaction (its
//! drop counters carried over). The same full replacement runs every `resync`, and after
//! a load failed, so hand edits and lost state are repaired.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::mpsc;

use super::diff::{diff, Structural, Update};
use super::inputs::{Input, Inputs};
use super::nfnl::{self, SetChange};
use super::render::Ruleset;
use super::rules::RuleModel;
use super::table;
use crate::datapath::Error;
use crate::events::Warning;
use crate::metrics::{ErrorKind, Metrics, PolicyCounts};
use crate::reconcile::retry_delay;

/// How often the drop counters are mirrored into the metrics.
const COUNTER_PERIOD: Duration = Duration::from_secs(5);

pub struct Enforcer {
    pub node: String,
    pub metrics: Arc<Metrics>,
    pub warnings: Option<mpsc::Sender<Warning>>,
    /// Full replacement of the table this often.
    pub resync: Duration,
    /// The lock held from the first complete table on ([`weft_common::policy_gate`]):
    /// until then the CNI plugin gives no pod a network.
    pub gate: Option<PathBuf>,
}

/// What one table update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    Incremental,
    Full,
}

impl Enforcer {
    /// Runs until the watch stream ends (an error then).
    pub async fn run<S>(self, inputs: S) -> anyhow::Result<()>
    where
        S: Stream<Item = Result<Input, watcher::Error>>,
    {
        let mut inputs = std::pin::pin!(inputs);
        let mut held: Option<weft_common::policy_gate::Held> = None;
        let mut state = Inputs::default();
        let mut applied: Option<Ruleset> = None;
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut dirty = false;
        let mut failures = 0u32;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut resync = tokio::time::interval(self.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        let mut counters = tokio::time::interval(COUNTER_PERIOD);
        counters.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = inputs.next() => match item {
                    Some(item) => dirty |= self.take(&mut state, item),
                    None => anyhow::bail!("the NetworkPolicy watches ended"),
                },
                _ = resync.tick() => {
                    applied = None;
                    dirty = true;
                }
                _ = counters.tick() => self.mirror_counters().await,
                _ = retry => {
                    retry_at = None;
                    dirty = true;
                }
            }
            // Fold in whatever else is queued already: one load for all of it.
            while let Some(Some(item)) = inputs.next().now_or_never() {
                dirty |= self.take(&mut state, item);
            }
            if !dirty || retry_at.is_some() || !state.synced() {
                continue;
            }
            dirty = false;
            match self.sync(&state, &mut applied, &mut reported).await {
                Ok(_) => {
                    failures = 0;
                    if held.is_none() {
                        held = self.hold_gate();
                    }
                }
                Err(e) => {
                    failures += 1;
                    let delay = retry_delay(failures);
                    tracing::warn!(error = %e, attempt = failures, retry_in_ms = delay.as_millis() as u64,
                        "programming the NetworkPolicy table failed");
                    retry_at = Some(tokio::time::Instant::now() + delay);
                }
            }
        }
    }

    /// Opens the gate for new pods; a failure (another agent holds it) is logged and
    /// retried at the next update.
    fn hold_gate(&self) -> Option<weft_common::policy_gate::Held> {
        let path = self.gate.as_ref()?;
        match weft_common::policy_gate::hold(path) {
            Ok(h) => {
                tracing::info!(lock = %path.display(), "NetworkPolicy table current; new pods may get their network");
                Some(h)
            }
            Err(e) => {
                self.metrics.error(ErrorKind::Policy);
                tracing::error!(lock = %path.display(), error = %e,
                    "cannot hold the NetworkPolicy lock (another weft-agent on this node?); the CNI plugin gives no new pod a network until it is held");
                None
            }
        }
    }

    fn take(&self, state: &mut Inputs, item: Result<Input, watcher::Error>) -> bool {
        match item {
            Ok(input) => state.apply(input),
            Err(e) => {
                self.metrics.error(ErrorKind::Watch);
                tracing::warn!(error = %e, "a NetworkPolicy watch (pods, namespaces or policies) failed; retrying");
                false
            }
        }
    }

    /// Compiles `state` and brings the table to it; `applied` is what the table holds
    /// (`None`: unknown, so the table is replaced whole).
    pub async fn sync(
        &self,
        state: &Inputs,
        applied: &mut Option<Ruleset>,
        reported: &mut BTreeSet<String>,
    ) -> Result<Applied, Error> {
        let started = Instant::now();
        let model = state.compile(&self.node);
        let desired = Ruleset::build(&model);
        let result = match applied.as_ref() {
            None => replace(&desired).await.map(|()| Applied::Full),
            Some(old) => match diff(old, &desired) {
                Update::None => Ok(Applied::Nothing),
                Update::Elements(changes) => incremental(elements(changes).await, &desired).await,
                Update::Structural(up) => incremental(structural(up).await, &desired).await,
                Update::Replace(_) => replace(&desired).await.map(|()| Applied::Full),
            },
        };
        let took = started.elapsed();
        match result {
            Ok(how) => {
                let counts = counts(&model, &desired);
                *applied = Some(desired);
                self.metrics.record_policy_sync(took, Ok(counts));
                if how != Applied::Nothing {
                    tracing::debug!(
                        ?how,
                        took_ms = took.as_secs_f64() * 1e3,
                        policies = counts.policies,
                        rules = counts.rules,
                        set_elements = counts.set_elements,
                        "NetworkPolicy table updated"
                    );
                }
                self.report(&model, reported);
                Ok(how)
            }
            Err(e) => {
                *applied = None;
                self.metrics.record_policy_sync(took, Err(()));
                Err(e)
            }
        }
    }

    /// Logs and queues an Event for each problem not reported before.
    fn report(&self, model: &RuleModel, reported: &mut BTreeSet<String>) {
        let mut now = BTreeSet::new();
        for p in &model.problems {
            let text = p.to_string();
            if !reported.contains(&text) {
                tracing::warn!(policy = %p.policy, problem = %text, "NetworkPolicy cannot be enforced as written");
                if let Some(tx) = &self.warnings {
                    let _ = tx.try_send(p.into());
                }
            }
            now.insert(text);
        }
        *reported = now;
    }

    async fn mirror_counters(&self) {
        let read = tokio::task::spawn_blocking(table::counters).await;
        if let Ok(Some(c)) = read {
            let (ingress, egress) = table::drops(&c);
            self.metrics.set_policy_drops(ingress, egress);
        }
    }
}

fn counts(model: &RuleModel, rs: &Ruleset) -> PolicyCounts {
    let policies: BTreeSet<_> = model.policies.keys().map(|(k, _)| k).collect();
    PolicyCounts {
        policies: policies.len(),
        rules: model.policies.values().map(|p| p.rules.len()).sum(),
        set_elements: rs.sets.values().map(|s| s.elements.len()).sum(),
        problems: model.problems.len(),
    }
}

/// After an incremental update: on failure (the table is not what we think, changed by
/// hand), the table is replaced whole.
async fn incremental(result: Result<(), Error>, desired: &Ruleset) -> Result<Applied, Error> {
    match result {
        Ok(()) => Ok(Applied::Incremental),
        Err(e) => {
            tracing::warn!(error = %e, "updating the NetworkPolicy table failed; replacing it");
            replace(desired).await.map(|()| Applied::Full)
        }
    }
}

/// Runs `f` on the blocking pool (it waits on the kernel or on `nft`).
async fn blocking(
    what: &str,
    f: impl FnOnce() -> Result<(), Error> + Send + 'static,
) -> Result<(), Error> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(Error::Firewall {
            op: what.into(),
            reason: format!("the task failed: {e}"),
        })
    })
}

async fn load(script: String, what: &'static str) -> Result<(), Error> {
    blocking(what, move || table::load(&script, what)).await
}

/// One nfnetlink batch of element changes.
async fn elements(changes: Vec<SetChange>) -> Result<(), Error> {
    if changes.is_empty() {
        return Ok(());
    }
    blocking("update elements", move || nfnl::apply(&changes)).await
}

/// The three steps of [`Structural`], in order.
async fn structural(up: Structural) -> Result<(), Error> {
    elements(up.narrow).await?;
    load(up.script, "update").await?;
    elements(up.widen).await
}

/// Replaces the table with `desired` in one transaction, keeping the drop counters.
async fn replace(desired: &Ruleset) -> Result<(), Error> {
    let kept = tokio::task::spawn_blocking(table::counters)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    load(desired.script_keeping(&kept), "replace").await
}
