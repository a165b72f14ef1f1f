//! A small parser of the OpenMetrics 1.0 text format for the tests that scrape
//! `/metrics` (the agent's and, through `#[path]`, the controller's): it applies the
//! rules of the specification a scraper relies on, so a test fails on output Prometheus
//! would refuse or misread, not only on a missing string.
//!
//! Checked: metadata lines (`# HELP`, `# TYPE`, `# UNIT`) before their family's samples,
//! at most once each; known types; a unit that ends the family name; no family twice;
//! sample names that are the family name plus a suffix its type allows (`_total` for a
//! counter, `_info` for an info, `_bucket`/`_sum`/`_count` for a histogram, ...);
//! metric and label names; quoted label values with their escapes; no label twice; no
//! series twice; float values in the spec's spelling (`+Inf`, `-Inf`, `NaN`); counters
//! not negative; info values 1; histogram buckets ascending with cumulative counts,
//! ending in `le="+Inf"` equal to `_count`, with a `_sum`; no blank line; and `# EOF`
//! as the last line.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::{BTreeMap, BTreeSet};

/// One metric family: its metadata and its samples in the order given.
#[derive(Clone, Debug)]
pub struct MetricFamily {
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info`, ... (`unknown` without `# TYPE`).
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

const TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "stateset",
    "info",
    "summary",
    "unknown",
];

/// The sample name suffixes a family of `kind` may carry.
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    }
}

/// Parses a whole exposition into its families, or says which line breaks which rule.
pub fn parse(text: &str) -> Result<Vec<MetricFamily>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or("the exposition does not end with `# EOF`")?;
    if !body.is_empty() && !body.ends_with('\n') {
        return Err("the line before `# EOF` has no newline".into());
    }
    let mut families: Vec<MetricFamily> = Vec::new();
    // Whether the last family has had a sample (then no metadata for it may follow).
    let mut sampled = false;
    for (i, line) in body.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", i + 1);
        if line.is_empty() {
            return Err(at("blank line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let (keyword, rest) = meta
                .split_once(' ')
                .ok_or_else(|| at("bad comment".into()))?;
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            check_metric_name(name).map_err(at)?;
            let same = families.last().is_some_and(|f| f.name == name) && !sampled;
            if !same {
                if families.iter().any(|f| f.name == name) {
                    return Err(at(format!("family {name} appears twice")));
                }
                families.push(MetricFamily {
                    name: name.to_string(),
                    kind: "unknown".into(),
                    help: None,
                    unit: None,
                    samples: Vec::new(),
                });
                sampled = false;
            }
            let f = families.last_mut().unwrap();
            match keyword {
                "HELP" if f.help.is_none() => f.help = Some(unescape(arg, false).map_err(at)?),
                "TYPE" if f.kind == "unknown" && TYPES.contains(&arg) => f.kind = arg.into(),
                "UNIT" if f.unit.is_none() && !arg.is_empty() => {
                    if !name.ends_with(&format!("_{arg}")) {
                        return Err(at(format!("unit {arg} does not end the name")));
                    }
                    f.unit = Some(arg.into())
                }
                _ => return Err(at("repeated, unknown or malformed metadata".into())),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let belongs = families.last().is_some_and(|f| {
            suffixes(&f.kind)
                .iter()
                .any(|s| sample.name.strip_suffix(s) == Some(f.name.as_str()))
        });
        if !belongs {
            // A sample without metadata is a family of its own, of type unknown.
            if families.iter().any(|f| f.name == sample.name) {
                return Err(at(format!("sample outside its family {}", sample.name)));
            }
            families.push(MetricFamily {
                name: sample.name.clone(),
                kind: "unknown".into(),
                help: None,
                unit: None,
                samples: Vec::new(),
            });
        }
        let f = families.last_mut().unwrap();
        if f.samples
            .iter()
            .any(|s| s.name == sample.name && s.labels == sample.labels)
        {
            return Err(at("series appears twice".into()));
        }
        f.samples.push(sample);
        sampled = true;
    }
    for f in &families {
        check_family(f)?;
    }
    Ok(families)
}

fn check_family(f: &MetricFamily) -> Result<(), String> {
    let name = &f.name;
    match f.kind.as_str() {
        "counter" => {
            if let Some(s) = f.samples.iter().find(|s| s.value.is_nan() || s.value < 0.0) {
                return Err(format!("counter {name}: value {} is not >= 0", s.value));
            }
        }
        "info" => {
            if let Some(s) = f.samples.iter().find(|s| s.value != 1.0) {
                return Err(format!("info {name}: value {} is not 1", s.value));
            }
        }
        "histogram" => check_histogram(f)?,
        _ => {}
    }
    Ok(())
}

fn check_histogram(f: &MetricFamily) -> Result<(), String> {
    let name = &f.name;
    // The series of one histogram share their labels other than `le`.
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut labels = s.labels.clone();
        let le = labels
            .remove("le")
            .ok_or(format!("{name}: a bucket without le"))?;
        let le = parse_float(&le).map_err(|e| format!("{name}: le: {e}"))?;
        series.entry(labels).or_default().push((le, s.value));
    }
    for (labels, buckets) in &series {
        let bounds_ascend = buckets.windows(2).all(|w| w[0].0 < w[1].0);
        let counts_ascend = buckets.windows(2).all(|w| w[0].1 <= w[1].1);
        if !bounds_ascend || !counts_ascend {
            return Err(format!(
                "{name}{labels:?}: buckets not cumulative: {buckets:?}"
            ));
        }
        let last = buckets.last().unwrap();
        if last.0 != f64::INFINITY {
            return Err(format!("{name}{labels:?}: no le=\"+Inf\" bucket"));
        }
        let find = |suffix: &str| {
            f.samples
                .iter()
                .find(|s| s.name == format!("{name}{suffix}") && &s.labels == labels)
                .map(|s| s.value)
        };
        if find("_count") != Some(last.1) {
            return Err(format!("{name}{labels:?}: _count is not the +Inf bucket"));
        }
        if find("_sum").is_none() {
            return Err(format!("{name}{labels:?}: no _sum"));
        }
    }
    Ok(())
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    ok.then_some(()).ok_or(format!("bad metric name {name:?}"))
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(()).ok_or(format!("bad label name {name:?}"))
}

/// `name{labels} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without value")?;
    let name = &line[..name_end];
    check_metric_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        while !rest.starts_with('}') {
            let (key, after) = rest.split_once("=\"").ok_or("a label without =\"")?;
            check_label_name(key)?;
            let end = closing_quote(after).ok_or("an unterminated label value")?;
            let value = unescape(&after[..end], true)?;
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            rest = &after[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
                if rest.starts_with('}') {
                    return Err("a comma before }".into());
                }
            } else if !rest.starts_with('}') {
                return Err("labels not separated by a comma".into());
            }
        }
        rest = &rest[1..];
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = parse_float(fields.next().unwrap())?;
    if let Some(ts) = fields.next() {
        parse_float(ts).map_err(|e| format!("timestamp: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields after the value (exemplars are not expected)".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The index of the first unescaped `"`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

/// Undoes `\\`, `\n` and (in label values) `\"`; any other escape is an error.
fn unescape(s: &str, quotes: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            other => return Err(format!("bad escape \\{other:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// A number as OpenMetrics spells it: decimal or exponent notation, `+Inf`, `-Inf`,
/// `NaN` (not Rust's `inf` or `infinity`).
fn parse_float(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) =>
        {
            s.parse().map_err(|_| format!("bad number {s:?}"))
        }
        _ => Err(format!("bad number {s:?}")),
    }
}

/// The family `name`, or a panic listing those there are.
pub fn family<'a>(families: &'a [MetricFamily], name: &str) -> &'a MetricFamily {
    families.iter().find(|f| f.name == name).unwrap_or_else(|| {
        let names: Vec<_> = families.iter().map(|f| &f.name).collect();
        panic!("no family {name} in {names:?}")
    })
}

impl MetricFamily {
    /// The value of the sample `name` with exactly `labels`, or a panic listing the
    /// family's samples.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .unwrap_or_else(|| panic!("no sample {name}{want:?} in {:#?}", self.samples))
            .value
    }

    /// The values of the family's label `label`, over all its samples.
    pub fn label_values(&self, label: &str) -> BTreeSet<String> {
        self.samples
            .iter()
            .filter_map(|s| s.labels.get(label).cloned())
            .collect()
    }
}

/// Every exposed sample name with the label names it carries: what a dashboard or an
/// alert refers to, so a rename shows up here.
pub fn series_shapes(families: &[MetricFamily]) -> BTreeSet<String> {
    families
        .iter()
        .flat_map(|f| &f.samples)
        .map(|s| {
            let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            format!("{}{{{}}}", s.name, keys.join(","))
        })
        .collect()
}

/// `GET path` over plain HTTP/1.1: (status, content type, body).
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response head");
    let status = head[9..12].parse().unwrap();
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    assert_eq!(
        header("transfer-encoding"),
        None,
        "a chunked body is not decoded here"
    );
    let content_type = header("content-type").unwrap_or_default();
    (status, content_type, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_requests Requests.\n# TYPE a_requests counter\n\
        a_requests_total{code=\"200\",path=\"/x\\\"y\"} 3\n\
        # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
        # TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
        a_seconds_sum 0.5\na_seconds_count 2\n\
        a_seconds_bucket{le=\"0.1\"} 1\na_seconds_bucket{le=\"1.0\"} 2\n\
        a_seconds_bucket{le=\"+Inf\"} 2\n# EOF\n";

    #[test]
    fn parses_families_labels_and_values() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.len(), 3);
        let c = family(&f, "a_requests");
        assert_eq!(
            (c.kind.as_str(), c.help.as_deref()),
            ("counter", Some("Requests."))
        );
        assert_eq!(
            c.value("a_requests_total", &[("code", "200"), ("path", "/x\"y")]),
            3.0
        );
        assert_eq!(family(&f, "a_seconds").unit.as_deref(), Some("seconds"));
    }

    #[test]
    fn refuses_what_a_scraper_would() {
        for (bad, why) in [
            (GOOD.strip_suffix("# EOF\n").unwrap(), "no EOF"),
            (
                &GOOD.replace("a_requests_total{", "a_requests{"),
                "counter without _total",
            ),
            (&GOOD.replace("} 3", "} -3"), "negative counter"),
            (
                &GOOD.replace("a_up 1", "a_up inf"),
                "Rust's spelling of infinity",
            ),
            (&GOOD.replace("a_up 1\n", "a_up 1\n\n"), "blank line"),
            (
                &GOOD.replace("count 2", "count 3"),
                "_count is not the +Inf bucket",
            ),
            (
                &GOOD.replace("{le=\"1.0\"} 2", "{le=\"1.0\"} 0"),
                "not cumulative",
            ),
            (
                &GOOD.replace("code=\"200\",", "code=\"200\",code=\"1\","),
                "label twice",
            ),
            (
                &GOOD.replace(
                    "# TYPE a_up gauge\n",
                    "# TYPE a_up gauge\n# TYPE a_up gauge\n",
                ),
                "TYPE twice",
            ),
            (
                &format!("{}a_up 2\n# EOF\n", GOOD.strip_suffix("# EOF\n").unwrap()),
                "family twice",
            ),
            (&GOOD.replace("a_up 1", "a_up 1 # {} 1"), "exemplar"),
        ] {
            assert!(parse(bad).is_err(), "{why}: accepted\n{bad}");
        }
    }
}
