//! The cluster network config: `net-conf.json` in the `weft-config` ConfigMap.
//!
//! Read by the controller (cluster CIDRs, node subnet sizes) and the agent (everything
//! else). Unknown fields are rejected so a typo is an error, not a silent default.

use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Default location inside the agent and controller pods (the ConfigMap mount).
pub const DEFAULT_PATH: &str = "/etc/weft/net-conf.json";
/// The largest net-conf.json read (a real one is a few hundred bytes).
pub const MAX_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetConf {
    /// One IPv4 and/or one IPv6 prefix; IPv4 first when both (an IPv6-first list is
    /// rejected: pods' primary family is IPv4 in a dual-stack weft cluster).
    #[serde(rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNet>,
    /// The cluster's Service CIDRs (kube-apiserver's --service-cluster-ip-range), when
    /// known: no Node's pod CIDR may overlap them.
    #[serde(default, rename = "serviceCIDRs")]
    pub service_cidrs: Vec<IpNet>,
    #[serde(default = "default_v4_size")]
    pub node_subnet_size_v4: u8,
    #[serde(default = "default_v6_size")]
    pub node_subnet_size_v6: u8,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Pod MTU; 0 means underlay MTU minus the VXLAN overhead.
    #[serde(default)]
    pub mtu: u32,
    /// Nodes on the same L2 subnet get plain routes, no encapsulation.
    #[serde(default)]
    pub direct_routing: bool,
    /// Masquerade pod traffic leaving the cluster CIDRs.
    #[serde(default = "default_true")]
    pub masquerade: bool,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_device")]
    pub vxlan_device: String,
    /// Enforce NetworkPolicy (nftables table `inet weft-policy`, needs br_netfilter for
    /// traffic between pods of one node).
    #[serde(default = "default_true")]
    pub network_policy: bool,
}

fn default_v4_size() -> u8 {
    24
}
fn default_v6_size() -> u8 {
    64
}
fn default_vni() -> u32 {
    1
}
fn default_port() -> u16 {
    8472
}
fn default_true() -> bool {
    true
}
fn default_bridge() -> String {
    "weft0".into()
}
fn default_device() -> String {
    "weft.1".into()
}

impl Default for NetConf {
    fn default() -> Self {
        NetConf {
            cluster_cidrs: vec!["10.244.0.0/16".parse().expect("literal CIDR")],
            service_cidrs: Vec::new(),
            node_subnet_size_v4: default_v4_size(),
            node_subnet_size_v6: default_v6_size(),
            vni: default_vni(),
            port: default_port(),
            mtu: 0,
            direct_routing: false,
            masquerade: true,
            bridge: default_bridge(),
            vxlan_device: default_device(),
            network_policy: true,
        }
    }
}

impl NetConf {
    /// Parses and validates; the error names the offending field.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let conf: NetConf = serde_json::from_str(text)?;
        conf.validate()?;
        Ok(conf)
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = crate::fsutil::read_to_string_bounded(path, MAX_BYTES).map_err(|cause| {
            Error::ConfigIo {
                path: path.to_owned(),
                cause,
            }
        })?;
        Self::parse(&text)
    }

    pub fn cluster_v4(&self) -> Option<IpNet> {
        self.cluster_cidrs
            .iter()
            .copied()
            .find(|n| matches!(n, IpNet::V4(_)))
    }

    pub fn cluster_v6(&self) -> Option<IpNet> {
        self.cluster_cidrs
            .iter()
            .copied()
            .find(|n| matches!(n, IpNet::V6(_)))
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if self.cluster_cidrs.is_empty() {
            return bad("clusterCIDRs", "needs at least one prefix".into());
        }
        let v4 = self
            .cluster_cidrs
            .iter()
            .filter(|n| matches!(n, IpNet::V4(_)))
            .count();
        let v6 = self.cluster_cidrs.len() - v4;
        if v4 > 1 || v6 > 1 {
            return bad(
                "clusterCIDRs",
                "at most one IPv4 and one IPv6 prefix".into(),
            );
        }
        if v4 == 1 && v6 == 1 && matches!(self.cluster_cidrs[0], IpNet::V6(_)) {
            return bad(
                "clusterCIDRs",
                "list the IPv4 prefix first (IPv6-first dual-stack is not supported)".into(),
            );
        }
        for net in &self.cluster_cidrs {
            if net.trunc() != *net {
                return bad(
                    "clusterCIDRs",
                    format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
            if !is_unicast_range(net) {
                return bad(
                    "clusterCIDRs",
                    format!("{net} is not a unicast range for pods"),
                );
            }
        }
        for net in &self.service_cidrs {
            if net.trunc() != *net {
                return bad("serviceCIDRs", format!("{net} has host bits set"));
            }
            if let Some(c) = self
                .cluster_cidrs
                .iter()
                .find(|c| c.contains(net) || net.contains(*c))
            {
                return bad("serviceCIDRs", format!("{net} overlaps clusterCIDR {c}"));
            }
        }
        if let Some(net) = self.cluster_v4() {
            if self.node_subnet_size_v4 < net.prefix_len() || self.node_subnet_size_v4 > 30 {
                return bad(
                    "nodeSubnetSizeV4",
                    format!(
                        "/{} must lie between the cluster prefix /{} and /30",
                        self.node_subnet_size_v4,
                        net.prefix_len()
                    ),
                );
            }
        }
        if let Some(net) = self.cluster_v6() {
            if self.node_subnet_size_v6 < net.prefix_len() || self.node_subnet_size_v6 > 126 {
                return bad(
                    "nodeSubnetSizeV6",
                    format!(
                        "/{} must lie between the cluster prefix /{} and /126",
                        self.node_subnet_size_v6,
                        net.prefix_len()
                    ),
                );
            }
        }
        if self.vni == 0 || self.vni > 0x00ff_ffff {
            return bad("vni", format!("{} is outside 1..=16777215", self.vni));
        }
        if self.port == 0 {
            return bad("port", "must not be 0".into());
        }
        let min_mtu = if v6 > 0 { 1280 } else { 576 };
        if self.mtu != 0 && !(min_mtu..=65535).contains(&self.mtu) {
            return bad(
                "mtu",
                format!("{} is outside {min_mtu}..=65535 (0 = automatic)", self.mtu),
            );
        }
        check_ifname(&self.bridge).map_err(|reason| Error::InvalidConfig {
            field: "bridge",
            reason,
        })?;
        check_ifname(&self.vxlan_device).map_err(|reason| Error::InvalidConfig {
            field: "vxlanDevice",
            reason,
        })?;
        if self.bridge == self.vxlan_device {
            return bad(
                "vxlanDevice",
                format!(
                    "{:?} is also the bridge's name; the two must differ",
                    self.bridge
                ),
            );
        }
        Ok(())
    }
}

/// Whether `net` could hold pod addresses: not the unspecified, loopback, link-local,
/// multicast or broadcast ranges.
fn is_unicast_range(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => {
            let a = n.network();
            n.prefix_len() > 0
                && !(a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_broadcast())
                && a.octets()[0] != 0
                && a.octets()[0] < 240
        }
        IpNet::V6(n) => {
            let a = n.network();
            n.prefix_len() > 0
                && !(a.is_loopback() || a.is_multicast() || a.is_unspecified())
                && a.segments()[0] & 0xffc0 != 0xfe80
        }
    }
}

/// Linux interface name rules (also the CNI spec's for CNI_IFNAME).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > 15 {
        return Err(format!("interface name {name:?} is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("interface name {name:?} is not allowed"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("interface name {name:?} contains {c:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(text: &str) -> &'static str {
        match NetConf::parse(text).unwrap_err() {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other}"),
        }
    }

    #[test]
    fn defaults_fill_in() {
        let c = NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/16"]}"#).unwrap();
        assert_eq!(c.node_subnet_size_v4, 24);
        assert_eq!(c.vni, 1);
        assert_eq!(c.port, 8472);
        assert_eq!(c.bridge, "weft0");
        assert_eq!(c.vxlan_device, "weft.1");
        assert!(c.masquerade);
        assert_eq!(c, NetConf::default());
    }

    #[test]
    fn dual_stack_accepted() {
        let c = NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/16","fd00:10:244::/56"]}"#).unwrap();
        assert_eq!(c.cluster_v6().unwrap().to_string(), "fd00:10:244::/56");
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"clusterCIDRs":[]}"#), "clusterCIDRs");
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.0.0.0/8","10.1.0.0/16"]}"#),
            "clusterCIDRs"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.1.0/16"]}"#),
            "clusterCIDRs"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"nodeSubnetSizeV4":8}"#),
            "nodeSubnetSizeV4"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"nodeSubnetSizeV4":31}"#),
            "nodeSubnetSizeV4"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["fd00::/64"],"nodeSubnetSizeV6":48}"#),
            "nodeSubnetSizeV6"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"vni":0}"#),
            "vni"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"mtu":100}"#),
            "mtu"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"bridge":"a/b"}"#),
            "bridge"
        );
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"vxlanDevice":"0123456789abcdef"}"#),
            "vxlanDevice"
        );
    }

    #[test]
    fn family_order_ranges_services_and_device_names() {
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["fd00:10:244::/56","10.244.0.0/16"]}"#),
            "clusterCIDRs"
        );
        for bad in [
            "224.0.0.0/8",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "0.0.0.0/0",
            "ff00::/8",
        ] {
            let text = format!(
                r#"{{"clusterCIDRs":["{bad}"],"nodeSubnetSizeV4":24,"nodeSubnetSizeV6":120}}"#
            );
            assert_eq!(field_of(&text), "clusterCIDRs", "{bad}");
        }
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"serviceCIDRs":["10.244.0.0/20"]}"#),
            "serviceCIDRs"
        );
        let c =
            NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/16"],"serviceCIDRs":["10.96.0.0/12"]}"#)
                .unwrap();
        assert_eq!(c.service_cidrs.len(), 1);
        let err =
            NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/16"],"bridge":"x","vxlanDevice":"x"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("bridge"), "{err}");
        assert_eq!(
            field_of(r#"{"clusterCIDRs":["10.244.0.0/16"],"bridge":"x","vxlanDevice":"x"}"#),
            "vxlanDevice"
        );
    }

    #[test]
    fn load_names_the_config_file_and_bounds_the_read() {
        let err = NetConf::load(Path::new("/nonexistent/net-conf.json")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("network config /nonexistent/net-conf.json"),
            "{text}"
        );
        assert!(!text.contains("subnet"), "{text}");
        let err = NetConf::load(Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, Error::ConfigIo { .. }), "{err}");
    }

    #[test]
    fn unknown_fields_and_bad_cidrs_are_syntax_errors() {
        assert!(matches!(
            NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/16"],"vnii":2}"#),
            Err(Error::ConfigSyntax(_))
        ));
        let err = NetConf::parse(r#"{"clusterCIDRs":["10.244.0.0/33"]}"#).unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname(".").is_err());
        assert!(check_ifname("..").is_err());
        assert!(check_ifname("a b").is_err());
        assert!(check_ifname("a:b").is_err());
        assert!(check_ifname("../x").is_err());
        assert!(check_ifname("0123456789abcde").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
    }
}
