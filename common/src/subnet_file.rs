//! The node subnet file: the agent's contract with the CNI plugin.
//!
//! A small `KEY=VALUE` file (like flannel's `subnet.env`, readable from a shell), written
//! atomically by the agent once the node has its pod CIDR and the bridge is up:
//!
//! ```text
//! WEFT_NODE_CIDRS=10.244.1.0/24,fd00:10:244:1::/64
//! WEFT_GATEWAYS=10.244.1.1,fd00:10:244:1::1
//! WEFT_CLUSTER_CIDRS=10.244.0.0/16,fd00:10:244::/56
//! WEFT_MTU=1450
//! WEFT_BRIDGE=weft0
//! ```
//!
//! Unknown keys are ignored so a newer agent can add keys without breaking an older plugin.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::fsutil::read_to_string_bounded;
use crate::netconf::check_ifname;
use crate::Error;

pub const DEFAULT_PATH: &str = "/run/weft/subnet.env";

/// Largest subnet file read: a real one is a few hundred bytes. The cap turns a wrong
/// `subnetFile` (`/dev/zero`, a log file) into an error instead of unbounded memory.
pub const MAX_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSubnet {
    /// The node's pod CIDRs, IPv4 first when dual-stack.
    pub node_cidrs: Vec<IpNet>,
    /// One gateway per node CIDR, in the same order (the bridge's addresses).
    pub gateways: Vec<IpAddr>,
    pub cluster_cidrs: Vec<IpNet>,
    pub mtu: u32,
    pub bridge: String,
}

/// The first host address of a subnet: weft's gateway convention.
pub fn gateway_for(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

impl NodeSubnet {
    /// A subnet description with weft's gateway convention for each node CIDR.
    pub fn new(node_cidrs: Vec<IpNet>, cluster_cidrs: Vec<IpNet>, mtu: u32, bridge: &str) -> Self {
        let gateways = node_cidrs.iter().map(gateway_for).collect();
        NodeSubnet {
            node_cidrs,
            gateways,
            cluster_cidrs,
            mtu,
            bridge: bridge.to_owned(),
        }
    }

    pub fn render(&self) -> String {
        fn join<T: ToString>(items: &[T]) -> String {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
        format!(
            "# Written by weft-agent for the weft CNI plugin. Do not edit.\n\
             WEFT_NODE_CIDRS={}\nWEFT_GATEWAYS={}\nWEFT_CLUSTER_CIDRS={}\nWEFT_MTU={}\nWEFT_BRIDGE={}\n",
            join(&self.node_cidrs),
            join(&self.gateways),
            join(&self.cluster_cidrs),
            self.mtu,
            self.bridge
        )
    }

    /// Parses and checks the file's text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let err = |line: usize, reason: String| Error::SubnetFileSyntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut node_cidrs = None;
        let mut gateways = None;
        let mut cluster_cidrs = None;
        let mut mtu = None;
        let mut bridge = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err(n, format!("expected KEY=VALUE, got {line:?}")))?;
            let value = value.trim();
            match key.trim() {
                "WEFT_NODE_CIDRS" => {
                    node_cidrs = Some(parse_list::<IpNet>(value).map_err(|e| err(n, e))?)
                }
                "WEFT_GATEWAYS" => {
                    gateways = Some(parse_list::<IpAddr>(value).map_err(|e| err(n, e))?)
                }
                "WEFT_CLUSTER_CIDRS" => {
                    cluster_cidrs = Some(parse_list::<IpNet>(value).map_err(|e| err(n, e))?)
                }
                "WEFT_MTU" => {
                    mtu = Some(
                        value
                            .parse::<u32>()
                            .map_err(|_| err(n, format!("WEFT_MTU {value:?} is not a number")))?,
                    )
                }
                "WEFT_BRIDGE" => bridge = Some(value.to_owned()),
                _ => {}
            }
        }
        let missing = |key: &str| err(0, format!("{key} is missing"));
        let node_cidrs: Vec<IpNet> = node_cidrs.ok_or_else(|| missing("WEFT_NODE_CIDRS"))?;
        let cluster_cidrs = cluster_cidrs.ok_or_else(|| missing("WEFT_CLUSTER_CIDRS"))?;
        let mtu = mtu.ok_or_else(|| missing("WEFT_MTU"))?;
        let bridge = bridge.ok_or_else(|| missing("WEFT_BRIDGE"))?;
        let gateways = gateways.unwrap_or_else(|| node_cidrs.iter().map(gateway_for).collect());
        let s = NodeSubnet {
            node_cidrs,
            gateways,
            cluster_cidrs,
            mtu,
            bridge,
        };
        s.check().map_err(|reason| err(0, reason))?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.node_cidrs.is_empty() {
            return Err("WEFT_NODE_CIDRS is empty".into());
        }
        if self.gateways.len() != self.node_cidrs.len() {
            return Err("WEFT_GATEWAYS must have one gateway per node CIDR".into());
        }
        for (net, gw) in self.node_cidrs.iter().zip(&self.gateways) {
            if !net.contains(gw) || *gw == net.network() || *gw == net.broadcast() {
                return Err(format!("gateway {gw} is not a host address of {net}"));
            }
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(format!("WEFT_MTU {} is outside 576..=65535", self.mtu));
        }
        check_ifname(&self.bridge).map_err(|e| format!("WEFT_BRIDGE: {e}"))
    }

    pub fn read(path: &Path) -> Result<Self, Error> {
        let text =
            read_to_string_bounded(path, MAX_BYTES).map_err(|source| Error::SubnetFileIo {
                path: path.to_owned(),
                source,
            })?;
        Self::parse(&text, path)
    }

    /// Writes the file atomically (temp file, fsync, rename, fsync of the directory), so a
    /// plugin never reads a half-written file. Skips the write when nothing changed.
    pub fn write_atomic(&self, path: &Path) -> Result<bool, Error> {
        let io = |source| Error::SubnetFileIo {
            path: path.to_owned(),
            source,
        };
        let text = self.render();
        if read_to_string_bounded(path, MAX_BYTES).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp: PathBuf = dir.join(format!(
            ".{}.tmp.{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("subnet"),
            std::process::id()
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)?;
        Ok(true)
    }
}

fn parse_list<T: std::str::FromStr>(value: &str) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>()
                .map_err(|_| format!("{s:?} is not valid here"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NodeSubnet {
        NodeSubnet::new(
            vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:244:1::/64".parse().unwrap(),
            ],
            vec![
                "10.244.0.0/16".parse().unwrap(),
                "fd00:10:244::/56".parse().unwrap(),
            ],
            1450,
            "weft0",
        )
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(s.gateways[0].to_string(), "10.244.1.1");
        assert_eq!(s.gateways[1].to_string(), "fd00:10:244:1::1");
        let back = NodeSubnet::parse(&s.render(), Path::new("x")).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn errors_name_the_key() {
        let p = Path::new("/run/weft/subnet.env");
        let e = NodeSubnet::parse("WEFT_NODE_CIDRS=10.244.1.0/24\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("WEFT_CLUSTER_CIDRS is missing") && e.contains("/run/weft/subnet.env"),
            "{e}"
        );
        let bad = sample().render().replace("WEFT_MTU=1450", "WEFT_MTU=big");
        assert!(NodeSubnet::parse(&bad, p)
            .unwrap_err()
            .to_string()
            .contains("WEFT_MTU"));
        let bad = sample().render().replace("10.244.1.1,", "10.244.9.1,");
        assert!(NodeSubnet::parse(&bad, p)
            .unwrap_err()
            .to_string()
            .contains("10.244.9.1"));
        assert!(NodeSubnet::parse("garbage\n", p)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }

    #[test]
    fn write_is_atomic_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/subnet.env");
        assert!(sample().write_atomic(&path).unwrap());
        assert!(!sample().write_atomic(&path).unwrap());
        assert_eq!(NodeSubnet::read(&path).unwrap(), sample());
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn an_endless_or_huge_file_is_an_error_not_a_memory_blowup() {
        let e = NodeSubnet::read(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(&e, Error::SubnetFileIo { source, .. }
                if source.kind() == std::io::ErrorKind::FileTooLarge),
            "{e}"
        );
        assert!(e.to_string().contains("/dev/zero") && e.to_string().contains("65536"));
        // A valid file padded past the cap with comments is refused too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.env");
        let padded = sample().render() + &"#".repeat(MAX_BYTES as usize);
        std::fs::write(&path, padded).unwrap();
        assert!(NodeSubnet::read(&path).is_err());
    }
}
