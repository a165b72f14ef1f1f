//! weft-controller against a real kube-apiserver, with the token of its own service
//! account and the RBAC from `manifests/` (not admin).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Node};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use weft_e2e::fixtures::{kubelet_like_node, node_ip};
use weft_e2e::harness::{self, ControlPlane};
use weft_e2e::topo;

struct Setup {
    cp: ControlPlane,
    kubeconfig: PathBuf,
    netconf: PathBuf,
    nodes: Api<Node>,
}

async fn setup(cluster_cidr: &str, size: u8) -> Setup {
    let cp = ControlPlane::start().await.expect("control plane");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    for f in ["namespace.yaml", "rbac-controller.yaml"] {
        topo::run(
            Command::new(harness::bin("kubectl").unwrap())
                .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
                .args(["apply", "-f"])
                .arg(manifests.join(f)),
        )
        .unwrap();
    }
    let kubeconfig = cp
        .service_account_kubeconfig("weft-system", "weft-controller")
        .await
        .unwrap();
    let netconf = cp.dir.join("net-conf.json");
    std::fs::write(
        &netconf,
        serde_json::json!({"clusterCIDRs": [cluster_cidr], "nodeSubnetSizeV4": size}).to_string(),
    )
    .unwrap();
    let nodes = Api::all(cp.client().await.unwrap());
    Setup {
        cp,
        kubeconfig,
        netconf,
        nodes,
    }
}

impl Setup {
    fn start_controller(&self, tag: &str) -> ChildGuard {
        let log = std::fs::File::create(self.cp.dir.join(format!("controller-{tag}.log"))).unwrap();
        let child = Command::new(topo::workspace_bin("weft-controller").unwrap())
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--config={}", self.netconf.display()))
            .arg("--http-addr=127.0.0.1:0")
            .env("POD_NAMESPACE", "weft-system")
            .env("POD_NAME", format!("weft-controller-{tag}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        ChildGuard(child)
    }

    async fn create_nodes(&self, range: std::ops::Range<u32>) {
        stream::iter(range)
            .for_each_concurrent(16, |i| async move {
                self.nodes
                    .create(
                        &PostParams::default(),
                        &kubelet_like_node(&format!("n-{i:04}"), node_ip(i)),
                    )
                    .await
                    .unwrap();
            })
            .await;
    }

    /// name -> podCIDRs of every Node.
    async fn cidrs(&self) -> BTreeMap<String, Vec<String>> {
        let list = self.nodes.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let cidrs = spec.pod_cidrs.unwrap_or_default();
                if let Some(first) = cidrs.first() {
                    assert_eq!(
                        spec.pod_cidr.as_deref(),
                        Some(first.as_str()),
                        "podCIDR == podCIDRs[0]"
                    );
                }
                (n.metadata.name.unwrap(), cidrs)
            })
            .collect()
    }

    async fn wait_allocated(
        &self,
        want: usize,
        timeout: Duration,
    ) -> BTreeMap<String, Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.cidrs().await;
            let done = c.values().filter(|v| !v.is_empty()).count();
            if done >= want {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "only {done}/{want} nodes allocated after {timeout:?}; logs in {}",
                self.cp.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct ChildGuard(Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_disjoint_within(cidrs: &BTreeMap<String, Vec<String>>, cluster: &str) {
    let cluster: ipnet::IpNet = cluster.parse().unwrap();
    let mut seen = HashSet::new();
    for (node, list) in cidrs {
        for c in list {
            let net: ipnet::IpNet = c.parse().unwrap();
            assert!(cluster.contains(&net), "{node}: {net} outside {cluster}");
            assert!(seen.insert(net), "{net} given twice (again to {node})");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocates_3_then_100_nodes_with_a_restart_in_the_middle() {
    let s = setup("10.200.0.0/16", 24).await;
    s.create_nodes(0..3).await;
    let c1 = s.start_controller("a");
    let got = s.wait_allocated(3, Duration::from_secs(30)).await;
    assert_disjoint_within(&got, "10.200.0.0/16");

    s.create_nodes(3..100).await;
    // Restart in the middle of the allocation burst.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.cidrs().await.values().filter(|v| !v.is_empty()).count() < 20 {
        assert!(Instant::now() < deadline, "allocation did not progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c1);
    let _c2 = s.start_controller("b");
    let got = s.wait_allocated(100, Duration::from_secs(60)).await;
    assert_eq!(got.len(), 100);
    assert_disjoint_within(&got, "10.200.0.0/16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_gives_an_event_then_recovers_when_a_node_goes() {
    // A /24 cut into /26s: room for four nodes.
    let s = setup("10.201.0.0/24", 26).await;
    s.create_nodes(0..5).await;
    let _c = s.start_controller("a");
    let got = s.wait_allocated(4, Duration::from_secs(30)).await;
    assert_disjoint_within(&got, "10.201.0.0/24");
    let starving = got
        .iter()
        .find(|(_, v)| v.is_empty())
        .map(|(n, _)| n.clone())
        .expect("one node waits");

    let events: Api<Event> = Api::all(s.cp.client().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let found = list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.type_.as_deref() == Some("Warning")
                && e.involved_object.name.as_deref() == Some(starving.as_str())
        });
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CIDRNotAvailable Warning event for {starving}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let victim = got
        .iter()
        .find(|(_, v)| !v.is_empty())
        .map(|(n, _)| n.clone())
        .unwrap();
    s.nodes
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = s.cidrs().await;
        if c.get(&starving).is_some_and(|v| !v.is_empty()) {
            assert_disjoint_within(&c, "10.201.0.0/24");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{starving} never got the freed subnet"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_leader_election_never_duplicate() {
    let s = setup("10.202.0.0/16", 24).await;
    let a = s.start_controller("a");
    let _b = s.start_controller("b");
    s.create_nodes(0..60).await;
    let got = s.wait_allocated(60, Duration::from_secs(60)).await;
    assert_disjoint_within(&got, "10.202.0.0/16");
    // Fail over: whichever replica led, the other (or a) carries on without duplicates.
    drop(a);
    s.create_nodes(60..80).await;
    let got = s.wait_allocated(80, Duration::from_secs(90)).await;
    assert_disjoint_within(&got, "10.202.0.0/16");
}

/// A Node registered with a /17 podCIDR in a /16 cut into /24s: a Warning CIDRWrongSize
/// Event on it, and the other nodes still get distinct /24s, from inside the /17 too
/// (it blocks nothing: before, it took 128 of the 256 subnets silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_size_pod_cidr_gets_a_warning_and_blocks_nothing() {
    let s = setup("10.203.0.0/16", 24).await;
    let mut greedy = kubelet_like_node("greedy", node_ip(900));
    let spec = greedy.spec.get_or_insert_with(Default::default);
    spec.pod_cidr = Some("10.203.0.0/17".into());
    spec.pod_cidrs = Some(vec!["10.203.0.0/17".into()]);
    s.nodes
        .create(&PostParams::default(), &greedy)
        .await
        .unwrap();
    s.create_nodes(0..3).await;
    let _c = s.start_controller("a");
    // The greedy node counts as allocated: wait for it and the three.
    let mut got = s.wait_allocated(4, Duration::from_secs(30)).await;
    assert_eq!(got.remove("greedy").unwrap(), vec!["10.203.0.0/17"]);
    assert_disjoint_within(&got, "10.203.0.0/16");
    let slash17: ipnet::IpNet = "10.203.0.0/17".parse().unwrap();
    let nets: Vec<ipnet::IpNet> = got.values().flatten().map(|c| c.parse().unwrap()).collect();
    assert!(nets.iter().all(|n| n.prefix_len() == 24), "{got:?}");
    assert!(
        nets.iter().any(|n| slash17.contains(n)),
        "no /24 inside the /17 was handed out: it still blocks them ({got:?})"
    );

    let events: Api<Event> = Api::all(s.cp.client().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let warning = list.items.iter().find(|e| {
            e.reason.as_deref() == Some("CIDRWrongSize")
                && e.involved_object.name.as_deref() == Some("greedy")
        });
        if let Some(e) = warning {
            assert_eq!(e.type_.as_deref(), Some("Warning"));
            let note = e.message.as_deref().unwrap_or_default();
            assert!(note.contains("10.203.0.0/17"), "{note}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CIDRWrongSize Warning event for greedy; logs in {}",
            s.cp.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
