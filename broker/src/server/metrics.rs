//! The broker's Prometheus metrics, encoded by `prometheus-client` (OpenMetrics text) for `/metrics`.
//!
//! Counters and histograms are updated on the request path without allocation (label values are
//! `&'static str`); the per-partition high-watermark gauges are refreshed from the topic registry at scrape
//! time, so deleted partitions disappear from the output.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;
use runnel_protocol::ApiKey;

use crate::metadata::Registry;

/// The `api` label of request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

/// The snake-case name of an API for labels; `"unknown"` for keys this broker does not know.
pub fn api_label(api: Option<ApiKey>) -> &'static str {
    match api {
        Some(ApiKey::ApiVersions) => "api_versions",
        Some(ApiKey::Metadata) => "metadata",
        Some(ApiKey::CreateTopics) => "create_topics",
        Some(ApiKey::DeleteTopics) => "delete_topics",
        Some(ApiKey::Produce) => "produce",
        Some(ApiKey::Fetch) => "fetch",
        Some(ApiKey::ListOffsets) => "list_offsets",
        Some(ApiKey::CreatePartitions) => "create_partitions",
        Some(ApiKey::FindCoordinator) => "find_coordinator",
        Some(ApiKey::GroupHeartbeat) => "group_heartbeat",
        Some(ApiKey::OffsetCommit) => "offset_commit",
        Some(ApiKey::OffsetFetch) => "offset_fetch",
        Some(ApiKey::ListGroups) => "list_groups",
        Some(ApiKey::DescribeGroup) => "describe_group",
        Some(ApiKey::RaftRpc) => "raft_rpc",
        None => "unknown",
    }
}

type HistogramCtor = fn() -> Histogram;

fn request_histogram() -> Histogram {
    // 50 µs .. ~1.6 s in 16 doubling steps; long polls land in +Inf.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: PromRegistry,
    requests: Family<ApiLabels, Counter>,
    durations: Family<ApiLabels, Histogram, HistogramCtor>,
    connections: Gauge,
    produce_bytes: Counter,
    fetch_bytes: Counter,
    high_watermark: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("runnel");
        let requests = Family::<ApiLabels, Counter>::default();
        registry.register("requests", "Requests handled, by API", requests.clone());
        let durations = Family::<ApiLabels, Histogram, HistogramCtor>::new_with_constructor(
            request_histogram as HistogramCtor,
        );
        registry.register(
            "request_duration_seconds",
            "Time from decoding a request to queueing its response, by API",
            durations.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Client connections open now",
            connections.clone(),
        );
        let produce_bytes = Counter::default();
        registry.register(
            "produce_bytes",
            "Record batch bytes appended by produce requests",
            produce_bytes.clone(),
        );
        let fetch_bytes = Counter::default();
        registry.register(
            "fetch_bytes",
            "Record batch bytes returned by fetch requests",
            fetch_bytes.clone(),
        );
        let high_watermark = Family::<PartitionLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "partition_high_watermark",
            "First offset not yet committed, by partition",
            high_watermark.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            connections,
            produce_bytes,
            fetch_bytes,
            high_watermark,
        }
    }

    /// Counts one request and its duration.
    pub fn observe_request(&self, api: &'static str, elapsed: std::time::Duration) {
        let labels = ApiLabels { api };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    pub fn connections(&self) -> i64 {
        self.connections.get()
    }

    pub fn add_produce_bytes(&self, n: u64) {
        self.produce_bytes.inc_by(n);
    }

    pub fn add_fetch_bytes(&self, n: u64) {
        self.fetch_bytes.inc_by(n);
    }

    /// The exposition text, with partition gauges taken from `topics` now.
    pub fn encode(&self, topics: &Registry) -> String {
        self.high_watermark.clear();
        for t in topics.topics() {
            for (i, p) in t.partitions.iter().enumerate() {
                self.high_watermark
                    .get_or_create(&PartitionLabels {
                        topic: t.record.name.clone(),
                        partition: i as u32,
                    })
                    .set(p.high_watermark());
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}
