//! `weft-e2e demo`: weft working on one machine, no cluster needed. Three netns "nodes"
//! with a real kube-apiserver, weft-controller and one weft-agent per node, two pods per
//! node; prints who reached whom and with which source address, then tears it all down
//! (or keeps it until Ctrl-C with `--keep`).

use std::net::IpAddr;
use std::time::Instant;

use anyhow::{bail, Result};

use weft_e2e::overlay::Overlay;

pub async fn run(nodes: usize, keep: bool) -> Result<()> {
    let t0 = Instant::now();
    println!("starting etcd, kube-apiserver, weft-controller and {nodes} weft-agents ...");
    let mut o = Overlay::start(nodes, 2).await?;
    println!(
        "up in {:.1}s: control plane at {}",
        t0.elapsed().as_secs_f64(),
        o.cp.server
    );
    for i in 0..nodes {
        println!(
            "  {} ({})  pod CIDR {}",
            Overlay::node_name(i),
            o.topo.nodes[i].ip,
            o.node_pod_cidr(i)?
        );
    }
    o.start_probes()?;
    println!("\n{:<28} {:<28} {:<20} result", "from", "to", "server saw");
    let mut failures = 0;
    for from in 0..o.pods.len() {
        for to in 0..o.pods.len() {
            if from == to {
                continue;
            }
            let label =
                |k: usize| format!("{} on {}", o.pods[k].ip, Overlay::node_name(o.pods[k].node));
            let (seen, ok) = match o.connect(from, to) {
                Ok(seen) => {
                    let ip: Option<IpAddr> =
                        seen.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok());
                    let ok = ip == Some(IpAddr::V4(o.pods[from].ip));
                    (seen, ok)
                }
                Err(e) => (format!("{e:#}"), false),
            };
            if !ok {
                failures += 1;
            }
            println!(
                "{:<28} {:<28} {:<20} {}",
                label(from),
                label(to),
                seen,
                if ok { "ok (no NAT)" } else { "FAIL" }
            );
        }
    }
    if keep {
        println!(
            "\nkubectl --kubeconfig {} get nodes   (Ctrl-C to tear down)",
            o.cp.kubeconfig.display()
        );
        for p in &o.pods {
            println!(
                "  ip netns exec {} ping {}",
                p.netns,
                o.pods[(p.node + 1) % nodes * 2].ip
            );
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    drop(o);
    if failures > 0 {
        bail!("{failures} connections failed");
    }
    println!("\nall pods reached each other by pod IP; torn down");
    Ok(())
}
