//! Node annotation keys: the contract between an agent and its peers.
//!
//! The agent writes [`VTEP_MAC`], [`PUBLIC_IP`] and [`VNI`] on its own Node (metadata
//! only); every other agent reads them to program its neighbour, FDB and route entries.
//! An operator may set [`PUBLIC_IP_OVERRIDE`] when nodes reach each other through NAT.
//! IPv6 pod networks use the `-v6` keys for their own VXLAN device.

use std::collections::BTreeMap;
use std::net::IpAddr;

pub const PREFIX: &str = "weft.dev/";
/// MAC address of the node's VXLAN device, `aa:bb:cc:dd:ee:ff`. One device carries both
/// pod address families (see docs/architecture.md), so there is no per-family key.
pub const VTEP_MAC: &str = "weft.dev/vtep-mac";
/// Underlay address peers send VXLAN packets to.
pub const PUBLIC_IP: &str = "weft.dev/public-ip";
/// VXLAN network identifier in use on the node.
pub const VNI: &str = "weft.dev/vni";
/// Set by an operator: the underlay address to publish instead of the detected one.
pub const PUBLIC_IP_OVERRIDE: &str = "weft.dev/public-ip-override";
/// Field manager the agent uses for its patches.
pub const AGENT_FIELD_MANAGER: &str = "weft-agent";
/// Field manager the controller uses for its patches.
pub const CONTROLLER_FIELD_MANAGER: &str = "weft-controller";
/// Reason of the NetworkUnavailable=False condition the agent sets.
pub const CONDITION_REASON: &str = "WeftIsUp";

/// A 6-byte Ethernet address, printed and parsed as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Mac(pub [u8; 6]);

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in out.iter_mut() {
            let p = parts
                .next()
                .ok_or_else(|| format!("MAC address {s:?} has fewer than 6 bytes"))?;
            if p.len() != 2 {
                return Err(format!(
                    "MAC address {s:?}: byte {p:?} is not two hex digits"
                ));
            }
            *byte = u8::from_str_radix(p, 16)
                .map_err(|_| format!("MAC address {s:?}: byte {p:?} is not hex"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC address {s:?} has more than 6 bytes"));
        }
        Ok(Mac(out))
    }
}

/// What a peer needs to reach a node's VTEP.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Vtep {
    pub mac: Mac,
    pub public_ip: IpAddr,
}

/// Reads a node's VTEP from its annotations. An operator's override wins over the
/// published public IP. Returns `Ok(None)` when the node has not published one yet.
pub fn vtep_from(annotations: &BTreeMap<String, String>) -> Result<Option<Vtep>, String> {
    let (mac_key, ip_key) = (VTEP_MAC, PUBLIC_IP);
    let (Some(mac), Some(ip)) = (annotations.get(mac_key), annotations.get(ip_key)) else {
        return Ok(None);
    };
    let mac: Mac = mac
        .parse()
        .map_err(|e| format!("annotation {mac_key}: {e}"))?;
    let ip_text = annotations.get(PUBLIC_IP_OVERRIDE).unwrap_or(ip);
    let public_ip: IpAddr = ip_text
        .trim()
        .parse()
        .map_err(|_| format!("annotation {ip_key}: {ip_text:?} is not an IP address"))?;
    Ok(Some(Vtep { mac, public_ip }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: Mac = "0a:1B:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        assert!("0a:1b:2c:3d:4e".parse::<Mac>().is_err());
        assert!("0a:1b:2c:3d:4e:5f:00".parse::<Mac>().is_err());
        assert!("0a:1b:2c:3d:4e:zz".parse::<Mac>().is_err());
        assert!("0a:1b:2c:3d:4e:5".parse::<Mac>().is_err());
    }

    #[test]
    fn vtep_needs_both_keys() {
        assert_eq!(
            vtep_from(&ann(&[(VTEP_MAC, "02:00:00:00:00:01")])),
            Ok(None)
        );
    }

    #[test]
    fn override_wins_for_ipv4() {
        let a = ann(&[
            (VTEP_MAC, "02:00:00:00:00:01"),
            (PUBLIC_IP, "192.168.1.5"),
            (PUBLIC_IP_OVERRIDE, "203.0.113.9"),
        ]);
        let v = vtep_from(&a).unwrap().unwrap();
        assert_eq!(v.public_ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let a = ann(&[(VTEP_MAC, "02:00:00:00:00:01"), (PUBLIC_IP, "not-an-ip")]);
        let err = vtep_from(&a).unwrap_err();
        assert!(err.contains(PUBLIC_IP), "{err}");
        let a = ann(&[(VTEP_MAC, "nope"), (PUBLIC_IP, "10.0.0.1")]);
        assert!(vtep_from(&a).unwrap_err().contains(VTEP_MAC));
    }
}
