//! The reconcile loop: watch Nodes, keep the allocation table, patch Nodes without a pod
//! CIDR. One task owns all state; patches run concurrently (bounded) as futures it polls.
//!
//! Order of things: nothing is allocated before the first complete list of Nodes has
//! rebuilt the table (no duplicate after a restart or failover); every relist rebuilds it
//! again from the whole list, not from the last event.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};
use ipnet::IpNet;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use crate::allocator::{AdoptError, Allocator};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::node::{node_ref, NodeCidrs};
use crate::patch::{self, Outcome};
use crate::rejected::{Reason, Rejected};

/// Nodes per list page: the projection is small, the raw page is not (15-30 KB a Node).
pub const LIST_PAGE_SIZE: u32 = 250;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the loop knows about one Node.
#[derive(Debug, Default)]
struct Known {
    uid: Option<String>,
    /// The API server holds a pod CIDR for it (whatever it is).
    has_cidr: bool,
}

pub struct Reconciler {
    api: Api<NodeCidrs>,
    alloc: Allocator,
    events: Events,
    metrics: Arc<Metrics>,
    leader: watch::Receiver<bool>,
    concurrency: usize,
    known: HashMap<String, Known>,
    /// Waiting for a patch slot.
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// A patch is running for these; the table holds their reservation.
    in_flight: HashSet<String>,
    /// Retries scheduled after errors, with the attempt count.
    retrying: HashMap<String, u32>,
    /// No free subnet when last tried; retried when one frees up.
    starved: BTreeSet<String>,
    /// Nodes whose pod CIDR overlaps another node's; adoption is retried on releases.
    conflicted: HashMap<String, Vec<IpNet>>,
    /// Nodes already warned about (conflict, outside, exhaustion): one Event per episode.
    warned: HashSet<String>,
    /// Pod CIDRs Nodes claim that the table refused, for the gauge.
    rejected: Rejected,
    patches: FuturesUnordered<BoxFut<(String, Vec<IpNet>, Outcome)>>,
    retries: FuturesUnordered<BoxFut<String>>,
    /// Between a watcher Init and InitDone: the list being collected.
    relist: Option<Vec<NodeCidrs>>,
    ready: bool,
}

impl Reconciler {
    pub fn new(
        client: kube::Client,
        alloc: Allocator,
        events: Events,
        metrics: Arc<Metrics>,
        leader: watch::Receiver<bool>,
        concurrency: usize,
    ) -> Reconciler {
        Reconciler {
            api: Api::all(client),
            alloc,
            events,
            metrics,
            leader,
            concurrency: concurrency.max(1),
            known: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            in_flight: HashSet::new(),
            retrying: HashMap::new(),
            starved: BTreeSet::new(),
            conflicted: HashMap::new(),
            warned: HashSet::new(),
            rejected: Rejected::default(),
            patches: FuturesUnordered::new(),
            retries: FuturesUnordered::new(),
            relist: None,
            ready: false,
        }
    }

    /// The watch stream of Node projections, with backoff on errors.
    pub fn node_stream(
        &self,
    ) -> impl Stream<Item = Result<Event<NodeCidrs>, watcher::Error>> + Send + 'static {
        watcher::watcher(
            self.api.clone(),
            watcher::Config::default().page_size(LIST_PAGE_SIZE),
        )
        .default_backoff()
    }

    /// Runs until `shutdown` completes or the leadership channel closes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let stream = self.node_stream();
        futures::pin_mut!(stream);
        futures::pin_mut!(shutdown);
        let mut leader_open = true;
        loop {
            self.start_patches();
            tokio::select! {
                _ = &mut shutdown => break,
                ev = stream.next() => match ev {
                    Some(Ok(ev)) => self.on_event(ev),
                    Some(Err(e)) => {
                        Metrics::inc(&self.metrics.errors);
                        tracing::warn!(error = %e, "node watch failed; retrying");
                    }
                    None => break,
                },
                Some((node, cidrs, outcome)) = self.patches.next(), if !self.patches.is_empty() => {
                    self.on_patch(node, cidrs, outcome);
                }
                Some(node) = self.retries.next(), if !self.retries.is_empty() => self.enqueue(node),
                changed = self.leader.changed(), if leader_open => {
                    if changed.is_err() {
                        leader_open = false;
                        self.leader_changed(false);
                    } else {
                        let now = *self.leader.borrow_and_update();
                        self.leader_changed(now);
                    }
                }
            }
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    fn publish_stats(&self) {
        self.metrics.set_pools(self.alloc.stats());
        self.metrics.set_rejected(self.rejected.counts());
    }

    pub fn on_event(&mut self, ev: Event<NodeCidrs>) {
        match ev {
            Event::Init => self.relist = Some(Vec::new()),
            Event::InitApply(n) => match self.relist.as_mut() {
                Some(list) => list.push(n),
                None => self.observe(n),
            },
            Event::InitDone => {
                let list = self.relist.take().unwrap_or_default();
                self.rebuild(list);
            }
            Event::Apply(n) => self.observe(n),
            Event::Delete(n) => self.forget(n.name()),
        }
        self.publish_stats();
    }

    /// Rebuilds the table from the complete list of Nodes, keeping the round-robin
    /// cursor and the reservations of patches still running. Nodes are adopted oldest
    /// first, so of two claiming one subnet the older keeps it, as the agents decide
    /// (the list comes in name order, which a new Node can choose).
    fn rebuild(&mut self, mut list: Vec<NodeCidrs>) {
        list.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
        let reserved: Vec<(String, Vec<IpNet>)> = self
            .in_flight
            .iter()
            .chain(self.retrying.keys())
            .filter_map(|n| self.alloc.owned(n).map(|c| (n.clone(), c.to_vec())))
            .collect();
        self.alloc = self.alloc.emptied();
        self.known.clear();
        self.conflicted.clear();
        self.rejected.clear();
        for n in &list {
            self.known.insert(
                n.name().to_string(),
                Known {
                    uid: n.metadata.uid.clone(),
                    has_cidr: n.has_pod_cidr(),
                },
            );
            if n.has_pod_cidr() {
                self.adopt(n);
            }
        }
        for (node, cidrs) in reserved {
            let still_empty = self.known.get(&node).is_some_and(|k| !k.has_cidr);
            if still_empty && !self.alloc.adopt(&node, &cidrs).is_empty() {
                tracing::warn!(node, "reservation of a running patch collides after relist");
            }
        }
        let first = !self.ready;
        self.ready = true;
        self.metrics.ready.store(true, Ordering::Release);
        let waiting: Vec<String> = self
            .known
            .iter()
            .filter(|(_, k)| !k.has_cidr)
            .map(|(n, _)| n.clone())
            .collect();
        tracing::info!(
            nodes = self.known.len(),
            with_pod_cidr = self.alloc.node_count(),
            waiting = waiting.len(),
            first,
            "allocation table rebuilt from all nodes"
        );
        for n in waiting {
            self.enqueue(n);
        }
    }

    /// An added or changed Node.
    fn observe(&mut self, n: NodeCidrs) {
        let name = n.name().to_string();
        let has_cidr = n.has_pod_cidr();
        let entry = self.known.entry(name.clone()).or_default();
        entry.uid = n.metadata.uid.clone();
        let had = std::mem::replace(&mut entry.has_cidr, has_cidr);
        if has_cidr {
            let (cidrs, _) = n.pod_cidrs();
            if !had || self.alloc.owned(&name) != Some(&cidrs[..]) {
                self.adopt(&n);
            }
            self.unqueue(&name);
            self.retrying.remove(&name);
        } else if self.ready {
            self.enqueue(name);
        }
    }

    /// Records a Node's existing pod CIDRs; warns (one Warning Event per reason, once per
    /// episode) about those the table refuses: unparsable, outside the cluster CIDR, of
    /// the wrong size, or overlapping another node's.
    fn adopt(&mut self, n: &NodeCidrs) {
        let name = n.name();
        let (cidrs, unparsable) = n.pod_cidrs();
        let mut problems: Vec<(Reason, String)> = unparsable
            .iter()
            .map(|s| (Reason::Unparsable, format!("podCIDR {s:?} is not a CIDR")))
            .collect();
        let adopt_errors = self.alloc.adopt(name, &cidrs);
        if adopt_errors
            .iter()
            .any(|e| matches!(e, AdoptError::Conflict { .. }))
        {
            self.conflicted.insert(name.to_string(), cidrs.clone());
        } else {
            self.conflicted.remove(name);
        }
        problems.extend(
            adopt_errors
                .iter()
                .map(|e| (Reason::from(e), e.to_string())),
        );
        self.rejected
            .set(name, problems.iter().map(|(r, _)| *r).collect());
        if problems.is_empty() {
            self.warned.remove(name);
            tracing::debug!(node = name, cidrs = ?cidrs, "pod CIDRs recorded");
            return;
        }
        if !self.warned.insert(name.to_string()) {
            return;
        }
        Metrics::inc(&self.metrics.conflicts);
        let uid = n.metadata.uid.as_deref();
        let mut reasons: Vec<&'static str> =
            problems.iter().map(|(r, _)| r.event_reason()).collect();
        reasons.sort_unstable();
        reasons.dedup();
        for reason in reasons {
            let note = problems
                .iter()
                .filter(|(r, _)| r.event_reason() == reason)
                .map(|(_, p)| p.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(node = name, reason, problem = %note, "pod CIDR refused");
            self.events.rejected(node_ref(name, uid), reason, note);
        }
    }

    fn forget(&mut self, name: &str) {
        self.known.remove(name);
        self.unqueue(name);
        self.retrying.remove(name);
        self.conflicted.remove(name);
        self.warned.remove(name);
        self.rejected.remove(name);
        let freed = self.alloc.release(name);
        if !freed.is_empty() {
            tracing::info!(node = name, cidrs = ?freed, "node deleted: pod CIDRs freed");
            self.freed();
        }
    }

    /// Something was freed: give starved and conflicted nodes another chance.
    fn freed(&mut self) {
        let conflicted: Vec<(String, Vec<IpNet>)> = self.conflicted.drain().collect();
        for (name, cidrs) in conflicted {
            let errors = self.alloc.adopt(&name, &cidrs);
            self.rejected.set_table_verdict(&name, &errors);
            if errors
                .iter()
                .any(|e| matches!(e, AdoptError::Conflict { .. }))
            {
                self.conflicted.insert(name, cidrs);
            } else if errors.is_empty() {
                tracing::info!(node = name, "conflict resolved: pod CIDRs recorded");
                self.warned.remove(&name);
            }
        }
        let starved: Vec<String> = std::mem::take(&mut self.starved).into_iter().collect();
        for name in starved {
            self.enqueue(name);
        }
    }

    fn enqueue(&mut self, name: String) {
        let waiting = self.known.get(&name).is_some_and(|k| !k.has_cidr);
        if waiting && !self.in_flight.contains(&name) && self.queued.insert(name.clone()) {
            self.starved.remove(&name);
            self.queue.push_back(name);
        }
    }

    fn unqueue(&mut self, name: &str) {
        if self.queued.remove(name) {
            self.queue.retain(|n| n != name);
        }
        self.starved.remove(name);
    }

    /// Starts patches while there are free slots, this replica leads and the table is built.
    fn start_patches(&mut self) {
        if !self.ready || !self.is_leader() {
            return;
        }
        let mut changed = false;
        while self.patches.len() < self.concurrency {
            let Some(name) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&name);
            if self.known.get(&name).is_none_or(|k| k.has_cidr) {
                continue;
            }
            match self.alloc.allocate(&name) {
                Ok(cidrs) => {
                    changed = true;
                    self.in_flight.insert(name.clone());
                    let fut = patch::assign(
                        self.api.clone(),
                        name.clone(),
                        cidrs.clone(),
                        self.leader.clone(),
                    );
                    self.patches
                        .push(Box::pin(async move { (name, cidrs, fut.await) }));
                }
                Err(e) => {
                    self.starved.insert(name.clone());
                    if self.warned.insert(name.clone()) {
                        tracing::warn!(node = name, error = %e, "no pod CIDR available");
                        let uid = self.known.get(&name).and_then(|k| k.uid.as_deref());
                        self.events.not_available(
                            node_ref(&name, uid),
                            format!("{e}; waiting for a node to leave"),
                        );
                    }
                }
            }
        }
        if changed {
            self.publish_stats();
        }
    }

    pub fn on_patch(&mut self, name: String, cidrs: Vec<IpNet>, outcome: Outcome) {
        self.in_flight.remove(&name);
        if !self.known.contains_key(&name) {
            // Deleted while the patch ran: forget() freed it already.
            self.alloc.release(&name);
            self.publish_stats();
            return;
        }
        match outcome {
            Outcome::Assigned(n) => {
                self.retrying.remove(&name);
                let (got, _) = n.pod_cidrs();
                if got == cidrs {
                    Metrics::inc(&self.metrics.allocations);
                    self.warned.remove(&name);
                    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                    tracing::info!(node = name, cidrs = ?list, "pod CIDRs assigned");
                    let uid = self.known.get(&name).and_then(|k| k.uid.clone());
                    self.events.assigned(
                        node_ref(&name, uid.as_deref()),
                        format!("assigned pod CIDRs {}", list.join(", ")),
                    );
                }
                self.observe(n);
            }
            Outcome::Refused(n) => {
                self.retrying.remove(&name);
                if n.has_pod_cidr() {
                    tracing::info!(node = name, "node got a pod CIDR elsewhere: adopting it");
                    self.observe(n);
                } else {
                    Metrics::inc(&self.metrics.errors);
                    tracing::warn!(
                        node = name,
                        "patch refused and node still has no pod CIDR; retrying"
                    );
                    self.alloc.release(&name);
                    self.schedule_retry(name);
                    self.freed();
                }
            }
            Outcome::Gone => self.forget(&name),
            Outcome::NotLeader => {
                self.alloc.release(&name);
            }
            Outcome::Transient(e) => {
                // Maybe applied: keep the reservation and retry the very same value.
                Metrics::inc(&self.metrics.errors);
                tracing::warn!(node = name, error = %e, "patch failed; retrying with the same pod CIDRs");
                self.schedule_retry(name);
            }
            Outcome::Rejected(e) => {
                Metrics::inc(&self.metrics.errors);
                tracing::warn!(node = name, error = %e, "patch rejected; retrying later");
                self.alloc.release(&name);
                self.schedule_retry(name);
                self.freed();
            }
        }
        self.publish_stats();
    }

    fn schedule_retry(&mut self, name: String) {
        let attempt = self.retrying.entry(name.clone()).or_insert(0);
        *attempt += 1;
        let delay = retry_delay(*attempt);
        self.retries.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            name
        }));
    }

    fn leader_changed(&mut self, leader: bool) {
        self.metrics.leader.store(leader, Ordering::Relaxed);
        if leader {
            tracing::info!("leading: allocating pod CIDRs");
            let waiting: Vec<String> = self
                .known
                .iter()
                .filter(|(_, k)| !k.has_cidr)
                .map(|(n, _)| n.clone())
                .collect();
            for n in waiting {
                self.enqueue(n);
            }
            return;
        }
        // Lost the lease: stop at once. Running patches are dropped (cancelled), and
        // reservations of unconfirmed assignments go: the new leader decides those.
        let running = self.patches.len();
        self.patches = FuturesUnordered::new();
        self.retries = FuturesUnordered::new();
        let unconfirmed: Vec<String> = self
            .in_flight
            .drain()
            .chain(self.retrying.drain().map(|(n, _)| n))
            .collect();
        for n in unconfirmed {
            self.alloc.release(&n);
        }
        self.queue.clear();
        self.queued.clear();
        self.starved.clear();
        self.publish_stats();
        tracing::warn!(
            cancelled_patches = running,
            "lost the lease: stopped allocating"
        );
    }
}

/// 1 s, 2 s, 4 s ... capped at 30 s.
pub fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}
