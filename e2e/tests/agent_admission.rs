//! The agent's token writes only its own Node, and there only its `weft.dev/*`
//! annotations and its NetworkUnavailable condition: manifests/rbac-agent.yaml and
//! manifests/admission-agent.yaml on a real kube-apiserver, with real tokens of the
//! weft-agent ServiceAccount: one bound to a pod on node A (what every agent pod gets),
//! one bound to nothing.
//!
//! Each refusal is checked by its status code and by the words of the rule that refused
//! it, and the Node is read back to see that nothing changed; each permitted write is
//! read back to see that it took effect.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use weft_agent::publish;
use weft_common::annotations as ann;
use weft_e2e::harness::{bin, client_from, write_kubeconfig, ControlPlane};

const NAMESPACE: &str = "weft-system";
const AGENT: &str = "weft-agent";
const NODE_A: &str = "weft-a";
const NODE_B: &str = "weft-b";
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Words of each refusal, as the API server reports them.
const BY_POLICY: &str = "ValidatingAdmissionPolicy 'weft-agent-own-node'";
const NOT_BOUND: &str = "with a token that is not bound to a pod on a Node";
const OTHER_NODE: &str = "weft-agent on Node weft-a may not write Node weft-b";
const NO_NODES_PATCH: &str = "cannot patch resource \"nodes\"";

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

fn kubectl_apply(kubeconfig: &Path, file: &str) {
    let out = Command::new(bin("kubectl").expect("kubectl is built"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f"])
        .arg(manifests_dir().join(file))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -f manifests/{file}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Which endpoint a write goes to.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `nodes/status`, the only Node write the agent's ClusterRole grants.
    Status,
    /// `nodes`.
    Node,
}

#[derive(Clone, Debug)]
enum Body {
    Merge(Value),
    Strategic(Value),
}

fn merge(v: Value) -> Body {
    Body::Merge(v)
}

fn strategic(v: Value) -> Body {
    Body::Strategic(v)
}

async fn write(client: &kube::Client, node: &str, via: Via, body: &Body) -> kube::Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let pp = PatchParams::default();
    let patch = match body {
        Body::Merge(v) => Patch::Merge(v),
        Body::Strategic(v) => Patch::Strategic(v),
    };
    match via {
        Via::Status => api.patch_status(node, &pp, &patch).await,
        Via::Node => api.patch(node, &pp, &patch).await,
    }
}

/// What must come of a write.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// It succeeds and changes the Node.
    Allowed,
    /// 403 whose message holds these words; the Node is unchanged.
    Denied(&'static str),
    /// The status subresource drops spec changes before admission: whatever the answer,
    /// the spec is unchanged.
    SpecDropped,
}

struct Case {
    what: &'static str,
    client: kube::Client,
    node: &'static str,
    via: Via,
    body: Body,
    want: Want,
}

/// Runs every case and returns a line for each one whose outcome was not the wanted one.
async fn run_cases(admin: &kube::Client, cases: Vec<Case>) -> Vec<String> {
    let nodes: Api<Node> = Api::all(admin.clone());
    let mut wrong = Vec::new();
    for case in cases {
        let before = nodes.get(case.node).await.expect("get node");
        let result = write(&case.client, case.node, case.via, &case.body).await;
        let after = nodes.get(case.node).await.expect("get node");
        let changed = before.metadata.resource_version != after.metadata.resource_version;
        let problem = match (case.want, &result) {
            (Want::Allowed, Ok(_)) if changed => None,
            (Want::Allowed, Ok(_)) => Some("allowed but the Node did not change".to_string()),
            (Want::Denied(words), Err(kube::Error::Api(s)))
                if s.code == 403 && s.message.contains(words) && !changed =>
            {
                None
            }
            (Want::Denied(words), Err(kube::Error::Api(s))) if s.code == 403 && !changed => {
                Some(format!("denied, but not with {words:?}: {}", s.message))
            }
            (Want::SpecDropped, _) if before.spec == after.spec => None,
            (Want::SpecDropped, _) => Some(format!(
                "the spec changed: {:?} -> {:?}",
                before.spec, after.spec
            )),
            (_, Ok(_)) => Some(format!("allowed (Node changed: {changed})")),
            (_, Err(e)) => Some(format!("{e} (Node changed: {changed})")),
        };
        if let Some(p) = problem {
            wrong.push(format!(
                "{} ({:?} {} via {:?}, want {:?}): {p}",
                case.what, case.body, case.node, case.via, case.want
            ));
        }
    }
    wrong
}

struct Setup {
    _cp: ControlPlane,
    admin: kube::Client,
    /// The agent's token bound to a pod on node A (the projected token of an agent pod).
    bound: kube::Client,
    /// A token of the same ServiceAccount bound to no object.
    unbound: kube::Client,
}

impl Setup {
    /// A control plane with the manifests' agent RBAC and admission policy, Nodes A and B
    /// as a kubelet would leave them, a pod on A, and the two agent tokens.
    async fn start() -> Setup {
        let cp = ControlPlane::start().await.expect("control plane starts");
        for f in ["namespace.yaml", "rbac-agent.yaml", "admission-agent.yaml"] {
            kubectl_apply(&cp.kubeconfig, f);
        }
        let admin = cp.client().await.expect("admin client");
        let nodes: Api<Node> = Api::all(admin.clone());
        for name in [NODE_A, NODE_B] {
            let node: Node = serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name},
                    "annotations": {"example.com/owner": "ops"},
                },
            }))
            .unwrap();
            nodes.create(&PostParams::default(), &node).await.unwrap();
            let status = json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "192.168.50.11"}],
                "capacity": {"pods": "110"},
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "lastHeartbeatTime": "2025-01-01T00:00:00Z",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }],
            }});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
                .await
                .unwrap();
        }

        // The agent pod on A. No kubelet runs it: the API server binds tokens to a pod
        // and its spec.nodeName whether or not it runs.
        let pods: Api<Pod> = Api::namespaced(admin.clone(), NAMESPACE);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "weft-agent-a"},
            "spec": {
                "nodeName": NODE_A,
                "serviceAccountName": AGENT,
                "containers": [{"name": "agent", "image": "weft.dev/weft:0.1.0"}],
            },
        }))
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        let bound_ref = BoundObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
        };
        let bound = token_client(&cp, &admin, "bound", Some(bound_ref)).await;
        let unbound = token_client(&cp, &admin, "unbound", None).await;

        // The tokens are what the test says they are.
        assert_eq!(
            node_name_extra(&bound).await,
            Some(vec![NODE_A.to_string()]),
            "a token bound to a pod on {NODE_A} names that node in its user extra"
        );
        assert_eq!(node_name_extra(&unbound).await, None);

        let setup = Setup {
            _cp: cp,
            admin,
            bound,
            unbound,
        };
        setup.wait_for_policy().await;
        setup
    }

    /// The policy takes effect once the API server's informer has seen it: wait until a
    /// dry-run write of the unbound token is refused by it.
    async fn wait_for_policy(&self) {
        let api: Api<Node> = Api::all(self.unbound.clone());
        let pp = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        let body = json!({"metadata": {"annotations": {ann::VNI: "1"}}});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = match api.patch_status(NODE_A, &pp, &Patch::Merge(&body)).await {
                Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(BY_POLICY) => {
                    return
                }
                other => format!("{other:?}"),
            };
            assert!(
                Instant::now() < deadline,
                "a dry-run write with the unbound token was not refused by the admission \
                 policy within 30 s (the policy is not active, or it lets a token without a \
                 node name write): {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn node(&self, name: &str) -> Node {
        Api::<Node>::all(self.admin.clone())
            .get(name)
            .await
            .unwrap()
    }
}

/// A client with a fresh TokenRequest token of the agent's ServiceAccount.
async fn token_client(
    cp: &ControlPlane,
    admin: &kube::Client,
    label: &str,
    bound_object_ref: Option<BoundObjectReference>,
) -> kube::Client {
    let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), NAMESPACE);
    let tr = TokenRequest {
        spec: TokenRequestSpec {
            // The API server's own audience (the harness's issuer).
            audiences: vec!["https://kubernetes.default.svc.cluster.local".into()],
            bound_object_ref,
            expiration_seconds: Some(3600),
        },
        ..Default::default()
    };
    let token = sa
        .create_token_request(AGENT, &PostParams::default(), &tr)
        .await
        .expect("token request")
        .status
        .expect("token request status")
        .token;
    let path = cp.dir.join(format!("agent-{label}.kubeconfig"));
    write_kubeconfig(
        &path,
        &cp.server,
        &token,
        &format!("system:serviceaccount:{NAMESPACE}:{AGENT}"),
    )
    .unwrap();
    client_from(&path).await.unwrap()
}

/// The node name the API server attaches to the client's user (SelfSubjectReview).
async fn node_name_extra(client: &kube::Client) -> Option<Vec<String>> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("self subject review");
    let user = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:weft-system:weft-agent")
    );
    user.extra.and_then(|mut e| e.remove(NODE_NAME_EXTRA))
}

fn network_available() -> Value {
    json!({"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False", "reason": "WeftIsUp",
        "message": "test", "lastTransitionTime": "2025-01-02T00:00:00Z",
        "lastHeartbeatTime": "2025-01-02T00:00:00Z",
    }]}})
}

fn weft_annotations() -> Value {
    json!({"metadata": {"annotations": {
        ann::VTEP_MAC: "02:00:00:00:00:0a", ann::PUBLIC_IP: "192.168.50.11", ann::VNI: "1",
    }}})
}

/// Metadata writes on the own Node beyond the weft.dev/* annotations, with the words of
/// each refusal.
fn metadata_writes() -> Vec<(&'static str, Body, &'static str)> {
    vec![
        (
            "label",
            merge(json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}})),
            "not: metadata.labels",
        ),
        (
            "non-weft annotation, with a weft one",
            merge(json!({"metadata": {"annotations": {"example.com/x": "y", ann::VNI: "1"}}})),
            "not: annotation example.com/x",
        ),
        (
            "removing a non-weft annotation",
            merge(json!({"metadata": {"annotations": {"example.com/owner": null}}})),
            "not: annotation example.com/owner",
        ),
        (
            "finalizer",
            merge(json!({"metadata": {"finalizers": ["example.com/hold"]}})),
            "not: metadata.finalizers",
        ),
    ]
}

/// Status writes on the own Node beyond the NetworkUnavailable condition (through
/// `nodes` the API server drops status changes, as it drops spec changes through
/// `nodes/status`).
fn status_writes() -> Vec<(&'static str, Body, &'static str)> {
    vec![
        (
            "InternalIP",
            strategic(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.9.9.9"}]}}),
            ),
            "beyond its NetworkUnavailable condition: status.addresses",
        ),
        (
            "capacity",
            strategic(json!({"status": {"capacity": {"pods": "0"}}})),
            "beyond its NetworkUnavailable condition: status.capacity",
        ),
        (
            "Ready=False",
            strategic(json!({"status": {"conditions": [
                {"type": "Ready", "status": "False", "reason": "NotMyNode"},
            ]}})),
            "only the NetworkUnavailable condition of Node weft-a, not: Ready",
        ),
    ]
}

/// Spec writes: a NoExecute taint evicts every pod, unschedulable cordons, podCIDR
/// steals an address range.
fn spec_writes() -> Vec<(&'static str, Body, &'static str)> {
    vec![
        (
            "NoExecute taint",
            merge(json!({"spec": {"taints": [{"key": "evict", "effect": "NoExecute"}]}})),
            "may not change the spec of Node weft-a: spec.taints",
        ),
        (
            "unschedulable",
            merge(json!({"spec": {"unschedulable": true}})),
            "may not change the spec of Node weft-a: spec.unschedulable",
        ),
        (
            "podCIDR",
            merge(json!({"spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}})),
            "may not change the spec of Node weft-a: spec.podCIDR, spec.podCIDRs",
        ),
    ]
}

#[tokio::test]
async fn a_pod_bound_agent_token_writes_only_its_own_nodes_weft_annotations_and_condition() {
    let s = Setup::start().await;
    let mut cases = vec![
        Case {
            what: "own weft.dev annotations",
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Status,
            body: merge(weft_annotations()),
            want: Want::Allowed,
        },
        Case {
            what: "own NetworkUnavailable=False",
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Status,
            body: strategic(network_available()),
            want: Want::Allowed,
        },
        Case {
            what: "another node's weft.dev annotations",
            client: s.bound.clone(),
            node: NODE_B,
            via: Via::Status,
            body: merge(weft_annotations()),
            want: Want::Denied(OTHER_NODE),
        },
        Case {
            what: "another node's NetworkUnavailable",
            client: s.bound.clone(),
            node: NODE_B,
            via: Via::Status,
            body: strategic(network_available()),
            want: Want::Denied(OTHER_NODE),
        },
        Case {
            what: "own weft.dev annotations through `nodes`",
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Node,
            body: merge(weft_annotations()),
            want: Want::Denied(NO_NODES_PATCH),
        },
    ];
    for (what, body, words) in metadata_writes().into_iter().chain(status_writes()) {
        cases.push(Case {
            what,
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Status,
            body,
            want: Want::Denied(words),
        });
    }
    for (what, body, _) in spec_writes() {
        cases.push(Case {
            what,
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Status,
            body: body.clone(),
            want: Want::SpecDropped,
        });
        cases.push(Case {
            what,
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Node,
            body,
            want: Want::Denied(NO_NODES_PATCH),
        });
    }
    // A token of the same ServiceAccount that names no node writes no Node at all.
    for node in [NODE_A, NODE_B] {
        cases.push(Case {
            what: "weft.dev annotations with an unbound token",
            client: s.unbound.clone(),
            node,
            via: Via::Status,
            body: merge(weft_annotations()),
            want: Want::Denied(NOT_BOUND),
        });
        cases.push(Case {
            what: "NetworkUnavailable with an unbound token",
            client: s.unbound.clone(),
            node,
            via: Via::Status,
            body: strategic(network_available()),
            want: Want::Denied(NOT_BOUND),
        });
    }
    let wrong = run_cases(&s.admin, cases).await;
    assert!(
        wrong.is_empty(),
        "the agent's token can do more (or less) than its own Node's annotations and \
         condition:\n{}",
        wrong.join("\n")
    );

    // The permitted writes landed where they should: the status subresource keeps the
    // metadata change.
    let a = s.node(NODE_A).await;
    let annotations = a.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get(ann::VTEP_MAC).map(String::as_str),
        Some("02:00:00:00:00:0a")
    );
    assert_eq!(
        annotations.get("example.com/owner").map(String::as_str),
        Some("ops")
    );
    let conditions = a.status.and_then(|st| st.conditions).unwrap_or_default();
    let status_of = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(status_of("NetworkUnavailable").as_deref(), Some("False"));
    assert_eq!(status_of("Ready").as_deref(), Some("True"));
    let b = s.node(NODE_B).await;
    assert!(!b
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(ann::VTEP_MAC));
}

/// The policy is not leaning on RBAC: with `nodes` create/patch/delete granted on top of
/// the manifests, it still refuses everything but the own Node's annotations.
#[tokio::test]
async fn the_policy_alone_refuses_what_a_wider_role_would_allow() {
    let s = Setup::start().await;
    let role = ClusterRole {
        metadata: meta("test-wider-agent"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: vec!["create".into(), "patch".into(), "delete".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta("test-wider-agent"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "test-wider-agent".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        }]),
    };
    let pp = PostParams::default();
    Api::<ClusterRole>::all(s.admin.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(s.admin.clone())
        .create(&pp, &binding)
        .await
        .unwrap();
    // RBAC changes reach the authorizer through an informer: wait until `nodes` patch
    // of the own Node's annotations goes through (the policy allows that).
    let deadline = Instant::now() + Duration::from_secs(30);
    let nodes: Api<Node> = Api::all(s.bound.clone());
    let dry = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    while let Err(e) = nodes
        .patch(NODE_A, &dry, &Patch::Merge(weft_annotations()))
        .await
    {
        assert!(
            Instant::now() < deadline,
            "the wider role did not take effect: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut cases = vec![
        Case {
            what: "own weft.dev annotations through `nodes`",
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Node,
            body: merge(weft_annotations()),
            want: Want::Allowed,
        },
        Case {
            what: "another node's NoExecute taint",
            client: s.bound.clone(),
            node: NODE_B,
            via: Via::Node,
            body: merge(json!({"spec": {"taints": [{"key": "evict", "effect": "NoExecute"}]}})),
            want: Want::Denied(OTHER_NODE),
        },
        Case {
            what: "weft.dev annotations through `nodes` with an unbound token",
            client: s.unbound.clone(),
            node: NODE_A,
            via: Via::Node,
            body: merge(weft_annotations()),
            want: Want::Denied(NOT_BOUND),
        },
    ];
    for (what, body, words) in spec_writes().into_iter().chain(metadata_writes()) {
        cases.push(Case {
            what,
            client: s.bound.clone(),
            node: NODE_A,
            via: Via::Node,
            body,
            want: Want::Denied(words),
        });
    }
    let wrong = run_cases(&s.admin, cases).await;
    assert!(
        wrong.is_empty(),
        "with a wider role the policy let through:\n{}",
        wrong.join("\n")
    );

    // Create and delete: refused even for the own Node.
    let nodes: Api<Node> = Api::all(s.bound.clone());
    let refused = |r: kube::Result<String>, words: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(words) => {}
        other => panic!("want a 403 with {words:?}, got {other:?}"),
    };
    let new_node: Node = serde_json::from_value(json!({"metadata": {"name": "weft-c"}})).unwrap();
    refused(
        nodes.create(&pp, &new_node).await.map(|_| String::new()),
        "weft-agent may not create Node weft-c",
    );
    for name in [NODE_A, NODE_B] {
        refused(
            nodes
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| String::new()),
            &format!("weft-agent may not delete Node {name}"),
        );
    }
    let all: Api<Node> = Api::all(s.admin.clone());
    for name in [NODE_A, NODE_B] {
        assert!(all.get_opt(name).await.unwrap().is_some(), "{name} is gone");
    }
    assert!(all.get_opt("weft-c").await.unwrap().is_none());
}

/// The agent's own publishing code (agent/src/publish.rs) works under the policy with the
/// token its pod gets, and the same functions cannot write a peer's Node.
#[tokio::test]
async fn the_agents_publish_code_works_with_its_pod_bound_token() {
    let s = Setup::start().await;
    let api: Api<Node> = Api::all(s.bound.clone());
    let desired = publish::desired_annotations(
        "02:00:00:00:00:0a".parse().unwrap(),
        "192.168.50.11".parse().unwrap(),
        1,
        &["10.244.1.0/24".parse().unwrap()],
    );
    publish::publish_annotations(&api, NODE_A, &desired)
        .await
        .expect("the agent publishes its annotations on its own Node");
    assert!(
        publish::set_network_available(&api, NODE_A)
            .await
            .expect("the agent sets its own NetworkUnavailable condition"),
        "patched"
    );
    assert!(
        !publish::set_network_available(&api, NODE_A).await.unwrap(),
        "already set"
    );
    let a = s.node(NODE_A).await;
    let annotations = a.metadata.annotations.clone().unwrap_or_default();
    for (k, v) in &desired {
        assert_eq!(annotations.get(k), Some(v), "{k} on {NODE_A}");
    }
    assert!(publish::condition_is_set(
        &a.status.and_then(|st| st.conditions).unwrap_or_default()
    ));

    let refused = |r: kube::Result<()>, words: &str| match r {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains(words) => {}
        other => panic!("want a 403 with {words:?}, got {other:?}"),
    };
    refused(
        publish::publish_annotations(&api, NODE_B, &desired).await,
        OTHER_NODE,
    );
    refused(
        publish::set_network_available(&api, NODE_B).await.map(drop),
        OTHER_NODE,
    );
    let unbound: Api<Node> = Api::all(s.unbound.clone());
    refused(
        publish::publish_annotations(&unbound, NODE_A, &desired).await,
        NOT_BOUND,
    );
    let b = s.node(NODE_B).await;
    assert!(!b
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(ann::VTEP_MAC));
}
