//! The admin HTTP listener (`--admin-listen`): `/health/live` (200 while the process serves HTTP),
//! `/health/ready` (200 when the broker serves, is not draining and every partition has a leader; 503 with the
//! reason otherwise) and `/metrics` (Prometheus/OpenMetrics text). It stops when `stop` is cancelled, which
//! the server does last in a drain so readiness reports 503 throughout.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::Broker;

/// The content type of the metrics exposition `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(b): State<Arc<Broker>>) -> (StatusCode, String) {
    match b.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(b): State<Arc<Broker>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        b.metrics.encode(&b.registry),
    )
}

/// The admin routes over the shared broker state.
pub fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(broker)
}

/// Serves the admin routes on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(admin = %addr, "admin HTTP listening (/metrics, /health/live, /health/ready)");
    }
    let r = axum::serve(listener, router(broker))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "admin HTTP listener failed");
    }
}
