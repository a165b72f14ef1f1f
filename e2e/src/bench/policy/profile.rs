//! Where one table update's time goes, in-process: the agent's own policy code
//! (`weft_agent::policy`) fed the bench's objects as the watches would (slim pods with
//! their statuses, namespaces with the label the API server adds, policies), timed step
//! by step for node-1: compile, render, diff; then, in a throwaway netns, `nft -f` of the
//! full table (as the agent replaces it: a process fed on stdin) and the one-label
//! update as the agent writes it (one nfnetlink element batch).

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::runtime::watcher::Event;
use serde_json::json;
use weft_agent::policy::diff::{diff, Update};
use weft_agent::policy::inputs::{Input, Inputs};
use weft_agent::policy::nfnl::{self, SetChange};
use weft_agent::policy::render::Ruleset;

use super::objects::*;
use crate::bench::agent::median;

pub struct Profile {
    pub compile_ms: f64,
    pub render_ms: f64,
    pub diff_ms: f64,
    pub nft_full_ms: f64,
    pub update_ms: f64,
    pub update_elements: usize,
}

/// Every object as the agent's stores hold them after their lists; `ips(p)` gives pod
/// `p`'s addresses.
fn inputs(ips: &dyn Fn(usize) -> Vec<IpAddr>, node_of: &dyn Fn(usize) -> String) -> Result<Inputs> {
    let mut s = Inputs::default();
    s.apply(Input::Pod(Event::Init));
    s.apply(Input::Namespace(Event::Init));
    s.apply(Input::Policy(Event::Init));
    for p in 0..PODS {
        let mut pod = pod_object(p, &node_of(p));
        pod["status"] = pod_status(&ips(p), "")["status"].clone();
        s.apply(Input::Pod(Event::InitApply(serde_json::from_value(pod)?)));
    }
    for n in 0..NAMESPACES {
        let mut ns = namespace_object(n);
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(namespace(n));
        s.apply(Input::Namespace(Event::InitApply(serde_json::from_value(
            ns,
        )?)));
    }
    for (_, p) in policies() {
        s.apply(Input::Policy(Event::InitApply(serde_json::from_value(p)?)));
    }
    s.apply(Input::Pod(Event::InitDone));
    s.apply(Input::Namespace(Event::InitDone));
    s.apply(Input::Policy(Event::InitDone));
    Ok(s)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median time of `runs` calls of `f`, and its last result.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        times.push(ms(t.elapsed()));
    }
    (median(&mut times), out.expect("runs > 0"))
}

pub fn profile(
    node: &str,
    ips: &dyn Fn(usize) -> Vec<IpAddr>,
    node_of: &dyn Fn(usize) -> String,
    label_pod: usize,
) -> Result<Profile> {
    let mut state = inputs(ips, node_of)?;
    let (compile_ms, model) = timed(5, || state.compile(node));
    let (render_ms, before) = timed(5, || Ruleset::build(&model));
    // The label-change sample's event: the pod joins a peers set.
    let mut pod = pod_object(label_pod, &node_of(label_pod));
    pod["metadata"]["labels"]["role"] = json!("r-0");
    pod["status"] = pod_status(&ips(label_pod), "")["status"].clone();
    state.apply(Input::Pod(Event::Apply(serde_json::from_value(pod)?)));
    let after = Ruleset::build(&state.compile(node));
    let (diff_ms, update) = timed(5, || diff(&before, &after));
    let Update::Elements(changes) = update else {
        bail!("a relabel should change elements only, got {update:?}");
    };
    let update_elements = changes.iter().map(|c| c.elements.len()).sum();
    let ns = format!("wpprof{}", std::process::id());
    crate::bench::agent::sh(&["ip", "netns", "add", &ns])?;
    let loads =
        (|| -> Result<(f64, f64)> { Ok((nft_f(&ns, &before.script())?, batch(&ns, changes)?)) })();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let (nft_full_ms, update_ms) = loads?;
    Ok(Profile {
        compile_ms,
        render_ms,
        diff_ms,
        nft_full_ms,
        update_ms,
        update_elements,
    })
}

/// The element batch in netns `ns`, as the agent writes it; its time in ms.
fn batch(ns: &str, changes: Vec<SetChange>) -> Result<f64> {
    super::in_netns(ns, || {
        let t = Instant::now();
        nfnl::apply(&changes)?;
        Ok(ms(t.elapsed()))
    })
}

/// `nft -f -` of `script` in netns `ns`, as the agent runs it; its time in ms.
fn nft_f(ns: &str, script: &str) -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft -f: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(ms(t.elapsed()))
}
