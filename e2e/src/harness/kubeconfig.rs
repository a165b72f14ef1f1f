//! Minimal kubeconfig files for the harness's admin and service-account tokens.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes a kubeconfig with a bearer token. The API server's serving certificate is
/// self-signed by kube-apiserver itself, so TLS verification is off: test use only.
pub fn write_kubeconfig(path: &Path, server: &str, token: &str, user: &str) -> Result<()> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "weft-e2e", "cluster": {"server": server, "insecure-skip-tls-verify": true}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "weft-e2e", "context": {"cluster": "weft-e2e", "user": user}}],
        "current-context": "weft-e2e",
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("write {}", path.display()))
}
