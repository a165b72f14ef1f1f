//! What the controller exposes on /metrics: `prometheus-client` counters and gauges,
//! encoded by that library in the OpenMetrics text format ([`CONTENT_TYPE`]).
//!
//! Counters are registered without their `_total` suffix: OpenMetrics names the family
//! `weft_controller_allocations` and the library writes the sample
//! `weft_controller_allocations_total`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{text, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::allocator::{Family as IpFamily, PoolStats};
use crate::rejected::Reason;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `weft_controller_subnets{family,state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubnetLabels {
    family: &'static str,
    /// `total`, `used` or `free`.
    state: &'static str,
}

/// `weft_controller_rejected_pod_cidrs{reason}`: [`Reason::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Subnet counts reach 2^127 in an IPv6 pool; a float gauge holds their magnitude
/// (Prometheus keeps every sample as a float anyway).
type FloatGauge = Gauge<f64, AtomicU64>;

/// A 0/1 gauge read from a flag at every scrape: the reconcile loop stores the flag,
/// the library encodes the gauge.
#[derive(Clone, Debug, Default)]
struct FlagGauge(Arc<AtomicBool>);

impl TypedMetric for FlagGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for FlagGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&i64::from(self.0.load(Ordering::Relaxed)))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Shared between the reconcile loop (writer) and the HTTP server (reader).
#[derive(Debug)]
pub struct Metrics {
    pub allocations: Counter,
    pub conflicts: Counter,
    pub errors: Counter,
    /// This replica holds the lease (`weft_controller_leader`).
    pub leader: Arc<AtomicBool>,
    /// The allocation table has been rebuilt from all Nodes (`/readyz`, not a metric).
    pub ready: AtomicBool,
    subnets: Family<SubnetLabels, FloatGauge>,
    /// Node pod CIDRs the table refuses now, per reason.
    rejected: Family<ReasonLabel, Gauge>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let leader = Arc::new(AtomicBool::new(false));
        let m = Metrics {
            allocations: Counter::default(),
            conflicts: Counter::default(),
            errors: Counter::default(),
            leader: leader.clone(),
            ready: AtomicBool::new(false),
            subnets: Family::default(),
            rejected: Family::default(),
            registry: Registry::default(),
        };
        // Every reason is scraped (at 0) before its first refusal.
        m.set_rejected(Vec::new());
        m.register(FlagGauge(leader))
    }
}

impl Metrics {
    /// Registers every metric, in the order of the exposition.
    fn register(mut self, leader: FlagGauge) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "weft_controller_subnets",
            "Node subnets per address family and state",
            self.subnets.clone(),
        );
        r.register(
            "weft_controller_rejected_pod_cidrs",
            "Node pod CIDRs not recorded in the allocation table (so blocking no subnet), \
             by reason",
            self.rejected.clone(),
        );
        r.register(
            "weft_controller_allocations",
            "Pod CIDRs assigned to Nodes",
            self.allocations.clone(),
        );
        r.register(
            "weft_controller_conflicts",
            "Nodes warned about a refused pod CIDR (outside, wrong size, overlapping)",
            self.conflicts.clone(),
        );
        r.register(
            "weft_controller_errors",
            "Failed API calls and watch errors",
            self.errors.clone(),
        );
        r.register(
            "weft_controller_leader",
            "1 when this replica holds the lease and allocates",
            leader,
        );
        self
    }

    pub fn inc(counter: &Counter) {
        counter.inc();
    }

    /// The subnet counts of every pool; a family left out loses its series.
    pub fn set_pools(&self, stats: Vec<(IpFamily, PoolStats)>) {
        for family in [IpFamily::V4, IpFamily::V6] {
            let s = stats.iter().find(|(f, _)| *f == family).map(|(_, s)| s);
            for (state, v) in [
                ("total", s.map(|s| s.total)),
                ("used", s.map(|s| s.used)),
                ("free", s.map(PoolStats::free)),
            ] {
                let labels = SubnetLabels {
                    family: family.label(),
                    state,
                };
                match v {
                    Some(v) => {
                        self.subnets.get_or_create(&labels).set(v as f64);
                    }
                    None => {
                        self.subnets.remove(&labels);
                    }
                }
            }
        }
    }

    /// The refusals counted now, per reason; a reason left out is 0.
    pub fn set_rejected(&self, counts: Vec<(Reason, u64)>) {
        for reason in Reason::ALL {
            let n = counts
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            self.rejected
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        // Writing into a String cannot fail, nor can encoding these metric types.
        text::encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.set_pools(vec![(
            IpFamily::V4,
            PoolStats {
                total: 256,
                used: 3,
            },
        )]);
        Metrics::inc(&m.allocations);
        m.leader.store(true, Ordering::Relaxed);
        let text = m.render();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("weft_controller_subnets{family=\"ipv4\",state=\"total\"}"),
            Some(256.0)
        );
        assert_eq!(
            v("weft_controller_subnets{family=\"ipv4\",state=\"used\"}"),
            Some(3.0)
        );
        assert_eq!(
            v("weft_controller_subnets{family=\"ipv4\",state=\"free\"}"),
            Some(253.0)
        );
        assert_eq!(
            v("weft_controller_subnets{family=\"ipv6\",state=\"total\"}"),
            None
        );
        assert_eq!(v("weft_controller_allocations_total"), Some(1.0));
        assert_eq!(v("weft_controller_conflicts_total"), Some(0.0));
        assert_eq!(v("weft_controller_errors_total"), Some(0.0));
        assert_eq!(v("weft_controller_leader"), Some(1.0));
        assert_eq!(
            v("weft_controller_rejected_pod_cidrs{reason=\"wrong_size\"}"),
            Some(0.0)
        );
        m.set_rejected(vec![(Reason::WrongSize, 2)]);
        let text = m.render();
        let v = |s: &str| value(&text, s);
        assert_eq!(
            v("weft_controller_rejected_pod_cidrs{reason=\"wrong_size\"}"),
            Some(2.0)
        );
        assert_eq!(
            v("weft_controller_rejected_pod_cidrs{reason=\"overlap\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn an_ipv6_pool_larger_than_any_integer_gauge_keeps_its_magnitude() {
        let m = Metrics::default();
        let total = 1u128 << 100;
        m.set_pools(vec![(IpFamily::V6, PoolStats { total, used: 1 })]);
        let got = value(
            &m.render(),
            "weft_controller_subnets{family=\"ipv6\",state=\"free\"}",
        )
        .unwrap();
        assert_eq!(got, (total - 1) as f64);
    }
}
