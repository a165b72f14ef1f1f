//! ADD: an address from the node CIDR, a veth pair to the node bridge, and the result.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use weft_cni::host_veth;
use weft_common::netns::Netns;
use weft_common::subnet_file::NodeSubnet;

use crate::ipam::{self, AllocError, Owner, Store};
use crate::link::{self, VethSpec};
use crate::spec::config::parse_ip;
use crate::spec::error::{self as code, CniError};
use crate::spec::result::{CniResult, Interface, IpConfig, Route};
use crate::spec::{Env, NetConf};

/// With NetworkPolicy on, a pod gets its network only while the agent enforces it
/// (see [`weft_common::policy_gate`]); the runtime retries the sandbox until then.
fn policy_gate(subnet_file: &Path) -> Result<(), CniError> {
    use weft_common::policy_gate::{lock_path, probe, Gate};
    let lock = lock_path(subnet_file);
    match probe(&lock) {
        Ok(Gate::PolicyOff | Gate::Enforced) => Ok(()),
        Ok(Gate::NotEnforced) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "NetworkPolicy is on but weft-agent does not enforce it on this node yet (not running, or its \
                 first policy table is not loaded; {} is not held): the pod gets its network once it does",
                lock.display()
            ),
        )),
        Err(e) => Err(CniError::io(format!("the NetworkPolicy lock {}", lock.display()), e)),
    }
}

pub fn run(env: &Env, conf: &NetConf) -> Result<serde_json::Value, CniError> {
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "is required for ADD"))?;
    let subnet = NodeSubnet::read(&conf.subnet_file)?;
    policy_gate(&conf.subnet_file)?;
    let netns = Netns::open(netns_path)?;
    let owner = Owner::new(&env.container_id, &env.ifname);
    let requested = requested_ips(env, conf)?;

    let ips = {
        let store = Store::lock(&conf.ipam_dir).map_err(|e| CniError::io("IPAM", e))?;
        store
            .allocate(&ipam::pools(&subnet), &requested, &owner)
            .map_err(alloc_error)?
    };
    tracing::debug!(ips = ?ips, "reserved");

    let host_name = host_veth::name(&env.container_id, &env.ifname);
    let mark = host_veth::ownership_mark(&env.container_id, &env.ifname);
    let result = crate::runtime(|| async {
        let host = link::connect()?;
        let pod = link::connect_in(&netns)?;
        let mut created = false;
        let out = setup(
            &host,
            &pod,
            &subnet,
            &netns,
            &host_name,
            &mark,
            &env.ifname,
            &ips,
            &mut created,
        )
        .await;
        if out.is_err() && created {
            // Rollback: the pod end goes with the host end. Only a pair this call made.
            if let Err(e) = link::delete_link(&host, &host_name).await {
                tracing::warn!(veth = %host_name, error = %e, "rollback: cannot delete host veth");
            }
        }
        out
    });
    let mut result = match result {
        Ok(r) => r,
        Err(e) => {
            rollback_ips(&conf.ipam_dir, &ips, &owner);
            return Err(e);
        }
    };
    result.dns = conf.dns.clone();
    result.interfaces[2].sandbox = Some(netns_path.display().to_string());
    tracing::info!(ips = ?ips, veth = %host_name, "added");
    Ok(result.encode(conf.version))
}

fn rollback_ips(dir: &Path, ips: &[IpAddr], owner: &Owner) {
    match Store::lock(dir) {
        Ok(store) => {
            for ip in ips {
                if let Err(e) = store.release_ip(*ip, owner) {
                    tracing::warn!(%ip, error = %e, "rollback: cannot release IP");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "rollback: cannot lock the IPAM store"),
    }
}

/// Requested addresses: `CNI_ARGS` `IP=` (comma-separated) plus the config's `ips`.
fn requested_ips(env: &Env, conf: &NetConf) -> Result<Vec<IpAddr>, CniError> {
    let mut out = conf.requested_ips.clone();
    if let Some(v) = env.arg("IP") {
        for s in v.split(',').filter(|s| !s.is_empty()) {
            out.push(parse_ip("CNI_ARGS IP", s).map_err(|_| {
                CniError::invalid_env("CNI_ARGS", format!("IP={s} is not an IP address"))
            })?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn alloc_error(e: AllocError) -> CniError {
    match e {
        AllocError::Exhausted(_) => CniError::new(code::POOL_EXHAUSTED, e.to_string()),
        AllocError::Requested(..) => CniError::new(code::IP_UNAVAILABLE, e.to_string()),
        AllocError::Store(s) => CniError::io("IPAM", s),
    }
}

#[allow(clippy::too_many_arguments)]
async fn setup(
    host: &rtnetlink::Handle,
    pod: &rtnetlink::Handle,
    subnet: &NodeSubnet,
    netns: &Netns,
    host_name: &str,
    mark: &str,
    ifname: &str,
    ips: &[IpAddr],
    created: &mut bool,
) -> Result<CniResult, CniError> {
    let (bridge_index, bridge_mac) = link::bridge(host, subnet).await?;
    let host_mac = link::random_mac();
    let spec = VethSpec {
        host_name,
        mark,
        host_mac,
        pod_ifname: ifname,
        mtu: subnet.mtu,
        bridge_index,
        netns,
    };
    link::create_veth(host, pod, &spec, created).await?;
    let (pod_index, pod_mac, _) = link::pod_link(pod, ifname).await?.ok_or_else(|| {
        CniError::netlink(format!(
            "{ifname} vanished from the pod netns right after it was created"
        ))
    })?;
    let mut result = CniResult {
        interfaces: vec![
            Interface {
                name: subnet.bridge.clone(),
                mac: link::fmt_mac(bridge_mac),
                mtu: Some(subnet.mtu),
                sandbox: None,
            },
            Interface {
                name: host_name.to_owned(),
                mac: link::fmt_mac(host_mac),
                mtu: Some(subnet.mtu),
                sandbox: None,
            },
            Interface {
                name: ifname.to_owned(),
                mac: link::fmt_mac(pod_mac),
                mtu: Some(subnet.mtu),
                sandbox: None,
            },
        ],
        ..Default::default()
    };
    for ip in ips {
        let i = subnet
            .node_cidrs
            .iter()
            .position(|n| n.contains(ip))
            .ok_or_else(|| CniError::new(code::INTERNAL, format!("{ip} is in no node CIDR")))?;
        let addr = IpNet::new(*ip, subnet.node_cidrs[i].prefix_len())
            .map_err(|e| CniError::new(code::INTERNAL, e.to_string()))?;
        result.ips.push(IpConfig {
            address: addr,
            gateway: Some(subnet.gateways[i]),
            interface: Some(2),
        });
    }
    let gateways: Vec<IpAddr> = result.ips.iter().filter_map(|ip| ip.gateway).collect();
    // Link up, addresses, then routes: all sent before any answer is read. The kernel
    // handles a socket's requests in order, so each finds what the previous one made.
    let (up, addrs, routes) = futures::join!(
        link::pod_up(pod, pod_index),
        futures::future::join_all(
            result
                .ips
                .iter()
                .map(|ip| link::add_address(pod, pod_index, ip.address))
        ),
        futures::future::join_all(
            gateways
                .iter()
                .map(|gw| link::add_default_route(pod, pod_index, *gw))
        ),
    );
    up?;
    addrs.into_iter().collect::<Result<Vec<()>, _>>()?;
    for (gw, added) in gateways.iter().zip(routes) {
        if !added? {
            tracing::info!(%gw, "the pod already has a default route; not adding one");
            continue;
        }
        let dst = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        result.routes.push(Route {
            dst: dst
                .parse()
                .map_err(|_| CniError::new(code::INTERNAL, "default route"))?,
            gw: Some(*gw),
        });
    }
    Ok(result)
}
