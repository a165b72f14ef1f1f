//! A rule's `from`/`to`: selectors resolved to pod addresses, ipBlocks to ranges.

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyPeer};

use super::super::error::PolicyError;
use super::super::ranges::AddrRangesBuilder;
use super::super::rules::Peers;
use super::super::selector::Selector;
use super::index::Index;

/// An ipBlock's CIDR and its exceptions, each strictly inside it and of its family.
fn parse_block(b: &IPBlock) -> Result<(IpNet, Vec<IpNet>), PolicyError> {
    let cidr: IpNet = b
        .cidr
        .trim()
        .parse()
        .map_err(|_| PolicyError::InvalidCidr {
            cidr: b.cidr.clone(),
        })?;
    let cidr = cidr.trunc();
    let mut except = Vec::new();
    for e in b.except.iter().flatten() {
        let bad = || PolicyError::InvalidExcept {
            cidr: cidr.to_string(),
            except: e.clone(),
        };
        let net: IpNet = e.trim().parse().map_err(|_| bad())?;
        if net.prefix_len() <= cidr.prefix_len() || !cidr.contains(&net) {
            return Err(bad());
        }
        except.push(net.trunc());
    }
    Ok((cidr, except))
}

/// The rule's peers; `None` or an empty list is any peer. An invalid peer rejects the
/// rule; a selector that cannot be read matches nothing and goes to `warn`.
pub(super) fn resolve(
    index: &Index<'_>,
    policy_namespace: &str,
    peers: Option<&[NetworkPolicyPeer]>,
    warn: &mut dyn FnMut(PolicyError),
) -> Result<Peers, PolicyError> {
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        return Ok(Peers::Any);
    };
    let mut ranges = AddrRangesBuilder::default();
    for peer in peers {
        let has_selector = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, has_selector) {
            (Some(b), false) => {
                let (cidr, except) = parse_block(b)?;
                ranges.add_net_except(&cidr, &except);
                continue;
            }
            (None, true) => {}
            _ => return Err(PolicyError::InvalidPeer),
        }
        let pods = match peer.pod_selector.as_ref().map(Selector::parse).transpose() {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                warn(e.into());
                continue;
            }
        };
        let mut add_from = |ns: &str| {
            for p in index.pods_in(ns) {
                if pods.matches(&p.labels) {
                    p.ips.iter().for_each(|ip| ranges.add_addr(*ip));
                }
            }
        };
        match peer.namespace_selector.as_ref().map(Selector::parse) {
            None => add_from(policy_namespace),
            Some(Ok(namespaces)) => index.namespaces_matching(&namespaces).for_each(add_from),
            Some(Err(e)) => warn(e.into()),
        }
    }
    Ok(Peers::Only(ranges.build()))
}
