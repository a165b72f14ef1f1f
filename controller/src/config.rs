//! The controller's view of the cluster network config: `net-conf.json` (the ConfigMap
//! the agent reads too) with flags and environment variables overriding the cluster
//! CIDRs and node subnet sizes. Invalid config stops the controller at start; the error
//! names the field.

use std::path::Path;

use ipnet::IpNet;
use weft_common::netconf::NetConf;

use crate::Error;

/// Values from flags or the environment that win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub cluster_cidrs: Vec<IpNet>,
    pub node_subnet_size_v4: Option<u8>,
    pub node_subnet_size_v6: Option<u8>,
}

impl Overrides {
    fn is_complete(&self) -> bool {
        !self.cluster_cidrs.is_empty()
    }
}

/// Reads `path` and applies `overrides`. A missing file is fine when the overrides name
/// the cluster CIDRs (the rest takes its defaults).
pub fn load(path: &Path, overrides: &Overrides) -> Result<NetConf, Error> {
    let conf = match std::fs::read_to_string(path) {
        Ok(text) => parse_unvalidated(&text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && overrides.is_complete() => {
            NetConf::default()
        }
        Err(source) => {
            return Err(Error::ConfigFile {
                path: path.to_owned(),
                source,
            })
        }
    };
    resolve(conf, overrides)
}

/// Applies `overrides` to `conf` and validates the result.
pub fn resolve(mut conf: NetConf, overrides: &Overrides) -> Result<NetConf, Error> {
    if !overrides.cluster_cidrs.is_empty() {
        conf.cluster_cidrs = overrides.cluster_cidrs.clone();
    }
    if let Some(v) = overrides.node_subnet_size_v4 {
        conf.node_subnet_size_v4 = v;
    }
    if let Some(v) = overrides.node_subnet_size_v6 {
        conf.node_subnet_size_v6 = v;
    }
    conf.validate()?;
    Ok(conf)
}

/// Parses `net-conf.json` without validating (overrides come first). An unparsable
/// cluster CIDR is reported against the `clusterCIDRs` field.
pub fn parse_unvalidated(text: &str) -> Result<NetConf, Error> {
    serde_json::from_str::<NetConf>(text).map_err(|e| {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text) {
            if let Some(serde_json::Value::Array(items)) = map.get("clusterCIDRs") {
                for item in items {
                    let ok = item.as_str().is_some_and(|s| s.parse::<IpNet>().is_ok());
                    if !ok {
                        return Error::Config(weft_common::Error::InvalidConfig {
                            field: "clusterCIDRs",
                            reason: format!("{item} is not a CIDR (like 10.244.0.0/16)"),
                        });
                    }
                }
            }
        }
        Error::Config(weft_common::Error::ConfigSyntax(e))
    })
}

/// `(cluster CIDR, node prefix length)` per family, in the configured order.
pub fn pools(conf: &NetConf) -> Vec<(IpNet, u8)> {
    conf.cluster_cidrs
        .iter()
        .map(|c| match c {
            IpNet::V4(_) => (*c, conf.node_subnet_size_v4),
            IpNet::V6(_) => (*c, conf.node_subnet_size_v6),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(err: Error) -> &'static str {
        match err {
            Error::Config(weft_common::Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid field, got {other}"),
        }
    }

    #[test]
    fn file_values_and_defaults() {
        let conf = resolve(
            parse_unvalidated(r#"{"clusterCIDRs":["10.244.0.0/16","fd00:10:244::/56"]}"#).unwrap(),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            pools(&conf),
            vec![
                ("10.244.0.0/16".parse().unwrap(), 24),
                ("fd00:10:244::/56".parse().unwrap(), 64)
            ]
        );
    }

    #[test]
    fn overrides_win() {
        let file = parse_unvalidated(r#"{"clusterCIDRs":["10.244.0.0/16"]}"#).unwrap();
        let o = Overrides {
            cluster_cidrs: vec!["10.8.0.0/14".parse().unwrap()],
            node_subnet_size_v4: Some(26),
            node_subnet_size_v6: None,
        };
        let conf = resolve(file, &o).unwrap();
        assert_eq!(pools(&conf), vec![("10.8.0.0/14".parse().unwrap(), 26)]);
    }

    #[test]
    fn invalid_config_names_the_field() {
        let file = || parse_unvalidated(r#"{"clusterCIDRs":["10.244.0.0/16"]}"#).unwrap();
        let size = Overrides {
            node_subnet_size_v4: Some(8),
            ..Default::default()
        };
        assert_eq!(
            field(resolve(file(), &size).unwrap_err()),
            "nodeSubnetSizeV4"
        );
        let two_v4 = Overrides {
            cluster_cidrs: vec![
                "10.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            ..Default::default()
        };
        assert_eq!(field(resolve(file(), &two_v4).unwrap_err()), "clusterCIDRs");
        let bad = parse_unvalidated(r#"{"clusterCIDRs":["10.244.0.0/33"]}"#).unwrap_err();
        assert_eq!(field(bad), "clusterCIDRs");
        let v6 =
            parse_unvalidated(r#"{"clusterCIDRs":["fd00::/64"],"nodeSubnetSizeV6":48}"#).unwrap();
        assert_eq!(
            field(resolve(v6, &Overrides::default()).unwrap_err()),
            "nodeSubnetSizeV6"
        );
    }

    #[test]
    fn missing_file_needs_cluster_cidrs_from_flags() {
        let missing = Path::new("/nonexistent/weft/net-conf.json");
        assert!(matches!(
            load(missing, &Overrides::default()),
            Err(Error::ConfigFile { .. })
        ));
        let o = Overrides {
            cluster_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
            ..Default::default()
        };
        assert_eq!(load(missing, &o).unwrap().cluster_cidrs, o.cluster_cidrs);
    }
}
