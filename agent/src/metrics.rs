//! The agent's metrics, kept in atomics and rendered by hand in the Prometheus text
//! exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::peers::Reason;

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
}

impl ErrorKind {
    const ALL: [ErrorKind; 4] = [
        ErrorKind::Watch,
        ErrorKind::Sync,
        ErrorKind::Publish,
        ErrorKind::Condition,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Watch => "watch",
            ErrorKind::Sync => "sync",
            ErrorKind::Publish => "publish",
            ErrorKind::Condition => "condition",
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    remote_nodes: AtomicU64,
    reconcile_ok: AtomicU64,
    reconcile_error: AtomicU64,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_sum_micros: AtomicU64,
    duration_count: AtomicU64,
    kernel_add: AtomicU64,
    kernel_remove: AtomicU64,
    kernel_update: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    ready: AtomicBool,
    /// Nodes left out by peer validation at the last sync, by reason.
    rejected: [AtomicU64; Reason::ALL.len()],
    /// The VXLAN filter's drop counters (read from the kernel).
    vxlan_dropped_foreign: AtomicU64,
    vxlan_dropped_from_pods: AtomicU64,
}

/// The outcome of one datapath sync, as the metrics need it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub peers: usize,
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
}

impl Metrics {
    pub fn record_sync(&self, took: Duration, result: Result<SyncCounts, ()>) {
        let secs = took.as_secs_f64();
        for (bound, count) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Relaxed);
            }
        }
        self.duration_sum_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
        self.duration_count.fetch_add(1, Relaxed);
        match result {
            Ok(c) => {
                self.reconcile_ok.fetch_add(1, Relaxed);
                self.remote_nodes.store(c.peers as u64, Relaxed);
                self.kernel_add.fetch_add(c.added as u64, Relaxed);
                self.kernel_remove.fetch_add(c.removed as u64, Relaxed);
                self.kernel_update.fetch_add(c.updated as u64, Relaxed);
            }
            Err(()) => {
                self.reconcile_error.fetch_add(1, Relaxed);
                self.error(ErrorKind::Sync);
            }
        }
    }

    /// The rejections of the last sync (one reason per rejected node).
    pub fn set_rejected(&self, reasons: impl Iterator<Item = Reason>) {
        let mut counts = [0u64; Reason::ALL.len()];
        for r in reasons {
            counts[r as usize] += 1;
        }
        for (gauge, n) in self.rejected.iter().zip(counts) {
            gauge.store(n, Relaxed);
        }
    }

    pub fn rejected(&self, reason: Reason) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    pub fn set_vxlan_drops(&self, foreign: u64, from_pods: u64) {
        self.vxlan_dropped_foreign.store(foreign, Relaxed);
        self.vxlan_dropped_from_pods.store(from_pods, Relaxed);
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Relaxed)
    }

    pub fn reconciles(&self) -> (u64, u64) {
        (
            self.reconcile_ok.load(Relaxed),
            self.reconcile_error.load(Relaxed),
        )
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        fn family(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        family(
            &mut out,
            "weft_agent_build_info",
            "gauge",
            "Version of the running agent.",
        );
        let _ = writeln!(
            out,
            "weft_agent_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "weft_agent_ready",
            "gauge",
            "1 once the datapath is programmed and the subnet file written.",
        );
        let _ = writeln!(out, "weft_agent_ready {}", u8::from(self.is_ready()));
        family(
            &mut out,
            "weft_agent_remote_nodes",
            "gauge",
            "Remote nodes programmed in the datapath at the last successful sync.",
        );
        let _ = writeln!(
            out,
            "weft_agent_remote_nodes {}",
            self.remote_nodes.load(Relaxed)
        );
        family(
            &mut out,
            "weft_agent_reconcile_total",
            "counter",
            "Datapath syncs by result.",
        );
        let _ = writeln!(
            out,
            "weft_agent_reconcile_total{{result=\"ok\"}} {}",
            self.reconcile_ok.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "weft_agent_reconcile_total{{result=\"error\"}} {}",
            self.reconcile_error.load(Relaxed)
        );
        family(
            &mut out,
            "weft_agent_reconcile_duration_seconds",
            "histogram",
            "Duration of datapath syncs.",
        );
        for (bound, count) in DURATION_BUCKETS.iter().zip(&self.duration_buckets) {
            let _ = writeln!(
                out,
                "weft_agent_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                count.load(Relaxed)
            );
        }
        let count = self.duration_count.load(Relaxed);
        let sum = self.duration_sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "weft_agent_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "weft_agent_reconcile_duration_seconds_sum {sum}");
        let _ = writeln!(out, "weft_agent_reconcile_duration_seconds_count {count}");
        family(
            &mut out,
            "weft_agent_kernel_operations_total",
            "counter",
            "Kernel entries (neighbours, FDB entries, routes) changed by datapath syncs, by operation.",
        );
        for (op, c) in [
            ("add", &self.kernel_add),
            ("remove", &self.kernel_remove),
            ("update", &self.kernel_update),
        ] {
            let _ = writeln!(
                out,
                "weft_agent_kernel_operations_total{{op=\"{op}\"}} {}",
                c.load(Relaxed)
            );
        }
        family(
            &mut out,
            "weft_agent_errors_total",
            "counter",
            "Errors by what failed.",
        );
        for kind in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "weft_agent_errors_total{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.errors(kind)
            );
        }
        family(
            &mut out,
            "weft_agent_rejected_peers",
            "gauge",
            "Nodes not routed to because a value failed validation, by reason (last sync).",
        );
        for reason in Reason::ALL {
            let _ = writeln!(
                out,
                "weft_agent_rejected_peers{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.rejected(reason)
            );
        }
        family(
            &mut out,
            "weft_agent_vxlan_dropped_packets_total",
            "counter",
            "VXLAN packets dropped by the source filter: from hosts that are no peer, from pods.",
        );
        for (source, c) in [
            ("foreign", &self.vxlan_dropped_foreign),
            ("pod", &self.vxlan_dropped_from_pods),
        ] {
            let _ = writeln!(
                out,
                "weft_agent_vxlan_dropped_packets_total{{source=\"{source}\"}} {}",
                c.load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
            .to_string()
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let text = Metrics::default().render();
        for name in [
            "weft_agent_ready",
            "weft_agent_remote_nodes",
            "weft_agent_reconcile_total",
            "weft_agent_reconcile_duration_seconds",
            "weft_agent_kernel_operations_total",
            "weft_agent_errors_total",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert_eq!(value(&text, "weft_agent_ready"), "0");
        assert!(text.ends_with('\n'));
        // Every sample line is `name{labels} value` with a numeric value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
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
        let t = m.render();
        assert_eq!(value(&t, "weft_agent_ready"), "1");
        assert_eq!(value(&t, "weft_agent_remote_nodes"), "3");
        assert_eq!(value(&t, "weft_agent_reconcile_total{result=\"ok\"}"), "1");
        assert_eq!(
            value(&t, "weft_agent_reconcile_total{result=\"error\"}"),
            "1"
        );
        assert_eq!(
            value(&t, "weft_agent_kernel_operations_total{op=\"add\"}"),
            "3"
        );
        assert_eq!(
            value(&t, "weft_agent_kernel_operations_total{op=\"remove\"}"),
            "1"
        );
        assert_eq!(
            value(&t, "weft_agent_kernel_operations_total{op=\"update\"}"),
            "2"
        );
        assert_eq!(value(&t, "weft_agent_errors_total{kind=\"sync\"}"), "1");
        assert_eq!(value(&t, "weft_agent_errors_total{kind=\"watch\"}"), "1");
        assert_eq!(value(&t, "weft_agent_errors_total{kind=\"publish\"}"), "0");
        assert_eq!(
            value(
                &t,
                "weft_agent_reconcile_duration_seconds_bucket{le=\"0.001\"}"
            ),
            "0"
        );
        assert_eq!(
            value(
                &t,
                "weft_agent_reconcile_duration_seconds_bucket{le=\"0.005\"}"
            ),
            "1"
        );
        assert_eq!(
            value(
                &t,
                "weft_agent_reconcile_duration_seconds_bucket{le=\"0.25\"}"
            ),
            "2"
        );
        assert_eq!(
            value(
                &t,
                "weft_agent_reconcile_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            "2"
        );
        assert_eq!(
            value(&t, "weft_agent_reconcile_duration_seconds_count"),
            "2"
        );
        assert_eq!(
            value(&t, "weft_agent_reconcile_duration_seconds_sum"),
            "0.203"
        );
    }
}
