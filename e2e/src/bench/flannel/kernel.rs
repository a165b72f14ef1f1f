//! The kernel of one netns node as the benchmark sees it, through netlink only.
//!
//! Two threads live inside the node's netns (a netlink socket belongs to the netns of the
//! thread that opens it; no tokio worker changes namespace):
//! * the command thread holds the agent crate's [`DumpSocket`] (counts: the VXLAN device's
//!   routes, neighbours and FDB entries) and an rtnetlink connection (device lookup, the
//!   hand deletion of a route);
//! * the listener thread subscribes to IPv4 route notifications and timestamps each one
//!   under the cluster CIDR as it arrives, on its own, so a dump running meanwhile never
//!   delays a timestamp.
//!
//! Both threads end when the [`NodeKernel`] is dropped.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use futures::StreamExt;
use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{MulticastGroup, RouteMessageBuilder};
use tokio::sync::{mpsc, oneshot};
use weft_agent::datapath::dump::DumpSocket;
use weft_common::annotations::Mac;
use weft_common::netns::Netns;

/// Receive buffer of the notification socket: a sync of thousands of routes must not
/// overrun it while a single-change measurement waits for its one notification.
const RX_BUFFER: usize = 8 << 20;

/// An agent's entries on its VXLAN device, as dumped.
#[derive(Clone, Debug, Default)]
pub struct Entries {
    /// Routes through the device under the cluster CIDR (main table).
    pub routes: Vec<IpNet>,
    /// Permanent neighbours with a MAC.
    pub neighs: Vec<(IpAddr, Mac)>,
    /// FDB entries with a remote (`dst`).
    pub fdb: Vec<(Mac, IpAddr)>,
}

impl Entries {
    /// Routes, neighbours and FDB entries all number `n`.
    pub fn complete(&self, n: usize) -> bool {
        self.routes.len() == n && self.neighs.len() == n && self.fdb.len() == n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    New,
    Del,
}

/// A route notification: when it arrived, what happened, to which destination.
#[derive(Clone, Copy, Debug)]
pub struct RouteEvent {
    pub at: Instant,
    pub change: Change,
    pub dst: Ipv4Net,
}

enum Cmd {
    Snapshot {
        device: String,
        reply: oneshot::Sender<Result<Entries>>,
    },
    DeleteRoute {
        dst: Ipv4Net,
        reply: oneshot::Sender<Result<Instant>>,
    },
}

pub struct NodeKernel {
    netns: String,
    cmds: Option<std_mpsc::Sender<Cmd>>,
    events: mpsc::UnboundedReceiver<RouteEvent>,
    stop_listener: Option<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// Spawns a thread inside `netns` running `body` on a current-thread runtime; `body`
/// reports its set-up through the returned channel before it settles into its loop.
fn spawn_in_netns<F, Fut>(netns: &str, role: &str, body: F) -> Result<JoinHandle<()>>
where
    F: FnOnce(std_mpsc::Sender<Result<()>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let ns = Netns::open(format!("/var/run/netns/{netns}").as_ref())?;
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("{role}-{netns}"))
        .spawn(move || {
            let rt = ns.enter().map_err(anyhow::Error::from).and_then(|()| {
                Ok(tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?)
            });
            match rt {
                Ok(rt) => rt.block_on(body(ready_tx)),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("{role} thread in {netns} died during set-up"))?
        .with_context(|| format!("{role} thread in {netns}"))?;
    Ok(thread)
}

impl NodeKernel {
    /// Opens the sockets inside `netns`; route notifications outside `cluster` are ignored.
    pub fn open(netns: &str, cluster: Ipv4Net) -> Result<Self> {
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let listener = spawn_in_netns(netns, "routes", move |ready| {
            listen(cluster, ev_tx, stop_rx, ready)
        })?;
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let mut kernel = NodeKernel {
            netns: netns.to_owned(),
            cmds: None,
            events,
            stop_listener: Some(stop_tx),
            threads: vec![listener],
        };
        kernel
            .threads
            .push(spawn_in_netns(netns, "dump", move |ready| {
                serve(cluster, cmd_rx, ready)
            })?);
        kernel.cmds = Some(cmd_tx);
        Ok(kernel)
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        self.cmds
            .as_ref()
            .and_then(|c| c.send(cmd).ok())
            .with_context(|| format!("the dump thread in {} is gone", self.netns))
    }

    /// The entries on `device` now (none when the device does not exist).
    pub async fn snapshot(&self, device: &str) -> Result<Entries> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Snapshot {
            device: device.to_owned(),
            reply,
        })?;
        rx.await.context("the dump thread dropped a request")?
    }

    /// Deletes the main table's route to `dst`, as `ip route del` would; returns when the
    /// request left for the kernel (taken on the thread that sends it).
    pub async fn delete_route(&self, dst: Ipv4Net) -> Result<Instant> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::DeleteRoute { dst, reply })?;
        rx.await.context("the dump thread dropped a request")?
    }

    /// Forgets the notifications received so far.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// The next notification, or `None` at `deadline`.
    pub async fn next_event(&mut self, deadline: Instant) -> Option<RouteEvent> {
        tokio::time::timeout_at(deadline.into(), self.events.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for NodeKernel {
    fn drop(&mut self) {
        self.cmds = None;
        if let Some(stop) = self.stop_listener.take() {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn listen(
    cluster: Ipv4Net,
    events: mpsc::UnboundedSender<RouteEvent>,
    mut stop: oneshot::Receiver<()>,
    ready: std_mpsc::Sender<Result<()>>,
) {
    let (mut conn, _handle, mut messages) =
        match rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Route]) {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(e.into()));
                return;
            }
        };
    if let Err(e) =
        rtnetlink::sys::AsyncSocket::socket_mut(conn.socket_mut()).set_rx_buf_sz(RX_BUFFER)
    {
        tracing::debug!(error = %e, "cannot enlarge the notification socket's buffer");
    }
    let conn = tokio::spawn(conn);
    let _ = ready.send(Ok(()));
    loop {
        tokio::select! {
            _ = &mut stop => break,
            msg = messages.next() => {
                let Some((msg, _)) = msg else { break };
                let at = Instant::now();
                if let Some((change, dst)) = route_change(&msg, cluster) {
                    if events.send(RouteEvent { at, change, dst }).is_err() {
                        break;
                    }
                }
            }
        }
    }
    conn.abort();
}

/// A new or deleted main-table route under `cluster`.
fn route_change(
    msg: &NetlinkMessage<RouteNetlinkMessage>,
    cluster: Ipv4Net,
) -> Option<(Change, Ipv4Net)> {
    let (change, route) = match &msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => (Change::New, r),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => (Change::Del, r),
        _ => return None,
    };
    route_dst(route, cluster).map(|dst| (change, dst))
}

fn route_dst(route: &RouteMessage, cluster: Ipv4Net) -> Option<Ipv4Net> {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let addr = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let dst = Ipv4Net::new(addr, route.header.destination_prefix_length).ok()?;
    cluster.contains(&dst).then_some(dst)
}

async fn serve(
    cluster: Ipv4Net,
    cmds: std_mpsc::Receiver<Cmd>,
    ready: std_mpsc::Sender<Result<()>>,
) {
    let opened = DumpSocket::open()
        .map_err(anyhow::Error::from)
        .and_then(|dump| Ok((dump, rtnetlink::new_connection()?)));
    let (mut dump, (conn, handle, _)) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let conn = tokio::spawn(conn);
    let _ = ready.send(Ok(()));
    // Blocking receive: this thread does nothing else; the connection task runs while a
    // request awaits it.
    while let Ok(cmd) = cmds.recv() {
        match cmd {
            Cmd::Snapshot { device, reply } => {
                let _ = reply.send(snapshot(&mut dump, &handle, &device, cluster).await);
            }
            Cmd::DeleteRoute { dst, reply } => {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(dst.addr(), dst.prefix_len())
                    .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
                    .protocol(RouteProtocol::Unspec)
                    .scope(RouteScope::NoWhere)
                    .build();
                let sent = Instant::now();
                let r = handle.route().del(msg).execute().await;
                let _ = reply.send(
                    r.map(|()| sent)
                        .with_context(|| format!("delete the route to {dst}")),
                );
            }
        }
    }
    conn.abort();
}

async fn snapshot(
    dump: &mut DumpSocket,
    handle: &rtnetlink::Handle,
    device: &str,
    cluster: Ipv4Net,
) -> Result<Entries> {
    let Some(link) = weft_common::bridge::link_by_name(handle, device).await? else {
        return Ok(Entries::default());
    };
    let ifindex = link.header.index;
    let cluster = IpNet::V4(cluster);
    let routes = dump
        .routes()?
        .into_iter()
        .filter(|r| {
            r.table == u32::from(RouteHeader::RT_TABLE_MAIN)
                && r.oif == Some(ifindex)
                && cluster.contains(&r.dst)
        })
        .map(|r| r.dst)
        .collect();
    let neighs = dump
        .neighbours(ifindex)?
        .into_iter()
        .filter(|n| n.ifindex == ifindex && n.permanent)
        .filter_map(|n| Some((n.ip, n.mac?)))
        .collect();
    let fdb = dump
        .fdb(ifindex)?
        .into_iter()
        .filter(|f| f.ifindex == ifindex)
        .filter_map(|f| Some((f.mac, f.dst?)))
        .collect();
    Ok(Entries {
        routes,
        neighs,
        fdb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(table: u8, dst: &str) -> NetlinkMessage<RouteNetlinkMessage> {
        let net: Ipv4Net = dst.parse().unwrap();
        let mut r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.addr(), net.prefix_len())
            .build();
        r.header.table = table;
        NetlinkMessage::from(RouteNetlinkMessage::DelRoute(r))
    }

    #[test]
    fn route_change_keeps_main_table_routes_under_the_cluster_cidr() {
        let cluster: Ipv4Net = "100.64.0.0/10".parse().unwrap();
        assert_eq!(
            route_change(&route(254, "100.64.3.0/24"), cluster),
            Some((Change::Del, "100.64.3.0/24".parse().unwrap()))
        );
        assert_eq!(route_change(&route(254, "10.0.0.0/24"), cluster), None);
        assert_eq!(route_change(&route(255, "100.64.3.0/24"), cluster), None);
    }
}
