//! What `bench flannel` prints: a Markdown table (median and range per figure, per N and
//! agent) and the one JSON line.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::agents::Kind;
use super::stats::{Sample, Summary, Unit};

/// One agent's figures at one N, a sample per run.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub cold: Vec<Sample>,
    pub cpu: Vec<Sample>,
    pub rss: Vec<Sample>,
    /// Per run: the p50 of its single additions.
    pub add: Vec<Sample>,
    pub del: Vec<Sample>,
    pub repair: Vec<Sample>,
    pub stale: Vec<Sample>,
    pub burst: Vec<Sample>,
    /// How long the API writes of the burst took (the burst is this long).
    pub burst_api: Vec<Sample>,
    /// weft only: syncs for the burst (in `ms` as a plain number).
    pub burst_syncs: Vec<Sample>,
}

pub struct Row {
    /// JSON key (before the agent suffix).
    pub key: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub get: fn(&Figures) -> &[Sample],
}

pub const ROWS: [Row; 10] = [
    Row {
        key: "cold_start_ms",
        label: "cold start to all routes+FDB+neigh in the kernel",
        unit: Unit::S,
        get: |f| &f.cold,
    },
    Row {
        key: "cpu_ms",
        label: "CPU (user+system) for the cold start",
        unit: Unit::S,
        get: |f| &f.cpu,
    },
    Row {
        key: "rss_mb",
        label: "RSS after convergence",
        unit: Unit::MiB,
        get: |f| &f.rss,
    },
    Row {
        key: "add_p50_ms",
        label: "one Node added: route present (p50)",
        unit: Unit::Ms,
        get: |f| &f.add,
    },
    Row {
        key: "del_p50_ms",
        label: "one Node deleted: route gone (p50)",
        unit: Unit::Ms,
        get: |f| &f.del,
    },
    Row {
        key: "repair_ms",
        label: "hand-deleted route restored",
        unit: Unit::Ms,
        get: |f| &f.repair,
    },
    Row {
        key: "stale_ms",
        label: "Nodes deleted while down: stale entries gone after restart",
        unit: Unit::S,
        get: |f| &f.stale,
    },
    Row {
        key: "burst_ms",
        label: "every Node's VTEP MAC changed: all new entries in",
        unit: Unit::S,
        get: |f| &f.burst,
    },
    Row {
        key: "burst_api_ms",
        label: "the burst's API writes (32 in flight)",
        unit: Unit::S,
        get: |f| &f.burst_api,
    },
    Row {
        key: "burst_syncs",
        label: "syncs for that burst",
        unit: Unit::Count,
        get: |f| &f.burst_syncs,
    },
];

pub type Results = BTreeMap<(usize, Kind), Figures>;

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The Markdown table: a row per figure and N, a column per agent.
pub fn table(results: &Results, ns: &[usize]) -> String {
    let mut out = String::from("| measure | N | flanneld | weft-agent |\n|---|---|---|---|\n");
    for row in &ROWS {
        for &n in ns {
            let cell = |kind: Kind| {
                results
                    .get(&(n, kind))
                    .and_then(|f| Summary::of((row.get)(f)))
                    .map(|s| s.cell(row.unit))
                    .unwrap_or_else(|| "-".into())
            };
            out.push_str(&format!(
                "| {} | {n} | {} | {} |\n",
                row.label,
                cell(Kind::Flannel),
                cell(Kind::Weft)
            ));
        }
    }
    out
}

/// The JSON line: at the top level, the medians at the largest N as `<key>_<agent>` with
/// `<key>_<agent>_timed_out`; under `by_n`, median, min and max of every figure at every N.
pub fn json(results: &Results, ns: &[usize], runs: usize) -> Value {
    let top = ns.iter().copied().max().unwrap_or(0);
    let mut obj = Map::new();
    obj.insert("bench".into(), json!("flannel"));
    obj.insert("nodes".into(), json!(top));
    obj.insert("runs".into(), json!(runs));
    let mut by_n = Map::new();
    for &n in ns {
        let mut at_n = Map::new();
        for kind in Kind::ALL {
            let Some(f) = results.get(&(n, kind)) else {
                continue;
            };
            for row in &ROWS {
                let Some(s) = Summary::of((row.get)(f)) else {
                    continue;
                };
                let key = format!("{}_{}", row.key, kind.key());
                at_n.insert(
                    key.clone(),
                    json!({
                        "median": round1(s.median),
                        "min": round1(s.min),
                        "max": round1(s.max),
                        "timed_out": s.timed_out,
                    }),
                );
                if n != top {
                    continue;
                }
                obj.insert(key.clone(), json!(round1(s.median)));
                if !matches!(
                    row.key,
                    "cpu_ms" | "rss_mb" | "burst_api_ms" | "burst_syncs"
                ) {
                    obj.insert(format!("{key}_timed_out"), json!(s.timed_out));
                }
            }
        }
        by_n.insert(n.to_string(), Value::Object(at_n));
    }
    obj.insert("by_n".into(), Value::Object(by_n));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(ms: f64, repair: Sample) -> Figures {
        Figures {
            cold: vec![Sample::ok(ms), Sample::ok(ms * 2.0), Sample::ok(ms * 3.0)],
            cpu: vec![Sample::ok(1.0)],
            rss: vec![Sample::ok(30.45)],
            add: vec![Sample::ok(5.0)],
            del: vec![Sample::ok(6.0)],
            repair: vec![repair],
            stale: vec![Sample::ok(7.0)],
            burst: vec![Sample::ok(8.0)],
            burst_api: vec![Sample::ok(7.0)],
            burst_syncs: vec![],
        }
    }

    #[test]
    fn json_has_the_top_n_keys_and_timeouts() {
        let mut r = Results::new();
        let mut weft = figures(100.0, Sample::ok(3.0));
        weft.burst_syncs = vec![Sample::ok(4.0)];
        r.insert((5000, Kind::Weft), weft);
        r.insert(
            (5000, Kind::Flannel),
            figures(500.0, Sample::waited(10_000.0)),
        );
        r.insert((1000, Kind::Weft), figures(10.0, Sample::ok(2.0)));
        let v = json(&r, &[1000, 5000], 3);
        assert_eq!(v["nodes"], 5000);
        assert_eq!(v["cold_start_ms_weft"], 200.0);
        assert_eq!(v["cold_start_ms_flannel"], 1000.0);
        assert_eq!(v["rss_mb_weft"], 30.5);
        assert_eq!(v["repair_ms_flannel"], 10_000.0);
        assert_eq!(v["repair_ms_flannel_timed_out"], true);
        assert_eq!(v["repair_ms_weft_timed_out"], false);
        assert_eq!(v["burst_syncs_weft"], 4.0);
        assert!(v.get("burst_syncs_flannel").is_none());
        assert!(v.get("rss_mb_weft_timed_out").is_none());
        assert_eq!(v["by_n"]["1000"]["cold_start_ms_weft"]["max"], 30.0);
        assert!(v["by_n"]["1000"].get("cold_start_ms_flannel").is_none());

        let t = table(&r, &[1000, 5000]);
        assert!(t.contains("| hand-deleted route restored | 5000 | >= 10000 ms (never) | 3 ms |"));
        assert!(t.contains(
            "| cold start to all routes+FDB+neigh in the kernel | 1000 | - | 0.02 s (0.01-0.03) |"
        ));
    }
}
