//! The broker's Prometheus metrics, encoded by `prometheus-client` (OpenMetrics text) for `/metrics`. Every
//! name has the `runnel_` prefix; durations are in seconds and sizes in bytes. README.md "Metrics" lists each
//! one with its type, unit and labels — keep the two in step.
//!
//! Two kinds:
//! - Updated as things happen, without allocation (label values are `&'static str`; a label set allocates
//!   once, the first time it is seen): requests, durations, errors by code, connections, in-flight requests,
//!   produce/fetch bytes, and the fsync histograms, which the storage flusher feeds through
//!   [`FsyncMetrics`] (a [`FlushObserver`]).
//! - Taken at scrape time from the topic registry and the group coordinator: per-partition offsets, term,
//!   leader changes, segments and bytes, partition health counts and consumer-group lag. Their families are
//!   cleared and refilled under one lock per scrape, so deleted partitions and groups disappear.
//!
//! Client errors are also logged here: at most one line per error code per [`ERROR_LOG_INTERVAL`], saying
//! how many of that code went unlogged since the previous line.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry as PromRegistry, Unit};
use runnel_protocol::messages::OffsetFetchRequest;
use runnel_protocol::{ApiKey, ErrorCode, ErrorResponse, Response};

use crate::storage::FlushObserver;

use super::Broker;

/// At most one log line per error code per this interval (client error classes, rate-limited).
pub const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Error codes tracked by the log limiter; larger codes share the last slot.
const ERROR_CODE_SLOTS: usize = 64;
/// Most consumer-group lag series one scrape exports; past it the rest are skipped and
/// `runnel_consumer_group_lag_truncated` is 1.
pub const GROUP_LAG_SERIES_MAX: usize = 10_000;

/// The `api` label of request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

/// The labels of the error counter: the API and the error code's name (`ErrorCode::name()`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub api: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    topic: String,
    partition: u32,
    replica: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLagLabels {
    group: String,
    topic: String,
    partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
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
        Some(ApiKey::AlterConfigs) => "alter_configs",
        Some(ApiKey::InitProducerId) => "init_producer_id",
        None => "unknown",
    }
}

type HistogramCtor = fn() -> Histogram;

fn request_histogram() -> Histogram {
    // 50 µs .. ~1.6 s in 16 doubling steps; long polls land in +Inf.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The fsync histograms, fed by the storage flusher on its own thread (atomics only, no allocation).
#[derive(Clone)]
pub struct FsyncMetrics {
    duration: Histogram,
    batches: Histogram,
    failures: Counter,
}

impl FlushObserver for FsyncMetrics {
    fn synced(&self, elapsed: Duration, batches: u64, ok: bool) {
        self.duration.observe(elapsed.as_secs_f64());
        self.batches.observe(batches as f64);
        if !ok {
            self.failures.inc();
        }
    }
}

/// Decides which client errors get a log line: one per code per [`ERROR_LOG_INTERVAL`].
struct ErrorLogLimiter {
    epoch: Instant,
    /// Per code slot: milliseconds since `epoch` of its last line, plus one (0 = never logged).
    last: [AtomicI64; ERROR_CODE_SLOTS],
    /// Per code slot: errors not logged since the last line.
    suppressed: [AtomicU64; ERROR_CODE_SLOTS],
}

impl ErrorLogLimiter {
    fn new() -> ErrorLogLimiter {
        ErrorLogLimiter {
            epoch: Instant::now(),
            last: std::array::from_fn(|_| AtomicI64::new(0)),
            suppressed: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis().min(i64::MAX as u128 / 2) as i64
    }

    /// `Some(errors not logged since the previous line)` when this error of `code` at `now_ms` gets a line.
    fn admit(&self, code: ErrorCode, now_ms: i64) -> Option<u64> {
        let slot = (code.as_u16() as usize).min(ERROR_CODE_SLOTS - 1);
        let (last, suppressed) = (&self.last[slot], &self.suppressed[slot]);
        let seen = last.load(Ordering::Relaxed);
        let interval = ERROR_LOG_INTERVAL.as_millis() as i64;
        let due = seen == 0 || now_ms + 1 - seen >= interval;
        if due
            && last
                .compare_exchange(seen, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(suppressed.swap(0, Ordering::Relaxed));
        }
        suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Families refilled at every scrape.
struct ScrapeFamilies {
    log_end_offset: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    high_watermark: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    log_start_offset: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    term: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    leader: Family<PartitionLabels, Gauge>,
    leader_changes: Family<PartitionLabels, Counter>,
    replica_lag: Family<ReplicaLabels, Gauge<u64, AtomicU64>>,
    segments: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    log_bytes: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    disk_bytes: Family<PartitionLabels, Gauge<u64, AtomicU64>>,
    retention_deleted_segments: Family<PartitionLabels, Counter>,
    retention_deleted_bytes: Family<PartitionLabels, Counter>,
    group_lag: Family<GroupLagLabels, Gauge<u64, AtomicU64>>,
    group_lag_truncated: Gauge,
    partitions: Gauge,
    leaderless: Gauge,
    under_replicated: Gauge,
    quiet: Gauge,
    appends_received: Gauge<u64, AtomicU64>,
    ready: Gauge,
}

/// Every metric the broker exports.
pub struct Metrics {
    registry: PromRegistry,
    requests: Family<ApiLabels, Counter>,
    durations: Family<ApiLabels, Histogram, HistogramCtor>,
    errors: Family<ErrorLabels, Counter>,
    connections: Gauge,
    inflight: Gauge,
    produce_bytes: Counter,
    produce_records: Counter,
    fetch_bytes: Counter,
    fsync: FsyncMetrics,
    scrape: ScrapeFamilies,
    /// Serializes scrapes (they clear and refill the scrape families).
    scrape_lock: Mutex<()>,
    error_log: ErrorLogLimiter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn partition_gauge() -> Family<PartitionLabels, Gauge<u64, AtomicU64>> {
    Family::default()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = PromRegistry::with_prefix("runnel");
        let build = Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
        });
        r.register("build", "The broker's version", build);

        let requests = Family::<ApiLabels, Counter>::default();
        r.register("requests", "Requests handled, by API", requests.clone());
        let durations = Family::<ApiLabels, Histogram, HistogramCtor>::new_with_constructor(
            request_histogram as HistogramCtor,
        );
        // Histograms carry their unit in the name only: some strict OpenMetrics parsers refuse a UNIT line
        // on a histogram (the spec allows it, and the line is optional).
        r.register(
            "request_duration_seconds",
            "Time from decoding a request to queueing its response, by API",
            durations.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        r.register(
            "errors",
            "Errors returned to clients, by API and error code: one per request-level error and one per \
             failed partition, topic or group in a response body",
            errors.clone(),
        );
        let connections = Gauge::default();
        r.register(
            "connections",
            "Client connections open now",
            connections.clone(),
        );
        let inflight = Gauge::default();
        r.register(
            "inflight_requests",
            "Requests read from a connection and not yet answered on the wire",
            inflight.clone(),
        );
        let produce_bytes = Counter::default();
        r.register_with_unit(
            "produce",
            "Record batch bytes appended by produce requests",
            Unit::Bytes,
            produce_bytes.clone(),
        );
        let produce_records = Counter::default();
        r.register(
            "produce_records",
            "Records appended by produce requests",
            produce_records.clone(),
        );
        let fetch_bytes = Counter::default();
        r.register_with_unit(
            "fetch",
            "Record batch bytes returned by fetch requests",
            Unit::Bytes,
            fetch_bytes.clone(),
        );
        let fsync = FsyncMetrics {
            // 10 µs .. ~1.3 s in 18 doubling steps.
            duration: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            // 1 .. 4096 batches in 13 doubling steps.
            batches: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            failures: Counter::default(),
        };
        r.register(
            "fsync_duration_seconds",
            "Duration of each fdatasync made by the group-commit flusher",
            fsync.duration.clone(),
        );
        r.register(
            "fsync_batches",
            "Record batches made durable by each fdatasync of the group-commit flusher (group commit)",
            fsync.batches.clone(),
        );
        r.register(
            "fsync_failures",
            "Failed fdatasyncs (each stops its partition's log)",
            fsync.failures.clone(),
        );

        let scrape = ScrapeFamilies {
            log_end_offset: partition_gauge(),
            high_watermark: partition_gauge(),
            log_start_offset: partition_gauge(),
            term: partition_gauge(),
            leader: Family::default(),
            leader_changes: Family::default(),
            replica_lag: Family::default(),
            segments: partition_gauge(),
            log_bytes: partition_gauge(),
            disk_bytes: partition_gauge(),
            retention_deleted_segments: Family::default(),
            retention_deleted_bytes: Family::default(),
            group_lag: Family::default(),
            group_lag_truncated: Gauge::default(),
            partitions: Gauge::default(),
            leaderless: Gauge::default(),
            under_replicated: Gauge::default(),
            quiet: Gauge::default(),
            appends_received: Gauge::default(),
            ready: Gauge::default(),
        };
        let s = &scrape;
        r.register(
            "partition_log_end_offset",
            "One past the last appended offset, by partition",
            s.log_end_offset.clone(),
        );
        r.register(
            "partition_high_watermark",
            "First offset not yet committed, by partition",
            s.high_watermark.clone(),
        );
        r.register(
            "partition_log_start_offset",
            "First offset still stored, by partition",
            s.log_start_offset.clone(),
        );
        r.register(
            "partition_raft_term",
            "Current Raft term of the partition's group",
            s.term.clone(),
        );
        r.register(
            "partition_leader",
            "Node id of the partition's leader; -1 while it has none",
            s.leader.clone(),
        );
        r.register(
            "partition_leader_changes",
            "New leaderships (another leader or a new term) since the partition was opened, the first \
             election included",
            s.leader_changes.clone(),
        );
        r.register(
            "partition_replica_lag_entries",
            "On the partition's leader: entries each replica is behind the leader's log (0 = caught up; a \
             replica silent for 3 s counts at least 1)",
            s.replica_lag.clone(),
        );
        r.register(
            "partition_segments",
            "Segments of the partition's log",
            s.segments.clone(),
        );
        r.register_with_unit(
            "partition_log",
            "Bytes of entries in the partition's segments",
            Unit::Bytes,
            s.log_bytes.clone(),
        );
        r.register_with_unit(
            "partition_disk",
            "Bytes allocated on disk for the partition's segment files (segments are preallocated)",
            Unit::Bytes,
            s.disk_bytes.clone(),
        );
        r.register(
            "partition_retention_deleted_segments",
            "Segments deleted by retention since the partition was opened",
            s.retention_deleted_segments.clone(),
        );
        r.register_with_unit(
            "partition_retention_deleted",
            "Segment file bytes deleted by retention since the partition was opened",
            Unit::Bytes,
            s.retention_deleted_bytes.clone(),
        );
        r.register(
            "partitions",
            "Partitions hosted by this broker",
            s.partitions.clone(),
        );
        r.register(
            "leaderless_partitions",
            "Partitions hosted here that have no leader",
            s.leaderless.clone(),
        );
        r.register(
            "under_replicated_partitions",
            "Partitions hosted here whose in-sync replicas are fewer than their replicas",
            s.under_replicated.clone(),
        );
        r.register(
            "quiet_partitions",
            "Partition replicas hosted here whose Raft group is quiescent (idle: no heartbeats, no timers)",
            s.quiet.clone(),
        );
        r.register(
            "raft_appends_received",
            "AppendEntries (heartbeats included) received for the Raft groups hosted here, since start",
            s.appends_received.clone(),
        );
        r.register(
            "consumer_group_lag",
            "High watermark minus the group's committed offset, in records, by group and partition \
             (groups with a committed offset; only once the group coordinator has started)",
            s.group_lag.clone(),
        );
        r.register(
            "consumer_group_lag_truncated",
            "1 when the last scrape had more consumer-group lag series than it exports",
            s.group_lag_truncated.clone(),
        );
        r.register(
            "ready",
            "1 when /health/ready answers 200, else 0",
            s.ready.clone(),
        );
        Metrics {
            registry: r,
            requests,
            durations,
            errors,
            connections,
            inflight,
            produce_bytes,
            produce_records,
            fetch_bytes,
            fsync,
            scrape,
            scrape_lock: Mutex::new(()),
            error_log: ErrorLogLimiter::new(),
        }
    }

    /// The observer to hand the storage flusher.
    pub fn fsync_observer(&self) -> Arc<dyn FlushObserver> {
        Arc::new(self.fsync.clone())
    }

    /// Counts one request and its duration.
    pub fn observe_request(&self, api: &'static str, elapsed: std::time::Duration) {
        let labels = ApiLabels { api };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts (and maybe logs) one error returned to a client.
    pub fn observe_error(&self, api: &'static str, code: ErrorCode, message: Option<&str>) {
        if code.is_ok() {
            return;
        }
        self.errors
            .get_or_create(&ErrorLabels {
                api,
                code: code.name(),
            })
            .inc();
        if let Some(suppressed) = self.error_log.admit(code, self.error_log.now_ms()) {
            let detail = message.unwrap_or_else(|| code.message());
            if matches!(code, ErrorCode::Unknown | ErrorCode::StorageError) {
                tracing::warn!(
                    code = code.name(),
                    api,
                    retriable = code.retriable(),
                    suppressed,
                    detail,
                    "client error"
                );
            } else {
                tracing::info!(
                    code = code.name(),
                    api,
                    retriable = code.retriable(),
                    suppressed,
                    detail,
                    "client error"
                );
            }
        }
    }

    /// Counts every error a handler's outcome carries: the request-level error, or each per-partition,
    /// per-topic or group error in the response body.
    pub fn observe_outcome(&self, api: &'static str, outcome: &Result<Response, ErrorResponse>) {
        match outcome {
            Err(e) => self.observe_error(api, e.code, Some(&e.message)),
            Ok(r) => for_each_error(r, &mut |code, message| {
                self.observe_error(api, ErrorCode::from_u16(code), message)
            }),
        }
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

    /// A request was read; the returned guard marks it answered when dropped.
    pub fn request_started(&self) -> InflightGuard {
        self.inflight.inc();
        InflightGuard(self.inflight.clone())
    }

    pub fn inflight_requests(&self) -> i64 {
        self.inflight.get()
    }

    pub fn add_produce(&self, bytes: u64, records: u64) {
        self.produce_bytes.inc_by(bytes);
        self.produce_records.inc_by(records);
    }

    pub fn add_fetch_bytes(&self, n: u64) {
        self.fetch_bytes.inc_by(n);
    }

    /// The exposition text. With `broker` (once the node has opened its partitions) the scrape-time
    /// metrics are taken from it now; before, they are empty and `runnel_ready` is 0.
    pub fn encode(&self, broker: Option<&Broker>) -> String {
        let _one_scrape = self.scrape_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.refresh(broker);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    fn refresh(&self, broker: Option<&Broker>) {
        let s = &self.scrape;
        s.log_end_offset.clear();
        s.high_watermark.clear();
        s.log_start_offset.clear();
        s.term.clear();
        s.leader.clear();
        s.leader_changes.clear();
        s.replica_lag.clear();
        s.segments.clear();
        s.log_bytes.clear();
        s.disk_bytes.clear();
        s.retention_deleted_segments.clear();
        s.retention_deleted_bytes.clear();
        s.group_lag.clear();
        let Some(b) = broker else {
            s.partitions.set(0);
            s.leaderless.set(0);
            s.under_replicated.set(0);
            s.quiet.set(0);
            s.group_lag_truncated.set(0);
            s.ready.set(0);
            return;
        };
        let (mut partitions, mut leaderless, mut under_replicated) = (0i64, 0i64, 0i64);
        for t in b.registry.topics() {
            for (i, p) in t.partitions.iter().enumerate() {
                // Per-partition series describe the replicas this broker hosts.
                let Some(p) = p else { continue };
                partitions += 1;
                let labels = PartitionLabels {
                    topic: t.record.name.clone(),
                    partition: i as u32,
                };
                let view = crate::cluster::partition_view(b, &t, i);
                let leader = view.leader;
                if leader.is_none() {
                    leaderless += 1;
                }
                // Counted where the leader is (it alone knows its followers' progress), or when leaderless.
                if leader.is_none() || (p.is_leader() && view.under_replicated()) {
                    under_replicated += 1;
                }
                let stats = p.log_stats();
                s.log_end_offset
                    .get_or_create(&labels)
                    .set(p.log_end_offset());
                s.high_watermark
                    .get_or_create(&labels)
                    .set(p.high_watermark());
                s.log_start_offset
                    .get_or_create(&labels)
                    .set(p.log_start_offset());
                s.term.get_or_create(&labels).set(p.term());
                s.leader
                    .get_or_create(&labels)
                    .set(leader.map_or(-1, i64::from));
                s.leader_changes
                    .get_or_create(&labels)
                    .inc_by(p.leader_changes());
                for (replica, lag) in p.replica_lag().unwrap_or_default() {
                    s.replica_lag
                        .get_or_create(&ReplicaLabels {
                            topic: labels.topic.clone(),
                            partition: labels.partition,
                            replica,
                        })
                        .set(lag);
                }
                s.segments.get_or_create(&labels).set(stats.segments);
                s.log_bytes.get_or_create(&labels).set(stats.log_bytes);
                s.disk_bytes
                    .get_or_create(&labels)
                    .set(stats.allocated_bytes);
                s.retention_deleted_segments
                    .get_or_create(&labels)
                    .inc_by(stats.purged_segments);
                s.retention_deleted_bytes
                    .get_or_create(&labels)
                    .inc_by(stats.purged_bytes);
            }
        }
        s.partitions.set(partitions);
        s.leaderless.set(leaderless);
        s.under_replicated.set(under_replicated);
        s.quiet
            .set(i64::try_from(b.raft.quiet_group_count()).unwrap_or(i64::MAX));
        s.appends_received.set(b.raft.appends_received());
        s.group_lag_truncated
            .set(i64::from(!self.refresh_group_lag(b)));
        s.ready.set(i64::from(b.readiness().is_ok()));
    }

    /// Fills consumer-group lag from the coordinator if it is running (a scrape never starts it). Returns
    /// false when [`GROUP_LAG_SERIES_MAX`] cut the output short.
    fn refresh_group_lag(&self, b: &Broker) -> bool {
        let Some(coordinator) = b.groups.get() else {
            return true;
        };
        let series = coordinator.list().groups.into_iter().flat_map(|g| {
            let committed = coordinator.fetch_offsets(&OffsetFetchRequest {
                group_id: g.group_id.clone(),
                topics: None,
            });
            committed.topics.into_iter().flat_map(move |t| {
                let group = g.group_id.clone();
                t.partitions.into_iter().filter_map(move |cp| {
                    let offset = cp.committed_offset?;
                    let p = b.registry.partition(&t.name, cp.partition).ok()?;
                    Some((
                        GroupLagLabels {
                            group: group.clone(),
                            topic: t.name.clone(),
                            partition: cp.partition,
                        },
                        p.high_watermark().saturating_sub(offset),
                    ))
                })
            })
        });
        self.fill_group_lag(series, GROUP_LAG_SERIES_MAX)
    }

    /// Sets at most `max` lag series; false when more were offered.
    fn fill_group_lag(
        &self,
        series: impl Iterator<Item = (GroupLagLabels, u64)>,
        max: usize,
    ) -> bool {
        for (n, (labels, lag)) in series.enumerate() {
            if n == max {
                return false;
            }
            self.scrape.group_lag.get_or_create(&labels).set(lag);
        }
        true
    }
}

/// Decrements the in-flight gauge when the request's response has been written (or dropped).
pub struct InflightGuard(Gauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Calls `f(code, message)` for every non-zero error code in a response body.
fn for_each_error(r: &Response, f: &mut impl FnMut(u16, Option<&str>)) {
    let mut one = |code: u16, message: &Option<String>| {
        if code != 0 {
            f(code, message.as_deref());
        }
    };
    match r {
        Response::ApiVersions(_) | Response::ListGroups(_) => {}
        Response::Metadata(m) => {
            for t in &m.topics {
                one(t.error_code, &None);
                for p in &t.partitions {
                    one(p.error_code, &None);
                }
            }
        }
        Response::CreateTopics(c) => {
            for t in &c.topics {
                one(t.error_code, &t.error_message);
            }
        }
        Response::DeleteTopics(d) => {
            for t in &d.topics {
                one(t.error_code, &t.error_message);
            }
        }
        Response::CreatePartitions(c) => one(c.result.error_code, &c.result.error_message),
        Response::AlterConfigs(a) => one(a.result.error_code, &a.result.error_message),
        Response::RaftRpc(r) => one(r.error_code, &r.error_message),
        Response::Produce(p) => {
            for t in &p.topics {
                for p in &t.partitions {
                    one(p.error_code, &p.error_message);
                }
            }
        }
        Response::Fetch(fr) => {
            for t in &fr.topics {
                for p in &t.partitions {
                    one(p.error_code, &p.error_message);
                }
            }
        }
        Response::ListOffsets(l) => {
            for t in &l.topics {
                for p in &t.partitions {
                    one(p.error_code, &p.error_message);
                }
            }
        }
        Response::FindCoordinator(c) => one(c.error_code, &c.error_message),
        Response::InitProducerId(r) => one(r.error_code, &r.error_message),
        Response::GroupHeartbeat(h) => one(h.error_code, &h.error_message),
        Response::OffsetCommit(c) => {
            one(c.error_code, &c.error_message);
            for t in &c.topics {
                for p in &t.partitions {
                    one(p.error_code, &None);
                }
            }
        }
        Response::OffsetFetch(o) => one(o.error_code, &o.error_message),
        Response::DescribeGroup(d) => one(d.error_code, &d.error_message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::messages::{
        ProducePartitionResponse, ProduceResponse, ProduceTopicResponse,
    };

    #[test]
    fn the_error_log_admits_one_line_per_code_per_interval() {
        let l = ErrorLogLimiter::new();
        let iv = ERROR_LOG_INTERVAL.as_millis() as i64;
        assert_eq!(l.admit(ErrorCode::NotLeader, 0), Some(0));
        for t in [1, 10, iv - 2] {
            assert_eq!(l.admit(ErrorCode::NotLeader, t), None, "at {t} ms");
        }
        // Another code has its own budget.
        assert_eq!(l.admit(ErrorCode::CorruptMessage, 5), Some(0));
        // After the interval: one line, reporting what was held back.
        assert_eq!(l.admit(ErrorCode::NotLeader, iv), Some(3));
        assert_eq!(l.admit(ErrorCode::NotLeader, iv + 1), None);
        assert_eq!(l.admit(ErrorCode::NotLeader, 2 * iv), Some(1));
    }

    #[test]
    fn errors_in_response_bodies_are_counted_by_code() {
        let m = Metrics::new();
        let part = |code: ErrorCode| ProducePartitionResponse {
            error_code: code.as_u16(),
            ..ProducePartitionResponse::default()
        };
        let resp = Response::Produce(ProduceResponse {
            topics: vec![ProduceTopicResponse {
                name: "t".into(),
                partitions: vec![
                    part(ErrorCode::None),
                    part(ErrorCode::NotLeader),
                    part(ErrorCode::NotLeader),
                    part(ErrorCode::CorruptMessage),
                ],
            }],
        });
        m.observe_outcome("produce", &Ok(resp));
        m.observe_outcome(
            "fetch",
            &Err(ErrorResponse {
                code: ErrorCode::InvalidRequest,
                message: "bad".into(),
            }),
        );
        let text = m.encode(None);
        for line in [
            r#"runnel_errors_total{api="produce",code="NOT_LEADER"} 2"#,
            r#"runnel_errors_total{api="produce",code="CORRUPT_MESSAGE"} 1"#,
            r#"runnel_errors_total{api="fetch",code="INVALID_REQUEST"} 1"#,
            "runnel_ready 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("code=\"NONE\""), "{text}");
    }

    #[test]
    fn fsync_observations_land_in_the_histograms() {
        let m = Metrics::new();
        let o = m.fsync_observer();
        o.synced(Duration::from_micros(300), 5, true);
        o.synced(Duration::from_millis(2), 1, false);
        let text = m.encode(None);
        for line in [
            "runnel_fsync_duration_seconds_count 2",
            "runnel_fsync_batches_count 2",
            "runnel_fsync_batches_sum 6.0",
            "runnel_fsync_failures_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn group_lag_series_stop_at_the_limit() {
        let m = Metrics::new();
        let series = |n: u32| {
            (0..n).map(|p| {
                (
                    GroupLagLabels {
                        group: "g".into(),
                        topic: "t".into(),
                        partition: p,
                    },
                    u64::from(p),
                )
            })
        };
        let stored = |m: &Metrics| {
            series(10)
                .filter(|(l, _)| m.scrape.group_lag.get(l).is_some())
                .count()
        };
        assert!(m.fill_group_lag(series(3), 3), "exactly at the limit");
        assert_eq!(stored(&m), 3);
        m.scrape.group_lag.clear();
        assert!(!m.fill_group_lag(series(4), 3), "one past it");
        assert_eq!(stored(&m), 3);
    }

    #[test]
    fn the_inflight_gauge_follows_its_guards() {
        let m = Metrics::new();
        let a = m.request_started();
        let b = m.request_started();
        assert_eq!(m.inflight_requests(), 2);
        drop(a);
        assert_eq!(m.inflight_requests(), 1);
        drop(b);
        assert_eq!(m.inflight_requests(), 0);
    }
}
