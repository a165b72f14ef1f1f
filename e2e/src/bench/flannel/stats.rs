//! The pure part of `bench flannel`: samples that may have timed out, their medians and
//! ranges, and the parsers for what the agents expose (`/proc/PID/stat`, Prometheus text).

use crate::bench::agent::median;

/// One measured time. A timed-out sample holds the time waited.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub ms: f64,
    pub timed_out: bool,
}

impl Sample {
    pub fn ok(ms: f64) -> Self {
        Sample {
            ms,
            timed_out: false,
        }
    }

    pub fn waited(ms: f64) -> Self {
        Sample {
            ms,
            timed_out: true,
        }
    }

    /// The p50 of one run's samples (e.g. five single-Node additions); timed out when
    /// any of them did.
    pub fn p50(samples: &[Sample]) -> Option<Sample> {
        if samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = samples.iter().map(|s| s.ms).collect();
        Some(Sample {
            ms: median(&mut v),
            timed_out: samples.iter().any(|s| s.timed_out),
        })
    }
}

/// Median and range of one figure over the runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Some run never got there (its value is the time waited).
    pub timed_out: bool,
    pub runs: usize,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = samples.iter().map(|s| s.ms).collect();
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Summary {
            median: median(&mut v),
            min,
            max,
            timed_out: samples.iter().any(|s| s.timed_out),
            runs: samples.len(),
        })
    }

    /// `1.96 s (1.90-2.10)`, `>= 10.0 s (never)`, for the table; `unit` scales and
    /// names the value.
    pub fn cell(&self, unit: Unit) -> String {
        let (f, name) = match unit {
            Unit::Ms => (1.0, "ms"),
            Unit::S => (1e-3, "s"),
            Unit::MiB => (1.0, "MiB"),
            Unit::Count => (1.0, ""),
        };
        let prec = if unit == Unit::S { 2 } else { 0 };
        let sep = if name.is_empty() { "" } else { " " };
        let v = |x: f64| format!("{:.prec$}", x * f);
        if self.timed_out {
            return format!(">= {}{sep}{name} (never)", v(self.median));
        }
        if self.runs < 2 || v(self.min) == v(self.max) {
            return format!("{}{sep}{name}", v(self.median));
        }
        format!(
            "{}{sep}{name} ({}-{})",
            v(self.median),
            v(self.min),
            v(self.max)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Ms,
    S,
    MiB,
    Count,
}

/// utime + stime (clock ticks) of a `/proc/PID/stat` line: every thread of the process,
/// not its children. The command name may hold spaces and parentheses, so fields are
/// counted after the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": state(3) ppid(4) ... utime(14) stime(15): indices 11 and 12 here.
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The sum of every sample of metric `name` (any labels) in Prometheus text format;
/// `None` when there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.split_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // a longer name with this prefix
        };
        if let Some(v) = value.and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p50_and_summary_carry_timeouts() {
        let s = [Sample::ok(3.0), Sample::ok(1.0), Sample::waited(10.0)];
        assert_eq!(
            Sample::p50(&s),
            Some(Sample {
                ms: 3.0,
                timed_out: true
            })
        );
        let sum = Summary::of(&[Sample::ok(20.0), Sample::ok(10.0), Sample::ok(40.0)]).unwrap();
        assert_eq!((sum.median, sum.min, sum.max), (20.0, 10.0, 40.0));
        assert!(!sum.timed_out);
        assert_eq!(sum.cell(Unit::Ms), "20 ms (10-40)");
        assert_eq!(sum.cell(Unit::S), "0.02 s (0.01-0.04)");
        let never = Summary::of(&[Sample::waited(10_000.0)]).unwrap();
        assert_eq!(never.cell(Unit::S), ">= 10.00 s (never)");
        assert_eq!(Sample::p50(&[]), None);
        assert_eq!(Summary::of(&[]), None);
        let even = Summary::of(&[Sample::ok(1.0), Sample::ok(2.0)]).unwrap();
        assert_eq!(even.median, 1.5);
    }

    #[test]
    fn cpu_ticks_skips_a_command_name_with_spaces() {
        let stat = "4242 (weft agent) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    150 25 0 0 20 0 9 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn metric_sum_adds_labelled_samples_only_of_that_name() {
        let text = "# HELP weft_agent_reconcile Syncs.\n\
                    # TYPE weft_agent_reconcile counter\n\
                    weft_agent_reconcile_total{result=\"ok\"} 41\n\
                    weft_agent_reconcile_total{result=\"error\"} 1\n\
                    weft_agent_reconcile_total_other 7\n\
                    weft_agent_reconcile_duration_seconds_count 42\n";
        assert_eq!(metric_sum(text, "weft_agent_reconcile_total"), Some(42.0));
        assert_eq!(metric_sum("up 1\n", "up"), Some(1.0));
        assert_eq!(metric_sum(text, "weft_agent_absent"), None);
    }
}
