//! The agent's wiring, callable in-process ([`run_with`]) as well as from the binary.
//!
//! Start-up, in order: HTTP server (not ready) -> wait on the own Node's spec.podCIDRs
//! (watched, not polled) -> underlay interface and MTU -> [`Datapath::setup`] with the
//! MAC published before -> publisher (VTEP annotations) -> reconcile loop over the Node
//! watch -> after the first sync: ready and NetworkUnavailable=False. On SIGTERM/SIGINT
//! the process exits and leaves the datapath in place. When the own Node's pod CIDRs
//! change (deleted and re-registered with another subnet), [`run`] returns
//! [`PodCidrsChanged`](crate::reconcile::PodCidrsChanged) and the binary exits with
//! [`EXIT_POD_CIDRS_CHANGED`]: the restarted container sets the datapath up anew (setup
//! removes the old addresses and rewrites the subnet file). While the Node has no pod CIDR,
//! the datapath is kept.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_common::annotations::Mac;
use weft_common::netconf::NetConf;

use crate::config::Opts;
use crate::datapath::{self, Datapath, DatapathConfig};
use crate::http::{self, HttpState};
use crate::kernel_watch;
use crate::metrics::{ErrorKind, Metrics};
use crate::nodes::{NodeLite, SlimNode};
use crate::policy;
use crate::publish;
use crate::reconcile::{retry_delay, Reconciler};
use crate::underlay::{self, Selection};

/// Exit code of `weft-agent` when the own Node's pod CIDRs changed: the DaemonSet
/// restarts the container, which rebuilds the datapath for the new CIDRs.
pub const EXIT_POD_CIDRS_CHANGED: u8 = 3;

/// Nodes per list page: bounds the transient memory of a (re)list to this many Node
/// objects' JSON, whatever the cluster size.
pub const NODE_PAGE_SIZE: u32 = 50;

/// The watch of all Nodes: paged lists of [`NODE_PAGE_SIZE`].
pub fn node_watch_config() -> watcher::Config {
    watcher::Config::default().page_size(NODE_PAGE_SIZE)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The agent, until SIGTERM/SIGINT.
pub async fn run(opts: Opts) -> anyhow::Result<()> {
    run_with(opts, None, shutdown_signal()).await
}

/// The agent with an optional ready-made client (else from `--kubeconfig` or inferred),
/// until `shutdown` resolves. Returns an error when start-up fails.
pub async fn run_with(
    opts: Opts,
    client: Option<Client>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let node_name = opts
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .context("no node name: set NODE_NAME (downward API, spec.nodeName) or --node-name")?;
    let conf = NetConf::load(&opts.config).context("loading the network config")?;
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(opts.metrics_addr)
        .await
        .with_context(|| format!("binding the HTTP server to {}", opts.metrics_addr))?;
    tracing::info!(addr = %opts.metrics_addr, "serving /healthz, /readyz and /metrics");
    let state = Arc::new(HttpState {
        metrics: metrics.clone(),
        subnet_file: opts.subnet_file.clone(),
    });
    let _http = AbortOnDrop(tokio::spawn(async move {
        if let Err(e) = http::serve(listener, state).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));
    let client = match client {
        Some(c) => c,
        None => kube_client(&opts).await?,
    };
    tokio::select! {
        result = agent(&opts, &conf, &node_name, client, metrics) => result,
        _ = shutdown => {
            tracing::info!("exiting; the datapath stays in place");
            Ok(())
        }
    }
}

async fn kube_client(opts: &Opts) -> anyhow::Result<Client> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes config (in-cluster, $KUBECONFIG or ~/.kube/config); use --kubeconfig",
        )?,
    };
    Client::try_from(config).context("building the Kubernetes client")
}

async fn agent(
    opts: &Opts,
    conf: &NetConf,
    node_name: &str,
    client: Client,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let slim_nodes: Api<SlimNode> = Api::all(client.clone());
    let rejections = crate::events::spawn(client.clone(), node_name);
    let policy = match conf.network_policy {
        true => Some(start_policy(
            client.clone(),
            node_name,
            opts,
            &metrics,
            &rejections,
        )),
        false => {
            stop_policy(opts).await;
            None
        }
    };
    let nodes: Api<Node> = Api::all(client);
    let own = wait_for_pod_cidrs(&slim_nodes, node_name, &metrics).await?;
    tracing::info!(node = node_name, pod_cidrs = ?own.pod_cidrs, "Node has its pod CIDRs");

    let (mut conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    // Bound now so its port id is known: the kernel watch ignores our own changes.
    let own_port = rtnetlink::sys::AsyncSocket::socket_mut(conn.socket_mut())
        .bind_auto()
        .map(|a| a.port_number());
    let _netlink = AbortOnDrop(tokio::spawn(conn));
    let ifaces = underlay::list_interfaces(&handle)
        .await
        .context("listing interfaces")?;
    let selection = Selection {
        ifaces: &opts.ifaces,
        iface_regexes: &opts.iface_regexes,
        public_ip: opts.public_ip,
        node_ips: &own.internal_ips,
    };
    let ul = underlay::select(&ifaces, &selection).map_err(anyhow::Error::msg)?;
    let mtu =
        underlay::pod_mtu(ul.mtu, ul.local_ip.is_ipv6(), conf.mtu).map_err(anyhow::Error::msg)?;
    tracing::info!(
        iface = %ul.iface,
        local_ip = %ul.local_ip,
        underlay_mtu = ul.mtu,
        pod_mtu = mtu,
        "underlay chosen"
    );

    let cfg = DatapathConfig {
        vxlan_device: conf.vxlan_device.clone(),
        vni: conf.vni,
        port: conf.port,
        underlay_ip: ul.local_ip,
        underlay_ifindex: ul.ifindex,
        mtu,
        mac: publish::published_mac(&own.annotations),
        pod_cidrs: own.pod_cidrs.clone(),
        cluster_cidrs: conf.cluster_cidrs.clone(),
        node_subnet_size_v4: conf.node_subnet_size_v4,
        node_subnet_size_v6: conf.node_subnet_size_v6,
        service_cidrs: conf.service_cidrs.clone(),
        bridge: conf.bridge.clone(),
        direct_routing: conf.direct_routing,
        masquerade: conf.masquerade,
        subnet_file: opts.subnet_file.clone(),
    };
    let datapath = Datapath::setup(cfg, handle)
        .await
        .context("setting up the datapath")?;
    let mac = datapath.vtep_mac();
    tracing::info!(device = %conf.vxlan_device, vtep_mac = %mac, "datapath set up");

    let (own_tx, own_rx) = watch::channel(Some(own));
    let (ready_tx, ready_rx) = watch::channel(false);
    let publisher = Publisher {
        api: nodes.clone(),
        node: node_name.to_owned(),
        mac,
        detected_ip: ul.public_ip,
        vni: conf.vni,
        metrics: metrics.clone(),
    };
    let _publisher = AbortOnDrop(tokio::spawn(publisher.run(own_rx)));
    let _condition = AbortOnDrop(tokio::spawn(set_condition_when_ready(
        nodes,
        node_name.to_owned(),
        ready_rx,
        metrics.clone(),
    )));

    let (kick_tx, kick_rx) = tokio::sync::mpsc::unbounded_channel();
    let filter = kernel_watch::Filter {
        device: conf.vxlan_device.clone(),
        ifindex: datapath.ifindex(),
        own_port: own_port.ok(),
    };
    let _kernel_watch = match kernel_watch::subscribe_with_intent(
        filter,
        datapath.fdb_intent(),
        kick_tx,
    ) {
        Ok(watch) => Some(AbortOnDrop(tokio::spawn(watch))),
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to kernel notifications; hand-made changes are repaired at the periodic resync only");
            None
        }
    };
    let kicks = futures::stream::unfold(kick_rx, |mut rx| async move {
        rx.recv().await.map(|_reason| ((), rx))
    });

    let events = watcher(slim_nodes, node_watch_config()).default_backoff();
    let reconciler = Reconciler {
        pod_cidrs: datapath.config().pod_cidrs.clone(),
        datapath,
        node_name: node_name.to_owned(),
        metrics,
        debounce: opts.debounce,
        max_window: crate::reconcile::MAX_WINDOW.max(opts.debounce),
        resync: opts.resync_interval,
        own_node: own_tx,
        ready: ready_tx,
        rejections: Some(rejections),
    }
    .run_with_kicks(events, kicks);
    match policy.map(AbortOnDrop) {
        Some(mut policy) => tokio::select! {
            result = reconciler => result,
            result = &mut policy.0 => match result {
                Ok(result) => result,
                Err(e) => Err(anyhow::anyhow!("the NetworkPolicy loop failed: {e}")),
            },
        },
        None => reconciler.await,
    }
}

/// Starts the NetworkPolicy loop (readiness now waits for its first table). It runs
/// from before the datapath is set up: a restarted agent has the table in place from
/// its previous run, and the sooner it is current the better.
fn start_policy(
    client: Client,
    node_name: &str,
    opts: &Opts,
    metrics: &Arc<Metrics>,
    warnings: &tokio::sync::mpsc::Sender<crate::events::Warning>,
) -> JoinHandle<anyhow::Result<()>> {
    metrics.require_policy();
    if let Err(e) = policy::table::bridge_netfilter_on() {
        metrics.error(ErrorKind::Policy);
        tracing::error!(error = %e, "cannot turn on br_netfilter (is the module loaded? `modprobe br_netfilter` \
            on the node): NetworkPolicy is not enforced between pods of this node, only across nodes");
    }
    let enforcer = policy::enforce::Enforcer {
        node: node_name.to_owned(),
        metrics: metrics.clone(),
        warnings: Some(warnings.clone()),
        resync: opts.resync_interval,
        gate: Some(weft_common::policy_gate::lock_path(&opts.subnet_file)),
    };
    tracing::info!("NetworkPolicy enforcement on (table inet weft-policy)");
    tokio::spawn(enforcer.run(policy::watch::watches(client)))
}

/// With NetworkPolicy off, a table left from when it was on would keep enforcing
/// policies nobody updates: it goes, and so does the lock that gates new pods.
async fn stop_policy(opts: &Opts) {
    let lock = weft_common::policy_gate::lock_path(&opts.subnet_file);
    if let Err(e) = weft_common::policy_gate::remove(&lock) {
        tracing::warn!(lock = %lock.display(), error = %e, "cannot remove the NetworkPolicy lock file");
    }
    match tokio::task::spawn_blocking(policy::table::remove).await {
        Ok(Ok(())) => tracing::info!("NetworkPolicy enforcement off (networkPolicy: false)"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove the NetworkPolicy table"),
        Err(e) => tracing::warn!(error = %e, "cannot remove the NetworkPolicy table"),
    }
}

/// Watches the own Node until spec.podCIDRs is set (by kube-controller-manager
/// `--allocate-node-cidrs` or weft-controller) and returns its projection.
pub async fn wait_for_pod_cidrs(
    api: &Api<SlimNode>,
    node: &str,
    metrics: &Metrics,
) -> anyhow::Result<NodeLite> {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).default_backoff());
    let (mut seen, mut said_waiting, mut said_missing) = (false, false, false);
    while let Some(event) = events.next().await {
        match event {
            Err(e) => {
                metrics.error(ErrorKind::Watch);
                tracing::warn!(node, error = %e, "watching the own Node failed; retrying");
            }
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                seen = true;
                let lite = NodeLite::from_slim(&n);
                if !lite.pod_cidrs.is_empty() {
                    return Ok(lite);
                }
                if !said_waiting {
                    said_waiting = true;
                    tracing::info!(
                        node,
                        problems = ?lite.problems,
                        "waiting for spec.podCIDRs to be assigned (kube-controller-manager --allocate-node-cidrs \
                         or weft-controller); not ready until then"
                    );
                }
            }
            Ok(watcher::Event::InitDone) if !seen && !said_missing => {
                said_missing = true;
                tracing::warn!(node, "no Node object with this name yet; waiting for it (is --node-name/NODE_NAME right?)");
            }
            Ok(_) => {}
        }
    }
    anyhow::bail!("the watch of Node {node} ended")
}

/// Keeps the VTEP annotations on the own Node, re-publishing when they are missing or
/// stale (e.g. the public-ip-override annotation changed), with backoff on failure.
struct Publisher {
    api: Api<Node>,
    node: String,
    mac: Mac,
    detected_ip: IpAddr,
    vni: u32,
    metrics: Arc<Metrics>,
}

impl Publisher {
    async fn run(self, mut own: watch::Receiver<Option<NodeLite>>) {
        let mut failures = 0;
        loop {
            let current = own.borrow_and_update().clone();
            if let Some(current) = current {
                let (ip, bad_override) = publish::public_ip(self.detected_ip, &current.annotations);
                if let Some(problem) = bad_override {
                    tracing::warn!(node = %self.node, problem, "ignoring the public IP override");
                }
                let desired =
                    publish::desired_annotations(self.mac, ip, self.vni, &current.pod_cidrs);
                if publish::needs_publish(&current.annotations, &desired) {
                    match publish::publish_annotations(&self.api, &self.node, &desired).await {
                        Ok(()) => {
                            failures = 0;
                            tracing::info!(node = %self.node, vtep_mac = %self.mac, public_ip = %ip, vni = self.vni, "published the VTEP annotations");
                        }
                        Err(e) => {
                            failures += 1;
                            self.metrics.error(ErrorKind::Publish);
                            let retry = retry_delay(failures);
                            tracing::warn!(node = %self.node, error = %e, attempt = failures, retry_in_ms = retry.as_millis() as u64, "publishing the VTEP annotations failed");
                            tokio::time::sleep(retry).await;
                            continue;
                        }
                    }
                }
            }
            if own.changed().await.is_err() {
                return;
            }
        }
    }
}

/// After the first successful sync, sets NetworkUnavailable=False; retries with backoff.
async fn set_condition_when_ready(
    api: Api<Node>,
    node: String,
    mut ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    if ready.wait_for(|r| *r).await.is_err() {
        return;
    }
    let mut failures = 0;
    loop {
        match publish::set_network_available(&api, &node).await {
            Ok(patched) => {
                if patched {
                    tracing::info!(node, "set condition NetworkUnavailable=False");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                metrics.error(ErrorKind::Condition);
                let retry = retry_delay(failures);
                tracing::warn!(node, error = %e, attempt = failures, retry_in_ms = retry.as_millis() as u64, "setting the NetworkUnavailable condition failed");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// `weft-agent cleanup`: removes the VXLAN device, the bridge, weft's routes, firewall
/// table and iptables FORWARD accepts, and the subnet file. Without a readable config, the default names are used.
pub async fn cleanup(opts: &Opts) -> anyhow::Result<()> {
    let conf = NetConf::load(&opts.config).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no usable network config; cleaning up the default device and bridge names");
        NetConf::default()
    });
    let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
    let _netlink = AbortOnDrop(tokio::spawn(conn));
    datapath::cleanup(&handle, &conf, &opts.subnet_file)
        .await
        .context("cleaning up the datapath")?;
    let accepts = crate::iptables::remove().context("removing weft's iptables FORWARD accepts")?;
    let lock = weft_common::policy_gate::lock_path(&opts.subnet_file);
    weft_common::policy_gate::remove(&lock)
        .with_context(|| format!("removing {}", lock.display()))?;
    tracing::info!(device = %conf.vxlan_device, bridge = %conf.bridge, subnet_file = %opts.subnet_file.display(), iptables_accepts = accepts, "cleaned up");
    Ok(())
}

/// Aborts a background task when the scope that started it ends.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
