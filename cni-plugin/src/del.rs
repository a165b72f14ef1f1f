//! DEL: idempotent and best-effort. Releases the addresses of (container ID, ifname) and
//! deletes the host veth by its deterministic name, netns or not.

use weft_common::netns::Netns;

use crate::ipam::{Owner, Store};
use crate::link;
use crate::spec::error::CniError;
use crate::spec::{Env, NetConf};

pub fn run(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let owner = Owner::new(&env.container_id, &env.ifname);
    // Kernel first: if this fails, the IP stays recorded and a retry (or GC) finishes.
    let host_name = link::host_veth_name(&env.container_id, &env.ifname);
    let netns = env.netns.as_deref().and_then(|p| Netns::open(p).ok());
    let removed = crate::runtime(|| async {
        let host = link::connect()?;
        if link::delete_link(&host, &host_name).await? {
            return Ok(true);
        }
        // No host end: a pod interface left alone (should not happen) is removed too.
        if let Some(ns) = &netns {
            let pod = link::connect_in(ns)?;
            if let Some((_, _, l)) = link::pod_link(&pod, &env.ifname).await? {
                if weft_common::bridge::link_kind(&l)
                    == Some(&netlink_packet_route::link::InfoKind::Veth)
                {
                    return link::delete_link(&pod, &env.ifname).await;
                }
            }
        }
        Ok(false)
    })?;
    let released = if conf.ipam_dir.exists() {
        let store = Store::lock(&conf.ipam_dir).map_err(|e| CniError::io("IPAM", e))?;
        store
            .release_owner(&owner)
            .map_err(|e| CniError::io("IPAM", e))?
    } else {
        Vec::new()
    };
    tracing::info!(veth = %host_name, veth_removed = removed, released = ?released, "deleted");
    Ok(())
}
