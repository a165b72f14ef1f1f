//! /healthz, /readyz and /metrics. The port is on the node's addresses (host network),
//! reachable from every pod, so it runs on [`weft_common::http_serve`]: header timeout,
//! connection cap, bounded buffers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use weft_common::http_serve::{self, Limits};

use crate::metrics::{self, Metrics};
use crate::Error;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

/// Ready once the allocation table is rebuilt from all Nodes, leader or standby.
async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "allocation table not rebuilt yet",
        )
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], m.render())
}

/// Binds `addr` now (so a taken port fails at start) and serves in the background.
pub async fn spawn(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Http { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Http { addr, source })?;
    tokio::spawn(http_serve::serve(
        listener,
        router(metrics),
        Limits::default(),
    ));
    Ok(local)
}
