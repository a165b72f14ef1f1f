//! The reconcile loop: Node watch events in, datapath syncs out.
//!
//! The datapath is always synced from the whole desired peer set (never from the last
//! event), and only once the first complete Node list is in, so nodes not yet seen are
//! never removed. A sync runs ([`Coalescer`] schedules them):
//! * after a relevant change (one that alters a node's projection): at once after a
//!   quiet period (leading edge: one change reaches the kernel in milliseconds), else at
//!   the end of the window after the last sync, a window that grows while changes keep
//!   coming. Events already queued are all taken in before a sync starts, and changes
//!   that arrive during a sync wait for the window after it, so a burst of thousands of
//!   events costs a handful of syncs. Such a sync is incremental
//!   ([`SyncKind::Incremental`]: no dump of the kernel);
//! * every resync interval, to repair drift (entries deleted by hand, a lost event);
//! * after a kick (see [`Reconciler::run_with_kicks`]: the kernel reported a hand-made
//!   change to weft's entries), scheduled the same way;
//! * after a failed sync, with exponential backoff ([`retry_delay`]).
//!
//! The last three are full syncs: they dump the kernel and repair whatever differs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use crate::coalesce::Coalescer;
use crate::datapath::SyncKind;
use crate::metrics::{ErrorKind, Metrics, SyncCounts};
use crate::nodes::{NodeLite, NodeStore, SlimNode};
use crate::peers::{Peer, PeerChange, Reason, Rejection};

/// What one sync did, as the loop needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub counts: SyncCounts,
    /// Peers the datapath refused to program.
    pub rejected: Vec<Rejection>,
    /// Kernel entries refused (the others were applied), with the first refusal: the
    /// sync is retried with backoff, but it does not hold readiness back.
    pub failed: usize,
    pub first_failure: Option<String>,
    pub drops: Option<crate::firewall::Drops>,
}

/// What the loop drives: the datapath, or a fake in tests.
pub trait PeerSync: Send + Sync {
    /// Makes the datapath match `peers` (candidates: the datapath validates them)
    /// exactly. Idempotent. `kind` says whether the kernel must be read (full) or what
    /// the last sync applied may be trusted (incremental); `changes`, when known, which
    /// candidates changed since the last sync (an incremental sync may then check and
    /// plan those alone).
    fn sync(
        &self,
        peers: &[&Peer],
        changes: Option<&[PeerChange<'_>]>,
        kind: SyncKind,
    ) -> impl Future<Output = anyhow::Result<SyncOutcome>> + Send;
}

impl PeerSync for crate::datapath::Datapath {
    async fn sync(
        &self,
        peers: &[&Peer],
        changes: Option<&[PeerChange<'_>]>,
        kind: SyncKind,
    ) -> anyhow::Result<SyncOutcome> {
        let s = crate::datapath::Datapath::sync_changes(self, peers, changes, kind).await?;
        // Docker (or anyone) may add or re-create a DROP policy in the iptables FORWARD
        // chain at any time: weft's accepts there are checked on every full sync (the
        // periodic resync at the latest). Not on incremental ones: `iptables -S` runs a
        // few ms per backend and family, more than the rest of such a sync. A failure is
        // logged and does not fail the peer sync.
        if s.full {
            if let Err(e) = crate::iptables::ensure(&self.config().cluster_cidrs) {
                tracing::warn!(error = %e, "cannot keep weft's accepts in the iptables FORWARD chain");
            }
        }
        Ok(SyncOutcome {
            counts: SyncCounts {
                peers: s.peers,
                added: s.added,
                removed: s.removed,
                updated: s.updated,
            },
            rejected: s.rejected,
            failed: s.failed,
            first_failure: s.first_failure,
            drops: s.drops,
        })
    }
}

/// How a sync ended, for the loop's scheduling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Synced {
    Ok,
    /// Applied, with some entries refused: ready, retried with backoff.
    Partial,
    Failed,
}

/// The own Node's pod CIDRs no longer match the ones the datapath was set up with (the
/// Node was deleted and re-registered and got another subnet). The agent exits with this
/// error so that the restarted container sets the datapath up for the new CIDRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCidrsChanged {
    pub node: String,
    pub from: Vec<IpNet>,
    pub to: Vec<IpNet>,
}

impl std::fmt::Display for PodCidrsChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pod CIDRs of node {} changed from {:?} to {:?}; exiting so the datapath is rebuilt",
            self.node, self.from, self.to
        )
    }
}

impl std::error::Error for PodCidrsChanged {}

/// The own Node's new pod CIDRs when they differ (as a set) from `current`, the ones the
/// datapath was set up with. `None` while the Node is absent or has no pod CIDR (deleted
/// and re-registered, not allocated yet): the current datapath is kept meanwhile.
pub fn changed_pod_cidrs(current: &[IpNet], own: Option<&NodeLite>) -> Option<Vec<IpNet>> {
    let watched = &own?.pod_cidrs;
    if watched.is_empty() {
        return None;
    }
    let mut a = current.to_vec();
    let mut b = watched.clone();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    (a != b).then(|| watched.clone())
}

/// The longest a sync waits while Node changes keep coming (the window grows from the
/// debounce up to this; see [`Coalescer`]). A change in a storm reaches the kernel within
/// this time; the last one of a storm within the debounce.
pub const MAX_WINDOW: Duration = Duration::from_secs(3);

/// First retry after 1 s, doubling up to 60 s.
pub fn retry_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

/// Resolves at `due` (never when `None`), and at once when that has passed: without
/// asking the timer, which rounds every deadline up to its next millisecond tick and so
/// delayed each leading-edge sync by one to two milliseconds.
async fn at(due: Option<Instant>) {
    match due {
        Some(t) if t <= Instant::now() => {}
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub struct Reconciler<S> {
    pub datapath: S,
    pub node_name: String,
    /// The pod CIDRs the datapath was set up with: when the own Node's differ, the loop
    /// ends with [`PodCidrsChanged`].
    pub pod_cidrs: Vec<IpNet>,
    pub metrics: Arc<Metrics>,
    /// The first window after a sync, and how long changes must stop for a burst to be
    /// over.
    pub debounce: Duration,
    /// The longest window (at least `debounce`), e.g. [`MAX_WINDOW`].
    pub max_window: Duration,
    pub resync: Duration,
    /// Receives this node's projection whenever it changes (for the publisher).
    pub own_node: watch::Sender<Option<NodeLite>>,
    /// Set to true after the first successful sync.
    pub ready: watch::Sender<bool>,
    /// Receives each rejected peer once (when it first appears or its reason changes),
    /// for a Warning Event on that Node.
    pub rejections: Option<tokio::sync::mpsc::Sender<crate::events::Warning>>,
}

impl<S: PeerSync> Reconciler<S> {
    /// Runs until the event stream ends (it does not, for a `watcher`), which is an error,
    /// or until the own Node's pod CIDRs change ([`PodCidrsChanged`]).
    pub async fn run<E>(self, events: E) -> anyhow::Result<()>
    where
        E: Stream<Item = Result<watcher::Event<SlimNode>, watcher::Error>> + Send,
    {
        self.run_with_kicks(events, futures::stream::pending())
            .await
    }

    /// [`Reconciler::run`], plus a sync (debounced like a Node change) after each item of
    /// `kicks`; once `kicks` ends, only the other triggers remain.
    pub async fn run_with_kicks<E, K>(self, events: E, kicks: K) -> anyhow::Result<()>
    where
        E: Stream<Item = Result<watcher::Event<SlimNode>, watcher::Error>> + Send,
        K: Stream<Item = ()> + Send,
    {
        let mut events = std::pin::pin!(events);
        let mut kicks = std::pin::pin!(kicks);
        let mut kicks_open = true;
        let mut store = NodeStore::default();
        let mut schedule = Coalescer::new(self.debounce, self.max_window);
        let mut failures = 0u32;
        let mut reported: Vec<(String, Reason)> = Vec::new();
        let mut resync = tokio::time::interval_at(Instant::now() + self.resync, self.resync);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let due = schedule.due();
            tokio::select! {
                // Queued events first: a burst is taken in whole before the sync starts.
                biased;
                event = events.next() => match event {
                    None => anyhow::bail!("the Node watch ended"),
                    Some(Err(e)) => {
                        self.metrics.error(ErrorKind::Watch);
                        tracing::warn!(error = %e, "Node watch failed; it reconnects with backoff");
                    }
                    Some(Ok(event)) => {
                        if store.apply(event) && store.is_listed() {
                            schedule.change(Instant::now());
                        }
                        let own = store.get(&self.node_name);
                        if let Some(to) = changed_pod_cidrs(&self.pod_cidrs, own) {
                            let changed = PodCidrsChanged {
                                node: self.node_name.clone(),
                                from: self.pod_cidrs.clone(),
                                to,
                            };
                            tracing::error!(node = %changed.node, from = ?changed.from, to = ?changed.to,
                                "pod CIDRs of this node changed; exiting so the datapath is rebuilt");
                            return Err(changed.into());
                        }
                        self.own_node.send_if_modified(|cur| {
                            let changed = cur.as_ref() != own;
                            if changed {
                                *cur = own.cloned();
                            }
                            changed
                        });
                    }
                },
                kick = kicks.next(), if kicks_open => match kick {
                    None => kicks_open = false,
                    Some(()) => {
                        if store.is_listed() {
                            schedule.full(Instant::now());
                        }
                    }
                },
                _ = at(due), if due.is_some() => {
                    let kind = schedule.start().unwrap_or(SyncKind::Full);
                    let synced = self.sync_once(&mut store, kind, &mut failures, &mut reported).await;
                    let retry = (synced != Synced::Ok).then(|| Instant::now() + retry_delay(failures));
                    schedule.done(Instant::now(), retry);
                }
                _ = resync.tick() => {
                    if store.is_listed() {
                        tracing::debug!("periodic resync");
                        schedule.full(Instant::now());
                    }
                }
            }
        }
    }

    /// One sync of the whole peer set.
    async fn sync_once(
        &self,
        store: &mut NodeStore,
        kind: SyncKind,
        failures: &mut u32,
        reported: &mut Vec<(String, Reason)>,
    ) -> Synced {
        // Taken whatever the kind: a full sync needs none, and starts the next count.
        let taken = store.take_changes();
        let store = &*store;
        let (peers, malformed) = store.peers(&self.node_name);
        let changes = taken.as_ref().map(|t| store.changes(t, &self.node_name));
        let start = Instant::now();
        let span = tracing::info_span!("reconcile", peers = peers.len(), ?kind);
        let result = self
            .datapath
            .sync(&peers, changes.as_deref(), kind)
            .instrument(span)
            .await;
        let took = start.elapsed();
        match result {
            Ok(outcome) => {
                let counts = outcome.counts;
                self.metrics.record_sync(took, Ok(counts));
                let mut rejected = malformed;
                rejected.extend(outcome.rejected);
                self.report_rejections(rejected, reported);
                if let Some(d) = outcome.drops {
                    self.metrics.set_vxlan_drops(d.foreign, d.from_pods);
                }
                let partial = outcome.failed > 0;
                if partial {
                    *failures += 1;
                    self.metrics.error(ErrorKind::Sync);
                    tracing::warn!(
                        failed = outcome.failed,
                        first = outcome.first_failure.as_deref().unwrap_or_default(),
                        retry_in_ms = retry_delay(*failures).as_millis() as u64,
                        "the kernel refused some entries; the others are in place"
                    );
                } else {
                    if *failures > 0 {
                        tracing::info!(after_failures = *failures, "datapath sync recovered");
                    }
                    *failures = 0;
                }
                if counts.added + counts.removed + counts.updated > 0 {
                    tracing::info!(
                        peers = counts.peers,
                        added = counts.added,
                        removed = counts.removed,
                        updated = counts.updated,
                        took_ms = took.as_millis() as u64,
                        "datapath synced"
                    );
                }
                if !self.metrics.is_ready() {
                    self.metrics.set_ready(true);
                    tracing::info!(peers = counts.peers, "datapath programmed; ready");
                }
                self.ready.send_if_modified(|r| !std::mem::replace(r, true));
                if partial {
                    Synced::Partial
                } else {
                    Synced::Ok
                }
            }
            Err(e) => {
                self.metrics.record_sync(took, Err(()));
                *failures += 1;
                tracing::warn!(
                    error = format!("{e:#}"),
                    peers = peers.len(),
                    attempt = *failures,
                    retry_in_ms = retry_delay(*failures).as_millis() as u64,
                    "datapath sync failed"
                );
                Synced::Failed
            }
        }
    }

    /// Logs and queues an Event for each rejection not reported before (a node's reason
    /// is reported again only when it changes), and sets the metric.
    fn report_rejections(&self, rejected: Vec<Rejection>, reported: &mut Vec<(String, Reason)>) {
        self.metrics.set_rejected(rejected.iter().map(|r| r.reason));
        let now: Vec<(String, Reason)> = rejected
            .iter()
            .map(|r| (r.node.clone(), r.reason))
            .collect();
        for r in rejected {
            if reported
                .iter()
                .any(|(n, reason)| *n == r.node && *reason == r.reason)
            {
                continue;
            }
            tracing::warn!(node = %r.node, reason = r.reason.as_str(), detail = %r.detail,
                "not routing to this node: it failed validation");
            if let Some(tx) = &self.rejections {
                let _ = tx.try_send(r.into());
            }
        }
        *reported = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::mpsc as tmpsc;
    use weft_common::annotations as ann;

    /// Each sync's changes: (name, had a candidate, has one), or `None` (unknown).
    type Changes = Arc<std::sync::Mutex<Vec<Option<Vec<(String, bool, bool)>>>>>;

    /// Records each sync's peer names (when it starts) and kind; fails the first `fail`
    /// calls; each takes `takes` (virtual time).
    struct Fake {
        calls: tmpsc::UnboundedSender<Vec<String>>,
        kinds: Arc<std::sync::Mutex<Vec<SyncKind>>>,
        changes: Changes,
        fail: AtomicUsize,
        takes: Duration,
    }

    impl PeerSync for Fake {
        async fn sync(
            &self,
            peers: &[&Peer],
            changes: Option<&[PeerChange<'_>]>,
            kind: SyncKind,
        ) -> anyhow::Result<SyncOutcome> {
            self.kinds.lock().unwrap().push(kind);
            self.changes.lock().unwrap().push(changes.map(|c| {
                c.iter()
                    .map(|c| (c.name.to_owned(), c.old.is_some(), c.new.is_some()))
                    .collect()
            }));
            let _ = self
                .calls
                .send(peers.iter().map(|p| p.name.clone()).collect());
            if !self.takes.is_zero() {
                tokio::time::sleep(self.takes).await;
            }
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                anyhow::bail!("injected failure");
            }
            Ok(SyncOutcome {
                counts: SyncCounts {
                    peers: peers.len(),
                    added: peers.len(),
                    ..Default::default()
                },
                ..Default::default()
            })
        }
    }

    type Tx = mpsc::UnboundedSender<Result<watcher::Event<SlimNode>, watcher::Error>>;

    struct Harness {
        tx: Tx,
        calls: tmpsc::UnboundedReceiver<Vec<String>>,
        kinds: Arc<std::sync::Mutex<Vec<SyncKind>>>,
        changes: Changes,
        metrics: Arc<Metrics>,
        ready: watch::Receiver<bool>,
        own: watch::Receiver<Option<NodeLite>>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    fn start(fail: usize) -> Harness {
        start_with_kicks(fail, futures::stream::pending())
    }

    fn start_with_kicks(fail: usize, kicks: impl Stream<Item = ()> + Send + 'static) -> Harness {
        start_with(fail, Duration::ZERO, kicks)
    }

    fn start_with(
        fail: usize,
        takes: Duration,
        kicks: impl Stream<Item = ()> + Send + 'static,
    ) -> Harness {
        let (tx, rx) = mpsc::unbounded();
        let kinds = Arc::default();
        let changes = Arc::default();
        let (calls_tx, calls) = tmpsc::unbounded_channel();
        let metrics = Arc::new(Metrics::default());
        let (ready_tx, ready) = watch::channel(false);
        let (own_tx, own) = watch::channel(None);
        let r = Reconciler {
            datapath: Fake {
                calls: calls_tx,
                kinds: Arc::clone(&kinds),
                changes: Arc::clone(&changes),
                fail: AtomicUsize::new(fail),
                takes,
            },
            node_name: "me".into(),
            pod_cidrs: vec!["10.244.1.0/24".parse().unwrap()],
            metrics: metrics.clone(),
            debounce: Duration::from_millis(100),
            max_window: MAX_WINDOW,
            resync: Duration::from_secs(60),
            own_node: own_tx,
            ready: ready_tx,
            rejections: None,
        };
        let task = tokio::spawn(r.run_with_kicks(rx, kicks));
        Harness {
            tx,
            calls,
            kinds,
            changes,
            metrics,
            ready,
            own,
            task,
        }
    }

    fn node(name: &str, third: u8, rv: &str) -> SlimNode {
        serde_json::from_value(json!({
            "metadata": {"name": name, "resourceVersion": rv, "annotations": {
                ann::VTEP_MAC: format!("02:00:00:00:00:{third:02x}"),
                ann::PUBLIC_IP: format!("192.168.0.{third}"),
            }},
            "spec": {"podCIDRs": [format!("10.244.{third}.0/24")]},
        }))
        .unwrap()
    }

    fn send(h: &Harness, e: watcher::Event<SlimNode>) {
        h.tx.unbounded_send(Ok(e)).unwrap();
    }

    async fn list(h: &mut Harness, nodes: Vec<SlimNode>) -> Vec<String> {
        send(h, watcher::Event::Init);
        for n in nodes {
            send(h, watcher::Event::InitApply(n));
        }
        send(h, watcher::Event::InitDone);
        h.calls.recv().await.unwrap()
    }

    /// Lets virtual time run `d` (time is paused: no real waiting) and says whether a
    /// sync happened meanwhile.
    async fn synced_within(h: &mut Harness, d: Duration) -> Option<Vec<String>> {
        tokio::time::timeout(d, h.calls.recv()).await.ok().flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn first_sync_waits_for_the_complete_list_and_excludes_self() {
        let mut h = start(0);
        send(&h, watcher::Event::Init);
        send(&h, watcher::Event::InitApply(node("a", 2, "1")));
        assert_eq!(synced_within(&mut h, Duration::from_secs(30)).await, None);
        assert!(!*h.ready.borrow());
        send(&h, watcher::Event::InitApply(node("me", 1, "1")));
        send(&h, watcher::Event::InitDone);
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        h.ready.wait_for(|r| *r).await.unwrap();
        assert!(h.metrics.is_ready());
        assert!(h.own.borrow().as_ref().is_some_and(|n| n.name == "me"));
        assert_eq!(h.metrics.reconciles(), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_costs_one_sync() {
        let mut h = start(0);
        assert!(list(&mut h, vec![]).await.is_empty());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        for i in 0..500u16 {
            let name = format!("n{i}");
            send(
                &h,
                watcher::Event::Apply(node(&name, (i % 200) as u8 + 2, "1")),
            );
        }
        let synced = h.calls.recv().await.unwrap();
        assert_eq!(synced.len(), 500, "the queued burst is taken in whole");
        assert_eq!(start.elapsed(), Duration::ZERO, "leading edge: no waiting");
        assert_eq!(synced_within(&mut h, Duration::from_secs(1)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn one_change_syncs_at_once_and_changes_right_after_a_sync_wait_for_the_window() {
        let mut h = start(0);
        assert!(list(&mut h, vec![]).await.is_empty());
        // Quiet for longer than the window: the next change syncs at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        send(&h, watcher::Event::Apply(node("a", 2, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        // A change 10 ms after that sync waits until the window after it has passed.
        tokio::time::sleep(Duration::from_millis(10)).await;
        send(&h, watcher::Event::Apply(node("b", 3, "1")));
        send(&h, watcher::Event::Apply(node("c", 4, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a", "b", "c"]);
        assert_eq!(t0.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_do_not_sync_but_deletes_do() {
        let mut h = start(0);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        send(&h, watcher::Event::Apply(node("a", 2, "2")));
        assert_eq!(synced_within(&mut h, Duration::from_secs(10)).await, None);
        send(&h, watcher::Event::Delete(node("a", 2, "3")));
        assert_eq!(h.calls.recv().await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_resync_without_events() {
        let mut h = start(0);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        let start = Instant::now();
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert!(
            start.elapsed() >= Duration::from_secs(59),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn kicks_sync_debounced_and_a_closed_kick_stream_is_harmless() {
        let (kick, kicks) = mpsc::unbounded::<()>();
        let mut h = start_with_kicks(0, kicks);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        let t0 = Instant::now();
        kick.unbounded_send(()).unwrap();
        kick.unbounded_send(()).unwrap();
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "right after the list's sync: waits for the window"
        );
        assert_eq!(synced_within(&mut h, Duration::from_secs(10)).await, None);
        drop(kick);
        send(&h, watcher::Event::Delete(node("a", 2, "2")));
        assert_eq!(h.calls.recv().await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_syncs_are_retried_with_backoff() {
        let mut h = start(2);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        let t0 = Instant::now();
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        let t1 = t0.elapsed();
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        let t2 = t0.elapsed();
        assert!(
            t1 >= Duration::from_secs(1) && t1 < Duration::from_secs(2),
            "{t1:?}"
        );
        assert!(t2 - t1 >= Duration::from_secs(2), "{t1:?} {t2:?}");
        h.ready.wait_for(|r| *r).await.unwrap();
        assert_eq!(h.metrics.reconciles(), (1, 2));
        assert_eq!(h.metrics.errors(ErrorKind::Sync), 2);
    }

    fn kinds(h: &Harness) -> Vec<SyncKind> {
        std::mem::take(&mut *h.kinds.lock().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn node_changes_sync_incrementally_repairs_resyncs_and_retries_in_full() {
        let (kick, kicks) = mpsc::unbounded::<()>();
        let mut h = start_with(0, Duration::ZERO, kicks);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        send(&h, watcher::Event::Apply(node("b", 3, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a", "b"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        kick.unbounded_send(()).unwrap();
        h.calls.recv().await.unwrap();
        // The periodic resync, 60 s after the start.
        h.calls.recv().await.unwrap();
        assert_eq!(
            kinds(&h),
            [
                SyncKind::Incremental, // the list (the datapath dumps: nothing known yet)
                SyncKind::Incremental,
                SyncKind::Full,
                SyncKind::Full,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_sync_gets_the_nodes_changed_since_the_one_before() {
        let mut h = start(0);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // b added, a deleted, the own Node changed: one sync, own Node left out.
        send(&h, watcher::Event::Apply(node("b", 3, "1")));
        send(&h, watcher::Event::Delete(node("a", 2, "2")));
        send(&h, watcher::Event::Apply(node("me", 1, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["b"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A relist that changes something: the changes are unknown.
        send(&h, watcher::Event::Init);
        send(&h, watcher::Event::InitApply(node("c", 4, "1")));
        send(&h, watcher::Event::InitDone);
        assert_eq!(h.calls.recv().await.unwrap(), ["c"]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        // b's VTEP changes twice before the next sync: reported once, as first known.
        let mut n = node("c", 4, "2");
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ann::VTEP_MAC.into(), "02:00:00:00:01:04".into());
        send(&h, watcher::Event::Apply(n));
        send(&h, watcher::Event::Apply(node("c", 4, "3")));
        assert_eq!(h.calls.recv().await.unwrap(), ["c"]);
        let t = |n: &str, old, new| (n.to_string(), old, new);
        assert_eq!(
            std::mem::take(&mut *h.changes.lock().unwrap()),
            [
                None, // the first list
                Some(vec![t("a", true, false), t("b", false, true)]),
                None,
                Some(vec![t("c", true, true)]),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_sync_is_retried_in_full() {
        let mut h = start(1);
        assert_eq!(list(&mut h, vec![node("a", 2, "1")]).await, ["a"]);
        send(&h, watcher::Event::Apply(node("b", 3, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a", "b"]);
        assert_eq!(kinds(&h), [SyncKind::Incremental, SyncKind::Full]);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_during_a_sync_are_folded_into_the_next() {
        let mut h = start_with(0, Duration::from_millis(50), futures::stream::pending());
        assert!(list(&mut h, vec![]).await.is_empty());
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        send(&h, watcher::Event::Apply(node("a", 2, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert_eq!(t0.elapsed(), Duration::ZERO, "leading edge");
        // The sync runs for 50 ms; two changes arrive meanwhile.
        tokio::time::sleep(Duration::from_millis(20)).await;
        send(&h, watcher::Event::Apply(node("b", 3, "1")));
        send(&h, watcher::Event::Apply(node("c", 4, "1")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a", "b", "c"]);
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(150),
            "one sync for both, a window after the running one ended"
        );
        assert_eq!(synced_within(&mut h, Duration::from_secs(10)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn five_thousand_changes_over_twelve_seconds_cost_at_most_ten_syncs() {
        let mut h = start_with(0, Duration::from_millis(20), futures::stream::pending());
        let nodes: Vec<SlimNode> = (0..5000u32)
            .map(|i| node(&format!("n{i:04}"), (i % 250) as u8 + 2, "1"))
            .collect();
        assert_eq!(list(&mut h, nodes).await.len(), 5000);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let metrics_before = h.metrics.reconciles().0;
        // Every Node changes once (a new resourceVersion and MAC), one every 2.4 ms.
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let mut n = node(&format!("n{i:04}"), (i % 250) as u8 + 2, "2");
            n.metadata.annotations.as_mut().unwrap().insert(
                ann::VTEP_MAC.into(),
                format!("02:00:00:01:{:02x}:{:02x}", i >> 8, i & 0xff),
            );
            send(&h, watcher::Event::Apply(n));
            tokio::time::sleep(Duration::from_micros(2400)).await;
        }
        let burst = t0.elapsed();
        // Wait for the schedule to settle: no sync for 10 s.
        while synced_within(&mut h, Duration::from_secs(10))
            .await
            .is_some()
        {}
        let syncs = h.metrics.reconciles().0 - metrics_before;
        let kinds = kinds(&h);
        assert!(syncs <= 10, "{syncs} syncs for the burst");
        assert!(
            syncs >= 3,
            "{syncs}: the burst was not coalesced into one sync at its end"
        );
        assert!(burst >= Duration::from_secs(12));
        assert!(
            kinds[1..].iter().all(|k| *k == SyncKind::Incremental),
            "{kinds:?}"
        );
    }

    fn cidrs(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn pod_cidrs_change_only_to_another_non_empty_set() {
        let current = cidrs(&["10.244.2.0/24", "fd00:2::/64"]);
        let with = |list: &[&str]| NodeLite {
            name: "me".into(),
            pod_cidrs: cidrs(list),
            ..Default::default()
        };
        assert_eq!(changed_pod_cidrs(&current, None), None, "Node deleted");
        assert_eq!(
            changed_pod_cidrs(&current, Some(&with(&[]))),
            None,
            "not allocated yet"
        );
        assert_eq!(
            changed_pod_cidrs(&current, Some(&with(&["10.244.2.0/24", "fd00:2::/64"]))),
            None
        );
        assert_eq!(
            changed_pod_cidrs(&current, Some(&with(&["fd00:2::/64", "10.244.2.0/24"]))),
            None,
            "order does not matter"
        );
        assert_eq!(
            changed_pod_cidrs(&current, Some(&with(&["10.244.3.0/24", "fd00:2::/64"]))),
            Some(cidrs(&["10.244.3.0/24", "fd00:2::/64"]))
        );
        assert_eq!(
            changed_pod_cidrs(&current, Some(&with(&["10.244.2.0/24"]))),
            Some(cidrs(&["10.244.2.0/24"]))
        );
    }

    fn unallocated(name: &str, rv: &str) -> SlimNode {
        serde_json::from_value(json!({"metadata": {"name": name, "resourceVersion": rv}})).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn re_registered_node_waits_without_cidr_and_exits_on_a_new_one() {
        let mut h = start(0);
        assert_eq!(
            list(&mut h, vec![node("me", 1, "1"), node("a", 2, "1")]).await,
            ["a"]
        );
        // Deleted, re-registered without a pod CIDR: the datapath stays, the loop goes on.
        send(&h, watcher::Event::Delete(node("me", 1, "2")));
        send(&h, watcher::Event::Apply(unallocated("me", "3")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert!(!h.task.is_finished());
        // Same CIDR again: nothing to rebuild.
        send(&h, watcher::Event::Apply(node("me", 1, "4")));
        assert_eq!(h.calls.recv().await.unwrap(), ["a"]);
        assert!(!h.task.is_finished());
        // Another CIDR: the loop ends with PodCidrsChanged.
        send(&h, watcher::Event::Apply(node("me", 3, "5")));
        let err = (&mut h.task).await.unwrap().unwrap_err();
        let changed = err
            .downcast_ref::<PodCidrsChanged>()
            .expect("PodCidrsChanged");
        assert_eq!(changed.node, "me");
        assert_eq!(changed.from, cidrs(&["10.244.1.0/24"]));
        assert_eq!(changed.to, cidrs(&["10.244.3.0/24"]));
        assert!(err.to_string().contains(
            "pod CIDRs of node me changed from [10.244.1.0/24] to [10.244.3.0/24]; exiting"
        ));
    }

    #[test]
    fn retry_delay_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
