//! Objects that look like the real thing, so memory and speed figures mean something.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// A Node as a kubelet registers it, with 85 images in `status.images`: about 20 KB of
/// JSON, like production nodes (15-30 KB). No pod CIDR.
pub fn kubelet_like_node(name: &str, internal_ip: Ipv4Addr) -> Node {
    let labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", "n2-standard-8"),
        ("topology.kubernetes.io/region", "europe-west4"),
        ("topology.kubernetes.io/zone", "europe-west4-b"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        (
            "kubeadm.alpha.kubernetes.io/cri-socket",
            "unix:///run/containerd/containerd.sock",
        ),
        ("node.alpha.kubernetes.io/ttl", "0"),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let cond = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    let q = |s: &str| Quantity(s.to_string());
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", q("8")),
        ("ephemeral-storage", q("101430960Ki")),
        ("hugepages-1Gi", q("0")),
        ("hugepages-2Mi", q("0")),
        ("memory", q("32874388Ki")),
        ("pods", q("110")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let images = (0..85)
        .map(|i| {
            let repo = format!("registry.example.com/team-{}/service-{i:02}", i % 7);
            ContainerImage {
                names: Some(vec![
                    format!(
                        "{repo}@sha256:{:064x}",
                        (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
                    ),
                    format!("{repo}:v1.{i}.{}", i * 3 % 11),
                ]),
                size_bytes: Some(20_000_000 + i * 1_234_567),
            }
        })
        .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: internal_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.into(),
                },
            ]),
            allocatable: Some(resources.clone()),
            capacity: Some(resources),
            conditions: Some(vec![
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "False", "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"),
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            images: Some(images),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: format!("{:032x}", name.len() as u128 * 0x1234_5678_9abc),
                container_runtime_version: "containerd://1.7.24".into(),
                kernel_version: "6.1.0-28-cloud-amd64".into(),
                kube_proxy_version: "v1.34.4".into(),
                kubelet_version: "v1.34.4".into(),
                machine_id: format!("{:032x}", internal_ip.to_bits() as u128 * 0xfeed_beef),
                operating_system: "linux".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                system_uuid: format!("{:032x}", internal_ip.to_bits() as u128 * 0xabcd),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The n-th address in 10.0.0.0/8, for numbering thousands of fake nodes.
pub fn node_ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + 10 + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_weighs_like_a_real_one() {
        let n = kubelet_like_node("node-0001", node_ip(1));
        let size = serde_json::to_vec(&n).unwrap().len();
        assert!((15_000..=30_000).contains(&size), "node is {size} bytes");
        assert!(n.spec.as_ref().unwrap().pod_cidr.is_none());
    }
}
