//! Leader election on a coordination.k8s.io Lease: only the holder allocates.
//!
//! The loop publishes the holder state on a watch channel that the reconcile loop checks
//! before each patch. Any error talking to the API server counts as losing the lease at
//! once (a replica that cannot renew must assume another one took over); the manager is
//! then rebuilt, and since the Lease still names this identity, leadership comes back
//! as soon as the API server answers again and the lease has not been taken.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

/// Lease timing: held for 15 s, renewed 5 s before it runs out.
pub const LEASE_DURATION_S: u64 = 15;
pub const LEASE_GRACE_S: u64 = 5;

/// Where and as whom to take the lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// A leadership channel that is always true (`--leader-elect=false`).
pub fn always() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(true);
    // Keep the sender alive for the life of the process: the value never changes.
    std::mem::forget(tx);
    rx
}

/// Starts competing for the lease; the receiver says whether this replica holds it.
/// Dropping every receiver releases the lease; the task ends then.
pub fn spawn(
    client: kube::Client,
    cfg: LeaseConfig,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(client, cfg, tx));
    (rx, task)
}

async fn build(
    client: &kube::Client,
    cfg: &LeaseConfig,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    LeaseManagerBuilder::new(client.clone(), cfg.name.clone())
        .with_namespace(cfg.namespace.clone())
        .with_identity(cfg.identity.clone())
        .with_duration(LEASE_DURATION_S)
        .with_grace(LEASE_GRACE_S)
        .build()
        .await
}

async fn run(client: kube::Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let manager = match build(&client, &cfg).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(lease = %cfg.name, namespace = %cfg.namespace, error = %e, "cannot set up the lease");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            tokio::select! {
                _ = tx.closed() => {
                    // Shutting down: hand the lease over instead of letting it expire.
                    if let Err(e) = manager.release().await {
                        tracing::warn!(error = %e, "cannot release the lease");
                    }
                    return;
                }
                changed = manager.changed() => match changed {
                    Ok(leader) => {
                        backoff = Duration::from_millis(500);
                        tracing::info!(identity = %cfg.identity, leader, "lease state changed");
                        tx.send_replace(leader);
                    }
                    Err(e) => {
                        if tx.send_replace(false) {
                            tracing::warn!(identity = %cfg.identity, error = %e, "lease renewal failed: stopped allocating");
                        }
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
