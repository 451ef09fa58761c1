//! Operability over real sockets: `/metrics` scraped during a produce/consume run (counters move, histograms
//! are present, every scrape parses as OpenMetrics with a strict parser), consumer-group lag, errors counted
//! by code, readiness from bind through serve and drain, AlterConfigs applied to live partitions and
//! persisted, and the JSON admin endpoints.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};
use runnel_broker::Server;
use runnel_protocol::messages::*;
use runnel_protocol::{ErrorCode, Request, Response};

/// One parsed scrape: per sample `family{k=v,...}` (labels sorted) → its number (counter total, gauge
/// value, histogram count), per histogram sample its bucket count, and each family's type.
struct Scrape {
    values: HashMap<String, f64>,
    buckets: HashMap<String, usize>,
    types: HashMap<String, OpenMetricsType>,
    text: String,
}

fn key(family: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    format!("{family}{{{}}}", l.join(","))
}

impl Scrape {
    fn get(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values.get(&key(family, labels)).copied()
    }

    fn must(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(family, labels)
            .unwrap_or_else(|| panic!("no sample {} in\n{}", key(family, labels), self.text))
    }

    /// Sum over every sample of `family` whose labels include `filter`.
    fn sum(&self, family: &str, filter: (&str, &str)) -> f64 {
        let prefix = format!("{family}{{");
        let needle = format!("{}={}", filter.0, filter.1);
        self.values
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && k.contains(&needle))
            .map(|(_, v)| *v)
            .sum()
    }

    fn is_type(&self, family: &str, t: OpenMetricsType) -> bool {
        self.types.get(family) == Some(&t)
    }
}

/// GET /metrics and parse it strictly; a parse failure fails the test with the text.
async fn scrape(admin: SocketAddr) -> Scrape {
    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let parsed = parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid OpenMetrics: {e:?}\n{text}"));
    let mut s = Scrape {
        values: HashMap::new(),
        buckets: HashMap::new(),
        types: HashMap::new(),
        text,
    };
    for (name, family) in &parsed.families {
        s.types.insert(name.clone(), family.family_type);
        for sample in family.iter_samples() {
            let labels = sample.get_labelset().expect("label set");
            let pairs: Vec<(&str, &str)> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let k = key(name, &pairs);
            let v = match &sample.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => g.as_f64(),
                OpenMetricsValue::Histogram(h) => {
                    s.buckets.insert(k.clone(), h.buckets.len());
                    h.count.unwrap_or(0) as f64
                }
                OpenMetricsValue::Info => 1.0,
                other => panic!("unexpected sample kind {other:?} for {k}"),
            };
            s.values.insert(k, v);
        }
    }
    s
}

/// Scrapes until `cond` holds (bounded by [`DEADLINE`]).
async fn scrape_until(admin: SocketAddr, what: &str, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let s = scrape(admin).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            s.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const RUN: &str = "run";

/// Issue 8, acceptance 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_during_a_produce_consume_run_and_parse_as_openmetrics() {
    let b = start().await;
    let admin = b.handle.admin_addr();
    let mut c = Client::connect(b.addr()).await;
    c.create_topic(RUN, 2).await;
    let idle = scrape(admin).await;
    assert_eq!(idle.must("runnel_ready", &[]), 1.0);
    assert_eq!(
        idle.get("runnel_requests", &[("api", "produce")]),
        None,
        "nothing produced yet"
    );
    assert!(
        !idle.text.contains("__consumer_offsets"),
        "a scrape must not start the group coordinator"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn({
        let (addr, stop) = (b.addr(), stop.clone());
        async move {
            let mut c = Client::connect(addr).await;
            let (mut sent, mut i) = (0u64, 0i64);
            while !stop.load(Ordering::Relaxed) {
                let r = c
                    .produce(RUN, (i % 2) as u32, batch(&["a", "b", "c", "d", "e"], i))
                    .await;
                assert_eq!(r.error_code, 0, "{r:?}");
                sent += 5;
                i += 1;
            }
            sent
        }
    });
    let consumer = tokio::spawn({
        let (addr, stop) = (b.addr(), stop.clone());
        async move {
            let mut c = Client::connect(addr).await;
            let mut next = [0u64; 2];
            let mut read = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (p, n) in next.iter_mut().enumerate() {
                    let r = c.fetch(RUN, p as u32, *n, 50, 1).await;
                    assert_eq!(r.error_code, 0, "{r:?}");
                    for (offset, _) in values(&r.records) {
                        assert_eq!(offset, *n, "dense offsets");
                        *n += 1;
                        read += 1;
                    }
                }
            }
            read
        }
    });

    // Two scrapes while both run: every counter of the data path moves between them.
    let produce = |s: &Scrape| {
        s.get("runnel_requests", &[("api", "produce")])
            .unwrap_or(0.0)
    };
    let fetched = |s: &Scrape| s.get("runnel_fetch_bytes", &[]).unwrap_or(0.0);
    let first = scrape_until(admin, "produce and fetch traffic", |s| {
        produce(s) >= 10.0 && fetched(s) > 0.0
    })
    .await;
    let second = scrape_until(admin, "the counters to move", |s| {
        produce(s) > produce(&first) && fetched(s) > fetched(&first)
    })
    .await;
    for (family, labels) in [
        ("runnel_requests", &[("api", "produce")][..]),
        ("runnel_requests", &[("api", "fetch")]),
        ("runnel_request_duration_seconds", &[("api", "produce")]),
        ("runnel_produce_bytes", &[]),
        ("runnel_produce_records", &[]),
        ("runnel_fetch_bytes", &[]),
        ("runnel_fsync_duration_seconds", &[]),
        ("runnel_fsync_batches", &[]),
    ] {
        assert!(
            second.must(family, labels) > first.must(family, labels),
            "{family} {labels:?} did not move: {} -> {}",
            first.must(family, labels),
            second.must(family, labels)
        );
    }
    assert!(
        second.sum("runnel_partition_high_watermark", ("topic", RUN))
            > first.sum("runnel_partition_high_watermark", ("topic", RUN))
    );
    // Histograms are histograms, with buckets.
    for (family, labels) in [
        ("runnel_request_duration_seconds", &[("api", "produce")][..]),
        ("runnel_fsync_duration_seconds", &[]),
        ("runnel_fsync_batches", &[]),
    ] {
        assert!(
            second.is_type(family, OpenMetricsType::Histogram),
            "{family}"
        );
        assert!(second.buckets[&key(family, labels)] > 4, "{family} buckets");
    }
    assert!(second.is_type("runnel_requests", OpenMetricsType::Counter));
    assert!(second.is_type("runnel_connections", OpenMetricsType::Gauge));
    assert!(second.must("runnel_connections", &[]) >= 3.0);
    assert!(second.get("runnel_inflight_requests", &[]).is_some());
    let p0 = [("topic", RUN), ("partition", "0")];
    assert_eq!(second.must("runnel_partition_leader", &p0), 1.0);
    assert_eq!(second.must("runnel_partition_leader_changes", &p0), 1.0);
    assert!(second.must("runnel_partition_raft_term", &p0) >= 1.0);
    assert!(second.must("runnel_partition_segments", &p0) >= 1.0);
    assert!(
        second.must("runnel_partition_disk_bytes", &p0)
            >= second.must("runnel_partition_log_bytes", &p0)
    );
    assert!(second.must("runnel_partition_log_bytes", &p0) > 0.0);

    stop.store(true, Ordering::Relaxed);
    let sent = producer.await.unwrap();
    let read = consumer.await.unwrap();
    assert!(read > 0 && read <= sent);

    // After the run the per-partition offsets account for every record.
    let done = scrape(admin).await;
    assert_eq!(
        done.sum("runnel_partition_high_watermark", ("topic", RUN)),
        sent as f64
    );
    assert_eq!(
        done.sum("runnel_partition_log_end_offset", ("topic", RUN)),
        sent as f64
    );
    assert_eq!(done.must("runnel_produce_records", &[]), sent as f64);
    assert_eq!(
        done.sum("runnel_partition_log_start_offset", ("topic", RUN)),
        0.0
    );
    assert_eq!(done.must("runnel_leaderless_partitions", &[]), 0.0);
    assert_eq!(done.must("runnel_under_replicated_partitions", &[]), 0.0);
    assert_eq!(done.must("runnel_partitions", &[]), 2.0);
    assert_eq!(
        done.must("runnel_build", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );

    // Errors are counted by API and code.
    let r = c.produce(RUN, 7, batch(&["x"], 1)).await;
    assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);
    let s = scrape(admin).await;
    assert_eq!(
        s.must(
            "runnel_errors",
            &[("api", "produce"), ("code", "UNKNOWN_TOPIC_OR_PARTITION")]
        ),
        1.0
    );

    // Consumer-group lag appears once the coordinator runs: an admin commit of offset 2 on partition 0.
    let hwm0 = s.must("runnel_partition_high_watermark", &p0);
    let r = c
        .call(Request::OffsetCommit(OffsetCommitRequest {
            group_id: "g".into(),
            member_id: String::new(),
            member_epoch: -1,
            topics: vec![OffsetCommitTopic {
                name: RUN.into(),
                partitions: vec![OffsetCommitPartition {
                    partition: 0,
                    offset: 2,
                    metadata: None,
                }],
            }],
        }))
        .await;
    assert!(
        matches!(r, Ok(Response::OffsetCommit(ref o)) if o.error_code == 0),
        "{r:?}"
    );
    let s = scrape(admin).await;
    assert_eq!(
        s.must(
            "runnel_consumer_group_lag",
            &[("group", "g"), ("topic", RUN), ("partition", "0")]
        ),
        hwm0 - 2.0
    );
    assert_eq!(s.must("runnel_consumer_group_lag_truncated", &[]), 0.0);
    b.handle.shutdown().await;
}

/// Issue 8, acceptance 2: not ready before the partitions are open, ready while serving, not ready while
/// draining (and until the admin listener closes at the end of the drain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_start_serve_and_drain() {
    let dir = tempfile::tempdir().unwrap();
    // A first run leaves three partitions to reopen.
    {
        let h = Server::start(test_config(dir.path())).await.unwrap();
        let mut c = Client::connect(h.local_addr()).await;
        c.create_topic("kept", 3).await;
        h.shutdown().await;
    }
    let starting = Server::bind(test_config(dir.path())).await.unwrap();
    let admin = starting.admin_addr();
    assert_eq!(http_get(admin, "/health/live").await.0, 200);
    let (status, body) = http_get(admin, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: starting"), "{body}");
    let (status, body) = http_get(admin, "/v1/cluster").await;
    assert_eq!(status, 503, "{body}");
    let m = scrape(admin).await;
    assert_eq!(m.must("runnel_ready", &[]), 0.0);
    assert_eq!(m.must("runnel_partitions", &[]), 0.0);

    let h = starting.open().await.unwrap();
    assert_eq!(h.admin_addr(), admin);
    assert_eq!(
        http_get(admin, "/health/ready").await,
        (200, "ready\n".into())
    );
    let m = scrape(admin).await;
    assert_eq!(m.must("runnel_ready", &[]), 1.0);
    assert_eq!(m.must("runnel_partitions", &[]), 3.0);

    // A parked long poll keeps the drain busy; readiness is 503 from the moment it starts.
    let mut poller = Client::connect(h.local_addr()).await;
    poller.send(&fetch_req("kept", 0, 0, 30_000, 1)).await;
    h.begin_drain();
    let (status, body) = http_get(admin, "/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    let m = scrape(admin).await;
    assert_eq!(m.must("runnel_ready", &[]), 0.0);
    let (status, body) = http_get(admin, "/v1/cluster").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["ready"].as_bool(), v["draining"].as_bool()),
        (Some(false), Some(true))
    );
    h.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin listener closes last"
    );
}

/// A start that fails after bind (corrupt metadata) releases the admin listener and the data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_open_releases_the_listeners() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metadata.json"), b"{\"version\":1,").unwrap();
    let starting = Server::bind(test_config(dir.path())).await.unwrap();
    let admin = starting.admin_addr();
    assert_eq!(http_get(admin, "/health/ready").await.0, 503);
    assert!(starting.open().await.is_err());
    let deadline = Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(admin).await.is_ok() {
        assert!(Instant::now() < deadline, "admin listener still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::remove_file(dir.path().join("metadata.json")).unwrap();
    Server::start(test_config(dir.path()))
        .await
        .unwrap()
        .shutdown()
        .await;
}

async fn alter(
    c: &mut Client,
    topic: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> TopicResult {
    let req = Request::AlterConfigs(AlterConfigsRequest {
        topic: topic.into(),
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        validate_only,
    });
    match c.call(req).await {
        Ok(Response::AlterConfigs(r)) => r.result,
        other => panic!("{other:?}"),
    }
}

async fn topic_configs(c: &mut Client, topic: &str) -> HashMap<String, String> {
    match c
        .call(Request::Metadata(MetadataRequest {
            topics: Some(vec![topic.into()]),
        }))
        .await
    {
        Ok(Response::Metadata(m)) => m.topics[0].configs.iter().cloned().collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_configs_applies_to_live_partitions_and_persists() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 2).await;
    let r = alter(
        &mut c,
        "t",
        &[("retention.ms", "3600000"), ("segment.bytes", "33554432")],
        false,
    )
    .await;
    assert_eq!(r.error_code, 0, "{r:?}");
    let cfg = topic_configs(&mut c, "t").await;
    assert_eq!(cfg["retention.ms"], "3600000");
    assert_eq!(cfg["segment.bytes"], "33554432");
    let topic = b.handle.broker().registry.topic("t").unwrap();
    for p in topic.local() {
        let lc = p.log_config();
        assert_eq!(
            (lc.retention_ms, lc.segment_bytes),
            (Some(3_600_000), 33_554_432)
        );
    }
    // validate_only and refusals change nothing; a refusal names the key.
    let r = alter(&mut c, "t", &[("retention.ms", "1")], true).await;
    assert_eq!(r.error_code, 0);
    for (k, v) in [
        ("segment.bytes", "4096"),
        ("retention.ms", "-7"),
        ("min.insync.replicas", "2"),
    ] {
        let r = alter(&mut c, "t", &[(k, v)], false).await;
        assert_eq!(code(r.error_code), ErrorCode::InvalidConfig, "{k}={v}");
        assert!(r.error_message.unwrap_or_default().contains(k), "{k}");
    }
    assert_eq!(topic_configs(&mut c, "t").await["retention.ms"], "3600000");
    let r = alter(&mut c, "nope", &[("retention.ms", "1")], false).await;
    assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);

    // Persisted: a restart reopens the partitions with the altered configs.
    let TestBroker { handle, dir } = b;
    handle.shutdown().await;
    let handle = Server::start(test_config(dir.path())).await.unwrap();
    let mut c = Client::connect(handle.local_addr()).await;
    assert_eq!(topic_configs(&mut c, "t").await["retention.ms"], "3600000");
    let p = handle.broker().registry.partition("t", 1).unwrap();
    assert_eq!(p.log_config().retention_ms, Some(3_600_000));
    // An empty value goes back to the broker default.
    let r = alter(&mut c, "t", &[("retention.ms", "")], false).await;
    assert_eq!(r.error_code, 0);
    let default_ms = runnel_broker::config::DEFAULT_RETENTION_MS.to_string();
    assert_eq!(topic_configs(&mut c, "t").await["retention.ms"], default_ms);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_partitions_json() {
    let b = start().await;
    let admin = b.handle.admin_addr();
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("j", 2).await;
    c.produce("j", 1, batch(&["a", "b"], 1)).await;
    let (status, body) = http_get(admin, "/v1/cluster").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["node_id"], 1);
    assert_eq!(v["controller_id"], 1);
    assert_eq!(v["partitions"], 2);
    assert_eq!(v["topics"], 1);
    assert_eq!(v["leaderless"], serde_json::json!([]));
    assert_eq!(v["ready"], true);
    assert_eq!(v["brokers"][0]["port"], b.addr().port());
    let (status, body) = http_get(admin, "/v1/partitions").await;
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.len(), 2);
    let p1 = rows.iter().find(|r| r["partition"] == 1).unwrap();
    assert_eq!(p1["topic"], "j");
    assert_eq!(p1["leader"], 1);
    assert_eq!(p1["high_watermark"], 2);
    assert_eq!(p1["log_end_offset"], 2);
    assert_eq!(p1["replicas"], serde_json::json!([1]));
    assert!(p1["configs"]["retention.ms"].is_string());
    b.handle.shutdown().await;
}
