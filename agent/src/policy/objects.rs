//! The Pods and Namespaces the policy watches read, as slim projections: serde keeps
//! only the fields the compiler needs and skips the rest while parsing, so no whole Pod
//! is ever held. Values stay loose (strings, optional fields) so one odd object cannot
//! fail a list page; [`pod_info`] and [`namespace_info`] turn them into the compiler's
//! [`PodInfo`] and [`NamespaceInfo`], dropping what does not parse.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::model::{NamedPort, NamespaceInfo, PodInfo, Protocol};

/// A Pod with only: name, namespace, resourceVersion, labels, spec.nodeName,
/// spec.hostNetwork, the containers' ports, status.phase and status.podIPs.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimPod {
    #[serde(deserialize_with = "labelled_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<SlimPodSpec>,
    #[serde(default)]
    pub status: Option<SlimPodStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default)]
    pub containers: Option<Vec<SlimContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimContainer {
    #[serde(default)]
    pub ports: Option<Vec<SlimPort>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPort {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub container_port: Option<i64>,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<SlimPodIp>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimPodIp {
    #[serde(default)]
    pub ip: Option<String>,
}

/// A Namespace with only its name, resourceVersion and labels.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNamespace {
    #[serde(deserialize_with = "labelled_metadata")]
    pub metadata: ObjectMeta,
}

fn labelled_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        resource_version: Option<String>,
        labels: Option<BTreeMap<String, String>>,
    }
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        labels: m.labels,
        ..ObjectMeta::default()
    })
}

macro_rules! slim_resource {
    ($ty:ty, $scope:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

slim_resource!(SlimPod, k8s_openapi::NamespaceResourceScope, "Pod", "pods");
slim_resource!(
    SlimNamespace,
    k8s_openapi::ClusterResourceScope,
    "Namespace",
    "namespaces"
);

/// The compiler's view of a Pod; `None` without a namespace or name. A pod that has
/// finished (phase Succeeded or Failed) keeps its IPs in its status, but they may
/// already belong to a new pod: it is given none. Addresses and ports that do not
/// parse are left out.
pub fn pod_info(pod: &SlimPod) -> Option<PodInfo> {
    let namespace = pod.metadata.namespace.clone().filter(|n| !n.is_empty())?;
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty())?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let finished = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let mut ips: Vec<IpAddr> = match finished {
        true => Vec::new(),
        false => status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.as_deref()?.parse().ok())
            .collect(),
    };
    ips.sort();
    ips.dedup();
    let named_ports = spec
        .and_then(|s| s.containers.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(named_port)
        .collect();
    Some(PodInfo {
        namespace,
        name,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ips,
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        named_ports,
    })
}

/// A container port that has a name; the protocol defaults to TCP as in the API.
fn named_port(p: &SlimPort) -> Option<NamedPort> {
    let name = p.name.clone().filter(|n| !n.is_empty())?;
    let port = u16::try_from(p.container_port?).ok().filter(|&n| n > 0)?;
    let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?;
    Some(NamedPort {
        name,
        protocol,
        port,
    })
}

/// The compiler's view of a Namespace; `None` without a name.
pub fn namespace_info(ns: &SlimNamespace) -> Option<NamespaceInfo> {
    Some(NamespaceInfo {
        name: ns.metadata.name.clone().filter(|n| !n.is_empty())?,
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> SlimPod {
        serde_json::from_value(value).expect("slim pod")
    }

    #[test]
    fn a_pod_keeps_only_what_the_compiler_needs() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"big": "x".repeat(1000)}, "uid": "u"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "c", "image": "i", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9000}
                ]}
            ]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.1.5"}]}
        }));
        assert!(p.metadata.annotations.is_none());
        let info = pod_info(&p).expect("projected");
        assert_eq!(info.namespace, "shop");
        assert_eq!(info.node, "n1");
        assert_eq!(info.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            info.ips,
            vec![
                "10.244.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(
            info.named_ports,
            vec![
                NamedPort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080
                },
                NamedPort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53
                },
            ]
        );
        assert!(info.selectable());
    }

    #[test]
    fn odd_values_are_dropped_not_fatal() {
        let p = pod(json!({
            "metadata": {"name": "odd", "namespace": "ns"},
            "spec": {"hostNetwork": false, "containers": [{"ports": [
                {"name": "big", "containerPort": 70000},
                {"name": "neg", "containerPort": -1},
                {"name": "weird", "containerPort": 80, "protocol": "ICMP"},
                {"name": "", "containerPort": 81}
            ]}]},
            "status": {"podIPs": [{"ip": "not-an-ip"}, {}, {"ip": "10.0.0.1"}]}
        }));
        let info = pod_info(&p).expect("projected");
        assert_eq!(info.ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(info.named_ports.is_empty());
        assert_eq!(info.node, "");
    }

    #[test]
    fn finished_and_host_network_pods_are_not_selectable() {
        let done = pod(json!({
            "metadata": {"name": "job", "namespace": "ns"},
            "status": {"phase": "Succeeded", "podIPs": [{"ip": "10.0.0.2"}]}
        }));
        assert!(pod_info(&done).unwrap().ips.is_empty());
        let host = pod(json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "192.168.0.10"}]}
        }));
        let info = pod_info(&host).unwrap();
        assert!(info.host_network && !info.selectable());
    }

    #[test]
    fn objects_without_identity_are_skipped() {
        assert!(pod_info(&pod(json!({"metadata": {"name": "x"}}))).is_none());
        let ns: SlimNamespace = serde_json::from_value(json!({"metadata": {}})).unwrap();
        assert!(namespace_info(&ns).is_none());
        let ns: SlimNamespace = serde_json::from_value(
            json!({"metadata": {"name": "a", "labels": {"team": "x"}, "annotations": {"k": "v"}}}),
        )
        .unwrap();
        let info = namespace_info(&ns).unwrap();
        assert_eq!(info.labels.get("team").map(String::as_str), Some("x"));
        assert!(ns.metadata.annotations.is_none());
    }
}
