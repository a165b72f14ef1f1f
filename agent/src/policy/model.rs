//! The slim inputs of the policy compiler: what the agent keeps of Pods and Namespaces
//! (the watches project the API objects onto these), and the small words shared by the
//! compiler and the renderer. NetworkPolicies are taken as k8s-openapi's type unchanged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The label every namespace carries with its own name (the API server sets it, and a
/// namespace seen before that happened is treated as carrying it anyway).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub type Labels = BTreeMap<String, String>;

/// A transport protocol a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling (`TCP`, `UDP`, `SCTP`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' `inet_proto` keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A container port with a name, as a named NetworkPolicy port refers to it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// What the compiler needs of a Pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `status.podIPs`, either family.
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`.
    pub node: String,
    /// A hostNetwork pod is its node's address, not a pod to selectors.
    pub host_network: bool,
    /// The named ports of its containers.
    pub named_ports: Vec<NamedPort>,
}

impl PodInfo {
    /// Whether selectors can see this pod at all: it has an address of its own.
    pub fn selectable(&self) -> bool {
        !self.host_network && !self.ips.is_empty()
    }
}

/// What the compiler needs of a Namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: String,
    pub labels: Labels,
}

impl NamespaceInfo {
    /// The labels a namespaceSelector sees: the stored ones plus the name label.
    pub fn selector_labels(&self) -> Cow<'_, Labels> {
        namespace_labels(&self.name, Some(&self.labels))
    }
}

/// A namespace's labels as selectors see them; a namespace not (yet) known has only its
/// name label.
pub fn namespace_labels<'a>(name: &str, labels: Option<&'a Labels>) -> Cow<'a, Labels> {
    match labels {
        Some(l) if l.get(NAMESPACE_NAME_LABEL).map(String::as_str) == Some(name) => {
            Cow::Borrowed(l)
        }
        other => {
            let mut l = other.cloned().unwrap_or_default();
            l.insert(NAMESPACE_NAME_LABEL.into(), name.into());
            Cow::Owned(l)
        }
    }
}

/// Which way a rule looks: at the packets a pod receives or at those it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The short form used in nftables names.
    pub fn short(self) -> &'static str {
        match self {
            Direction::Ingress => "in",
            Direction::Egress => "eg",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// A NetworkPolicy's identity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_label_is_always_there_and_cannot_be_forged() {
        let ns = NamespaceInfo {
            name: "prod".into(),
            labels: [(NAMESPACE_NAME_LABEL.to_string(), "dev".to_string())].into(),
        };
        assert_eq!(ns.selector_labels()[NAMESPACE_NAME_LABEL], "prod");
        let unknown = namespace_labels("x", None);
        assert_eq!(unknown.len(), 1);
        assert_eq!(unknown[NAMESPACE_NAME_LABEL], "x");
    }

    #[test]
    fn protocols_are_spelt_as_the_api_does() {
        assert_eq!(Protocol::parse("SCTP"), Some(Protocol::Sctp));
        assert_eq!(Protocol::parse("tcp"), None);
        assert_eq!(Protocol::Udp.nft(), "udp");
    }
}
