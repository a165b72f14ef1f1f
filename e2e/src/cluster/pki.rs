//! Credentials of the local cluster: a CA and the API server's serving certificate
//! (so pods verify `kubernetes.default.svc` with the CA the controller-manager publishes
//! as `kube-root-ca.crt`), the service-account key, and one static bearer token per
//! identity (admin, controller-manager, scheduler, kube-proxy, each node's kubelet as
//! `system:node:<name>` in `system:nodes`, so the Node authorizer and NodeRestriction
//! apply as in a real cluster). Made with `openssl`; test use only.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{Layout, API_SERVICE_IP, HOST_IP};
use crate::topo::run;

/// An identity with its bearer token.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Component name: the kubeconfig's file name.
    pub component: String,
    pub user: String,
    pub groups: Vec<String>,
    pub token: String,
}

pub fn identities(nodes: &[super::NodeSpec]) -> Vec<Identity> {
    let mut ids = vec![
        id("admin", "weft-e2e-admin", &["system:masters"]),
        id(
            "kube-controller-manager",
            "system:kube-controller-manager",
            &[],
        ),
        id("kube-scheduler", "system:kube-scheduler", &[]),
        id("kube-proxy", "system:kube-proxy", &[]),
    ];
    for n in nodes {
        ids.push(id(
            &format!("kubelet-{}", n.name),
            &format!("system:node:{}", n.name),
            &["system:nodes"],
        ));
    }
    ids
}

fn id(component: &str, user: &str, groups: &[&str]) -> Identity {
    Identity {
        component: component.into(),
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        token: random_token(),
    }
}

/// kube-apiserver's `--token-auth-file`: token,user,uid,"group1,group2".
pub fn token_file(ids: &[Identity]) -> String {
    ids.iter()
        .map(|i| {
            format!(
                "{},{},{},\"{}\"\n",
                i.token,
                i.user,
                i.user,
                i.groups.join(",")
            )
        })
        .collect()
}

/// CA, serving certificate for the API server, service-account key under `pki/`.
pub fn make(layout: &Layout) -> Result<()> {
    let pki = layout.pki();
    std::fs::create_dir_all(&pki)?;
    let p = |f: &str| pki.join(f);
    openssl(|c| {
        c.args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            "/CN=weft-e2e-ca",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.crt"))
    })
    .context("make the cluster CA")?;
    openssl(|c| {
        c.args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
        ])
        .arg("-keyout")
        .arg(p("apiserver.key"))
        .arg("-out")
        .arg(p("apiserver.csr"))
    })
    .context("make the API server key")?;
    let ext = format!(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
         subjectAltName=IP:{HOST_IP},IP:{API_SERVICE_IP},IP:127.0.0.1,DNS:localhost,DNS:kubernetes,\
         DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    );
    std::fs::write(p("apiserver.ext"), ext)?;
    openssl(|c| {
        c.args(["x509", "-req", "-days", "365", "-CAcreateserial", "-in"])
            .arg(p("apiserver.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("apiserver.ext"))
            .arg("-out")
            .arg(p("apiserver.crt"))
    })
    .context("sign the API server certificate")?;
    openssl(|c| c.args(["genrsa", "-out"]).arg(p("sa.key")).arg("2048"))
        .context("make the service-account key")?;
    Ok(())
}

fn openssl(build: impl FnOnce(&mut Command) -> &mut Command) -> Result<()> {
    let mut cmd = Command::new("openssl");
    run(build(&mut cmd))?;
    Ok(())
}

/// A kubeconfig for `token` that verifies the API server with the cluster CA.
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    token: &str,
) -> Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "weft-e2e", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "weft-e2e", "context": {"cluster": "weft-e2e", "user": user}}],
        "current-context": "weft-e2e",
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("write {}", path.display()))
}

fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| format!("{:x}", rng.random_range(0..16u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_quotes_groups_and_names_nodes() {
        let ids = identities(&[super::super::NodeSpec::new(1)]);
        let text = token_file(&ids);
        let node = text
            .lines()
            .find(|l| l.contains("system:node:weft-e2e-1"))
            .unwrap();
        assert!(
            node.ends_with(",system:node:weft-e2e-1,system:node:weft-e2e-1,\"system:nodes\""),
            "{node}"
        );
        assert!(text.lines().any(|l| l.ends_with("\"system:masters\"")));
    }
}
