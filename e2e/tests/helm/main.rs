//! The Helm chart `charts/weft`: it lints, it renders the objects of `manifests/`, values
//! reach the objects, and bad values fail at install with a message naming the value.
//!
//! How the chart and `manifests/` are kept from drifting: both stay hand-written, and
//! `default_values_render_the_kustomize_base` renders both (`helm template` at default
//! values, `kubectl kustomize manifests/`), parses the two multi-document YAML streams
//! into JSON values (so key order, quoting and comments do not matter) and compares them
//! object by object, keyed by kind, namespace and name; a difference fails CI with the
//! object and the path of each differing field. Neither is generated from the other:
//! the kustomize base is plain YAML that reads as documentation and that the API-server
//! tests (tests/manifests.rs, tests/agent_admission.rs) load as it is, and the chart's
//! templates carry the conditions and loops values need, which a generator from the base
//! would have to re-invent (or, the other way round, the base would become generated
//! output nobody edits). The templates keep the base's text and comments, so a change to
//! one file is made to its twin by eye and this test says whether it was.
//!
//! One difference is allowed, and checked to be there: the chart's pod templates carry
//! the annotation `weft.dev/config-sha256` (the hash of the rendered ConfigMap), so that
//! `helm upgrade` with a changed value rolls the agents and the controller, which read
//! the ConfigMap only at start. With kubectl the operator restarts them (README).
//!
//! Needs `helm` (scripts/build-helm.sh) and `kubectl` (scripts/build-k8s.sh) in
//! $WEFT_CACHE/bin; scripts/test.sh builds both. Without them the tests fail, saying so.

//! `render` runs without a cluster; `cluster` installs, upgrades and uninstalls on the
//! local cluster of `weft-e2e up --helm`.

mod cluster;
mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use weft_common::netconf::NetConf;
use weft_e2e::harness::bin;

/// The pod-template annotation only the chart has.
const CONFIG_HASH: &str = "weft.dev/config-sha256";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> String {
    repo().join("charts/weft").display().to_string()
}

fn helm_bin() -> PathBuf {
    weft_e2e::cluster::up::helm_bin().unwrap_or_else(|e| panic!("{e:#} (scripts/test.sh does)"))
}

/// Runs helm; (success, stdout, stderr).
fn helm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(helm_bin())
        .args(args)
        .output()
        .expect("run helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template weft charts/weft <args>`, which must succeed.
fn template(args: &[&str]) -> String {
    let chart = chart();
    let mut all = vec!["template", "weft", chart.as_str()];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = helm(&all);
    assert!(ok, "helm {all:?} failed:\n{stderr}");
    stdout
}

fn kustomize() -> String {
    let kubectl = bin("kubectl").expect("kubectl is built (scripts/build-k8s.sh)");
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(repo().join("manifests"))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

/// The objects of a multi-document YAML stream, keyed "Kind namespace/name" (empty
/// documents, such as comment-only ones, skipped; a duplicate key fails).
fn objects(yaml: &str, what: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: bad YAML: {e}"));
        if v.is_null() {
            continue;
        }
        let field = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
        let key = format!(
            "{} {}/{}",
            field("/kind"),
            field("/metadata/namespace"),
            field("/metadata/name")
        );
        assert!(out.insert(key.clone(), v).is_none(), "{what}: {key} twice");
    }
    out
}

/// Removes the chart's config hash from a pod template, returning it.
fn take_config_hash(obj: &mut Value) -> Option<String> {
    let meta = obj
        .pointer_mut("/spec/template/metadata")?
        .as_object_mut()?;
    let annotations = meta.get_mut("annotations")?.as_object_mut()?;
    let hash = annotations.remove(CONFIG_HASH)?;
    if annotations.is_empty() {
        meta.remove("annotations");
    }
    hash.as_str().map(str::to_owned)
}

fn get<'a>(objs: &'a BTreeMap<String, Value>, key: &str) -> &'a Value {
    objs.get(key)
        .unwrap_or_else(|| panic!("no {key} among {:?}", objs.keys().collect::<Vec<_>>()))
}

fn net_conf(objs: &BTreeMap<String, Value>, ns: &str) -> (String, NetConf) {
    let cm = get(objs, &format!("ConfigMap {ns}/weft-config"));
    let text = cm["data"]["net-conf.json"]
        .as_str()
        .expect("net-conf.json is a string")
        .to_owned();
    let conf = NetConf::parse(&text)
        .unwrap_or_else(|e| panic!("weft refuses the rendered net-conf.json ({e}):\n{text}"));
    (text, conf)
}

fn container<'a>(obj: &'a Value, list: &str, name: &str) -> &'a Value {
    obj["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}
