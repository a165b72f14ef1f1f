//! GC: releases every allocation, and deletes every host veth on this network's bridge,
//! whose (container ID, ifname) is not among the valid attachments.

use std::collections::HashSet;

use weft_common::bridge::link_by_name;
use weft_common::subnet_file::NodeSubnet;

use crate::ipam::{Owner, Store};
use crate::link;
use crate::spec::error::CniError;
use crate::spec::NetConf;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<Owner> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| Owner::new(&a.container_id, &a.ifname))
        .collect();
    let keep_veths: HashSet<String> = valid
        .iter()
        .map(|o| weft_cni::host_veth::name(&o.container_id, &o.ifname))
        .collect();

    // Veths first, so an address is only released once nothing uses it.
    match NodeSubnet::read(&conf.subnet_file) {
        Ok(subnet) => {
            let deleted = crate::runtime(|| async {
                let host = link::connect()?;
                let Some(bridge) = link_by_name(&host, &subnet.bridge).await? else {
                    return Ok(Vec::new());
                };
                let mut deleted = Vec::new();
                for name in link::weft_veths_on(&host, bridge.header.index).await? {
                    if !keep_veths.contains(&name) && link::delete_link(&host, &name).await? {
                        deleted.push(name);
                    }
                }
                Ok(deleted)
            })?;
            if !deleted.is_empty() {
                tracing::info!(veths = ?deleted, "gc: deleted stale host veths");
            }
        }
        Err(e) => tracing::warn!(error = %e, "gc: no node subnet file, skipping host veths"),
    }

    if conf.ipam_dir.exists() {
        let store = Store::lock(&conf.ipam_dir).map_err(|e| CniError::io("IPAM", e))?;
        let released = store
            .release_all_but(&valid)
            .map_err(|e| CniError::io("IPAM", e))?;
        for (ip, o) in &released {
            tracing::info!(%ip, container_id = %o.container_id, ifname = %o.ifname, "gc: released");
        }
    }
    Ok(())
}
