//! NetworkPolicy end to end against a real kube-apiserver: two netns nodes, each with
//! its weft-agent (RBAC as shipped in `manifests/`), four pods made by the CNI plugin,
//! Pod and Namespace objects and NetworkPolicies written through the API. After each
//! change the test measures how long the change took to take effect (API write to the
//! first connection that shows it), then checks the whole reachability matrix over
//! IPv4 and IPv6 with real TCP connections.
//!
//! Pods (all serving TCP 7777, container port named "probe"):
//! 0 prod/db (node-1), 1 prod/web (node-1), 2 prod/api (node-2), 3 dev/tool (node-2).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use weft_common::netns::Netns;
use weft_e2e::overlay::Overlay;

const PORT: u16 = 7777;
/// A denied connection is one that gets no answer in this long (an allowed one between
/// network namespaces on one machine answers in well under a millisecond).
const DENIED_AFTER: Duration = Duration::from_millis(300);
/// The timeout of the probes that wait for a change to show.
const POLL_PROBE: Duration = Duration::from_millis(50);
/// How long a change may take before the test gives up on it.
const EFFECT_LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on a thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        Netns::open(path.as_ref())
            .expect("netns")
            .enter()
            .expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A listener on [::]:7777 (IPv4 too) in the pod, accepting forever.
fn serve(netns: &str) {
    let listener = in_netns(netns, || TcpListener::bind(("::", PORT)).expect("bind"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
}

fn reaches(from: &str, to: IpAddr) -> bool {
    reaches_within(from, to, DENIED_AFTER)
}

fn reaches_within(from: &str, to: IpAddr, timeout: Duration) -> bool {
    in_netns(from, move || {
        TcpStream::connect_timeout(&SocketAddr::new(to, PORT), timeout).is_ok()
    })
}

struct World {
    o: Overlay,
    client: kube::Client,
    /// (namespace, name) per pod index.
    names: Vec<(String, String)>,
    timings: Vec<(String, Duration)>,
    policies: usize,
}

impl World {
    fn ips(&self, i: usize) -> Vec<IpAddr> {
        let p = &self.o.pods[i];
        let mut v = vec![IpAddr::V4(p.ip)];
        v.extend(p.ip6.map(IpAddr::V6));
        v
    }

    async fn create_pod(&mut self, i: usize, ns: &str, name: &str, app: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let node = Overlay::node_name(self.o.pods[i].node);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "probe",
                "ports": [{"name": "probe", "containerPort": PORT}]}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let ips: Vec<Value> = self.ips(i).iter().map(|ip| json!({"ip": ip})).collect();
        let status = json!({"status": {"phase": "Running", "podIP": ips[0]["ip"], "podIPs": ips}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        if self.names.len() <= i {
            self.names.resize(i + 1, Default::default());
        }
        self.names[i] = (ns.into(), name.into());
    }

    async fn label_pod(&self, i: usize, app: &str) {
        let (ns, name) = &self.names[i];
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"labels": {"app": app}}});
        pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn apply_policy(&mut self, ns: &str, spec: Value) -> String {
        self.policies += 1;
        let name = format!("policy-{}", self.policies);
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), ns);
        let p: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .unwrap();
        api.create(&PostParams::default(), &p).await.unwrap();
        name
    }

    /// Waits until `from` -> `to` is `allowed` (every address family), records the time
    /// since `since` under `what`.
    fn took_effect(&mut self, what: &str, since: Instant, from: usize, to: usize, allowed: bool) {
        let from_ns = self.o.pods[from].netns.clone();
        let targets = self.ips(to);
        loop {
            // Short probes, so the time is measured finely; the matrix after it checks
            // with the longer timeout.
            if targets
                .iter()
                .all(|ip| reaches_within(&from_ns, *ip, POLL_PROBE) == allowed)
            {
                self.timings.push((what.into(), since.elapsed()));
                return;
            }
            assert!(
                since.elapsed() < EFFECT_LIMIT,
                "{what}: pod {from} -> pod {to} still {} after {EFFECT_LIMIT:?}",
                if allowed { "denied" } else { "allowed" }
            );
        }
    }

    /// Every pair over every family against `denied` (pairs (from, to) that must not
    /// connect); everything else must.
    fn check_matrix(&self, step: &str, pods: &[usize], denied: &[(usize, usize)]) {
        let mut wrong = Vec::new();
        for &from in pods {
            for &to in pods {
                if from == to {
                    continue;
                }
                for ip in self.ips(to) {
                    let got = reaches(&self.o.pods[from].netns, ip);
                    let want = !denied.contains(&(from, to));
                    if got != want {
                        let again =
                            reaches_within(&self.o.pods[from].netns, ip, Duration::from_secs(3));
                        wrong.push(format!(
                            "{from}->{to} {ip}: {} (want {}; {} with 3 s)",
                            verdict(got),
                            verdict(want),
                            verdict(again)
                        ));
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "{step}: {wrong:#?}\n{}",
            self.diagnostics()
        );
    }

    /// What a failed matrix needs to be told apart: a policy drop (the counters) or the
    /// datapath (addresses, neighbours, routes).
    fn diagnostics(&self) -> String {
        let sh = |ns: &str, cmd: &str| {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c", cmd])
                .output()
                .expect("ip netns exec");
            format!("[{ns}] {cmd}:\n{}", String::from_utf8_lossy(&out.stdout))
        };
        let mut text = String::new();
        for (i, p) in self.o.pods.iter().enumerate() {
            text += &format!(
                "pod {i}: {} on node {}: {} {:?}\n",
                p.netns, p.node, p.ip, p.ip6
            );
            text += &sh(&p.netns, "ip addr show eth0; ip neigh; ip -6 neigh");
        }
        for n in &self.o.topo.nodes {
            text += &sh(
                &n.netns,
                "nft list counters; ip neigh show dev weft0; ip -6 neigh show dev weft0; \
                 ip -6 route; bridge fdb show br weft0",
            );
        }
        text
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "denied"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_through_the_api_take_effect_on_real_connections() {
    if !weft_common::require_root("network_policies_through_the_api_take_effect") {
        return;
    }
    let o = Overlay::start(2, 2)
        .await
        .expect("overlay starts and every node gets ready");
    let client = o.cp.client().await.unwrap();
    let mut w = World {
        o,
        client,
        names: Vec::new(),
        timings: Vec::new(),
        policies: 0,
    };
    for p in &w.o.pods {
        serve(&p.netns);
    }
    let namespaces: Api<Namespace> = Api::all(w.client.clone());
    for ns in ["prod", "dev"] {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces.create(&PostParams::default(), &n).await.unwrap();
        // No controller-manager makes it here, and pod admission wants it.
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
        Api::<ServiceAccount>::namespaced(w.client.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }
    // pods[0], [1] are on node-1, [2], [3] on node-2 (Overlay::start's order).
    w.create_pod(0, "prod", "db", "db").await;
    w.create_pod(1, "prod", "web", "web").await;
    w.create_pod(2, "prod", "api", "api").await;
    w.create_pod(3, "dev", "tool", "tool").await;
    let all = [0, 1, 2, 3];
    w.check_matrix("no policy", &all, &[]);

    // Ingress to db only from app=api pods in prod, on the named port: web (same node,
    // bridged) and tool (other node, other namespace) are cut off.
    let t = Instant::now();
    w.apply_policy(
        "prod",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                            "ports": [{"port": "probe"}]}]}),
    )
    .await;
    w.took_effect("policy created (db isolated)", t, 1, 0, false);
    w.check_matrix("db ingress from api", &all, &[(1, 0), (3, 0)]);

    // web relabelled app=api: now a peer of db.
    let t = Instant::now();
    w.label_pod(1, "api").await;
    w.took_effect("pod label change (web -> api)", t, 1, 0, true);
    w.check_matrix("web relabelled", &all, &[(3, 0)]);

    // A namespaceSelector peer, then the namespace relabelled to match it.
    w.apply_policy(
        "prod",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "tools"}}}]}]}),
    )
    .await;
    let t = Instant::now();
    let patch = json!({"metadata": {"labels": {"team": "tools"}}});
    namespaces
        .patch("dev", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    w.took_effect("namespace relabel (dev team=tools)", t, 3, 0, true);
    w.check_matrix("dev relabelled", &all, &[]);

    // Egress default-deny in dev, then an ipBlock allowing api's addresses only.
    let t = Instant::now();
    let deny = w
        .apply_policy("dev", json!({"podSelector": {}, "policyTypes": ["Egress"]}))
        .await;
    w.took_effect("egress default-deny (dev)", t, 3, 1, false);
    w.check_matrix("dev egress denied", &all, &[(3, 0), (3, 1), (3, 2)]);
    let blocks: Vec<Value> = w
        .ips(2)
        .iter()
        .map(|ip| {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            json!({"ipBlock": {"cidr": format!("{ip}/{bits}")}})
        })
        .collect();
    let t = Instant::now();
    w.apply_policy(
        "dev",
        json!({"podSelector": {"matchLabels": {"app": "tool"}}, "policyTypes": ["Egress"],
               "egress": [{"to": blocks}]}),
    )
    .await;
    w.took_effect("ipBlock egress allow (tool -> api)", t, 3, 2, true);
    w.check_matrix("ipBlock", &all, &[(3, 0), (3, 1)]);

    // api recreated as a new pod with a new address (pods[4], node-2): the old address
    // leaves the peers, the new one joins them.
    let pods: Api<Pod> = Api::namespaced(w.client.clone(), "prod");
    pods.delete("api", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    w.o.add_pod(1, 2).expect("a new pod on node-2");
    serve(&w.o.pods[4].netns.clone());
    let t = Instant::now();
    w.create_pod(4, "prod", "api-2", "api").await;
    w.took_effect("pod recreated with a new IP (api-2 -> db)", t, 4, 0, true);
    let now = [0, 1, 3, 4];
    // tool's ipBlock named the old address: api-2 is not in it.
    w.check_matrix("api recreated", &now, &[(3, 0), (3, 1), (3, 4)]);

    // Both dev policies deleted: tool is no longer egress-isolated.
    let api: Api<NetworkPolicy> = Api::namespaced(w.client.clone(), "dev");
    let t = Instant::now();
    api.delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .unwrap();
    w.took_effect("policies deleted (dev)", t, 3, 1, true);
    w.check_matrix("no dev policy", &now, &[]);
    let _ = deny;

    let mut table = BTreeMap::new();
    println!("\nchange -> effect (API write to the first connection showing it):");
    for (what, took) in &w.timings {
        println!("  {:>7.1} ms  {what}", took.as_secs_f64() * 1e3);
        table.insert(what.clone(), took.as_secs_f64() * 1e3);
    }
    println!("{}", json!({"policy_effect_ms": table}));
}
