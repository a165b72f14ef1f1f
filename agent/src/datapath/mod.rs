//! The node's VXLAN datapath: the device, the bridge, forwarding, the firewall table and
//! the per-peer entries, kept in the kernel (they survive an agent restart).
//!
//! * [`Datapath::setup`] makes the node ready and writes the subnet file last.
//! * [`Datapath::sync`] reconciles the per-peer entries with the desired peer set: one
//!   dump of neighbours, FDB and routes ([`dump`]: kernel-filtered, parsed in place), a
//!   pure [`plan::diff`], then only the difference is sent, many requests in flight at
//!   once, routes last. [`Datapath::sync_kind`] with [`SyncKind::Incremental`] (a Node
//!   changed) diffs against what the last sync applied instead ([`delta`]): no dump, so
//!   one changed peer among 5000 costs the checks and three requests.
//! * [`cleanup`] removes everything weft created.
//!
//! Per remote node: one FDB entry `<mac> dst <underlay ip> self permanent` on the VXLAN
//! device and, for each of its pod CIDRs, a permanent neighbour `<vtep ip> lladdr <mac>`
//! and a route `<pod cidr> via <vtep ip> dev <device> onlink proto 87` (the VTEP IP is
//! the network address of that pod CIDR). With direct routing, a pod CIDR of the node
//! IP's family, for a node on the underlay's subnet, gets `<pod cidr> via <node ip> proto
//! 87` instead. Routes are recognised by weft's protocol number [`plan::ROUTE_PROTOCOL`]
//! (87); neighbours and FDB entries by the device.
//!
//! Dual-stack: the one VXLAN device carries IPv4 and IPv6 pod traffic alike (VXLAN is an
//! Ethernet tunnel: the inner family does not depend on the underlay's), over whichever
//! underlay the node uses. So a node has one MAC and one FDB entry per peer whatever its
//! families, and dual-stack pods work on nodes with IPv4-only (or IPv6-only) addresses.

pub mod delta;
pub mod device;
pub mod dump;
pub mod entries;
mod error;
pub mod filter;
pub mod plan;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use weft_common::annotations::Mac;
use weft_common::bridge::{addresses, link_by_name};
use weft_common::subnet_file::{gateway_for, NodeSubnet};

pub use error::Error;
pub use plan::ROUTE_PROTOCOL;

use crate::firewall::TableSpec;
use crate::peers::{validate, Peer, PeerChange, Rejection, Rules, Verdicts};
use delta::Applied;
use device::VxlanSpec;
use dump::DumpSocket;
use filter::FilterUpdates;

/// Everything [`Datapath::setup`] needs; computed by the caller from net-conf, the Node
/// and the chosen underlay interface.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// "weft.1"
    pub vxlan_device: String,
    pub vni: u32,
    pub port: u16,
    pub underlay_ip: IpAddr,
    pub underlay_ifindex: u32,
    /// Pod MTU = VXLAN device MTU = bridge MTU.
    pub mtu: u32,
    /// The MAC published earlier, reused so peers' entries stay valid.
    pub mac: Option<Mac>,
    /// This node's spec.podCIDRs, IPv4 first.
    pub pod_cidrs: Vec<IpNet>,
    pub cluster_cidrs: Vec<IpNet>,
    /// Node subnet sizes (prefix lengths) every pod CIDR must have.
    pub node_subnet_size_v4: u8,
    pub node_subnet_size_v6: u8,
    /// The Service CIDRs, when known: no pod CIDR may overlap them.
    pub service_cidrs: Vec<IpNet>,
    /// "weft0"
    pub bridge: String,
    pub direct_routing: bool,
    /// Masquerade pod traffic leaving the cluster CIDRs (the `postrouting` chain).
    pub masquerade: bool,
    pub subnet_file: PathBuf,
}

/// How a sync finds out what the kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Dumps the kernel's entries and diffs against them: repairs whatever differs.
    Full,
    /// Diffs against what the last sync applied, without a dump ([`delta`]); a full sync
    /// when that is not known (the first sync, or the last one failed in any way).
    Incremental,
}

/// What one [`Datapath::sync`] did. Counts are kernel entries (neighbours, FDB entries,
/// routes), not peers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// The kernel's entries were dumped (a full sync), not taken from the last sync.
    pub full: bool,
    /// Every candidate was checked and planned, not only the changed ones.
    pub whole: bool,
    /// Peers that have entries.
    pub peers: usize,
    pub added: usize,
    pub removed: usize,
    pub updated: usize,
    /// Peers left out by validation.
    pub rejected: Vec<Rejection>,
    /// Entries the kernel refused (the rest were applied), with the first refusal.
    pub failed: usize,
    pub first_failure: Option<String>,
    /// The VXLAN filter's drop counters, when they were read in this sync.
    pub drops: Option<crate::firewall::Drops>,
}

struct DeviceState {
    ifindex: u32,
    underlay_net: Option<IpNet>,
}

/// The FDB entries weft means its VXLAN device to hold (MAC -> remote), shared with the
/// kernel watch. The VXLAN driver reports weft's own FDB writes like anyone's (port id
/// 0): a notification that only says what weft wrote is no reason for a repair, and
/// without this every sync that touched the FDB was followed by a full one.
#[derive(Clone, Default)]
pub struct FdbIntent(Arc<Mutex<Option<plan::KeyMap<Mac, IpAddr>>>>);

impl std::fmt::Debug for FdbIntent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let known = self
            .0
            .lock()
            .expect("intent lock")
            .as_ref()
            .map(|m| m.len());
        f.debug_struct("FdbIntent")
            .field("entries", &known)
            .finish()
    }
}

/// A known intent of exactly these entries.
impl FromIterator<(Mac, IpAddr)> for FdbIntent {
    fn from_iter<I: IntoIterator<Item = (Mac, IpAddr)>>(entries: I) -> FdbIntent {
        FdbIntent(Arc::new(Mutex::new(Some(entries.into_iter().collect()))))
    }
}

impl FdbIntent {
    /// Whether a notification that `mac` points at `dst` (`present`), or no longer does,
    /// agrees with weft's intent. False while the intent is unknown (before the first
    /// sync): then every notification is taken for a change by someone else.
    pub fn agrees(&self, mac: Mac, dst: IpAddr, present: bool) -> bool {
        let intent = self.0.lock().expect("intent lock");
        match intent.as_ref().map(|m| m.get(&mac)) {
            None => false,
            Some(Some(want)) => present == (*want == dst),
            Some(None) => !present,
        }
    }

    /// Before a full sync's writes: the whole desired FDB.
    fn replace(&self, desired: &plan::Desired) {
        let map = desired.fdb.iter().map(|(m, f)| (*m, f.entry)).collect();
        *self.0.lock().expect("intent lock") = Some(map);
    }

    /// Before an incremental sync's writes: its FDB changes.
    fn update(&self, plan: &plan::Plan) {
        let mut intent = self.0.lock().expect("intent lock");
        let Some(map) = intent.as_mut() else { return };
        for f in &plan.del_fdb {
            if map.get(&f.mac) == Some(&f.dst) {
                map.remove(&f.mac);
            }
        }
        for s in &plan.set_fdb {
            map.insert(s.entry.mac, s.entry.dst);
        }
    }
}

/// What a sync diffs against.
enum Basis {
    /// What the last sync applied (an incremental sync).
    Applied(Applied),
    /// A dump of the kernel (a full sync).
    Dumped(plan::Actual),
}

/// What the last sync left in the kernel, kept only when every request of it succeeded.
struct Known {
    /// The VXLAN device the entries are on: a re-created device has none.
    ifindex: u32,
    entries: Applied,
    /// Destinations of the routes not weft's, from the last dump: an incremental sync
    /// checks peers against these (a route added since is caught by the next full sync).
    foreign_routes: Vec<IpNet>,
    /// The verdicts of the candidates the entries are for, so that changed peers can be
    /// checked alone.
    verdicts: Verdicts,
    /// Peers that have entries.
    peers: usize,
    /// How many accepted peers each VXLAN source address is for (a public IP may be
    /// another peer's InternalIP): the filter's sets hold these addresses.
    sources: BTreeMap<IpAddr, u32>,
}

/// The plan of one sync and what it is made from.
struct Planned<'a> {
    plan: plan::Plan,
    /// Peers that will have entries.
    peers: usize,
    how: How<'a>,
}

/// How a sync planned, and what it keeps for the next one once its entries are written.
enum How<'a> {
    /// The whole candidate set was checked and planned.
    Whole {
        candidates: &'a [&'a Peer],
        accepted: Vec<&'a Peer>,
        rejected: Vec<Rejection>,
        desired: plan::Desired<'a>,
    },
    /// Only the changed peers were: the kept state, already updated.
    Changed {
        verdicts: Verdicts,
        sources: BTreeMap<IpAddr, u32>,
    },
}

/// Counts `peer`'s VXLAN source addresses in (`up`) or out.
fn count_sources(sources: &mut BTreeMap<IpAddr, u32>, peer: &Peer, up: bool) {
    for ip in crate::firewall::vxlan::peer_addresses(std::slice::from_ref(peer)) {
        if up {
            *sources.entry(ip).or_insert(0) += 1;
        } else if let Some(n) = sources.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                sources.remove(&ip);
            }
        }
    }
}

/// Checks and plans the whole candidate set against `basis`.
fn plan_all<'a>(
    candidates: &'a [&'a Peer],
    rules: &Rules,
    local: &plan::Local,
    basis: &Basis,
    ifindex: u32,
) -> Planned<'a> {
    let (accepted, rejected) = validate(candidates.iter().copied(), rules);
    let desired = plan::desired(accepted.iter().copied(), local);
    for (peer, reason) in &desired.skipped {
        tracing::debug!(peer = %peer, %reason, "peer skipped");
    }
    let plan = match basis {
        Basis::Applied(applied) => delta::diff(&desired, applied),
        Basis::Dumped(actual) => plan::diff(&desired, actual, ifindex),
    };
    Planned {
        plan,
        peers: desired.peers,
        how: How::Whole {
            candidates,
            accepted,
            rejected,
            desired,
        },
    }
}

/// Plans only the peers an isolated change touched ([`Verdicts::update`]), against
/// what the last sync applied (which held `peers` peers and `sources`).
fn plan_changed<'a>(
    changed: crate::peers::verdicts::Changed<'a>,
    verdicts: Verdicts,
    peers: usize,
    mut sources: BTreeMap<IpAddr, u32>,
    local: &plan::Local,
    applied: &Applied,
) -> Planned<'a> {
    let gone = plan::desired(changed.removed.iter().copied(), local);
    let came = plan::desired(changed.added.iter().copied(), local);
    for p in &changed.removed {
        count_sources(&mut sources, p, false);
    }
    for p in &changed.added {
        count_sources(&mut sources, p, true);
    }
    Planned {
        plan: delta::diff_peers(&gone, &came, applied),
        peers: peers + came.peers - gone.peers,
        how: How::Changed { verdicts, sources },
    }
}

/// A node's datapath, set up. Dropping it leaves everything in the kernel.
pub struct Datapath {
    cfg: DatapathConfig,
    handle: rtnetlink::Handle,
    mac: Mac,
    spec: VxlanSpec,
    /// The device's addresses: the network address of each pod CIDR (/32, /128).
    vtep_addrs: Vec<IpNet>,
    state: Mutex<DeviceState>,
    /// Opened in the node's netns by `setup`: one per kind of entry (routes, neighbours,
    /// FDB), so the three dumps run at once on blocking threads.
    dumps: Arc<[Mutex<DumpSocket>; 3]>,
    /// Serialises syncs: each one plans from its own dump or from `known`.
    sync_lock: tokio::sync::Mutex<()>,
    /// `None` until a sync succeeded whole, and after any failure: the next sync dumps.
    known: Mutex<Option<Known>>,
    fdb_intent: FdbIntent,
    /// The VXLAN source filter's sets, updated after each sync's entries.
    filter: FilterUpdates,
}

/// The VTEP addresses for `pod_cidrs`: each one's network address, as a host route.
fn vtep_addrs(pod_cidrs: &[IpNet]) -> Result<Vec<IpNet>, Error> {
    if pod_cidrs.is_empty() {
        return Err(Error::Config("the node has no pod CIDR".into()));
    }
    Ok(pod_cidrs
        .iter()
        .map(|c| {
            let ip = plan::vtep_ip(c);
            IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix is valid")
        })
        .collect())
}

fn check(cfg: &DatapathConfig) -> Result<(), Error> {
    if cfg.vni == 0 || cfg.vni > 0x00ff_ffff {
        return Err(Error::Config(format!(
            "VNI {} is outside 1..=16777215",
            cfg.vni
        )));
    }
    if !(576..=65535).contains(&cfg.mtu) {
        return Err(Error::Config(format!(
            "MTU {} is outside 576..=65535",
            cfg.mtu
        )));
    }
    for name in [&cfg.vxlan_device, &cfg.bridge] {
        weft_common::netconf::check_ifname(name).map_err(Error::Config)?;
    }
    if cfg.vxlan_device == cfg.bridge {
        return Err(Error::Config(format!(
            "bridge and vxlanDevice are both {:?}",
            cfg.bridge
        )));
    }
    Ok(())
}

/// The validation rules for peers, from the config and what the kernel holds.
fn rules(
    cfg: &DatapathConfig,
    underlay_net: Option<IpNet>,
    mac: Option<Mac>,
    foreign: Vec<IpNet>,
) -> Rules {
    Rules {
        cluster_cidrs: cfg.cluster_cidrs.clone(),
        subnet_size_v4: cfg.node_subnet_size_v4,
        subnet_size_v6: cfg.node_subnet_size_v6,
        service_cidrs: cfg.service_cidrs.clone(),
        underlay_net,
        underlay_ip: Some(cfg.underlay_ip),
        own_pod_cidrs: cfg.pod_cidrs.clone(),
        own_mac: mac,
        vni: cfg.vni,
        foreign_routes: foreign,
    }
}

/// The kernel's own route protocol (connected routes of an interface's addresses).
const RTPROT_KERNEL: u8 = 2;

/// Destinations of the main table's routes that are not weft's, except the kernel's
/// routes for weft's own addresses inside the own pod CIDRs (the bridge's gateways, and
/// the prefix route IPv6 adds for the VTEP's /128).
fn foreign_routes(routes: &[plan::ActualRoute], own_pod_cidrs: &[IpNet]) -> Vec<IpNet> {
    routes
        .iter()
        .filter(|r| r.protocol != plan::ROUTE_PROTOCOL && r.table == plan::MAIN_TABLE)
        .filter(|r| {
            !(r.protocol == RTPROT_KERNEL && own_pod_cidrs.iter().any(|c| c.contains(&r.dst)))
        })
        .map(|r| r.dst)
        .collect()
}

/// Where the net sysctls are: `WEFT_PROC_SYS_NET`, else /proc/sys/net. Container
/// runtimes mount /proc/sys read-only, so the DaemonSet mounts the host's /proc/sys/net
/// elsewhere and names it here (net sysctls resolve to the opener's netns either way).
fn proc_sys_net() -> std::path::PathBuf {
    std::env::var_os("WEFT_PROC_SYS_NET")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/proc/sys/net".into())
}

/// Writes "1" to a net sysctl (`rel` below /proc/sys/net) unless it already holds it.
/// The file belongs to the calling thread's network namespace.
pub(crate) fn sysctl_on(rel: &str) -> Result<(), Error> {
    let path = proc_sys_net().join(rel);
    let path = path.as_path();
    let err = |source| Error::Sysctl {
        path: path.into(),
        source,
    };
    if std::fs::read_to_string(path).map_err(err)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1\n").map_err(err)
}

/// Waits (at most 5 s) until the bridge's IPv6 link-local address has passed duplicate
/// address detection. Until then the kernel sends no neighbour solicitation from the
/// bridge, so IPv6 packets forwarded to a pod wait there: on a new bridge, for up to two
/// seconds. Pods only come once the subnet file exists, which is written after this.
async fn wait_for_dad(handle: &rtnetlink::Handle, bridge: &str, index: u32) -> Result<(), Error> {
    let started = std::time::Instant::now();
    loop {
        let tentative = weft_common::bridge::tentative_addresses(handle, index).await?;
        if tentative.is_empty() {
            return Ok(());
        }
        if started.elapsed() > std::time::Duration::from_secs(5) {
            tracing::warn!(%bridge, ?tentative, "addresses still tentative after 5 s; going on");
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The underlay address with its prefix, for direct routing's same-subnet test.
async fn underlay_net(
    handle: &rtnetlink::Handle,
    cfg: &DatapathConfig,
) -> Result<Option<IpNet>, Error> {
    let addrs = addresses(handle, cfg.underlay_ifindex).await?;
    Ok(addrs
        .into_iter()
        .find(|(ip, _)| *ip == cfg.underlay_ip)
        .and_then(|(ip, len)| IpNet::new(ip, len).ok()))
}

impl Datapath {
    /// Makes the node ready: VXLAN device (kept, adjusted or recreated), its VTEP address,
    /// the bridge with gateways and MTU, IP forwarding, the firewall table, and last the
    /// subnet file, so the CNI plugin only sees it once the node can carry pod traffic.
    /// Idempotent; must run in the node's network namespace (the handle's and the
    /// calling thread's, for sysctls and `nft`).
    pub async fn setup(cfg: DatapathConfig, handle: rtnetlink::Handle) -> Result<Datapath, Error> {
        check(&cfg)?;
        let vtep_addrs = vtep_addrs(&cfg.pod_cidrs)?;
        let underlay_net = underlay_net(&handle, &cfg).await?;
        let mut dumps = [
            DumpSocket::open()?,
            DumpSocket::open()?,
            DumpSocket::open()?,
        ];
        // The own Node's pod CIDRs are input too: checked before anything is set up.
        let foreign = foreign_routes(&dumps[0].routes()?, &cfg.pod_cidrs);
        let rules = rules(&cfg, underlay_net, None, foreign);
        validate::check_own_pod_cidrs(&cfg.pod_cidrs, &rules)
            .map_err(|e| Error::Config(format!("this node's spec.podCIDRs: {e}")))?;
        let spec = VxlanSpec {
            vni: cfg.vni,
            port: cfg.port,
            local: cfg.underlay_ip,
            underlay_ifindex: cfg.underlay_ifindex,
        };
        let dev = &cfg.vxlan_device;
        let (ifindex, mac) = device::ensure(&handle, dev, &spec, cfg.mtu, cfg.mac).await?;
        device::ensure_only_addresses(&handle, dev, ifindex, &vtep_addrs).await?;

        let gateways: Vec<(IpAddr, IpNet)> =
            cfg.pod_cidrs.iter().map(|c| (gateway_for(c), *c)).collect();
        let bridge_index = weft_common::bridge::ensure_bridge_exact(
            &handle,
            &cfg.bridge,
            cfg.mtu,
            &gateways,
            &cfg.cluster_cidrs,
        )
        .await?;
        if cfg.pod_cidrs.iter().any(|c| matches!(c, IpNet::V6(_))) {
            wait_for_dad(&handle, &cfg.bridge, bridge_index).await?;
        }

        sysctl_on("ipv4/ip_forward")?;
        if cfg.pod_cidrs.iter().any(|c| matches!(c, IpNet::V6(_))) {
            // Only with an IPv6 pod network: forwarding on makes the host ignore router
            // advertisements on its own interfaces.
            sysctl_on("ipv6/conf/all/forwarding")?;
        }

        let filter = FilterUpdates::default();
        crate::firewall::apply(&TableSpec {
            cluster_cidrs: cfg.cluster_cidrs.clone(),
            masquerade: cfg.masquerade,
            vxlan_port: cfg.port,
            bridge: cfg.bridge.clone(),
        })?;

        NodeSubnet::new(
            cfg.pod_cidrs.clone(),
            cfg.cluster_cidrs.clone(),
            cfg.mtu,
            &cfg.bridge,
        )
        .write_atomic(&cfg.subnet_file)?;
        tracing::info!(device = %dev, %mac, ifindex, vtep = ?vtep_addrs, "datapath ready");
        Ok(Datapath {
            cfg,
            handle,
            mac,
            spec,
            vtep_addrs,
            state: Mutex::new(DeviceState {
                ifindex,
                underlay_net,
            }),
            dumps: Arc::new(dumps.map(Mutex::new)),
            sync_lock: tokio::sync::Mutex::new(()),
            known: Mutex::new(None),
            fdb_intent: FdbIntent::default(),
            filter,
        })
    }

    /// The VXLAN device's MAC, to publish in the Node's annotation.
    pub fn vtep_mac(&self) -> Mac {
        self.mac
    }

    /// ifindex of the VXLAN device.
    pub fn ifindex(&self) -> u32 {
        self.state.lock().expect("state lock").ifindex
    }

    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// The FDB entries this datapath means to hold, for the kernel watch.
    pub fn fdb_intent(&self) -> FdbIntent {
        self.fdb_intent.clone()
    }

    /// Brings the kernel's per-peer entries in line with `peers` (the caller leaves this
    /// node out): one dump, a pure diff, only the difference sent. Idempotent. Recreates
    /// the VXLAN device first if it was deleted or changed behind our back. Every entry is
    /// tried; the error names the first failure and counts the rest.
    pub async fn sync(&self, peers: &[Peer]) -> Result<SyncStats, Error> {
        let peers: Vec<&Peer> = peers.iter().collect();
        self.sync_kind(&peers, SyncKind::Full).await
    }

    /// [`Datapath::sync`], diffing against what the last sync applied when `kind` is
    /// [`SyncKind::Incremental`] and that is known. Peers are checked and planned as a
    /// whole set: whether one is accepted can depend on the others (duplicate claims go
    /// to the older Node).
    /// Returns once the VXLAN source filter is updated too.
    pub async fn sync_kind(&self, peers: &[&Peer], kind: SyncKind) -> Result<SyncStats, Error> {
        let mut stats = self.sync_changes(peers, None, kind).await?;
        if let Some(outcome) = self.settle_filter().await {
            stats.drops = outcome?.drops.or(stats.drops);
        }
        Ok(stats)
    }

    /// Waits for the VXLAN source filter's update that the last sync started, if it is
    /// still running, and returns its outcome.
    pub async fn settle_filter(&self) -> Option<Result<filter::FilterOutcome, Error>> {
        self.filter.settle().await
    }

    /// [`Datapath::sync_kind`]; an incremental sync that is told which candidates changed
    /// since the last sync (`changes`, each node at most once) checks and plans only
    /// those when no other candidate shares a claimed value with them ([`Verdicts`]),
    /// and the whole set otherwise. `peers` is every candidate either way.
    ///
    /// Returns once the entries are written: the VXLAN source filter's update runs on
    /// ([`Datapath::settle_filter`]). The next sync waits for it, after its own entries,
    /// and fails if it did (the filter's drop counters, too, come with the next sync).
    pub async fn sync_changes(
        &self,
        peers: &[&Peer],
        changes: Option<&[PeerChange<'_>]>,
        kind: SyncKind,
    ) -> Result<SyncStats, Error> {
        let _serial = self.sync_lock.lock().await;
        let ifindex = self.check_device().await?;
        let started = std::time::Instant::now();
        // Taken out: whatever fails below leaves nothing known, so the next sync dumps.
        let known = self
            .known
            .lock()
            .expect("known lock")
            .take()
            .filter(|k| kind == SyncKind::Incremental && k.ifindex == ifindex);
        let (basis, foreign, last) = match known {
            Some(k) => {
                let last = (k.verdicts, k.peers, k.sources);
                (Basis::Applied(k.entries), k.foreign_routes, Some(last))
            }
            None => {
                let actual = self.dump_entries(ifindex).await?;
                let foreign = foreign_routes(&actual.routes, &self.cfg.pod_cidrs);
                (Basis::Dumped(actual), foreign, None)
            }
        };
        let dumped = started.elapsed();
        let underlay_net = self.state.lock().expect("state lock").underlay_net;
        let rules = rules(&self.cfg, underlay_net, Some(self.mac), foreign);
        let local = plan::Local {
            device: ifindex,
            underlay: self.cfg.underlay_ifindex,
            underlay_net,
            direct_routing: self.cfg.direct_routing,
            own_pod_cidrs: self.cfg.pod_cidrs.clone(),
        };
        // The changed peers alone when that is known and enough, else the whole set.
        let partial = match (&basis, last, changes) {
            (Basis::Applied(applied), Some((mut verdicts, count, sources)), Some(changes)) => {
                verdicts
                    .update(changes, &rules)
                    .map(|changed| plan_changed(changed, verdicts, count, sources, &local, applied))
            }
            _ => None,
        };
        let planned = match partial {
            Some(p) => p,
            None => plan_all(peers, &rules, &local, &basis, ifindex),
        };
        let plan = &planned.plan;
        let full = matches!(basis, Basis::Dumped(_));
        let whole = matches!(planned.how, How::Whole { .. });
        tracing::debug!(
            full,
            whole,
            ?dumped,
            planned = ?started.elapsed(),
            changes = plan.len(),
            "sync planned"
        );
        let mut stats = SyncStats {
            full,
            whole,
            peers: planned.peers,
            added: plan.added(),
            removed: plan.removed(),
            updated: plan.updated(),
            rejected: match &planned.how {
                How::Whole { rejected, .. } => rejected.clone(),
                How::Changed { verdicts, .. } => verdicts.rejected(),
            },
            ..Default::default()
        };
        match (&basis, &planned.how) {
            (Basis::Dumped(_), How::Whole { desired, .. }) => self.fdb_intent.replace(desired),
            _ => self.fdb_intent.update(plan),
        }
        if !plan.is_empty() {
            match entries::apply(&self.handle, ifindex, plan).await {
                Ok(()) => {}
                // Entries the kernel refused are the refused peers' problem: the others
                // are in place, so the sync reports them and goes on.
                Err(Error::Entries { failed, first, .. }) => {
                    stats.failed = failed;
                    stats.first_failure = Some(first.to_string());
                }
                Err(e) => return Err(e),
            }
            tracing::info!(
                full,
                peers = stats.peers,
                added = stats.added,
                removed = stats.removed,
                updated = stats.updated,
                failed = stats.failed,
                "datapath synced"
            );
        }
        let applied_at = started.elapsed();
        // What the next sync starts from, made only now that the entries are written.
        let (verdicts, sources, whole_desired) = match planned.how {
            How::Whole {
                candidates,
                accepted,
                rejected,
                desired,
            } => {
                let mut sources = BTreeMap::new();
                for p in &accepted {
                    count_sources(&mut sources, p, true);
                }
                let verdicts = Verdicts::of(candidates, &rules, &rejected);
                (verdicts, sources, Some(desired))
            }
            How::Changed { verdicts, sources } => (verdicts, sources, None),
        };
        // The filter forgets removed peers only after their entries went; new peers are
        // accepted a few ms after their routes are in, as their own routes to this node
        // take as long.
        let addresses = sources.keys().copied().collect();
        if stats.failed == 0 {
            let entries = match (basis, &whole_desired) {
                (Basis::Dumped(_), Some(desired)) => Applied::from_desired(desired),
                (Basis::Dumped(_), None) => unreachable!("a full sync plans the whole set"),
                (Basis::Applied(mut entries), _) => {
                    entries.record(plan);
                    entries
                }
            };
            *self.known.lock().expect("known lock") = Some(Known {
                ifindex,
                entries,
                foreign_routes: rules.foreign_routes,
                verdicts,
                peers: planned.peers,
                sources,
            });
        }
        if let Some(previous) = self.filter.start(addresses).await {
            stats.drops = previous?.drops;
        }
        tracing::debug!(full, applied = ?applied_at, total = ?started.elapsed(), "sync phases");
        Ok(stats)
    }

    /// Dumps the kernel's entries: the three dumps at once, each on a blocking thread
    /// (a few ms each at 5000 peers, nearly all of it spent in the kernel).
    async fn dump_entries(&self, ifindex: u32) -> Result<plan::Actual, Error> {
        fn on_thread<T: Send + 'static>(
            dumps: &Arc<[Mutex<DumpSocket>; 3]>,
            i: usize,
            f: impl FnOnce(&mut DumpSocket) -> Result<T, Error> + Send + 'static,
        ) -> impl std::future::Future<Output = Result<T, Error>> {
            let dumps = Arc::clone(dumps);
            let task = tokio::task::spawn_blocking(move || {
                f(&mut dumps[i].lock().expect("dump socket lock"))
            });
            async move {
                task.await.map_err(|e| Error::Dump {
                    what: "dump thread".into(),
                    source: std::io::Error::other(e),
                })?
            }
        }
        let (routes, neighs, fdb) = futures::try_join!(
            on_thread(&self.dumps, 0, DumpSocket::routes),
            on_thread(&self.dumps, 1, move |s| s.neighbours(ifindex)),
            on_thread(&self.dumps, 2, move |s| s.fdb(ifindex)),
        )?;
        Ok(plan::Actual {
            neighs,
            fdb,
            routes,
        })
    }

    /// The device's ifindex, recreating the device (and its address) when it is gone or
    /// no longer matches. One link lookup when all is well.
    async fn check_device(&self) -> Result<u32, Error> {
        let dev = &self.cfg.vxlan_device;
        let known = self.ifindex();
        if let Some(link) = link_by_name(&self.handle, dev).await? {
            let up = link
                .header
                .flags
                .contains(netlink_packet_route::link::LinkFlags::Up);
            let same_mac = weft_common::bridge::link_mac(&link) == Some(self.mac.0);
            if link.header.index == known && up && same_mac {
                return Ok(known);
            }
        }
        tracing::warn!(device = %dev, "VXLAN device missing or changed; recreating");
        let (ifindex, _) =
            device::ensure(&self.handle, dev, &self.spec, self.cfg.mtu, Some(self.mac)).await?;
        device::ensure_only_addresses(&self.handle, dev, ifindex, &self.vtep_addrs).await?;
        self.state.lock().expect("state lock").ifindex = ifindex;
        Ok(ifindex)
    }
}

/// Removes everything weft created in this network namespace: its routes (by protocol),
/// the VXLAN device (with its neighbours and FDB entries), the bridge, the firewall and
/// NetworkPolicy tables and the subnet file. What is already gone is skipped. Must run in that namespace (the
/// handle's and the calling thread's).
pub async fn cleanup(
    handle: &rtnetlink::Handle,
    conf: &weft_common::netconf::NetConf,
    subnet_file: &Path,
) -> Result<(), Error> {
    let (vxlan_device, bridge) = (conf.vxlan_device.as_str(), conf.bridge.as_str());
    let actual = DumpSocket::open()?.dump(0)?;
    let routes = plan::diff(&plan::Desired::default(), &actual, 0);
    let only_routes = plan::Plan {
        del_routes: routes.del_routes,
        ..Default::default()
    };
    entries::apply(handle, 0, &only_routes).await?;
    for name in [vxlan_device, bridge] {
        if let Some(link) = link_by_name(handle, name).await? {
            let owned = if name == vxlan_device {
                device::ownership(&link, conf.vni, conf.port)
            } else {
                let addrs = addresses(handle, link.header.index).await?;
                weft_common::bridge::bridge_ownership(&link, &addrs, &conf.cluster_cidrs)
            };
            if let Err(why) = owned {
                tracing::warn!(device = name, %why, "not weft's; left alone");
                continue;
            }
            match handle.link().del(link.header.index).execute().await {
                Ok(()) => {}
                Err(e) if error::errno(&e) == Some(libc::ENODEV) => {}
                Err(e) => return Err(Error::netlink(format!("delete {name}"), e)),
            }
        }
    }
    crate::firewall::remove()?;
    crate::policy::table::remove()?;
    match std::fs::remove_file(subnet_file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Common(weft_common::Error::SubnetFileIo {
                path: subnet_file.to_owned(),
                source,
            }))
        }
    }
    Ok(())
}
