//! The network config on stdin, for every supported `cniVersion`.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::env::Command;
use super::error::{CniError, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG};

/// The plugin's `type`.
pub const PLUGIN_TYPE: &str = "weft";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/weft/ipam";

/// A CNI spec version this plugin speaks, oldest first (so `<` compares versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    pub const ALL: [Version; 5] = [
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether a config of this version may ask for `cmd` (CHECK from 0.4.0, STATUS and
    /// GC from 1.1.0).
    pub fn supports(self, cmd: Command) -> Result<(), CniError> {
        let min = match cmd {
            Command::Check => Version::V0_4_0,
            Command::Status | Command::Gc => Version::V1_1_0,
            _ => return Ok(()),
        };
        if self < min {
            return Err(CniError::new(
                INCOMPATIBLE_VERSION,
                format!(
                    "{cmd:?} needs cniVersion {} or later; the config says {}",
                    min.as_str(),
                    self.as_str()
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    /// The `ips` capability: addresses the runtime asks for (`10.244.1.5/24` or `10.244.1.5`).
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The typed network config. Unknown fields are ignored, as the spec asks.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    subnet_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    dns: Option<Dns>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
    args: Option<Value>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Clone, Debug)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    pub subnet_file: PathBuf,
    /// This network's IPAM directory: `<dataDir>/<name>`.
    pub ipam_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    pub dns: Option<Dns>,
    /// IPs asked for through `runtimeConfig.ips` or `args.cni.ips`.
    pub requested_ips: Vec<IpAddr>,
    pub prev_result: Option<Value>,
    /// GC: the attachments still in use (`None` when the runtime sent none).
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Reads just `cniVersion` from stdin text, for labelling errors; `None` if unreadable.
pub fn peek_version(text: &[u8]) -> Option<Version> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        v: String,
    }
    serde_json::from_slice::<V>(text)
        .ok()
        .and_then(|v| Version::parse(&v.v))
}

impl NetConf {
    pub fn parse(text: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(text).map_err(|e| {
            CniError::new(
                DECODE,
                format!("network config on stdin is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(map) = &value else {
            return Err(CniError::new(
                DECODE,
                "network config on stdin is not a JSON object",
            ));
        };
        let version = match map.get("cniVersion") {
            None => return Err(CniError::invalid_config("cniVersion", "is missing")),
            Some(Value::String(s)) => Version::parse(s).ok_or_else(|| {
                CniError::new(
                    INCOMPATIBLE_VERSION,
                    format!(
                        "cniVersion {s:?} is not supported; supported: {}",
                        Version::ALL.map(Version::as_str).join(", ")
                    ),
                )
            })?,
            Some(other) => {
                return Err(CniError::invalid_config(
                    "cniVersion",
                    format!("{other} is not a string"),
                ))
            }
        };
        let raw: RawConf = serde_json::from_value(value)
            .map_err(|e| CniError::new(INVALID_CONFIG, format!("invalid network config: {e}")))?;
        match raw.plugin_type.as_deref() {
            None => return Err(CniError::invalid_config("type", "is missing")),
            Some(PLUGIN_TYPE) => {}
            Some(t) => {
                return Err(CniError::invalid_config(
                    "type",
                    format!("is {t:?}, expected {PLUGIN_TYPE:?}"),
                ))
            }
        }
        let name = raw
            .name
            .ok_or_else(|| CniError::invalid_config("name", "is missing"))?;
        check_network_name(&name)?;
        let data_dir = raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let subnet_file = raw
            .subnet_file
            .unwrap_or_else(|| PathBuf::from(weft_common::subnet_file::DEFAULT_PATH));
        for (field, p) in [("dataDir", &data_dir), ("subnetFile", &subnet_file)] {
            if !p.is_absolute() {
                return Err(CniError::invalid_config(
                    field,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
        }
        let mut requested = Vec::new();
        for s in &raw.runtime_config.ips {
            requested.push(parse_ip("runtimeConfig.ips", s)?);
        }
        if let Some(ips) = raw.args.as_ref().and_then(|a| a.pointer("/cni/ips")) {
            let list = ips
                .as_array()
                .ok_or_else(|| CniError::invalid_config("args.cni.ips", "is not a list"))?;
            for item in list {
                let s = item.as_str().ok_or_else(|| {
                    CniError::invalid_config("args.cni.ips", format!("{item} is not a string"))
                })?;
                requested.push(parse_ip("args.cni.ips", s)?);
            }
        }
        Ok(NetConf {
            version,
            ipam_dir: data_dir.join(&name),
            name,
            subnet_file,
            log_file: raw.log_file,
            dns: raw.dns,
            requested_ips: requested,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments.or(raw.attachments),
        })
    }
}

/// Network names become directory names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn check_network_name(name: &str) -> Result<(), CniError> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253;
    if ok {
        Ok(())
    } else {
        Err(CniError::invalid_config(
            "name",
            format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ))
    }
}

/// `10.244.1.5` or `10.244.1.5/24` (the prefix is ignored: the node CIDR decides it).
pub fn parse_ip(field: &str, s: &str) -> Result<IpAddr, CniError> {
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.trim()
        .parse()
        .map_err(|_| CniError::invalid_config(field, format!("{s:?} is not an IP address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(version: &str, extra: &str) -> String {
        format!(r#"{{"cniVersion":"{version}","name":"weft","type":"weft"{extra}}}"#)
    }

    #[test]
    fn every_version_parses_with_defaults() {
        for v in Version::ALL {
            let c = NetConf::parse(conf(v.as_str(), "").as_bytes()).unwrap();
            assert_eq!(c.version, v);
            assert_eq!(c.ipam_dir, PathBuf::from("/var/lib/weft/ipam/weft"));
            assert_eq!(c.subnet_file, PathBuf::from("/run/weft/subnet.env"));
            assert!(c.dns.is_none() && c.requested_ips.is_empty());
        }
    }

    #[test]
    fn all_fields() {
        let c = NetConf::parse(
            conf(
                "1.1.0",
                r#","subnetFile":"/tmp/s.env","dataDir":"/tmp/d","logFile":"/tmp/l","dns":{"nameservers":["10.96.0.10"],"search":["svc"]},
                "runtimeConfig":{"ips":["10.244.1.9/24"]},"args":{"cni":{"ips":["fd00::9"]}},
                "prevResult":{"cniVersion":"1.1.0"},"cni.dev/attachments":[{"containerID":"a","ifname":"eth0"}],
                "capabilities":{"ips":true},"somethingElse":1"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.ipam_dir, PathBuf::from("/tmp/d/weft"));
        assert_eq!(c.dns.unwrap().nameservers, vec!["10.96.0.10"]);
        assert_eq!(c.requested_ips.len(), 2);
        assert!(c.prev_result.is_some());
        assert_eq!(c.valid_attachments.unwrap()[0].ifname, "eth0");
    }

    #[test]
    fn errors_have_the_right_codes() {
        let code = |t: &str| NetConf::parse(t.as_bytes()).unwrap_err().code;
        assert_eq!(code("{"), 6);
        assert_eq!(code("[1]"), 6);
        assert_eq!(code(r#"{"name":"a","type":"weft"}"#), 7);
        assert_eq!(code(&conf("0.2.0", "")), 1);
        assert_eq!(code(&conf("2.0.0", "")), 1);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"a"}"#), 7);
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"a","type":"bridge"}"#),
            7
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"../a","type":"weft"}"#),
            7
        );
        assert_eq!(code(&conf("1.0.0", r#","dataDir":"rel""#)), 7);
        assert_eq!(code(&conf("1.0.0", r#","dns":"x""#)), 7);
        assert_eq!(
            code(&conf("1.0.0", r#","runtimeConfig":{"ips":["nope"]}"#)),
            7
        );
    }

    #[test]
    fn verbs_per_version() {
        assert_eq!(
            Version::V0_3_1.supports(Command::Check).unwrap_err().code,
            1
        );
        assert!(Version::V0_4_0.supports(Command::Check).is_ok());
        assert_eq!(Version::V1_0_0.supports(Command::Gc).unwrap_err().code, 1);
        assert_eq!(
            Version::V1_0_0.supports(Command::Status).unwrap_err().code,
            1
        );
        assert!(Version::V1_1_0.supports(Command::Status).is_ok());
        assert!(Version::V0_3_0.supports(Command::Add).is_ok());
    }

    #[test]
    fn peek() {
        assert_eq!(peek_version(br#"{"cniVersion":"0.4.0","x":"#), None);
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(Version::V0_4_0)
        );
    }
}
