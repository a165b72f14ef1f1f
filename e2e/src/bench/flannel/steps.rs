//! The measurements after a cold start, each against one agent on its node: a route
//! awaited, a hand-deleted route, a burst of MAC changes, stale entries after a restart.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ipnet::{IpNet, Ipv4Net};
use weft_e2e::fixtures::node_ip;

use super::agents::Running;
use super::cluster::{pod_cidr, vtep_mac, Cluster};
use super::kernel::Change;
use super::stats::{metric_sum, Sample};
use super::{ms, Side};
use crate::bench::controller::http_get;

/// Waits for the notification that the route to `dst` appeared (`Change::New`) or went
/// (`Change::Del`); every 250 ms a dump checks too, in case a notification was lost.
pub(super) async fn wait_route(
    side: &mut Side,
    dst: Ipv4Net,
    want: Change,
    since: Instant,
    timeout: Duration,
) -> Result<Sample> {
    let device = side.agent.kind.device();
    let deadline = since + timeout;
    let mut check_at = Instant::now() + Duration::from_millis(250);
    loop {
        match side.kernel.next_event(check_at.min(deadline)).await {
            Some(ev) if ev.dst == dst && ev.change == want => {
                return Ok(Sample::ok(ms(ev.at.saturating_duration_since(since))));
            }
            Some(_) => continue,
            None if Instant::now() >= deadline => return Ok(Sample::waited(ms(timeout))),
            None => {
                let present = side
                    .kernel
                    .snapshot(device)
                    .await?
                    .routes
                    .contains(&IpNet::V4(dst));
                if present == (want == Change::New) {
                    return Ok(Sample::ok(ms(since.elapsed())));
                }
                check_at = Instant::now() + Duration::from_millis(250);
            }
        }
    }
}

/// Deletes the route to `dst` and times its return, from the moment the deletion was
/// sent. (Not from the deletion's notification: the listener may read both notifications
/// in one wake-up when the agent repairs within its scheduling delay.)
pub(super) async fn repair(side: &mut Side, dst: Ipv4Net, timeout: Duration) -> Result<Sample> {
    side.kernel.drain();
    let sent = side.kernel.delete_route(dst).await?;
    wait_route(side, dst, Change::New, sent, timeout).await
}

/// The sum of weft-agent's `weft_agent_reconcile_total`.
fn reconciles(metrics: SocketAddr) -> Result<f64> {
    let (code, body) = http_get(metrics, "/metrics")?;
    if code != 200 {
        bail!("GET /metrics on {metrics}: HTTP {code}");
    }
    metric_sum(&body, "weft_agent_reconcile_total")
        .context("no weft_agent_reconcile_total on /metrics")
}

/// Changes every remote Node's VTEP MAC; the time until all N new neighbours and FDB
/// entries are in the kernel, how long the API writes took and, for weft, the syncs.
pub(super) async fn burst(
    side: &mut Side,
    agent: &Running,
    cluster: &mut Cluster,
    n: u32,
) -> Result<(Sample, Sample, Option<Sample>)> {
    const TIMEOUT: Duration = Duration::from_secs(120);
    let before = side.agent.metrics.map(reconciles).transpose()?;
    let t0 = Instant::now();
    cluster.next_macs(1..=n).await?;
    let api_ms = ms(t0.elapsed());
    let want: HashSet<_> = (1..=n).map(|k| vtep_mac(k, cluster.gen)).collect();
    let sample = loop {
        let e = side.kernel.snapshot(side.agent.kind.device()).await?;
        let neighs = e.neighs.iter().filter(|(_, m)| want.contains(m)).count();
        let fdb = e.fdb.iter().filter(|(m, _)| want.contains(m)).count();
        if neighs == n as usize && fdb == n as usize {
            break Sample::ok(ms(t0.elapsed()));
        }
        if t0.elapsed() > TIMEOUT {
            break Sample::waited(ms(TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let syncs = match (side.agent.metrics, before) {
        (Some(addr), Some(before)) => {
            // The counter settles once the last sync (and the one a kernel notification
            // of its own FDB changes asks for) is done.
            let mut last = reconciles(addr)?;
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = reconciles(addr)?;
                if now == last {
                    break;
                }
                last = now;
            }
            Some(Sample::ok(last - before))
        }
        _ => None,
    };
    eprintln!(
        "burst of {n} MAC changes: API writes took {api_ms:.0} ms; kernel done at {:.0} ms{}; {name} rss {:.1} MiB",
        sample.ms,
        syncs
            .map(|s| format!(" in {} syncs", s.ms))
            .unwrap_or_default(),
        agent.rss_mb().unwrap_or(f64::NAN),
        name = side.agent.kind.program(),
    );
    Ok((sample, Sample::ok(api_ms), syncs))
}

/// From the agent's restart to none of the deleted Nodes' entries left (and the others
/// all there), or the time waited.
pub(super) async fn stale(
    side: &mut Side,
    mut agent: Running,
    gone: &[u32],
    n: u32,
    timeout: Duration,
) -> Result<Sample> {
    let routes: HashSet<IpNet> = gone.iter().map(|&k| IpNet::V4(pod_cidr(k))).collect();
    let gateways: HashSet<IpAddr> = gone
        .iter()
        .map(|&k| IpAddr::V4(pod_cidr(k).network()))
        .collect();
    let vteps: HashSet<IpAddr> = gone.iter().map(|&k| IpAddr::V4(node_ip(k))).collect();
    let expected = (n as usize) - gone.len();
    let sample = loop {
        agent.check_alive()?;
        let e = side.kernel.snapshot(side.agent.kind.device()).await?;
        let left = e.routes.iter().filter(|r| routes.contains(r)).count()
            + e.neighs
                .iter()
                .filter(|(ip, _)| gateways.contains(ip))
                .count()
            + e.fdb.iter().filter(|(_, ip)| vteps.contains(ip)).count();
        if left == 0 && e.routes.len() == expected {
            break Sample::ok(ms(agent.started.elapsed()));
        }
        if agent.started.elapsed() > timeout {
            break Sample::waited(ms(timeout));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    agent.stop()?;
    Ok(sample)
}
