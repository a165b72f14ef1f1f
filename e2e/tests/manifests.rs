//! The install manifests: the rendered `manifests/weft.yaml` is the kustomize base's
//! output, the API server accepts every object, and the RBAC grants exactly what the
//! agent and the controller need (tests/agent_admission.rs: the admission policy that
//! narrows the agent's writes to its own Node).

use std::path::{Path, PathBuf};
use std::process::Command;

use weft_e2e::harness::{bin, ControlPlane};

const AGENT: &str = "system:serviceaccount:weft-system:weft-agent";
const CONTROLLER: &str = "system:serviceaccount:weft-system:weft-controller";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Runs kubectl (the one built from source) and returns (success, stdout, stderr).
fn kubectl(kubeconfig: Option<&Path>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin("kubectl").expect("kubectl is built"));
    if let Some(kc) = kubeconfig {
        cmd.arg("--kubeconfig").arg(kc);
    }
    let out = cmd.args(args).output().expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = kubectl(Some(kubeconfig), args);
    assert!(ok, "kubectl {args:?} failed:\n{stdout}{stderr}");
    stdout
}

#[test]
fn rendered_weft_yaml_is_the_kustomize_output() {
    let dir = manifests_dir();
    let (ok, rendered, stderr) = kubectl(None, &["kustomize", &dir.to_string_lossy()]);
    assert!(ok, "kubectl kustomize manifests/ failed: {stderr}");
    let committed =
        std::fs::read_to_string(dir.join("weft.yaml")).expect("read manifests/weft.yaml");
    if rendered != committed {
        let line = rendered
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "one is a prefix of the other".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "manifests/weft.yaml is out of date with the kustomize base ({line}): \
             run scripts/render-manifests.sh"
        );
    }
}

#[tokio::test]
async fn api_server_accepts_every_object_in_a_server_side_dry_run() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let kc = cp.kubeconfig.as_path();
    let dir = manifests_dir();
    // A dry run creates nothing, so namespaced objects would find no namespace: create
    // the namespace for real first.
    kubectl_ok(
        kc,
        &["apply", "-f", &dir.join("namespace.yaml").to_string_lossy()],
    );
    let out = kubectl_ok(
        kc,
        &["apply", "--dry-run=server", "-k", &dir.to_string_lossy()],
    );
    for object in [
        "serviceaccount/weft-agent",
        "clusterrole.rbac.authorization.k8s.io/weft-agent",
        "validatingadmissionpolicy.admissionregistration.k8s.io/weft-agent-own-node",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/weft-agent-own-node",
        "role.rbac.authorization.k8s.io/weft-controller-leader-election",
        "configmap/weft-config",
        "daemonset.apps/weft-agent",
        "deployment.apps/weft-controller",
        "poddisruptionbudget.policy/weft-controller",
    ] {
        assert!(
            out.contains(object),
            "dry run did not mention {object}:\n{out}"
        );
    }
    let left = kubectl_ok(
        kc,
        &[
            "get",
            "daemonsets,deployments,configmaps",
            "-n",
            "weft-system",
            "-o",
            "name",
        ],
    );
    assert!(
        !left.contains("weft"),
        "a server-side dry run must not create objects: {left}"
    );
}

#[tokio::test]
async fn rbac_grants_the_agent_and_the_controller_only_what_they_use() {
    let cp = ControlPlane::start().await.expect("control plane starts");
    let kc = cp.kubeconfig.as_path();
    kubectl_ok(kc, &["apply", "-k", &manifests_dir().to_string_lossy()]);

    // (who, verb, resource, namespace or "" for cluster scope, expected)
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        (AGENT, "get", "nodes", "", true),
        (AGENT, "list", "nodes", "", true),
        (AGENT, "watch", "nodes", "", true),
        // Its own Node's annotations and condition go through nodes/status;
        // tests/agent_admission.rs checks the policy that narrows that to its own Node.
        (AGENT, "patch", "nodes", "", false),
        (AGENT, "patch", "nodes/status", "", true),
        (AGENT, "update", "nodes", "", false),
        (AGENT, "update", "nodes/status", "", false),
        (AGENT, "delete", "nodes", "", false),
        (AGENT, "create", "nodes", "", false),
        (AGENT, "list", "secrets", "", false),
        (AGENT, "get", "secrets", "weft-system", false),
        (AGENT, "get", "configmaps", "weft-system", false),
        // NetworkPolicy: read-only watches of pods, namespaces and policies, no more.
        (AGENT, "list", "pods", "", true),
        (AGENT, "watch", "pods", "", true),
        (AGENT, "get", "pods", "default", false),
        (AGENT, "get", "pods/log", "default", false),
        (AGENT, "create", "pods/exec", "default", false),
        (AGENT, "list", "namespaces", "", true),
        (AGENT, "watch", "namespaces", "", true),
        (AGENT, "list", "networkpolicies.networking.k8s.io", "", true),
        (
            AGENT,
            "watch",
            "networkpolicies.networking.k8s.io",
            "",
            true,
        ),
        (
            AGENT,
            "create",
            "networkpolicies.networking.k8s.io",
            "default",
            false,
        ),
        (
            AGENT,
            "delete",
            "networkpolicies.networking.k8s.io",
            "default",
            false,
        ),
        (
            AGENT,
            "create",
            "leases.coordination.k8s.io",
            "weft-system",
            false,
        ),
        // Warning Events on Nodes it refuses as peers: events.k8s.io only.
        (AGENT, "create", "events", "weft-system", false),
        (AGENT, "create", "events.events.k8s.io", "default", true),
        (AGENT, "patch", "events.events.k8s.io", "default", true),
        (AGENT, "delete", "events.events.k8s.io", "default", false),
        (CONTROLLER, "get", "nodes", "", true),
        (CONTROLLER, "list", "nodes", "", true),
        (CONTROLLER, "watch", "nodes", "", true),
        (CONTROLLER, "patch", "nodes", "", true),
        (CONTROLLER, "patch", "nodes/status", "", false),
        (CONTROLLER, "delete", "nodes", "", false),
        (
            CONTROLLER,
            "create",
            "events.events.k8s.io",
            "default",
            true,
        ),
        (CONTROLLER, "patch", "events.events.k8s.io", "default", true),
        (CONTROLLER, "create", "events", "default", true),
        (CONTROLLER, "delete", "events", "default", false),
        (
            CONTROLLER,
            "get",
            "leases.coordination.k8s.io",
            "weft-system",
            true,
        ),
        (
            CONTROLLER,
            "create",
            "leases.coordination.k8s.io",
            "weft-system",
            true,
        ),
        (
            CONTROLLER,
            "patch",
            "leases.coordination.k8s.io",
            "weft-system",
            true,
        ),
        (
            CONTROLLER,
            "delete",
            "leases.coordination.k8s.io",
            "weft-system",
            false,
        ),
        (
            CONTROLLER,
            "list",
            "leases.coordination.k8s.io",
            "weft-system",
            false,
        ),
        (
            CONTROLLER,
            "create",
            "leases.coordination.k8s.io",
            "default",
            false,
        ),
        (
            CONTROLLER,
            "create",
            "leases.coordination.k8s.io",
            "kube-system",
            false,
        ),
        (CONTROLLER, "list", "secrets", "", false),
        (CONTROLLER, "get", "secrets", "weft-system", false),
        (CONTROLLER, "list", "pods", "", false),
    ];
    let mut wrong = Vec::new();
    for &(who, verb, resource, namespace, expected) in cases {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let mut args = vec!["auth", "can-i", verb, resource, "--as", who];
        let sub_flag;
        if let Some(s) = subresource {
            sub_flag = format!("--subresource={s}");
            args.push(&sub_flag);
        }
        if namespace.is_empty() {
            args.push("--all-namespaces");
        } else {
            args.extend(["-n", namespace]);
        }
        // `can-i` exits 1 for "no": read the answer, not the status.
        let (_, stdout, stderr) = kubectl(Some(kc), &args);
        let answer = match stdout.trim() {
            "yes" => true,
            "no" => false,
            other => panic!("kubectl {args:?}: unexpected answer {other:?} {stderr}"),
        };
        if answer != expected {
            wrong.push(format!(
                "{who} {verb} {resource}{} in {:?}: got {answer}, want {expected}",
                subresource.map(|s| format!("/{s}")).unwrap_or_default(),
                namespace
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC is not least privilege:\n{}",
        wrong.join("\n")
    );
}
