//! The VXLAN source filter's updates, run after a sync's entries are written and off its
//! path: at 5000 peers one `nft` run takes from a few ms (an element added) to tens of ms
//! (one deleted, the counters read), and while a sync waited for it a Node change right
//! after waited too. Updates still run one at a time, in the order of the syncs.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::Error;
use crate::firewall::{Drops, PeerFilter};

/// What one update did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    pub allowed: usize,
    pub forgotten: usize,
    /// The drop counters, when they were due to be read.
    pub drops: Option<Drops>,
}

type Running = JoinHandle<Result<FilterOutcome, Error>>;

/// The filter's sets and the update running on them, if any.
#[derive(Debug, Default)]
pub struct FilterUpdates {
    filter: Arc<PeerFilter>,
    running: Mutex<Option<Running>>,
}

impl FilterUpdates {
    /// Starts making the sets hold exactly `addresses` on a blocking thread (in the
    /// calling thread's network namespace), once the update before it has ended. Returns
    /// that one's outcome (`None`: there was none).
    pub async fn start(&self, addresses: BTreeSet<IpAddr>) -> Option<Result<FilterOutcome, Error>> {
        let previous = self.settle().await;
        let filter = Arc::clone(&self.filter);
        let task = tokio::task::spawn_blocking(move || {
            let (allowed, forgotten) = filter.update(addresses)?;
            if allowed + forgotten > 0 {
                tracing::debug!(allowed, forgotten, "VXLAN peer sets updated");
            }
            let drops = match filter.drops_if_due() {
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "cannot read the VXLAN drop counters");
                    None
                }
                None => None,
            };
            Ok(FilterOutcome {
                allowed,
                forgotten,
                drops,
            })
        });
        *self.running.lock().expect("filter lock") = Some(task);
        previous
    }

    /// Waits for the running update, if any, and returns its outcome.
    pub async fn settle(&self) -> Option<Result<FilterOutcome, Error>> {
        let task = self.running.lock().expect("filter lock").take()?;
        Some(task.await.unwrap_or_else(|e| {
            Err(Error::Firewall {
                op: "update the VXLAN peer sets".into(),
                reason: format!("the update's thread failed: {e}"),
            })
        }))
    }
}
