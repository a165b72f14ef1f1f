//! CHECK: the pod interface, its MAC, addresses and routes match `prevResult`, the host
//! veth is still there with this container's ownership mark, and the addresses are still
//! recorded for this container.

use weft_common::bridge::addresses;
use weft_common::netns::Netns;

use crate::ipam::{Owner, Store};
use crate::link::{self, HostVeth};
use crate::spec::error::{CniError, INVALID_CONFIG};
use crate::spec::result::CniResult;
use crate::spec::{Env, NetConf};

pub fn run(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "CHECK needs prevResult in the network config",
        )
    })?;
    let prev = CniResult::decode(prev)?;
    let netns_path = env
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS", "is required for CHECK"))?;
    let netns = Netns::open(netns_path)?;
    let (pod_pos, want) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            CniError::mismatch(format!(
                "prevResult has no interface {} in a sandbox",
                env.ifname
            ))
        })?;
    let want_ips: Vec<_> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == pod_pos))
        .map(|ip| ip.address)
        .collect();
    let host_name = weft_cni::host_veth::name(&env.container_id, &env.ifname);
    let mark = weft_cni::host_veth::ownership_mark(&env.container_id, &env.ifname);

    crate::runtime(|| async {
        let host = link::connect()?;
        match link::host_veth(&host, &host_name, &mark).await? {
            HostVeth::Mine(_) => {}
            HostVeth::Absent => {
                return Err(CniError::mismatch(format!(
                    "host veth {host_name} is missing"
                )))
            }
            HostVeth::Other(alias) => {
                return Err(CniError::mismatch(format!(
                    "host veth {host_name} is not this container's (alias {alias:?})"
                )))
            }
            HostVeth::Unmarked(_) => {
                return Err(CniError::mismatch(format!(
                    "host veth {host_name} carries no ownership mark"
                )))
            }
        }
        let pod = link::connect_in(&netns)?;
        let (index, mac, _) = link::pod_link(&pod, &env.ifname).await?.ok_or_else(|| {
            CniError::mismatch(format!(
                "interface {} is missing from netns {}",
                env.ifname,
                netns_path.display()
            ))
        })?;
        let mac = link::fmt_mac(mac);
        if !mac.eq_ignore_ascii_case(&want.mac) {
            return Err(CniError::mismatch(format!(
                "interface {} has MAC {mac}, prevResult says {}",
                env.ifname, want.mac
            )));
        }
        let have = addresses(&pod, index).await?;
        for a in &want_ips {
            if !have.contains(&(a.addr(), a.prefix_len())) {
                return Err(CniError::mismatch(format!(
                    "address {a} is missing from interface {}",
                    env.ifname
                )));
            }
        }
        let routes = link::pod_routes(&pod).await?;
        for r in &prev.routes {
            let found = routes
                .iter()
                .any(|(dst, gw, _)| *dst == r.dst && (r.gw.is_none() || *gw == r.gw));
            if !found {
                let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(CniError::mismatch(format!(
                    "route {}{via} is missing from the pod",
                    r.dst
                )));
            }
        }
        Ok(())
    })?;

    let owner = Owner::new(&env.container_id, &env.ifname);
    let store = Store::lock(&conf.ipam_dir).map_err(|e| CniError::io("IPAM", e))?;
    for a in &want_ips {
        let holder = store
            .owner_of(a.addr())
            .map_err(|e| CniError::io("IPAM", e))?;
        if holder.as_ref() != Some(&owner) {
            return Err(CniError::mismatch(format!(
                "IP {} is not recorded for container {} ifname {} (holder: {})",
                a.addr(),
                env.container_id,
                env.ifname,
                holder
                    .map(|o| format!("{}/{}", o.container_id, o.ifname))
                    .unwrap_or_else(|| "none".into())
            )));
        }
    }
    Ok(())
}
