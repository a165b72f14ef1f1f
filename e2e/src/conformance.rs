//! `weft-e2e conformance`: Kubernetes' own network e2e specs (v1.34.4, built here by
//! scripts/build-conformance.sh) against a cluster running weft.
//!
//! By default the `[sig-network]` Conformance specs and the networking NodeConformance
//! checks; `--netpol` the NetworkPolicy specs. Specs that cannot apply to the cluster are
//! skipped by [`SKIPS`], a named list printed with every run, never silently. The result
//! is a table (spec, result, seconds) with totals; the JUnit and JSON reports and the
//! suite's full log stay under the report directory. Any failure, or a focus that selects
//! nothing, is an error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cluster::{self, runtime::Containerd, Layout};
use crate::topo::run;

/// Every `[sig-network]` Conformance spec (the 4 networking granular checks among them
/// are also the networking `[NodeConformance]` specs).
pub const DEFAULT_FOCUS: &str = r"\[sig-network\].*(\[Conformance\]|\[NodeConformance\])";
/// The NetworkPolicy specs (`test/e2e/network/netpol`).
pub const NETPOL_FOCUS: &str = r"\[Feature:NetworkPolicy\]";

/// What CI runs of the NetworkPolicy specs (the whole of them takes ~15 minutes here):
/// one spec per kind of rule: default deny, namespace selectors with expressions, ipBlock
/// with except, a named port, ports over UDP, egress deny on the client side, and
/// updates of a policy and of a namespace's labels (a pod's are in
/// `e2e/tests/policy_api.rs`). 7 specs, ~3.5 minutes.
pub const NETPOL_CI_FOCUS: &str = concat!(
    r"(server and client should support a 'default-deny-ingress' policy",
    r"|should enforce policy based on NamespaceSelector with MatchExpressions \[",
    r"|should enforce except clause while egress access to server in CIDR block",
    r"|should allow ingress access on one named port",
    r"|using UDP should enforce policy based on Ports",
    r"|should support denying of egress traffic on the client side",
    r"|should enforce updated policy",
    r"|should allow ingress access from updated namespace",
    r").*\[Feature:NetworkPolicy\]"
);

/// Specs that cannot apply to a local cluster, by a literal part of their name, and why.
pub const SKIPS: &[(&str, &str)] = &[
    (
        "LoadBalancer",
        "no cloud provider: nothing implements type=LoadBalancer",
    ),
    (
        "[Feature:SCTPConnectivity]",
        "this kernel has no SCTP sockets (the rules are still written)",
    ),
    (
        "[Feature:Networking-IPv6]",
        "the local cluster is single-stack IPv4",
    ),
    (
        "[Feature:IPv6DualStack]",
        "the local cluster is single-stack IPv4",
    ),
    (
        "[Feature:Example]",
        "needs upstream's example manifests and images",
    ),
];

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Default: $KUBECONFIG, else the local cluster's admin kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    pub netpol: bool,
    /// Replaces the default focus (a ginkgo regular expression).
    pub focus: Option<String>,
    /// Added to the skip list (ginkgo regular expressions).
    pub skip: Vec<String>,
    /// More arguments for the spec binary (e.g. `--ginkgo.v`).
    pub extra: Vec<String>,
    /// Parallel ginkgo processes (1: the binary alone). `[Serial]` specs still run
    /// alone, after the others, as upstream's runner does.
    pub procs: usize,
}

/// One spec's outcome from ginkgo's JSON report.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecResult {
    pub name: String,
    pub state: String,
    pub secs: f64,
    pub failure: Option<String>,
}

pub fn run_conformance(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let layout = Layout::new(cluster::state_dir());
    let kubeconfig = match &opts.kubeconfig {
        Some(k) => k.clone(),
        None => std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| layout.admin_kubeconfig()),
    };
    if !kubeconfig.is_file() {
        bail!(
            "no kubeconfig at {} (bring a cluster up with `weft-e2e up`, or pass --kubeconfig)",
            kubeconfig.display()
        );
    }
    let dir = build()?;
    let local = kubeconfig == layout.admin_kubeconfig();
    if local {
        import_images(&layout, &dir.join("test-images.tar"))?;
    } else {
        eprintln!(
            "not the local cluster: the test images must be pullable by its nodes \
             (or loaded from {})",
            dir.join("test-images.tar").display()
        );
    }
    let focus = opts.focus.clone().unwrap_or_else(|| {
        if opts.netpol {
            NETPOL_FOCUS.into()
        } else {
            DEFAULT_FOCUS.into()
        }
    });
    let skip_regex = skip_regex(&opts.skip);
    let report = report_dir(&layout)?;
    let binary = dir.join("e2e-network.test");

    // Which specs the focus selects before the skip list, to name what the list skips.
    let focused = dry_run(&binary, &focus, &report)?;
    if focused.is_empty() {
        bail!("the focus {focus:?} selects no spec");
    }
    println!(
        "weft-e2e conformance: {} specs selected by {focus:?}; report in {}",
        focused.len(),
        report.display()
    );
    let skipped = named_skips(&focused);
    for (name, reason) in &skipped {
        println!("  skipped ({reason}): {name}");
    }

    let log = std::fs::File::create(report.join("e2e.log"))?;
    let ginkgo_flags = [
        format!("focus={focus}"),
        format!("skip={skip_regex}"),
        format!("junit-report={}", report.join("junit.xml").display()),
        format!("json-report={}", report.join("report.json").display()),
        "no-color".into(),
        "timeout=2h".into(),
    ];
    let suite_flags = [
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--report-dir={}", report.display()),
        // No ssh access to nodes here: a failure's cluster log dump would only add noise.
        "--dump-logs-on-failure=false".into(),
    ];
    let mut cmd;
    if opts.procs > 1 {
        // The ginkgo CLI starts the processes and merges their reports.
        cmd = Command::new(dir.join("ginkgo"));
        cmd.arg(format!("--procs={}", opts.procs))
            .args(ginkgo_flags.iter().map(|f| format!("--{f}")))
            .arg(&binary)
            .arg("--")
            .args(&suite_flags);
    } else {
        cmd = Command::new(&binary);
        cmd.args(ginkgo_flags.iter().map(|f| format!("--ginkgo.{f}")))
            .args(&suite_flags);
    }
    cmd.args(&opts.extra).stdout(log.try_clone()?).stderr(log);
    eprintln!(
        "running the specs in {} process(es) (output: {})",
        opts.procs.max(1),
        report.join("e2e.log").display()
    );
    let status = cmd
        .status()
        .with_context(|| format!("run {}", binary.display()))?;
    let results = parse_report(
        &std::fs::read(report.join("report.json"))
            .with_context(|| format!("no JSON report from the specs (exit {status})"))?,
    )?;
    print_table(&results);
    let failed = results.iter().filter(|r| r.state != "passed").count();
    let passed = results.len() - failed;
    println!(
        "\n{passed} passed, {failed} failed, {} skipped by the list, of {} selected, in {:.0} s; \
         report: {}",
        skipped.len(),
        focused.len(),
        started.elapsed().as_secs_f64(),
        report.display()
    );
    if failed > 0 || !status.success() {
        bail!("{failed} spec(s) failed (exit {status}); see the table and the report");
    }
    if results.is_empty() {
        bail!("no spec ran");
    }
    Ok(())
}

/// scripts/build-conformance.sh (does nothing when everything is up to date); returns the
/// directory with the spec binary and the test images.
fn build() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-conformance.sh");
    let out = run(Command::new(script).stderr(Stdio::inherit()))
        .context("build the upstream specs and test images")?;
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// Imports the test images into every node's containerd, once per image build (a marker
/// in each node's directory remembers the tarball's stamp).
fn import_images(layout: &Layout, tar: &Path) -> Result<()> {
    let stamp = std::fs::read_to_string(tar.with_extension("tar.stamp")).unwrap_or_default();
    let marker = |n: &cluster::NodeSpec| layout.node_dir(&n.name).join("test-images.stamp");
    let todo: Vec<cluster::NodeSpec> = cluster::down::discover_nodes(layout)
        .into_iter()
        .filter(|n| std::fs::read_to_string(marker(n)).map_or(true, |m| m != stamp))
        .collect();
    let t = Instant::now();
    cluster::images::import_all(layout, &todo, &Containerd::find()?, &[tar.to_path_buf()])?;
    for n in &todo {
        std::fs::write(marker(n), &stamp)?;
    }
    tracing::info!(
        nodes = todo.len(),
        secs = t.elapsed().as_secs_f64(),
        "test images imported"
    );
    Ok(())
}

fn report_dir(layout: &Layout) -> Result<PathBuf> {
    let base = if layout.dir.is_dir() {
        layout.dir.join("conformance")
    } else {
        std::env::temp_dir().join("weft-e2e-conformance")
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = base.join(secs.to_string());
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Names of the specs `focus` selects (a ginkgo dry run: nothing touches the cluster).
fn dry_run(binary: &Path, focus: &str, report: &Path) -> Result<Vec<String>> {
    let json = report.join("dry-run.json");
    let out = Command::new(binary)
        .arg("--ginkgo.dry-run")
        .arg(format!("--ginkgo.focus={focus}"))
        .arg(format!("--ginkgo.json-report={}", json.display()))
        .arg("--ginkgo.no-color")
        .output()
        .with_context(|| format!("run {}", binary.display()))?;
    if !out.status.success() {
        bail!(
            "{} --ginkgo.dry-run failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(parse_report(&std::fs::read(&json)?)?
        .into_iter()
        .map(|r| r.name)
        .collect())
}

/// The skip list as one ginkgo regular expression (literal names escaped), plus `extra`.
pub fn skip_regex(extra: &[String]) -> String {
    SKIPS
        .iter()
        .map(|(name, _)| regex_escape(name))
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>()
        .join("|")
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The focused specs the skip list removes, with the list's reason.
pub fn named_skips(focused: &[String]) -> Vec<(String, &'static str)> {
    focused
        .iter()
        .filter_map(|name| {
            SKIPS
                .iter()
                .find(|(part, _)| name.contains(part))
                .map(|(_, why)| (name.clone(), *why))
        })
        .collect()
}

/// The specs that ran (or, in a dry run, would run) from ginkgo's JSON report: an array
/// of suite reports, each with `SpecReports`; only `It` leaves count, skipped ones not.
pub fn parse_report(json: &[u8]) -> Result<Vec<SpecResult>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("ginkgo JSON report")?;
    let suites = v.as_array().context("ginkgo JSON report is not an array")?;
    let mut out = Vec::new();
    for suite in suites {
        let Some(specs) = suite.get("SpecReports").and_then(|s| s.as_array()) else {
            continue;
        };
        for s in specs {
            if s.get("LeafNodeType").and_then(|t| t.as_str()) != Some("It") {
                continue;
            }
            let state = s
                .get("State")
                .and_then(|t| t.as_str())
                .unwrap_or("unknown")
                .to_string();
            if state == "skipped" || state == "pending" {
                continue;
            }
            let mut parts: Vec<String> = s
                .get("ContainerHierarchyTexts")
                .and_then(|c| c.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(leaf) = s.get("LeafNodeText").and_then(|t| t.as_str()) {
                parts.push(leaf.to_string());
            }
            // Labels such as [Conformance] are ginkgo labels in v2 and part of the name
            // the focus matches against.
            if let Some(labels) = s.get("LeafNodeLabels").and_then(|l| l.as_array()) {
                for l in labels.iter().filter_map(|l| l.as_str()) {
                    let tag = format!("[{l}]");
                    if !parts.iter().any(|p| p.contains(&tag)) {
                        parts.push(tag);
                    }
                }
            }
            let secs = s.get("RunTime").and_then(|t| t.as_f64()).unwrap_or(0.0) / 1e9;
            let failure = s
                .get("Failure")
                .and_then(|f| f.get("Message"))
                .and_then(|m| m.as_str())
                .map(|m| m.lines().next().unwrap_or("").to_string());
            out.push(SpecResult {
                name: parts.join(" "),
                state,
                secs,
                failure,
            });
        }
    }
    Ok(out)
}

fn print_table(results: &[SpecResult]) {
    println!("\n{:<8} {:>7}  spec", "result", "seconds");
    for r in results {
        let result = if r.state == "passed" { "ok" } else { "FAIL" };
        println!("{result:<8} {:>7.1}  {}", r.secs, r.name);
        if let Some(f) = r.failure.as_ref().filter(|_| r.state != "passed") {
            println!("{:<17}{f}", "");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_list_is_literal_and_named() {
        let re = skip_regex(&["extra.*".into()]);
        assert!(re.contains(r"\[Feature:SCTPConnectivity\]"));
        assert!(re.ends_with("|extra.*"));
        let focused = vec![
            "[sig-network] Services should be able to create a functioning NodePort service [Conformance]".to_string(),
            "[sig-network] LoadBalancers should work".to_string(),
        ];
        let s = named_skips(&focused);
        assert_eq!(s.len(), 1);
        assert!(s[0].0.contains("LoadBalancers"));
    }

    #[test]
    fn report_keeps_run_specs_only() {
        let json = br#"[{"SpecReports":[
            {"LeafNodeType":"It","State":"passed","RunTime":2500000000,
             "ContainerHierarchyTexts":["[sig-network] DNS"],"LeafNodeText":"should provide DNS for services",
             "LeafNodeLabels":["Conformance"]},
            {"LeafNodeType":"It","State":"failed","RunTime":1000000000,
             "ContainerHierarchyTexts":["[sig-network] Proxy","version v1"],"LeafNodeText":"A set of valid responses",
             "Failure":{"Message":"503 Service Unavailable\nmore"}},
            {"LeafNodeType":"It","State":"skipped","ContainerHierarchyTexts":["x"],"LeafNodeText":"y"},
            {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"}
        ]}]"#;
        let r = parse_report(json).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].name,
            "[sig-network] DNS should provide DNS for services [Conformance]"
        );
        assert!((r[0].secs - 2.5).abs() < 1e-9);
        assert_eq!(r[1].state, "failed");
        assert_eq!(r[1].failure.as_deref(), Some("503 Service Unavailable"));
        assert!(parse_report(b"{}").is_err());
    }
}
