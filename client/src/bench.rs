//! `runnel bench`: a load generator measuring throughput and latency percentiles (hdrhistogram, µs precision).
//!
//! - **produce**: `producers` independent producers (each with its own connections) send `record_size`-byte
//!   values, at most `in_flight` unacknowledged records each, optionally paced to `rate` records/s in total.
//!   Latency is enqueue → acknowledgement, taken from the moment the batch's answer arrived (not when the
//!   loop noticed it); with `rate`, it is measured from the record's *intended* send time, so a stalled broker
//!   cannot hide its stall (no coordinated omission).
//! - **consume**: reads `records` records (producing the missing ones first, untimed) from the beginning of
//!   every partition; latency is the duration of each `poll` that returned records.
//! - **e2e**: a consumer at the end of every partition plus the producers; each value starts with the send time
//!   (8 bytes, ns since the run's start, little-endian) and latency is produce → consume.
//!
//! MB are 10^6 bytes of keys + values (framing excluded). Benchmarks are programs, not tests: nothing here
//! asserts a timing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use runnel_protocol::ErrorCode;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::admin::{Admin, NewTopic};
use crate::cluster::{ClientConfig, Cluster};
use crate::consumer::{Consumer, ConsumerConfig, Offset};
use crate::error::{ClientError, Result};
use crate::producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};

/// Records sent when neither a count nor a duration is given.
pub const RECORDS_DEFAULT: u64 = 100_000;
/// Default unacknowledged records per producer.
pub const IN_FLIGHT_DEFAULT: usize = 10_000;
/// Largest in-flight window per producer.
pub const IN_FLIGHT_MAX: usize = 1_000_000;
/// Most producers one run may start.
pub const PRODUCERS_MAX: usize = 256;
/// Interval of the live progress line.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// A consume or e2e run ends after this long without a record.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Histogram upper bound: one hour, in µs.
const HIST_MAX_US: u64 = 3_600_000_000;
/// How often producer tasks merge their local counts into the shared ones.
const MERGE_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    Produce,
    Consume,
    E2e,
}

impl BenchMode {
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Produce => "produce",
            BenchMode::Consume => "consume",
            BenchMode::E2e => "e2e",
        }
    }
}

/// One benchmark run's settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub mode: BenchMode,
    pub topic: String,
    /// Partitions when the topic has to be created.
    pub partitions: u32,
    pub replication_factor: u16,
    pub record_size: usize,
    pub records: Option<u64>,
    pub duration: Option<Duration>,
    pub producers: usize,
    pub acks: Acks,
    pub batch_size_bytes: usize,
    pub linger: Duration,
    /// Total records/s over all producers; `None` = as fast as possible.
    pub rate: Option<f64>,
    pub in_flight: usize,
    /// Batches of one partition each producer keeps in flight (the producer's `max_in_flight_per_partition`).
    pub batches_in_flight: usize,
    /// Print the live progress line on stderr.
    pub progress: bool,
}

impl BenchConfig {
    pub fn new(mode: BenchMode, topic: &str) -> BenchConfig {
        let p = ProducerConfig::default();
        BenchConfig {
            mode,
            topic: topic.to_string(),
            partitions: 1,
            replication_factor: 1,
            record_size: 1024,
            records: None,
            duration: None,
            producers: 1,
            acks: Acks::All,
            batch_size_bytes: p.batch_size_bytes,
            linger: p.linger,
            rate: None,
            in_flight: IN_FLIGHT_DEFAULT,
            batches_in_flight: p.max_in_flight_per_partition,
            progress: true,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ClientError::InvalidArgument(m.to_string()));
        if self.producers == 0 || self.producers > PRODUCERS_MAX {
            return bad(&format!("--producers must be in 1..={PRODUCERS_MAX}"));
        }
        if self.in_flight == 0 || self.in_flight > IN_FLIGHT_MAX {
            return bad(&format!("--in-flight must be in 1..={IN_FLIGHT_MAX}"));
        }
        if self.mode == BenchMode::E2e && self.record_size < 8 {
            return bad("e2e needs --record-size of at least 8 (the send time rides in the value)");
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad("--rate must be positive");
        }
        if self.records.is_some() && self.duration.is_some() {
            return bad("give --records or --duration-s, not both");
        }
        Ok(())
    }

    /// The record count when the run is count-bound.
    fn record_count(&self) -> Option<u64> {
        match (self.records, self.duration) {
            (Some(n), _) => Some(n),
            (None, None) => Some(RECORDS_DEFAULT),
            (None, Some(_)) => None,
        }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct BenchSummary {
    pub config: BenchConfig,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies in µs.
    pub latency_us: Histogram<u64>,
}

impl BenchSummary {
    pub fn records_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn mb_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 / 1e6 / self.seconds
        } else {
            0.0
        }
    }

    fn ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        round3(self.latency_us.value_at_quantile(q) as f64 / 1000.0)
    }

    fn max_ms(&self) -> f64 {
        round3(self.latency_us.max() as f64 / 1000.0)
    }

    /// The `--output json` object: the contract's fields plus the settings.
    pub fn to_json(&self) -> Value {
        let c = &self.config;
        json!({
            "records": self.records,
            "seconds": round3(self.seconds),
            "records_per_s": round3(self.records_per_s()),
            "mb_per_s": round3(self.mb_per_s()),
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "p999_ms": self.ms(0.999),
            "max_ms": self.max_ms(),
            "errors": self.errors,
            "mode": c.mode.name(),
            "topic": c.topic,
            "record_size": c.record_size,
            "batch_size_bytes": c.batch_size_bytes,
            "linger_ms": c.linger.as_millis() as u64,
            "acks": c.acks.to_string(),
            "producers": c.producers,
            "in_flight": c.in_flight,
            "batches_in_flight": c.batches_in_flight,
            "rate": c.rate,
        })
    }

    /// The text summary.
    pub fn to_text(&self) -> Vec<String> {
        let c = &self.config;
        vec![
            format!(
                "bench {}: {} records in {:.3} s ({} errors)",
                c.mode.name(),
                self.records,
                self.seconds,
                self.errors
            ),
            format!(
                "throughput: {:.0} records/s, {:.2} MB/s",
                self.records_per_s(),
                self.mb_per_s()
            ),
            format!(
                "latency ms{}: p50 {:.3}  p90 {:.3}  p99 {:.3}  p999 {:.3}  max {:.3}",
                match c.mode {
                    BenchMode::Produce => " (send to ack)",
                    BenchMode::Consume => " (per poll)",
                    BenchMode::E2e => " (produce to consume)",
                },
                self.ms(0.5),
                self.ms(0.9),
                self.ms(0.99),
                self.ms(0.999),
                self.max_ms()
            ),
            format!(
                "settings: record_size {} B, batch_size_bytes {}, linger_ms {}, acks {}, producers {}, in_flight {}, batches_in_flight {}, rate {}",
                c.record_size,
                c.batch_size_bytes,
                c.linger.as_millis(),
                c.acks,
                c.producers,
                c.in_flight,
                c.batches_in_flight,
                c.rate.map_or_else(|| "unlimited".to_string(), |r| format!("{r} records/s"))
            ),
        ]
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn new_hist() -> Histogram<u64> {
    // Constant bounds, valid by construction (1 ≤ low, high ≥ 2·low, 3 significant figures).
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Counters shared between workers and the progress printer.
struct Stats {
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

impl Stats {
    fn new() -> Arc<Stats> {
        Arc::new(Stats {
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            hist: Mutex::new(new_hist()),
        })
    }

    fn hist(&self) -> std::sync::MutexGuard<'_, Histogram<u64>> {
        self.hist.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A worker's local tallies, merged into [`Stats`] every [`MERGE_INTERVAL`].
struct Local {
    records: u64,
    bytes: u64,
    errors: u64,
    hist: Histogram<u64>,
    last_merge: Instant,
    /// `merge_if_due` calls (the clock is read on every 256th).
    calls: u64,
}

impl Local {
    fn new() -> Local {
        Local {
            records: 0,
            bytes: 0,
            errors: 0,
            hist: new_hist(),
            last_merge: Instant::now(),
            calls: 0,
        }
    }

    fn ok(&mut self, bytes: u64, latency: Duration) {
        self.records += 1;
        self.bytes += bytes;
        self.hist
            .saturating_record((latency.as_micros() as u64).clamp(1, HIST_MAX_US));
    }

    fn merge_if_due(&mut self, s: &Stats) {
        // Reading the clock per record costs more than the rest of the loop; look every 256 records.
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(256) && self.last_merge.elapsed() >= MERGE_INTERVAL {
            self.merge(s);
        }
    }

    fn merge(&mut self, s: &Stats) {
        s.records.fetch_add(self.records, Ordering::Relaxed);
        s.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        s.errors.fetch_add(self.errors, Ordering::Relaxed);
        let _ = s.hist().add(&self.hist);
        self.records = 0;
        self.bytes = 0;
        self.errors = 0;
        self.hist.reset();
        self.last_merge = Instant::now();
    }
}

/// Runs one benchmark against the cluster named by `client`.
pub async fn run(client: ClientConfig, cfg: BenchConfig) -> Result<BenchSummary> {
    cfg.validate()?;
    let cluster = Cluster::connect(client.clone()).await?;
    ensure_topic(&cluster, &cfg).await?;
    match cfg.mode {
        BenchMode::Produce => run_produce(client, cfg).await,
        BenchMode::Consume => run_consume(client, cluster, cfg).await,
        BenchMode::E2e => run_e2e(client, cluster, cfg).await,
    }
}

async fn ensure_topic(cluster: &Cluster, cfg: &BenchConfig) -> Result<()> {
    let admin = Admin::new(cluster.clone());
    match admin.describe_topic(&cfg.topic).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => {
            let t = NewTopic {
                name: cfg.topic.clone(),
                partitions: cfg.partitions,
                replication_factor: cfg.replication_factor,
                configs: vec![],
            };
            match admin.create_topic(&t).await {
                Err(e) if e.code() != Some(ErrorCode::TopicAlreadyExists) => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// A deterministic, incompressible-looking payload.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Starts the progress printer; it stops when `stop` is set.
fn progress(
    mode: BenchMode,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    enabled: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !enabled {
            return;
        }
        let t0 = Instant::now();
        let mut last = (0u64, 0u64, Instant::now());
        let mut tick = tokio::time::interval_at(t0 + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        loop {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let (r, b) = (
                stats.records.load(Ordering::Relaxed),
                stats.bytes.load(Ordering::Relaxed),
            );
            let now = Instant::now();
            let dt = (now - last.2).as_secs_f64().max(1e-9);
            let p99 = {
                let h = stats.hist();
                if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                }
            };
            eprintln!(
                "[bench {}] {:>6.1} s  {} records  {:.0} records/s  {:.2} MB/s  p99 {:.3} ms  errors {}",
                mode.name(),
                t0.elapsed().as_secs_f64(),
                r,
                (r - last.0) as f64 / dt,
                (b - last.1) as f64 / 1e6 / dt,
                p99,
                stats.errors.load(Ordering::Relaxed)
            );
            last = (r, b, now);
        }
    })
}

/// Everything one producer task needs.
struct ProduceJob {
    producer: Producer,
    topic: Arc<str>,
    record_size: usize,
    in_flight: usize,
    count: Option<u64>,
    end: Option<Instant>,
    /// Records/s for this producer.
    rate: Option<f64>,
    /// Stamp the send time into the value (e2e); the times are ns since `base`.
    stamp: Option<Instant>,
    seed: u64,
}

/// Without a rate, a producer task reads the clock once every this many records (and after every wait for
/// window room): a record's latency then counts from at most that many enqueues before its own (a few µs
/// early: latencies can only look worse), and a 100 B-record run no longer spends ~7 % of its CPU reading
/// the clock.
const CLOCK_EVERY: u64 = 32;

async fn produce_task(job: ProduceJob, stats: Arc<Stats>) -> Result<()> {
    let mut value = payload(job.record_size, job.seed);
    let mut window: VecDeque<(Instant, DeliveryFuture)> =
        VecDeque::with_capacity(job.in_flight.min(1 << 16));
    let mut local = Local::new();
    let start = Instant::now();
    let bytes = job.record_size as u64;
    let account = |local: &mut Local,
                   t0: Instant,
                   f: &DeliveryFuture,
                   r: Result<crate::producer::RecordMetadata>| {
        match r {
            Ok(_) => {
                let done = f.completed_at().unwrap_or_else(Instant::now);
                local.ok(bytes, done.saturating_duration_since(t0));
            }
            Err(_) => local.errors += 1,
        }
    };
    let mut i: u64 = 0;
    let mut clock = start;
    // When the pacing sleep last returned (tokio's timer wakes on whole milliseconds).
    let mut woke = start;
    loop {
        if job.rate.is_some() || i.is_multiple_of(CLOCK_EVERY) {
            clock = Instant::now();
        }
        if job.count.is_some_and(|c| i >= c) || job.end.is_some_and(|e| clock >= e) {
            break;
        }
        // At a fixed rate a record's latency counts from its scheduled send time, so a stall delays the
        // schedule and is measured (no coordinated omission) — except the pacing timer's own lateness: a
        // record due while the bench slept counts from when the sleep returned (tokio's timer has 1 ms
        // grain: at 10,000 records/s, ten records fall due per wake and the first waited ~0.9 ms for the
        // timer, not for Runnel). Without a rate it counts from when the window has room and the record is
        // handed to the producer.
        let scheduled = job
            .rate
            .map(|r| start + Duration::from_secs_f64(i as f64 / r));
        if let Some(t) = scheduled {
            if t > Instant::now() {
                tokio::time::sleep_until(t).await;
                woke = Instant::now();
            }
        }
        if window.len() >= job.in_flight {
            while window.len() >= job.in_flight {
                if let Some((t0, mut f)) = window.pop_front() {
                    let r = (&mut f).await;
                    account(&mut local, t0, &f, r);
                }
            }
            clock = Instant::now();
        }
        let intended = scheduled.map_or(clock, |s| s.max(woke));
        if let Some(base) = job.stamp {
            let ns = intended.saturating_duration_since(base).as_nanos() as u64;
            value[..8].copy_from_slice(&ns.to_le_bytes());
        }
        let rec = ProducerRecord::new(&job.topic, &value);
        match job.producer.enqueue(rec).await {
            Ok(f) => window.push_back((intended, f)),
            Err(e) if e.retriable() => local.errors += 1,
            Err(e) => return Err(e),
        }
        while let Some(r) = window.front().and_then(|(_, f)| f.try_result()) {
            if let Some((t0, f)) = window.pop_front() {
                account(&mut local, t0, &f, r);
            }
        }
        local.merge_if_due(&stats);
        i += 1;
    }
    while let Some((t0, mut f)) = window.pop_front() {
        let r = (&mut f).await;
        account(&mut local, t0, &f, r);
    }
    local.merge(&stats);
    Ok(())
}

/// Starts `cfg.producers` producers on their own connections, each sending its share.
async fn start_producers(
    client: &ClientConfig,
    cfg: &BenchConfig,
    count: Option<u64>,
    stamp: Option<Instant>,
    stats: Arc<Stats>,
) -> Result<(Vec<Producer>, Vec<tokio::task::JoinHandle<Result<()>>>)> {
    let end = cfg.duration.map(|d| Instant::now() + d);
    let n = cfg.producers as u64;
    let mut producers = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..n {
        let cluster = Cluster::connect(client.clone()).await?;
        let producer = Producer::new(
            cluster,
            ProducerConfig {
                acks: cfg.acks,
                batch_size_bytes: cfg.batch_size_bytes,
                linger: cfg.linger,
                max_in_flight_per_partition: cfg.batches_in_flight,
                ..ProducerConfig::default()
            },
        )?;
        let job = ProduceJob {
            producer: producer.clone(),
            topic: Arc::from(cfg.topic.as_str()),
            record_size: cfg.record_size,
            in_flight: cfg.in_flight,
            count: count.map(|c| c / n + u64::from(id < c % n)),
            end,
            rate: cfg.rate.map(|r| r / n as f64),
            stamp,
            seed: id + 1,
        };
        producers.push(producer);
        tasks.push(tokio::spawn(produce_task(job, stats.clone())));
    }
    Ok((producers, tasks))
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    let mut first_err = None;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| ClientError::Protocol(format!("bench task failed: {e}")))
            .and_then(|r| r);
        if let (Err(e), None) = (r, &first_err) {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn summary(cfg: BenchConfig, stats: &Stats, seconds: f64) -> BenchSummary {
    BenchSummary {
        config: cfg,
        records: stats.records.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        seconds,
        latency_us: stats.hist().clone(),
    }
}

async fn run_produce(client: ClientConfig, cfg: BenchConfig) -> Result<BenchSummary> {
    let stats = Stats::new();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let (producers, tasks) =
        start_producers(&client, &cfg, cfg.record_count(), None, stats.clone()).await?;
    let printer = progress(cfg.mode, stats.clone(), stop.clone(), cfg.progress);
    let r = join_all(tasks).await;
    let seconds = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    printer.abort();
    for p in producers {
        p.close().await;
    }
    r?;
    Ok(summary(cfg, &stats, seconds))
}

/// Records currently stored in the topic (high watermark − log start, summed).
async fn stored_records(cluster: &Cluster, topic: &str) -> Result<u64> {
    let t = Admin::new(cluster.clone()).describe_topic(topic).await?;
    Ok(t.partitions
        .iter()
        .map(|p| p.high_watermark.saturating_sub(p.log_start_offset))
        .sum())
}

async fn run_consume(
    client: ClientConfig,
    cluster: Cluster,
    cfg: BenchConfig,
) -> Result<BenchSummary> {
    let want = cfg.record_count();
    if let Some(n) = want {
        let have = stored_records(&cluster, &cfg.topic).await?;
        if have < n {
            if cfg.progress {
                eprintln!("[bench consume] preloading {} records", n - have);
            }
            let pre = BenchConfig {
                mode: BenchMode::Produce,
                records: Some(n - have),
                duration: None,
                rate: None,
                progress: false,
                ..cfg.clone()
            };
            run_produce(client, pre).await?;
        }
    }
    let mut consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig {
            initial_offset: Offset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(&cfg.topic, None).await?;
    if !consumer.wait_positions(cluster.request_timeout()).await? {
        return Err(ClientError::broker(
            ErrorCode::LeaderNotAvailable,
            Some("no start offsets for the bench topic".into()),
        ));
    }
    let stats = Stats::new();
    let stop = Arc::new(AtomicBool::new(false));
    let printer = progress(cfg.mode, stats.clone(), stop.clone(), cfg.progress);
    let t0 = Instant::now();
    let end = cfg.duration.map(|d| t0 + d);
    let mut local = Local::new();
    let mut total = 0u64;
    let mut last_record = Instant::now();
    let mut finished_at = t0;
    loop {
        if want.is_some_and(|n| total >= n)
            || end.is_some_and(|e| Instant::now() >= e)
            || last_record.elapsed() >= IDLE_TIMEOUT
        {
            break;
        }
        let p0 = Instant::now();
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        if recs.is_empty() {
            continue;
        }
        let took = p0.elapsed();
        last_record = Instant::now();
        finished_at = last_record;
        local
            .hist
            .saturating_record((took.as_micros() as u64).clamp(1, HIST_MAX_US));
        // Count exactly the requested records (a poll may return a few more).
        let take = want.map_or(recs.len(), |n| recs.len().min((n - total) as usize));
        for r in &recs[..take] {
            local.records += 1;
            local.bytes += (r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len())) as u64;
        }
        total += take as u64;
        local.merge_if_due(&stats);
    }
    local.merge(&stats);
    stop.store(true, Ordering::Relaxed);
    printer.abort();
    Ok(summary(cfg, &stats, (finished_at - t0).as_secs_f64()))
}

async fn run_e2e(client: ClientConfig, cluster: Cluster, cfg: BenchConfig) -> Result<BenchSummary> {
    let base = Instant::now();
    let mut consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig {
            initial_offset: Offset::Latest,
            fetch_max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(&cfg.topic, None).await?;
    if !consumer.wait_positions(cluster.request_timeout()).await? {
        return Err(ClientError::broker(
            ErrorCode::LeaderNotAvailable,
            Some("no start offsets for the bench topic".into()),
        ));
    }
    // Producer-side tallies (acks); the reported latencies are the consumer's.
    let acked = Stats::new();
    let stats = Stats::new();
    let stop = Arc::new(AtomicBool::new(false));
    let printer = progress(cfg.mode, stats.clone(), stop.clone(), cfg.progress);
    let t0 = Instant::now();
    let (producers, tasks) =
        start_producers(&client, &cfg, cfg.record_count(), Some(base), acked.clone()).await?;
    let producing = tokio::spawn(join_all(tasks));
    let mut local = Local::new();
    let mut seen = 0u64;
    let mut last_record = Instant::now();
    let mut finished_at = t0;
    loop {
        let producers_done = producing.is_finished();
        if producers_done && seen >= acked.records.load(Ordering::Relaxed) {
            break;
        }
        if last_record.elapsed() >= IDLE_TIMEOUT {
            break;
        }
        let recs = consumer.poll(Duration::from_millis(200)).await?;
        if recs.is_empty() {
            continue;
        }
        let now_ns = base.elapsed().as_nanos() as u64;
        last_record = Instant::now();
        finished_at = last_record;
        for r in &recs {
            let Some(v) = &r.value else { continue };
            let Some(stamp) = v.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            let sent = u64::from_le_bytes(stamp);
            seen += 1;
            local.ok(
                (v.len() + r.key.as_ref().map_or(0, |k| k.len())) as u64,
                Duration::from_nanos(now_ns.saturating_sub(sent)),
            );
        }
        local.merge_if_due(&stats);
    }
    local.merge(&stats);
    stop.store(true, Ordering::Relaxed);
    printer.abort();
    let r = producing
        .await
        .map_err(|e| ClientError::Protocol(format!("bench task failed: {e}")))?;
    for p in producers {
        p.close().await;
    }
    r?;
    let mut s = summary(cfg, &stats, (finished_at - t0).as_secs_f64());
    s.errors = acked.errors.load(Ordering::Relaxed);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_with(lat_us: &[u64]) -> BenchSummary {
        let mut h = new_hist();
        for &l in lat_us {
            h.record(l).unwrap();
        }
        BenchSummary {
            config: BenchConfig::new(BenchMode::Produce, "b"),
            records: 2_000,
            bytes: 2_000_000,
            errors: 0,
            seconds: 2.0,
            latency_us: h,
        }
    }

    #[test]
    fn json_summary_has_the_contract_fields() {
        let s = summary_with(&[1000, 2000, 3000, 50_000]);
        let v = s.to_json();
        for k in [
            "records",
            "seconds",
            "records_per_s",
            "mb_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
        ] {
            assert!(
                v.get(k).is_some_and(|x| x.is_number()),
                "{k} missing or not a number in {v}"
            );
        }
        assert_eq!(v["records_per_s"], json!(1000.0));
        assert_eq!(v["mb_per_s"], json!(1.0));
        assert_eq!(v["batch_size_bytes"], json!(256 * 1024));
        assert_eq!(v["linger_ms"], json!(5));
        assert!((v["max_ms"].as_f64().unwrap() - 50.0).abs() < 0.1);
        assert!((v["p50_ms"].as_f64().unwrap() - 2.0).abs() < 0.01);
        assert!(s.to_text()[3].contains("batch_size_bytes 262144, linger_ms 5"));
    }

    #[test]
    fn config_validation() {
        let mut c = BenchConfig::new(BenchMode::E2e, "b");
        c.record_size = 4;
        assert!(c.validate().is_err());
        let mut c = BenchConfig::new(BenchMode::Produce, "b");
        c.producers = 0;
        assert!(c.validate().is_err());
        c.producers = PRODUCERS_MAX + 1;
        assert!(c.validate().is_err());
        c.producers = PRODUCERS_MAX;
        assert!(c.validate().is_ok());
        c.in_flight = IN_FLIGHT_MAX + 1;
        assert!(c.validate().is_err());
        c.in_flight = IN_FLIGHT_MAX;
        assert!(c.validate().is_ok());
        let mut c = BenchConfig::new(BenchMode::Produce, "b");
        assert_eq!(c.record_count(), Some(RECORDS_DEFAULT));
        c.duration = Some(Duration::from_secs(1));
        assert_eq!(c.record_count(), None);
        c.rate = Some(0.0);
        assert!(c.validate().is_err());
    }

    #[test]
    fn payload_is_deterministic_and_sized() {
        assert_eq!(payload(100, 1), payload(100, 1));
        assert_ne!(payload(100, 1), payload(100, 2));
        assert_eq!(payload(7, 3).len(), 7);
    }
}
