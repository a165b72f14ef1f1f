//! The agent's HTTP server: `/healthz` (the process is alive), `/readyz` (200 only once
//! the datapath is programmed and the subnet file written) and `/metrics` (OpenMetrics).
//! It listens on the node's addresses, reachable from every pod, so it runs on
//! [`weft_common::http_serve`]: header timeout, connection cap, bounded buffers.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use weft_common::http_serve::{self, Limits};

use crate::metrics::{self, Metrics};

pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Checked on every /readyz: the plugin cannot work without it.
    pub subnet_file: PathBuf,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<Arc<HttpState>>) -> (StatusCode, String) {
    if !s.metrics.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "datapath not programmed yet\n".into(),
        );
    }
    if !s.subnet_file.exists() {
        let msg = format!("subnet file {} is missing\n", s.subnet_file.display());
        return (StatusCode::SERVICE_UNAVAILABLE, msg);
    }
    (StatusCode::OK, "ok\n".into())
}

async fn metrics(
    State(s): State<Arc<HttpState>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

/// Serves until the task is dropped or aborted (then open connections are closed too).
/// Never fails: accept errors are retried inside.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) -> std::io::Result<()> {
    match http_serve::serve(listener, router(state), Limits::default()).await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        (status, out)
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let subnet_file = dir.path().join("subnet.env");
        let metrics = Arc::new(Metrics::default());
        let state = Arc::new(HttpState {
            metrics: metrics.clone(),
            subnet_file: subnet_file.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, state));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "{body}");
        metrics.set_ready(true);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503, "no subnet file yet");
        assert!(body.contains("subnet.env"), "{body}");
        std::fs::write(&subnet_file, "x").unwrap();
        assert_eq!(get(addr, "/readyz").await.0, 200);

        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{body}"
        );
        assert!(body.contains("weft_agent_ready 1"), "{body}");
        assert_eq!(get(addr, "/nope").await.0, 404);
        server.abort();
    }
}
