//! STATUS: ready when the node subnet file is present and valid and every pool has a
//! free address; otherwise code 50 with the reason.

use weft_common::subnet_file::NodeSubnet;

use crate::ipam::{self, store::used_in};
use crate::spec::error::{CniError, NOT_AVAILABLE};
use crate::spec::NetConf;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |why: String| CniError::new(NOT_AVAILABLE, why);
    let subnet = NodeSubnet::read(&conf.subnet_file).map_err(|e| {
        let c = CniError::from(e);
        unavailable(c.msg)
    })?;
    let used = used_in(&conf.ipam_dir)
        .map_err(|e| unavailable(format!("IPAM store {}: {e}", conf.ipam_dir.display())))?;
    for pool in ipam::pools(&subnet) {
        if !pool.has_free(&used) {
            return Err(unavailable(format!(
                "no free address left in node CIDR {}",
                pool.net
            )));
        }
    }
    Ok(())
}
