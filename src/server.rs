//! The operator's HTTP endpoints: `/healthz` (the process serves), `/readyz` (every watch has
//! synced), `/metrics` (Prometheus) and the routes handed in (the GitHub webhook).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::watch};

use crate::metrics::Metrics;

#[derive(Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
}

/// Binds `addr`; returns the bound address (useful with port 0) and the future that serves
/// the health, readiness and metrics endpoints plus `routes` (the webhook).
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    routes: Router,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(ServerState { metrics, ready })
        .merge(routes);
    Ok((bound, async move { axum::serve(listener, app).await }))
}

async fn readyz(State(state): State<ServerState>) -> impl IntoResponse {
    if *state.ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "watches have not synced yet",
        )
    }
}

async fn metrics_text(State(state): State<ServerState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
