//! A rule's `ports`: numeric ports and ranges checked, named ports resolved on pods.

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::NetworkPolicyPort;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::error::PolicyError;
use super::super::model::{PodInfo, Protocol};
use super::super::ranges::{normalize_ports, AddrRanges, PortRange};
use super::super::rules::{NamedElement, Ports};

/// One entry of `ports`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PortSpec {
    Numeric(PortRange),
    Named(Protocol, String),
}

fn port_number(n: i32) -> Result<u16, PolicyError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(PolicyError::InvalidPort(n))
}

/// An IANA service name as Kubernetes accepts one: 1-15 of `a-z0-9-`, at least one
/// letter, no leading, trailing or double hyphen.
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

pub(super) fn parse(p: &NetworkPolicyPort) -> Result<PortSpec, PolicyError> {
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => Protocol::parse(s).ok_or_else(|| PolicyError::UnknownProtocol(s.into()))?,
    };
    match (&p.port, p.end_port) {
        // A protocol alone: all of its ports.
        (None, None) => Ok(PortSpec::Numeric(PortRange {
            protocol,
            first: 0,
            last: u16::MAX,
        })),
        (None, Some(_)) | (Some(IntOrString::String(_)), Some(_)) => {
            Err(PolicyError::EndPortWithoutNumericPort)
        }
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n)?;
            let last = match end {
                None => first,
                Some(e) => {
                    let last = port_number(e)?;
                    if last < first {
                        return Err(PolicyError::EndPortBelowPort { port: *n, end: e });
                    }
                    last
                }
            };
            Ok(PortSpec::Numeric(PortRange {
                protocol,
                first,
                last,
            }))
        }
        (Some(IntOrString::String(s)), None) if is_port_name(s) => {
            Ok(PortSpec::Named(protocol, s.clone()))
        }
        (Some(IntOrString::String(s)), None) => Err(PolicyError::InvalidPortName(s.clone())),
    }
}

/// The pods a rule's named ports are looked up on, and which of their addresses count.
pub(super) enum NamedOn<'a> {
    /// Ingress: the selected local pods, all their addresses.
    Targets(&'a [&'a PodInfo]),
    /// Egress: every pod, the addresses within the peers (`None`: any peer).
    Destinations(&'a [&'a PodInfo], Option<&'a AddrRanges>),
}

/// The rule's `ports` checked; `None` (no or empty `ports`) is any port.
pub(super) fn parse_all(
    ports: Option<&[NetworkPolicyPort]>,
) -> Result<Option<Vec<PortSpec>>, PolicyError> {
    match ports.filter(|p| !p.is_empty()) {
        None => Ok(None),
        Some(ports) => ports.iter().map(parse).collect::<Result<_, _>>().map(Some),
    }
}

/// The rule's ports from [`parse_all`]'s answer, named ports resolved.
pub(super) fn resolve(specs: Option<&[PortSpec]>, named_on: NamedOn<'_>) -> Ports {
    let Some(specs) = specs else {
        return Ports::Any;
    };
    let mut numeric = Vec::new();
    let mut names: BTreeSet<(Protocol, &str)> = BTreeSet::new();
    for s in specs {
        match s {
            PortSpec::Numeric(r) => numeric.push(*r),
            PortSpec::Named(p, n) => {
                names.insert((*p, n.as_str()));
            }
        }
    }
    let named = (!names.is_empty()).then(|| {
        let (pods, within) = match named_on {
            NamedOn::Targets(pods) => (pods, None),
            NamedOn::Destinations(pods, within) => (pods, within),
        };
        let mut out = BTreeSet::new();
        for pod in pods {
            for np in &pod.named_ports {
                if !names.contains(&(np.protocol, np.name.as_str())) {
                    continue;
                }
                for addr in &pod.ips {
                    if within.is_none_or(|r| r.contains(*addr)) {
                        out.insert(NamedElement {
                            addr: *addr,
                            protocol: np.protocol,
                            port: np.port,
                        });
                    }
                }
            }
        }
        out
    });
    Ports::Only {
        numeric: normalize_ports(numeric),
        named,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(
        protocol: Option<&str>,
        port: Option<IntOrString>,
        end: Option<i32>,
    ) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: protocol.map(Into::into),
            port,
            end_port: end,
        }
    }

    #[test]
    fn port_entries_table() {
        use IntOrString::{Int, String as Name};
        let r = |protocol, first, last| {
            Ok(PortSpec::Numeric(PortRange {
                protocol,
                first,
                last,
            }))
        };
        let cases = [
            (port(None, Some(Int(80)), None), r(Protocol::Tcp, 80, 80)),
            (
                port(Some("UDP"), Some(Int(53)), None),
                r(Protocol::Udp, 53, 53),
            ),
            (
                port(Some("SCTP"), Some(Int(32000)), Some(32768)),
                r(Protocol::Sctp, 32000, 32768),
            ),
            (port(Some("UDP"), None, None), r(Protocol::Udp, 0, 65535)),
            (
                port(None, Some(Name("http".into())), None),
                Ok(PortSpec::Named(Protocol::Tcp, "http".into())),
            ),
            (
                port(None, Some(Int(0)), None),
                Err(PolicyError::InvalidPort(0)),
            ),
            (
                port(None, Some(Int(65536)), None),
                Err(PolicyError::InvalidPort(65536)),
            ),
            (
                port(None, Some(Int(90)), Some(80)),
                Err(PolicyError::EndPortBelowPort { port: 90, end: 80 }),
            ),
            (
                port(None, None, Some(80)),
                Err(PolicyError::EndPortWithoutNumericPort),
            ),
            (
                port(None, Some(Name("http".into())), Some(90)),
                Err(PolicyError::EndPortWithoutNumericPort),
            ),
            (
                port(Some("ICMP"), Some(Int(1)), None),
                Err(PolicyError::UnknownProtocol("ICMP".into())),
            ),
            (
                port(None, Some(Name("80".into())), None),
                Err(PolicyError::InvalidPortName("80".into())),
            ),
            (
                port(None, Some(Name("a--b".into())), None),
                Err(PolicyError::InvalidPortName("a--b".into())),
            ),
        ];
        for (i, (p, want)) in cases.into_iter().enumerate() {
            assert_eq!(parse(&p), want, "case {i}: {p:?}");
        }
    }
}
