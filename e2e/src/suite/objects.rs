//! The suite's objects: namespace, probe pods pinned to nodes by `nodeName`, and one
//! ClusterIP Service per node's probe; plus waiting for them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use super::{Ctx, NodeInfo, PodInfo, HOST_PORT, HOST_PROBE_PORT, NAMESPACE, PROBE_PORT};
use crate::cluster::PROBE_IMAGE;

/// Nodes a workload may run on (not cordoned, no NoSchedule/NoExecute taint such as a
/// control-plane node's), sorted by name, with their InternalIP.
pub async fn schedulable_nodes(client: &kube::Client) -> Result<Vec<NodeInfo>> {
    let api: Api<Node> = Api::all(client.clone());
    let mut nodes: Vec<NodeInfo> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.effect != "PreferNoSchedule"))
        })
        .filter_map(|n| {
            Some(NodeInfo {
                name: n.metadata.name.clone()?,
                ip: internal_ip(&n)?,
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

pub fn internal_ip(n: &Node) -> Option<Ipv4Addr> {
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

/// A probe pod on `node`. `host_network` serves on [`HOST_PROBE_PORT`] in the node's
/// network namespace; `host_port` maps [`HOST_PORT`] to the probe port (portmap).
pub fn probe_pod(name: &str, node: &str, host_network: bool, host_port: bool) -> Pod {
    let port = if host_network {
        HOST_PROBE_PORT
    } else {
        PROBE_PORT
    };
    let mut ports = json!([{"name": "probe", "containerPort": port, "protocol": "TCP"}]);
    if host_port {
        ports = json!([{"name": "probe", "containerPort": port, "hostPort": HOST_PORT,
                        "protocol": "TCP"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "weft-e2e-probe", "weft.dev/probe": name}},
        "spec": {
            "nodeName": node,
            "hostNetwork": host_network,
            // ClusterFirst also for the hostNetwork probe's DNS would need
            // ClusterFirstWithHostNet; it resolves nothing, so the default is fine.
            "dnsPolicy": "ClusterFirst",
            // The probe is PID 1 and ignores SIGTERM: no point waiting.
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"operator": "Exists"}],
            "enableServiceLinks": false,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "probe",
                "image": PROBE_IMAGE,
                // Built on this machine / loaded with `kind load`: never pulled.
                "imagePullPolicy": "Never",
                "command": ["/weft-e2e", "probe", "serve", format!("0.0.0.0:{port}")],
                "ports": ports,
                "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
            }],
        },
    }))
    .expect("valid pod")
}

fn service(name: &str, pod: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"weft.dev/probe": pod},
            "ports": [{"name": "probe", "port": PROBE_PORT, "targetPort": PROBE_PORT,
                       "protocol": "TCP"}],
        },
    }))
    .expect("valid service")
}

/// Namespace (fresh), probe pods and services; fills `ctx.pods` and `ctx.services`.
pub async fn setup(ctx: &mut Ctx) -> Result<String> {
    delete_namespace(&ctx.client).await?;
    let ns_api: Api<Namespace> = Api::all(ctx.client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))?;
    ns_api.create(&PostParams::default(), &ns).await?;
    // The default ServiceAccount appears shortly after the namespace; pods need it.
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ctx.client.clone(), NAMESPACE);
    super::retry(Duration::from_secs(30), || async {
        sa.get("default").await.map(|_| ()).map_err(Into::into)
    })
    .await
    .context("default ServiceAccount of the test namespace")?;

    let first = ctx.nodes[0].name.clone();
    let second = ctx.nodes[1].name.clone();
    let mut pods = Vec::new();
    for (i, n) in ctx.nodes.iter().enumerate() {
        pods.push(probe_pod(
            &format!("probe-{}", i + 1),
            &n.name,
            false,
            false,
        ));
    }
    pods.push(probe_pod("probe-1b", &first, false, false));
    pods.push(probe_pod("probe-host", &first, true, false));
    pods.push(probe_pod("probe-hostport", &second, false, true));
    pods.push(probe_pod("probe-recreate", &second, false, false));
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    for p in &pods {
        api.create(&PostParams::default(), p).await?;
    }
    let svc_api: Api<Service> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    for i in 1..=ctx.nodes.len() {
        let s = svc_api
            .create(
                &PostParams::default(),
                &service(&format!("svc-{i}"), &format!("probe-{i}")),
            )
            .await?;
        let ip = s
            .spec
            .and_then(|s| s.cluster_ip)
            .and_then(|ip| ip.parse().ok())
            .context("service without an IPv4 ClusterIP")?;
        ctx.services.insert(format!("svc-{i}"), ip);
    }
    for p in &pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let info = wait_pod_ready(&ctx.client, &name, Duration::from_secs(150)).await?;
        ctx.pods.insert(name, info);
    }
    Ok(format!(
        "{} pods: {}",
        ctx.pods.len(),
        ctx.pods
            .values()
            .map(|p| format!("{}={}@{}", p.name, p.ip, p.node))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// Waits until the pod is Ready; its IP and node.
pub async fn wait_pod_ready(
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<PodInfo> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + timeout;
    loop {
        let pod = api.get_opt(name).await?;
        if let Some(info) = pod.as_ref().and_then(ready_info) {
            return Ok(info);
        }
        if Instant::now() > deadline {
            let status = pod
                .and_then(|p| p.status)
                .map(|s| {
                    format!(
                        "phase {:?}, conditions {:?}, containers {:?}",
                        s.phase,
                        s.conditions
                            .unwrap_or_default()
                            .iter()
                            .map(|c| format!(
                                "{}={}:{}",
                                c.type_,
                                c.status,
                                c.message.clone().unwrap_or_default()
                            ))
                            .collect::<Vec<_>>(),
                        s.container_statuses
                            .unwrap_or_default()
                            .iter()
                            .map(|c| format!("{:?}", c.state))
                            .collect::<Vec<_>>()
                    )
                })
                .unwrap_or_else(|| "not found".into());
            bail!("pod {name} not Ready after {timeout:?}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn ready_info(p: &Pod) -> Option<PodInfo> {
    let status = p.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready || p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    Some(PodInfo {
        name: p.metadata.name.clone()?,
        node: p.spec.as_ref()?.node_name.clone()?,
        ip: status.pod_ip.as_ref()?.parse().ok()?,
    })
}

/// Deletes a pod now and waits until it is gone.
pub async fn delete_pod(client: &kube::Client, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = api
        .delete(name, &DeleteParams::default().grace_period(0))
        .await;
    let deadline = Instant::now() + timeout;
    while api.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("pod {name} still exists after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

/// Deletes the test namespace (if any) and waits until it is gone.
pub async fn delete_namespace(client: &kube::Client) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(NAMESPACE).await?.is_none() {
        return Ok(());
    }
    // Pods first, without grace, so the namespace goes quickly.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await;
    let _ = api.delete(NAMESPACE, &DeleteParams::default()).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while api.get_opt(NAMESPACE).await?.is_some() {
        if Instant::now() > deadline {
            bail!("namespace {NAMESPACE} still exists after 90 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pods_are_pinned_and_expose_their_ports() {
        let p = probe_pod("probe-x", "node-a", false, true);
        let spec = p.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some(PROBE_IMAGE));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        let port = &c.ports.as_ref().expect("ports")[0];
        assert_eq!(port.container_port, i32::from(PROBE_PORT));
        assert_eq!(port.host_port, Some(i32::from(HOST_PORT)));

        let h = probe_pod("probe-h", "node-a", true, false)
            .spec
            .expect("spec");
        assert_eq!(h.host_network, Some(true));
        let c = &h.containers[0];
        assert!(c
            .command
            .as_ref()
            .expect("command")
            .contains(&format!("0.0.0.0:{HOST_PROBE_PORT}")));
        assert_eq!(c.ports.as_ref().expect("ports")[0].host_port, None);
    }
}
