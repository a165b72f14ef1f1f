//! DEL: idempotent and best-effort. Releases the addresses of (container ID, ifname) and
//! removes the container's veth pair, netns or not, and nothing that is not its own.
//!
//! Which links are the container's:
//! * the host end named [`host_veth::name`] when it carries the container's ownership
//!   mark (see [`host_veth`]); a link of that name with another mark is another
//!   container's (a name collision) and is left alone; one with no mark at all (an ADD
//!   killed between creating the veth and marking it) is deleted only when the IPAM
//!   store holds an address of this container, which ADD records before the veth;
//! * the pod end `CNI_IFNAME` inside `CNI_NETNS`, when the netns is given and still
//!   there: the netns is the container's, and deleting that end takes its peer along,
//!   whatever the peer is called (a host end whose ADD was cut short before the mark
//!   was set, or one made before marks existed).

use weft_cni::host_veth;
use weft_common::netns::Netns;

use crate::ipam::{Owner, Store};
use crate::link::{self, HostVeth};
use crate::spec::error::CniError;
use crate::spec::{Env, NetConf};

pub fn run(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let owner = Owner::new(&env.container_id, &env.ifname);
    // Kernel first: if this fails, the IP stays recorded and a retry (or GC) finishes.
    let host_name = host_veth::name(&env.container_id, &env.ifname);
    let mark = host_veth::ownership_mark(&env.container_id, &env.ifname);
    let netns = env.netns.as_deref().and_then(|p| Netns::open(p).ok());
    let recorded = || -> Result<bool, CniError> {
        if !conf.ipam_dir.exists() {
            return Ok(false);
        }
        let store = Store::lock(&conf.ipam_dir).map_err(|e| CniError::io("IPAM", e))?;
        let all = store.allocations().map_err(|e| CniError::io("IPAM", e))?;
        Ok(all.iter().any(|(_, o)| *o == owner))
    };
    let removed = crate::runtime(|| async {
        let host = link::connect()?;
        match link::host_veth(&host, &host_name, &mark).await? {
            HostVeth::Mine(index) => {
                return link::delete_link_index(&host, index, &host_name).await
            }
            HostVeth::Other(alias) => tracing::warn!(
                veth = %host_name,
                alias = alias.as_deref().unwrap_or(""),
                "a link with this container's host veth name is not its own; leaving it alone"
            ),
            HostVeth::Unmarked(index) if recorded()? => {
                return link::delete_link_index(&host, index, &host_name).await
            }
            HostVeth::Unmarked(_) => tracing::warn!(
                veth = %host_name,
                "a link with this container's host veth name has no mark and the container holds no address; leaving it alone"
            ),
            HostVeth::Absent => {}
        }
        match &netns {
            Some(ns) => delete_pod_end(ns, &env.ifname).await,
            None => Ok(false),
        }
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

/// Deletes the veth `ifname` in the pod's netns (and so its peer); `Ok(false)` when
/// there is none.
async fn delete_pod_end(ns: &Netns, ifname: &str) -> Result<bool, CniError> {
    let pod = link::connect_in(ns)?;
    match link::pod_link(&pod, ifname).await? {
        Some((_, _, l))
            if weft_common::bridge::link_kind(&l)
                == Some(&netlink_packet_route::link::InfoKind::Veth) =>
        {
            link::delete_link(&pod, ifname).await
        }
        _ => Ok(false),
    }
}
