//! Counters and gauges the controller exposes on /metrics, in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::allocator::{Family, PoolStats};
use crate::rejected::Reason;

/// Shared between the reconcile loop (writer) and the HTTP server (reader).
#[derive(Debug, Default)]
pub struct Metrics {
    pub allocations: AtomicU64,
    pub conflicts: AtomicU64,
    pub errors: AtomicU64,
    pub leader: AtomicBool,
    /// The allocation table has been rebuilt from all Nodes.
    pub ready: AtomicBool,
    pools: Mutex<Vec<(Family, PoolStats)>>,
    /// Node pod CIDRs the table refuses now, per reason.
    rejected: Mutex<Vec<(Reason, u64)>>,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_pools(&self, stats: Vec<(Family, PoolStats)>) {
        *self.pools.lock().unwrap_or_else(|e| e.into_inner()) = stats;
    }

    pub fn pools(&self) -> Vec<(Family, PoolStats)> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_rejected(&self, counts: Vec<(Reason, u64)>) {
        *self.rejected.lock().unwrap_or_else(|e| e.into_inner()) = counts;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(1024);
        out.push_str("# HELP weft_controller_subnets Node subnets per address family and state.\n");
        out.push_str("# TYPE weft_controller_subnets gauge\n");
        for (family, s) in self.pools() {
            for (state, v) in [("total", s.total), ("used", s.used), ("free", s.free())] {
                let _ = writeln!(
                    out,
                    "weft_controller_subnets{{family=\"{}\",state=\"{state}\"}} {v}",
                    family.label()
                );
            }
        }
        out.push_str(
            "# HELP weft_controller_rejected_pod_cidrs Node pod CIDRs not recorded in the \
             allocation table (so blocking no subnet), by reason.\n",
        );
        out.push_str("# TYPE weft_controller_rejected_pod_cidrs gauge\n");
        let rejected = self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for reason in Reason::ALL {
            let n = rejected
                .iter()
                .find(|(r, _)| *r == reason)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "weft_controller_rejected_pod_cidrs{{reason=\"{}\"}} {n}",
                reason.label()
            );
        }
        let counters = [
            (
                "allocations",
                "Pod CIDRs assigned to Nodes.",
                &self.allocations,
            ),
            (
                "conflicts",
                "Nodes warned about a refused pod CIDR (outside, wrong size, overlapping).",
                &self.conflicts,
            ),
            ("errors", "Failed API calls and watch errors.", &self.errors),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP weft_controller_{name}_total {help}");
            let _ = writeln!(out, "# TYPE weft_controller_{name}_total counter");
            let _ = writeln!(
                out,
                "weft_controller_{name}_total {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str(
            "# HELP weft_controller_leader 1 when this replica holds the lease and allocates.\n",
        );
        out.push_str("# TYPE weft_controller_leader gauge\n");
        let _ = writeln!(
            out,
            "weft_controller_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.set_pools(vec![(
            Family::V4,
            PoolStats {
                total: 256,
                used: 3,
            },
        )]);
        Metrics::inc(&m.allocations);
        m.leader.store(true, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("weft_controller_subnets{family=\"ipv4\",state=\"total\"} 256\n"));
        assert!(text.contains("weft_controller_subnets{family=\"ipv4\",state=\"used\"} 3\n"));
        assert!(text.contains("weft_controller_subnets{family=\"ipv4\",state=\"free\"} 253\n"));
        assert!(text.contains("weft_controller_allocations_total 1\n"));
        assert!(text.contains("weft_controller_conflicts_total 0\n"));
        assert!(text.contains("weft_controller_errors_total 0\n"));
        assert!(text.contains("weft_controller_leader 1\n"));
        assert!(text.contains("weft_controller_rejected_pod_cidrs{reason=\"wrong_size\"} 0\n"));
        m.set_rejected(vec![(Reason::WrongSize, 2)]);
        let text = m.render();
        assert!(text.contains("weft_controller_rejected_pod_cidrs{reason=\"wrong_size\"} 2\n"));
        assert!(text.contains("weft_controller_rejected_pod_cidrs{reason=\"overlap\"} 0\n"));
    }
}
