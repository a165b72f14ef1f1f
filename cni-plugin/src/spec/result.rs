//! The ADD result, encoded in the version the config asked for, and decoded back from
//! `prevResult` (any version) for CHECK.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use super::config::{Dns, Version};
use super::error::{CniError, INVALID_CONFIG};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: Option<u32>,
    /// The netns path, for interfaces inside the pod.
    pub sandbox: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with the node CIDR's prefix length.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
}

impl CniResult {
    /// The result as the runtime expects it for `version`: 0.3.x and 0.4.0 carry
    /// `version` in each IP entry; 1.1.0 adds the interface MTU.
    pub fn encode(&self, version: Version) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                m.insert("mac".into(), json!(i.mac));
                if let (Some(mtu), true) = (i.mtu, version >= Version::V1_1_0) {
                    m.insert("mtu".into(), json!(mtu));
                }
                if let Some(s) = &i.sandbox {
                    m.insert("sandbox".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if version < Version::V1_0_0 {
                    let v = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), json!(v));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| match r.gw {
                Some(gw) => json!({"dst": r.dst.to_string(), "gw": gw.to_string()}),
                None => json!({"dst": r.dst.to_string()}),
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        out.insert("routes".into(), Value::Array(routes));
        if let Some(dns) = &self.dns {
            out.insert(
                "dns".into(),
                serde_json::to_value(dns).unwrap_or(Value::Null),
            );
        }
        Value::Object(out)
    }

    /// Reads a `prevResult` of any supported version.
    pub fn decode(v: &Value) -> Result<Self, CniError> {
        let bad =
            |what: String| CniError::new(INVALID_CONFIG, format!("invalid prevResult: {what}"));
        let list = |key: &str| -> Result<Vec<Value>, CniError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => Err(bad(format!("`{key}` is not a list"))),
            }
        };
        let str_of = |o: &Value, k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut out = CniResult::default();
        for i in list("interfaces")? {
            out.interfaces.push(Interface {
                name: str_of(&i, "name").ok_or_else(|| bad("interface without `name`".into()))?,
                mac: str_of(&i, "mac").unwrap_or_default(),
                mtu: i.get("mtu").and_then(Value::as_u64).map(|m| m as u32),
                sandbox: str_of(&i, "sandbox"),
            });
        }
        for ip in list("ips")? {
            let addr = str_of(&ip, "address").ok_or_else(|| bad("ip without `address`".into()))?;
            let address: IpNet = addr.parse().map_err(|_| bad(format!("address {addr:?}")))?;
            let gateway = match str_of(&ip, "gateway") {
                Some(g) => Some(g.parse().map_err(|_| bad(format!("gateway {g:?}")))?),
                None => None,
            };
            out.ips.push(IpConfig {
                address,
                gateway,
                interface: ip
                    .get("interface")
                    .and_then(Value::as_u64)
                    .map(|i| i as usize),
            });
        }
        for r in list("routes")? {
            let dst = str_of(&r, "dst").ok_or_else(|| bad("route without `dst`".into()))?;
            let gw = match str_of(&r, "gw") {
                Some(g) => Some(g.parse().map_err(|_| bad(format!("route gw {g:?}")))?),
                None => None,
            };
            out.routes.push(Route {
                dst: dst.parse().map_err(|_| bad(format!("route dst {dst:?}")))?,
                gw,
            });
        }
        if let Some(d) = v.get("dns").filter(|d| !d.is_null()) {
            out.dns =
                Some(serde_json::from_value(d.clone()).map_err(|e| bad(format!("dns: {e}")))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "weft0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: Some(1450),
                    sandbox: None,
                },
                Interface {
                    name: "weft1234abcd".into(),
                    mac: "02:00:00:00:00:02".into(),
                    mtu: Some(1450),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:03".into(),
                    mtu: Some(1450),
                    sandbox: Some("/var/run/netns/p".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.244.1.5/24".parse().unwrap(),
                    gateway: Some("10.244.1.1".parse().unwrap()),
                    interface: Some(2),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                    interface: Some(2),
                },
            ],
            routes: vec![
                Route {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.244.1.1".parse().unwrap()),
                },
                Route {
                    dst: "::/0".parse().unwrap(),
                    gw: Some("fd00::1".parse().unwrap()),
                },
            ],
            dns: Some(Dns {
                nameservers: vec!["10.96.0.10".into()],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn encodes_per_version_and_round_trips() {
        for v in Version::ALL {
            let out = sample().encode(v);
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["ips"][0]["address"], "10.244.1.5/24");
            assert_eq!(out["ips"][0]["interface"], 2);
            assert_eq!(out["interfaces"][2]["sandbox"], "/var/run/netns/p");
            assert_eq!(out["routes"][1]["dst"], "::/0");
            assert_eq!(out["dns"]["nameservers"][0], "10.96.0.10");
            if v < Version::V1_0_0 {
                assert_eq!(out["ips"][0]["version"], "4");
                assert_eq!(out["ips"][1]["version"], "6");
            } else {
                assert!(out["ips"][0].get("version").is_none());
            }
            assert_eq!(
                out["interfaces"][0].get("mtu").is_some(),
                v == Version::V1_1_0
            );
            let mut back = CniResult::decode(&out).unwrap();
            if v != Version::V1_1_0 {
                back.interfaces.iter_mut().for_each(|i| i.mtu = Some(1450));
            }
            assert_eq!(back, sample());
        }
    }

    #[test]
    fn no_dns_no_key() {
        let mut r = sample();
        r.dns = None;
        assert!(r.encode(Version::V1_0_0).get("dns").is_none());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(
            CniResult::decode(&json!({"ips": [{"address": "x"}]}))
                .unwrap_err()
                .code,
            7
        );
        assert_eq!(CniResult::decode(&json!({"ips": 3})).unwrap_err().code, 7);
        assert!(CniResult::decode(&json!({})).unwrap().ips.is_empty());
    }
}
