//! The chart without a cluster: lint, the default rendering against `manifests/`,
//! values reaching the objects, bad values refused.

use super::*;

#[test]
fn chart_lints_strict() {
    let chart = chart();
    for extra in [
        &[][..],
        &[
            "--set",
            "netConf.clusterCIDRs={10.244.0.0/16,fd00:10:244::/56}",
            "--set",
            "controller.replicas=0",
            "--set",
            "admissionPolicy.enabled=false",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = helm(&args);
        assert!(ok, "helm {args:?} failed:\n{stdout}{stderr}");
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm {args:?}:\n{stdout}"
        );
    }
}

#[test]
fn default_values_render_the_kustomize_base() {
    let mut chart = objects(&template(&[]), "helm template");
    let base = objects(&kustomize(), "kubectl kustomize manifests/");

    // The allowed difference, and the same hash on both pod templates.
    let mut hashes = Vec::new();
    for key in [
        "DaemonSet weft-system/weft-agent",
        "Deployment weft-system/weft-controller",
    ] {
        let obj = chart
            .get_mut(key)
            .unwrap_or_else(|| panic!("chart has no {key}"));
        let hash = take_config_hash(obj).unwrap_or_else(|| panic!("{key}: no {CONFIG_HASH}"));
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}: {CONFIG_HASH} {hash:?} is not a sha256"
        );
        hashes.push(hash);
    }
    assert_eq!(
        hashes[0], hashes[1],
        "agent and controller hash differently"
    );

    let only_chart: Vec<&String> = chart.keys().filter(|k| !base.contains_key(*k)).collect();
    let only_base: Vec<&String> = base.keys().filter(|k| !chart.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_base.is_empty(),
        "objects only in the chart: {only_chart:?}; only in manifests/: {only_base:?}"
    );
    let mut report = Vec::new();
    for (key, want) in &base {
        let mut diffs = Vec::new();
        differences("", want, &chart[key], &mut diffs);
        if !diffs.is_empty() {
            report.push(format!(
                "{key} (manifests/ vs chart):\n  {}",
                diffs.join("\n  ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the chart at default values differs from manifests/; change both:\n{}",
        report.join("\n")
    );

    // The same net-conf.json text, which weft reads as its defaults.
    let (_, conf) = net_conf(&chart, "weft-system");
    assert_eq!(conf, NetConf::default());
}

#[test]
fn changed_values_reach_the_configmap_and_the_pods() {
    let dir = tempfile::tempdir().expect("temp dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        r#"
namespace: {name: net-weft}
image:
  repository: registry.example/weft
  tag: "1.2"
  pullPolicy: Always
  pullSecrets: [regcred]
netConf:
  clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"]
  serviceCIDRs: ["10.96.0.0/12"]
  nodeSubnetSizeV6: 64
  vni: 16777215
  mtu: 1400
  masquerade: false
  bridge: br-pods
agent:
  iface: [eth1, 192.0.2.10]
  ifaceRegex: ["^en"]
  publicIP: 198.51.100.7
  extraArgs: ["--resync-interval=5m"]
  extraEnv: [{name: RUST_LOG, value: debug}]
  nodeSelector: {kubernetes.io/os: linux}
  priorityClassName: ""
controller:
  replicas: 1
  resources: {requests: {cpu: 50m}}
"#,
    )
    .expect("write values");
    let objs = objects(
        &template(&["-f", &values.display().to_string()]),
        "helm template -f",
    );
    let ns = "net-weft";

    let (text, conf) = net_conf(&objs, ns);
    assert_eq!(conf.mtu, 1400, "{text}");
    assert!(!conf.masquerade, "{text}");
    assert_eq!(conf.vni, 16_777_215, "{text}");
    assert_eq!(conf.bridge, "br-pods");
    assert_eq!(conf.vxlan_device, "weft.1", "left out, weft's default");
    assert_eq!(conf.cluster_v6().unwrap().to_string(), "fd00:10:244::/56");
    assert_eq!(conf.service_cidrs.len(), 1);

    let ds = get(&objs, &format!("DaemonSet {ns}/weft-agent"));
    let deploy = get(&objs, &format!("Deployment {ns}/weft-controller"));
    for (obj, list, name) in [
        (ds, "initContainers", "install-cni"),
        (ds, "containers", "agent"),
        (deploy, "containers", "controller"),
    ] {
        let c = container(obj, list, name);
        assert_eq!(c["image"], "registry.example/weft:1.2", "{name}");
        assert_eq!(c["imagePullPolicy"], "Always", "{name}");
    }
    let agent = container(ds, "containers", "agent");
    assert_eq!(
        strings(&agent["args"]),
        [
            "--config=/etc/weft/net-conf.json",
            "--iface=eth1",
            "--iface=192.0.2.10",
            "--iface-regex=^en",
            "--public-ip=198.51.100.7",
            "--resync-interval=5m"
        ]
    );
    let env = agent["env"].as_array().expect("env");
    assert_eq!(env.last().unwrap()["name"], "RUST_LOG");
    assert_eq!(env.len(), 4);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");
    assert!(
        pod.get("priorityClassName").is_none(),
        "empty: no priority class"
    );
    assert_eq!(
        pod["tolerations"][0]["operator"], "Exists",
        "the default stays"
    );

    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(
        container(deploy, "containers", "controller")["resources"]["requests"]["cpu"],
        "50m"
    );
    assert!(
        !objs.keys().any(|k| k.starts_with("PodDisruptionBudget")),
        "one replica: no PodDisruptionBudget (it would block every drain)"
    );

    // The namespace everywhere, the policy's user included.
    assert!(objs.contains_key(&format!("Namespace /{ns}")));
    assert!(objs
        .iter()
        .filter(|(_, v)| v["metadata"].get("namespace").is_some())
        .all(|(k, _)| k.contains(&format!(" {ns}/"))));
    for binding in ["weft-agent", "weft-controller"] {
        let crb = get(&objs, &format!("ClusterRoleBinding /{binding}"));
        assert_eq!(crb["subjects"][0]["namespace"], ns);
    }
    let policy = get(&objs, "ValidatingAdmissionPolicy /weft-agent-own-node");
    assert!(policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap()
        .contains("'system:serviceaccount:net-weft:weft-agent'"));

    // A new ConfigMap means new pods.
    let default_hash = take_config_hash(
        objects(&template(&[]), "helm template")
            .get_mut("DaemonSet weft-system/weft-agent")
            .unwrap(),
    );
    let hash = ds["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH].as_str();
    assert!(hash.is_some() && hash != default_hash.as_deref());

    // Switches: no admission policy, the namespace left to the operator.
    let objs = objects(
        &template(&[
            "--set",
            "admissionPolicy.enabled=false",
            "--set",
            "namespace.create=false",
        ]),
        "helm template --set",
    );
    assert!(!objs
        .keys()
        .any(|k| k.starts_with("ValidatingAdmissionPolicy") || k.starts_with("Namespace ")));
    let all = objects(&template(&[]), "helm template").len();
    assert_eq!(
        objs.len(),
        all - 3,
        "the policy, its binding and the Namespace go"
    );
}

#[test]
fn bad_values_fail_naming_the_value() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "netConf:\n  mtu: \"abc\"\n").expect("write values");
    let file = file.display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "netConf.vni=0"],
            "at '/netConf/vni': minimum: got 0, want 1",
        ),
        (
            &["-f", &file],
            "at '/netConf/mtu': got string, want integer",
        ),
        (
            &["--set", "netConf.mtu=100"],
            "netConf.mtu 100: 0 (automatic) or 576..65535",
        ),
        (
            &["--set", "netConf.port=70000"],
            "at '/netConf/port': maximum: got 70,000, want 65,535",
        ),
        (
            &["--set", "netConf.vxlan=1"],
            "at '/netConf': additional properties 'vxlan' not allowed",
        ),
        (
            &["--set", "netConf.clusterCIDRs={fd00::/48,10.0.0.0/16}"],
            "list the IPv4 prefix first",
        ),
        (
            &["--set", "netConf.clusterCIDRs={10.0.0.0/33}"],
            "at '/netConf/clusterCIDRs/0': '10.0.0.0/33' does not match pattern",
        ),
        (
            &["--set", "netConf.bridge=weft.1"],
            "netConf.vxlanDevice \"weft.1\" is also the bridge's name",
        ),
        (
            &["--set", "netConf.vxlanDevice=a-very-long-name"],
            "at '/netConf/vxlanDevice': maxLength: got 16, want 15",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy': value must be one of",
        ),
        (
            &["--set", "agent.publicIP=10.0.0"],
            "'10.0.0' is not valid ipv4",
        ),
        (
            &["--namespace", "weft-system"],
            "namespace.create=true: the chart creates namespace weft-system itself",
        ),
        (
            &["--kube-version", "1.29.0"],
            "admissionPolicy.enabled=true needs Kubernetes 1.30 or later",
        ),
    ];
    let chart = chart();
    for (extra, want) in cases {
        let mut args = vec!["template", "weft", chart.as_str()];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = helm(&args);
        assert!(!ok, "helm {extra:?} succeeded");
        assert!(
            stderr.contains(want),
            "helm {extra:?}: expected {want:?} in:\n{stderr}"
        );
    }
}

/// Paths where `a` and `b` differ, with both values.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (x.get(k), y.get(k));
                let p = format!("{path}.{k}");
                match (va, vb) {
                    (Some(va), Some(vb)) => differences(&p, va, vb, out),
                    _ => out.push(format!("{p}: {} vs {}", show(va), show(vb))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "(absent)".into(), Value::to_string)
}
