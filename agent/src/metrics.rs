//! The agent's metrics, kept in `prometheus-client` counters, gauges and a histogram and
//! encoded by that library in the OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! Counters are registered without their `_total` suffix: OpenMetrics names the family
//! `weft_agent_errors` and the library writes the sample `weft_agent_errors_total`.
//! Every label value is created up front, so each series is there (at 0) from the
//! first scrape on.

use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::peers::Reason;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the reconcile duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What failed, the `kind` label of `weft_agent_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The Node watch (the API server or the connection to it).
    Watch,
    /// Programming the datapath.
    Sync,
    /// Publishing the annotations on the own Node.
    Publish,
    /// Setting the NetworkUnavailable condition.
    Condition,
    /// Programming the NetworkPolicy table.
    Policy,
}

impl ErrorKind {
    const ALL: [ErrorKind; 5] = [
        ErrorKind::Watch,
        ErrorKind::Sync,
        ErrorKind::Publish,
        ErrorKind::Condition,
        ErrorKind::Policy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Watch => "watch",
            ErrorKind::Sync => "sync",
            ErrorKind::Publish => "publish",
            ErrorKind::Condition => "condition",
            ErrorKind::Policy => "policy",
        }
    }
}

/// `weft_agent_reconcile_total{result}`: `ok` or `error`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// `weft_agent_kernel_operations_total{op}`: `add`, `remove` or `update`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// `weft_agent_errors_total{kind}`: [`ErrorKind::as_str`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// `weft_agent_rejected_peers{reason}`: [`Reason::as_str`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `weft_agent_vxlan_dropped_packets_total{source}`: `foreign` or `pod`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// `weft_agent_policy_dropped_packets_total{direction}`: `ingress` or `egress`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

const OK: ResultLabel = ResultLabel { result: "ok" };
const ERROR: ResultLabel = ResultLabel { result: "error" };
const FOREIGN: SourceLabel = SourceLabel { source: "foreign" };
const FROM_PODS: SourceLabel = SourceLabel { source: "pod" };

/// Shared between the reconcile loop and the watches (writers) and the HTTP server
/// (reader). The fields are handles onto what `registry` encodes.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ready: Gauge,
    remote_nodes: Gauge,
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    kernel_operations: Family<OpLabel, Counter>,
    errors: Family<KindLabel, Counter>,
    /// Nodes left out by peer validation at the last sync, by reason.
    rejected: Family<ReasonLabel, Gauge>,
    /// The VXLAN filter's drop counters, mirrored from the kernel's (set, not added to).
    vxlan_dropped: Family<SourceLabel, Counter>,
    policy: PolicyMetrics,
    /// Readiness is the datapath's first sync, and with NetworkPolicy on, the policy
    /// table's first programming too.
    datapath_ready: AtomicBool,
    policy_required: AtomicBool,
    policy_ready: AtomicBool,
}

/// The NetworkPolicy table's figures.
#[derive(Debug, Default)]
struct PolicyMetrics {
    policies: Gauge,
    rules: Gauge,
    set_elements: Gauge,
    problems: Gauge,
    syncs: Family<ResultLabel, Counter>,
    apply_seconds: Gauge<f64, AtomicU64>,
    dropped: Family<DirectionLabel, Counter>,
}

/// The outcome of one NetworkPolicy table update, as the metrics need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounts {
    /// Policies selecting a pod of this node (a policy with both directions counts once).
    pub policies: usize,
    pub rules: usize,
    pub set_elements: usize,
    pub problems: usize,
}

/// The outcome of one datapath sync, as the metrics need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub peers: usize,
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            registry: Registry::default(),
            ready: Gauge::default(),
            remote_nodes: Gauge::default(),
            reconciles: with_series([OK, ERROR]),
            duration: Histogram::new(DURATION_BUCKETS),
            kernel_operations: with_series(["add", "remove", "update"].map(|op| OpLabel { op })),
            errors: with_series(ErrorKind::ALL.map(|k| KindLabel { kind: k.as_str() })),
            rejected: with_series(Reason::ALL.map(|r| ReasonLabel { reason: r.as_str() })),
            vxlan_dropped: with_series([FOREIGN, FROM_PODS]),
            policy: PolicyMetrics {
                syncs: with_series([OK, ERROR]),
                dropped: with_series(
                    ["ingress", "egress"].map(|direction| DirectionLabel { direction }),
                ),
                ..PolicyMetrics::default()
            },
            datapath_ready: AtomicBool::new(false),
            policy_required: AtomicBool::new(false),
            policy_ready: AtomicBool::new(false),
        }
        .register()
    }
}

/// A family with the series of `labels` created now, so each is scraped (at 0) before
/// its first change.
fn with_series<S, M>(labels: impl IntoIterator<Item = S>) -> Family<S, M>
where
    S: Clone + Hash + Eq,
    M: Default,
{
    let family = Family::default();
    for label in labels {
        let _ = family.get_or_create(&label);
    }
    family
}

impl Metrics {
    /// Registers every metric, in the order of the exposition.
    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        // OpenMetrics' info type: the family `weft_agent_build`, the sample
        // `weft_agent_build_info{version} 1`.
        r.register(
            "weft_agent_build",
            "Version of the running agent",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "weft_agent_ready",
            "1 once the datapath is programmed and the subnet file written (and, with \
             NetworkPolicy on, the policy table)",
            self.ready.clone(),
        );
        r.register(
            "weft_agent_remote_nodes",
            "Remote nodes programmed in the datapath at the last successful sync",
            self.remote_nodes.clone(),
        );
        r.register(
            "weft_agent_reconcile",
            "Datapath syncs by result",
            self.reconciles.clone(),
        );
        r.register_with_unit(
            "weft_agent_reconcile_duration",
            "Duration of datapath syncs",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "weft_agent_kernel_operations",
            "Kernel entries (neighbours, FDB entries, routes) changed by datapath syncs, \
             by operation",
            self.kernel_operations.clone(),
        );
        r.register(
            "weft_agent_errors",
            "Errors by what failed",
            self.errors.clone(),
        );
        r.register(
            "weft_agent_rejected_peers",
            "Nodes not routed to because a value failed validation, by reason (last sync)",
            self.rejected.clone(),
        );
        r.register(
            "weft_agent_vxlan_dropped_packets",
            "VXLAN packets dropped by the source filter: from hosts that are no peer, \
             from pods",
            self.vxlan_dropped.clone(),
        );
        let p = &self.policy;
        r.register(
            "weft_agent_policy_policies",
            "NetworkPolicies selecting a pod of this node",
            p.policies.clone(),
        );
        r.register(
            "weft_agent_policy_rules",
            "Ingress and egress rules of those policies in the table",
            p.rules.clone(),
        );
        r.register(
            "weft_agent_policy_set_elements",
            "Elements in the NetworkPolicy table's sets",
            p.set_elements.clone(),
        );
        r.register(
            "weft_agent_policy_problems",
            "Parts of NetworkPolicies that cannot be enforced as written (see the Events)",
            p.problems.clone(),
        );
        r.register(
            "weft_agent_policy_syncs",
            "NetworkPolicy table updates by result",
            p.syncs.clone(),
        );
        r.register_with_unit(
            "weft_agent_policy_last_apply",
            "Duration of the last NetworkPolicy table update (compile, render, nft)",
            Unit::Seconds,
            p.apply_seconds.clone(),
        );
        r.register(
            "weft_agent_policy_dropped_packets",
            "Packets dropped by NetworkPolicy, by direction",
            p.dropped.clone(),
        );
        self
    }

    pub fn record_sync(&self, took: Duration, result: Result<SyncCounts, ()>) {
        self.duration.observe(took.as_secs_f64());
        match result {
            Ok(c) => {
                self.reconciles.get_or_create(&OK).inc();
                self.remote_nodes.set(saturating_i64(c.peers));
                for (op, n) in [
                    ("add", c.added),
                    ("remove", c.removed),
                    ("update", c.updated),
                ] {
                    self.kernel_operations
                        .get_or_create(&OpLabel { op })
                        .inc_by(n as u64);
                }
            }
            Err(()) => {
                self.reconciles.get_or_create(&ERROR).inc();
                self.error(ErrorKind::Sync);
            }
        }
    }

    /// The rejections of the last sync (one reason per rejected node).
    pub fn set_rejected(&self, reasons: impl Iterator<Item = Reason>) {
        let mut counts = [0usize; Reason::ALL.len()];
        for r in reasons {
            counts[r as usize] += 1;
        }
        for reason in Reason::ALL {
            self.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .set(saturating_i64(counts[reason as usize]));
        }
    }

    pub fn rejected(&self, reason: Reason) -> u64 {
        let label = ReasonLabel {
            reason: reason.as_str(),
        };
        self.rejected.get_or_create(&label).get().max(0) as u64
    }

    /// The kernel's drop counters as read now: the counters take their values.
    pub fn set_vxlan_drops(&self, foreign: u64, from_pods: u64) {
        for (source, n) in [(FOREIGN, foreign), (FROM_PODS, from_pods)] {
            self.vxlan_dropped
                .get_or_create(&source)
                .inner()
                .store(n, Relaxed);
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// The datapath's readiness (its first sync).
    pub fn set_ready(&self, ready: bool) {
        self.datapath_ready.store(ready, Relaxed);
        self.update_ready();
    }

    /// With NetworkPolicy on, readiness also waits for the policy table.
    pub fn require_policy(&self) {
        self.policy_required.store(true, Relaxed);
        self.update_ready();
    }

    fn update_ready(&self) {
        let ready = self.datapath_ready.load(Relaxed)
            && (!self.policy_required.load(Relaxed) || self.policy_ready.load(Relaxed));
        self.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get() != 0
    }

    /// One NetworkPolicy table update: `Ok` with what the table holds now.
    pub fn record_policy_sync(&self, took: Duration, result: Result<PolicyCounts, ()>) {
        let p = &self.policy;
        p.apply_seconds.set(took.as_secs_f64());
        match result {
            Ok(c) => {
                p.syncs.get_or_create(&OK).inc();
                p.policies.set(saturating_i64(c.policies));
                p.rules.set(saturating_i64(c.rules));
                p.set_elements.set(saturating_i64(c.set_elements));
                p.problems.set(saturating_i64(c.problems));
                self.policy_ready.store(true, Relaxed);
                self.update_ready();
            }
            Err(()) => {
                p.syncs.get_or_create(&ERROR).inc();
                self.error(ErrorKind::Policy);
            }
        }
    }

    /// The policy table's drop counters as read now: the counters take their values.
    pub fn set_policy_drops(&self, ingress: u64, egress: u64) {
        for (direction, n) in [("ingress", ingress), ("egress", egress)] {
            self.policy
                .dropped
                .get_or_create(&DirectionLabel { direction })
                .inner()
                .store(n, Relaxed);
        }
    }

    /// (ok, error) policy table updates so far.
    pub fn policy_syncs(&self) -> (u64, u64) {
        let s = &self.policy.syncs;
        (s.get_or_create(&OK).get(), s.get_or_create(&ERROR).get())
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        let label = KindLabel {
            kind: kind.as_str(),
        };
        self.errors.get_or_create(&label).get()
    }

    /// (ok, error) datapath syncs so far.
    pub fn reconciles(&self) -> (u64, u64) {
        (
            self.reconciles.get_or_create(&OK).get(),
            self.reconciles.get_or_create(&ERROR).get(),
        )
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail, nor can encoding these metric types.
        text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_series_is_there_from_the_start() {
        let m = Metrics::default();
        let text = m.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for series in [
            "weft_agent_reconcile_total{result=\"ok\"}",
            "weft_agent_reconcile_total{result=\"error\"}",
            "weft_agent_kernel_operations_total{op=\"update\"}",
            "weft_agent_errors_total{kind=\"condition\"}",
            "weft_agent_rejected_peers{reason=\"malformed\"}",
            "weft_agent_vxlan_dropped_packets_total{source=\"pod\"}",
            "weft_agent_policy_syncs_total{result=\"error\"}",
            "weft_agent_policy_dropped_packets_total{direction=\"egress\"}",
            "weft_agent_policy_rules",
        ] {
            assert_eq!(value(&text, series), 0.0, "{series}");
        }
        assert_eq!(
            value(
                &text,
                &format!(
                    "weft_agent_build_info{{version=\"{}\"}}",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            1.0
        );
    }

    #[test]
    fn records_syncs_errors_and_readiness() {
        let m = Metrics::default();
        let ok = SyncCounts {
            peers: 3,
            added: 3,
            removed: 1,
            updated: 2,
        };
        m.record_sync(Duration::from_millis(3), Ok(ok));
        m.record_sync(Duration::from_millis(200), Err(()));
        m.error(ErrorKind::Watch);
        m.set_ready(true);
        assert!(m.is_ready());
        assert_eq!(m.reconciles(), (1, 1));
        assert_eq!(m.errors(ErrorKind::Sync), 1);
        assert_eq!(m.errors(ErrorKind::Watch), 1);
        assert_eq!(m.errors(ErrorKind::Publish), 0);
        let t = m.render();
        assert_eq!(value(&t, "weft_agent_ready"), 1.0);
        assert_eq!(value(&t, "weft_agent_remote_nodes"), 3.0);
        assert_eq!(
            value(&t, "weft_agent_kernel_operations_total{op=\"add\"}"),
            3.0
        );
        assert_eq!(
            value(&t, "weft_agent_kernel_operations_total{op=\"remove\"}"),
            1.0
        );
        let bucket = |le: &str| {
            value(
                &t,
                &format!("weft_agent_reconcile_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("0.001"), 0.0);
        assert_eq!(bucket("0.005"), 1.0);
        assert_eq!(bucket("0.25"), 2.0);
        assert_eq!(bucket("+Inf"), 2.0);
        assert_eq!(
            value(&t, "weft_agent_reconcile_duration_seconds_count"),
            2.0
        );
        let sum = value(&t, "weft_agent_reconcile_duration_seconds_sum");
        assert!((sum - 0.203).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn rejections_are_the_last_syncs_and_drops_mirror_the_kernel() {
        let m = Metrics::default();
        m.set_rejected([Reason::VniMismatch, Reason::VniMismatch, Reason::Malformed].into_iter());
        assert_eq!(m.rejected(Reason::VniMismatch), 2);
        m.set_rejected([Reason::Malformed].into_iter());
        assert_eq!(m.rejected(Reason::VniMismatch), 0);
        assert_eq!(m.rejected(Reason::Malformed), 1);
        m.set_vxlan_drops(7, 2);
        m.set_vxlan_drops(9, 2);
        let t = m.render();
        assert_eq!(
            value(
                &t,
                "weft_agent_vxlan_dropped_packets_total{source=\"foreign\"}"
            ),
            9.0
        );
        assert_eq!(
            value(&t, "weft_agent_vxlan_dropped_packets_total{source=\"pod\"}"),
            2.0
        );
        assert_eq!(
            value(&t, "weft_agent_rejected_peers{reason=\"malformed\"}"),
            1.0
        );
    }

    #[test]
    fn policy_figures_and_readiness_waiting_for_the_table() {
        let m = Metrics::default();
        m.require_policy();
        m.set_ready(true);
        assert!(!m.is_ready(), "the policy table is not programmed yet");
        m.record_policy_sync(Duration::from_millis(2), Err(()));
        assert!(!m.is_ready());
        let counts = PolicyCounts {
            policies: 2,
            rules: 5,
            set_elements: 40,
            problems: 1,
        };
        m.record_policy_sync(Duration::from_millis(4), Ok(counts));
        assert!(m.is_ready());
        assert_eq!(m.policy_syncs(), (1, 1));
        assert_eq!(m.errors(ErrorKind::Policy), 1);
        m.set_policy_drops(3, 8);
        let t = m.render();
        assert_eq!(value(&t, "weft_agent_policy_policies"), 2.0);
        assert_eq!(value(&t, "weft_agent_policy_set_elements"), 40.0);
        assert_eq!(value(&t, "weft_agent_policy_problems"), 1.0);
        assert_eq!(value(&t, "weft_agent_policy_last_apply_seconds"), 0.004);
        assert_eq!(
            value(
                &t,
                "weft_agent_policy_dropped_packets_total{direction=\"ingress\"}"
            ),
            3.0
        );
        m.set_ready(false);
        assert!(!m.is_ready());
    }
}
