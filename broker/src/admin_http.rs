//! The admin HTTP listener (`--admin-listen`), serving from the moment the listeners are bound:
//! - `/health/live`: 200 while the process serves HTTP.
//! - `/health/ready`: 200 when this node has opened every partition, each has a leader, and it is not
//!   draining; otherwise 503 with the reason ("starting: reading topic metadata", "starting: opened N of M
//!   partitions", "partition t-0 has no leader", "draining: ...").
//! - `/metrics`: Prometheus / OpenMetrics text (see `server::metrics` and README "Metrics").
//! - `/v1/cluster` and `/v1/partitions`: JSON, the data `runnel cluster info` and `runnel topic describe`
//!   show (503 while starting).
//!
//! It stops when `stop` is cancelled, which the server does last in a drain, so readiness reports 503
//! throughout the drain.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::topic_views;
use crate::metadata::OpenProgress;
use crate::server::{Broker, Metrics};

/// The content type of the metrics exposition `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoint serves from: the metrics from the start, the broker once it is open.
pub struct AdminState {
    metrics: Arc<Metrics>,
    progress: Arc<OpenProgress>,
    broker: OnceLock<Arc<Broker>>,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>) -> AdminState {
        AdminState {
            metrics,
            progress: Arc::new(OpenProgress::default()),
            broker: OnceLock::new(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn progress(&self) -> &Arc<OpenProgress> {
        &self.progress
    }

    /// Marks the node open: readiness and the JSON endpoints come from `broker` from now on.
    pub fn set_broker(&self, broker: Arc<Broker>) {
        let _ = self.broker.set(broker);
    }

    /// `Ok` when ready; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        match self.broker.get() {
            Some(b) => b.readiness(),
            None => Err(match self.progress.get() {
                None => "starting: reading topic metadata".to_string(),
                Some((opened, total)) => {
                    format!("starting: opened {opened} of {total} partitions")
                }
            }),
        }
    }
}

type Shared = Arc<AdminState>;

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<Shared>) -> (StatusCode, String) {
    match s.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let text = s.metrics.encode(s.broker.get().map(|b| b.as_ref()));
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text)
}

fn json_response(v: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{v}\n"),
    )
        .into_response()
}

fn starting(s: &AdminState) -> Response {
    let why = s.readiness().err().unwrap_or_default();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{}\n", json!({ "error": why })),
    )
        .into_response()
}

/// Brokers, controller, partition counts, leaderless and under-replicated partitions, readiness.
pub fn cluster_json(b: &Broker) -> Value {
    let node_id = b.registry.node_id();
    let (mut partitions, mut leaderless, mut under_replicated) = (0usize, Vec::new(), Vec::new());
    let topics = b.registry.topics();
    for t in &topics {
        for v in topic_views(b, t) {
            partitions += 1;
            let id = json!({"topic": t.record.name, "partition": v.partition});
            if v.leader.is_none() {
                leaderless.push(id.clone());
            }
            if v.leader.is_none() || v.under_replicated() {
                under_replicated.push(id);
            }
        }
    }
    let (brokers, controller) = crate::handlers::metadata::brokers(b);
    let brokers: Vec<Value> = brokers
        .into_iter()
        .map(|m| json!({"node_id": m.node_id, "host": m.host, "port": m.port}))
        .collect();
    json!({
        "cluster_id": b.registry.cluster_id(),
        "node_id": node_id,
        "controller_id": controller,
        "brokers": brokers,
        "topics": topics.len(),
        "partitions": partitions,
        "leaderless": leaderless,
        "under_replicated": under_replicated,
        "ready": b.readiness().is_ok(),
        "draining": b.is_draining(),
    })
}

/// One object per partition, the shape of `runnel topic describe --output json`.
pub fn partitions_json(b: &Broker) -> Value {
    let mut rows = Vec::new();
    for t in b.registry.topics() {
        let configs: serde_json::Map<String, Value> = b
            .registry
            .effective_config(&t.record)
            .pairs()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        for v in topic_views(b, &t) {
            rows.push(json!({
                "topic": t.record.name,
                "partition": v.partition,
                "leader": v.leader,
                "leader_term": v.term,
                "replicas": v.replicas,
                "in_sync": v.caught_up,
                "high_watermark": v.high_watermark,
                "log_start_offset": v.log_start_offset,
                "log_end_offset": v.log_end_offset,
                "configs": configs,
            }));
        }
    }
    Value::Array(rows)
}

async fn cluster(State(s): State<Shared>) -> Response {
    match s.broker.get() {
        Some(b) => json_response(cluster_json(b)),
        None => starting(&s),
    }
}

async fn partitions(State(s): State<Shared>) -> Response {
    match s.broker.get() {
        Some(b) => json_response(partitions_json(b)),
        None => starting(&s),
    }
}

/// The admin routes over the shared state.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/partitions", get(partitions))
        .with_state(state)
}

/// Serves the admin routes on `listener` until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: Shared, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(admin = %addr, "admin HTTP listening (/metrics, /health/live, /health/ready, /v1/cluster, /v1/partitions)");
    }
    let r = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, "admin HTTP listener failed");
    }
}
