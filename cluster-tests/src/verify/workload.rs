//! The `run` workload: producers send globally unique values with `acks=all`, a consumer group polls and
//! commits, one reader by assignment polls every partition from the start; every completed operation is one
//! history event (see [`crate::history`]).
//!
//! - Producer `p<i>` has its own cluster connection and [`Producer`]; it enqueues `p<i>-<seq>` in `seq` order
//!   (so its order within a partition is `seq` order), paced at `rate` per second, until the duration passes
//!   or its share of `max_records` is sent. A refused `enqueue` (nothing reached a broker) is `fail`; every
//!   later error and every delivery not acknowledged within `op_timeout` is `info` (the producer retries, so
//!   an earlier attempt may have been written — see [`crate::checker`]).
//! - Consumer `c<i>` is a [`GroupConsumer`] with auto-commit off and `offset_reset = earliest`; its
//!   rebalance listener records `assign`/`revoke`; after every non-empty poll it records the records per
//!   partition and commits `last offset + 1` of each (recorded `ok`, `fail` when refused, `info` when
//!   ambiguous or timed out).
//! - Reader `r0` assigns every partition at the log start and polls.
//! - When the producers are done, consumers keep polling until they have been idle for
//!   [`CONSUMER_IDLE_STOP`] or `drain` has passed, then close.
//!
//! Invariants: in-flight sends per producer ≤ [`SENDS_IN_FLIGHT_MAX`]; every wait is bounded (op timeout,
//! close timeout, the run's deadline); a history write error is sticky in the writer and surfaces from
//! [`HistoryWriter::finish`] at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use runnel_client::{
    Acks, Admin, ClientError, ConsumerConfig, ConsumerRecord, GroupConfig, GroupConsumer, NewTopic,
    Offset, OffsetReset, Producer, ProducerConfig, ProducerRecord, RebalanceListener,
    TopicPartition,
};
use runnel_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::connect;
use crate::history::{
    now_ms, AssignEvent, CommitEvent, Event, HistoryWriter, PollEvent, SendEvent, Status,
};

/// Most producers / group consumers one run starts.
pub const PRODUCERS_MAX: u32 = 64;
pub const CONSUMERS_MAX: u32 = 64;
/// Sends one producer has awaiting their acknowledgement at once.
pub const SENDS_IN_FLIGHT_MAX: usize = 1024;
/// Largest `max_records` accepted.
pub const RECORDS_MAX: u64 = 10_000_000;
/// Longest single `poll`.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// After the producers finish, a consumer that received nothing for this long stops.
pub const CONSUMER_IDLE_STOP: Duration = Duration::from_secs(2);
/// Pause after a failed poll or a refused enqueue before trying again.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// Bound on connecting, creating the topic and joining.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on closing a producer or a consumer.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// What `run` does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub brokers: String,
    pub topic: String,
    /// Used only when the topic must be created.
    pub partitions: u32,
    pub replication_factor: u16,
    pub producers: u32,
    pub duration: Duration,
    /// Records per second per producer; 0 = as fast as acknowledgements allow.
    pub rate: u32,
    /// Cap on records over all producers.
    pub max_records: u64,
    pub group: String,
    pub consumers: u32,
    /// A send or commit not answered within this is recorded `info`.
    pub op_timeout: Duration,
    pub request_timeout: Duration,
    /// Longest time consumers keep polling after the producers are done.
    pub drain: Duration,
    /// Let the producer re-send batches after ambiguous failures (duplicates possible without an
    /// idempotent producer).
    pub retry_ambiguous: bool,
    /// The producers' `max_in_flight_per_partition`.
    pub batches_in_flight: usize,
}

impl RunConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.producers == 0 || self.producers > PRODUCERS_MAX {
            bail!("--producers must be in 1..={PRODUCERS_MAX}");
        }
        if self.consumers > CONSUMERS_MAX {
            bail!("--consumers must be at most {CONSUMERS_MAX}");
        }
        if self.max_records == 0 || self.max_records > RECORDS_MAX {
            bail!("--max-records must be in 1..={RECORDS_MAX}");
        }
        if self.partitions == 0 {
            bail!("--partitions must be at least 1");
        }
        if self.duration.is_zero() {
            bail!("--duration-s must be at least 1");
        }
        Ok(())
    }
}

/// Figures of one run (the history has the details).
#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub sends: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    pub polled: u64,
    pub commits_ok: u64,
    pub consumer_errors: u64,
}

impl std::fmt::Display for RunSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} (ok {}, fail {}, indeterminate {}); polled {} records; {} ok commits; {} consumer errors",
            self.sends, self.ok, self.fail, self.info, self.polled, self.commits_ok, self.consumer_errors
        )
    }
}

/// Runs the workload, recording into `history`.
pub async fn run(cfg: &RunConfig, history: Arc<HistoryWriter>) -> anyhow::Result<RunSummary> {
    cfg.validate()?;
    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    let cluster = connect(&cfg.brokers, cfg.request_timeout, setup_deadline)
        .await
        .context("connecting to the cluster")?;
    ensure_fresh_topic(cfg, &cluster).await?;

    let start = Instant::now();
    let deadline = start + cfg.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = JoinSet::new();
    for i in 0..cfg.consumers {
        let (cfg, h, stop) = (cfg.clone(), history.clone(), stop_rx.clone());
        consumers.spawn(async move { group_consumer(i, &cfg, h, stop).await });
    }
    {
        let (cfg, h, stop) = (cfg.clone(), history.clone(), stop_rx.clone());
        consumers.spawn(async move { reader(&cfg, h, stop).await });
    }
    let mut producers = JoinSet::new();
    let share = cfg.max_records / u64::from(cfg.producers);
    for i in 0..cfg.producers {
        let cap = share + u64::from(u64::from(i) < cfg.max_records % u64::from(cfg.producers));
        let (cfg, h) = (cfg.clone(), history.clone());
        producers.spawn(async move { producer(i, cap, &cfg, h, start, deadline).await });
    }

    let mut sum = RunSummary::default();
    let mut first_err: Option<anyhow::Error> = None;
    while let Some(r) = producers.join_next().await {
        match r {
            Ok(Ok(c)) => {
                sum.sends += c.sends;
                sum.ok += c.ok;
                sum.fail += c.fail;
                sum.info += c.info;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("producer task failed: {e}"));
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(r) = consumers.join_next().await {
        match r {
            Ok(Ok(c)) => {
                sum.polled += c.polled;
                sum.commits_ok += c.commits_ok;
                sum.consumer_errors += c.errors;
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(anyhow::anyhow!("consumer task failed: {e}"));
            }
        }
    }
    history.finish().context("writing the history")?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(sum),
    }
}

/// Creates the topic if it is missing; refuses a topic that already holds records (their values would be
/// unexpected, or collide with this run's).
async fn ensure_fresh_topic(
    cfg: &RunConfig,
    cluster: &runnel_client::Cluster,
) -> anyhow::Result<()> {
    let admin = Admin::new(cluster.clone());
    match cluster.topic(&cfg.topic).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::UnknownTopicOrPartition) => {
            let mut t = NewTopic::new(&cfg.topic, cfg.partitions);
            t.replication_factor = cfg.replication_factor;
            match admin.create_topic(&t).await {
                Ok(()) => {}
                Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(e).context(format!("creating topic {}", cfg.topic)),
            }
        }
        Err(e) => return Err(e).context(format!("looking up topic {}", cfg.topic)),
    }
    let t = admin
        .describe_topic(&cfg.topic)
        .await
        .context("describing the topic")?;
    if let Some(p) = t.partitions.iter().find(|p| p.high_watermark > 0) {
        bail!(
            "topic {} already holds records (partition {} has high watermark {}): use a fresh topic",
            cfg.topic,
            p.partition,
            p.high_watermark
        );
    }
    Ok(())
}

#[derive(Debug, Default)]
struct SendCounts {
    sends: u64,
    ok: u64,
    fail: u64,
    info: u64,
}

impl SendCounts {
    fn add(&mut self, s: Status) {
        match s {
            Status::Ok => self.ok += 1,
            Status::Fail => self.fail += 1,
            Status::Info => self.info += 1,
        }
    }
}

async fn producer(
    i: u32,
    cap: u64,
    cfg: &RunConfig,
    history: Arc<HistoryWriter>,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<SendCounts> {
    let name = format!("p{i}");
    let cluster = connect(&cfg.brokers, cfg.request_timeout, start + SETUP_TIMEOUT)
        .await
        .with_context(|| format!("{name}: connecting"))?;
    let producer = Producer::new(
        cluster,
        ProducerConfig {
            acks: Acks::All,
            retry_ambiguous: cfg.retry_ambiguous,
            max_in_flight_per_partition: cfg.batches_in_flight,
            ..ProducerConfig::default()
        },
    )
    .with_context(|| format!("{name}: starting the producer"))?;
    let mut counts = SendCounts::default();
    let mut in_flight: JoinSet<Status> = JoinSet::new();
    let mut seq = 0u64;
    while seq < cap && Instant::now() < deadline {
        if cfg.rate > 0 {
            let due = start + Duration::from_secs_f64(seq as f64 / f64::from(cfg.rate));
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        while in_flight.len() >= SENDS_IN_FLIGHT_MAX {
            if let Some(Ok(s)) = in_flight.join_next().await {
                counts.add(s);
            }
        }
        let value = format!("{name}-{seq:06}");
        counts.sends += 1;
        // `enqueue` fails only before the record joins a batch: nothing reached a broker.
        match producer
            .enqueue(ProducerRecord::new(&cfg.topic, value.as_bytes()))
            .await
        {
            Err(e) => {
                let _ = history.append(&send_event(
                    &name,
                    seq,
                    value,
                    Status::Fail,
                    None,
                    Some(e.to_string()),
                ));
                counts.add(Status::Fail);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
            Ok(delivery) => {
                let (h, name, timeout) = (history.clone(), name.clone(), cfg.op_timeout);
                in_flight.spawn(async move {
                    let (status, at, err) = match tokio::time::timeout(timeout, delivery).await {
                        Ok(Ok(md)) => (Status::Ok, Some((md.partition, md.offset)), None),
                        Ok(Err(e)) => (Status::Info, None, Some(e.to_string())),
                        Err(_) => (
                            Status::Info,
                            None,
                            Some(format!("no acknowledgement within {timeout:?}")),
                        ),
                    };
                    let _ = h.append(&send_event(&name, seq, value, status, at, err));
                    status
                });
            }
        }
        seq += 1;
    }
    while let Some(r) = in_flight.join_next().await {
        if let Ok(s) = r {
            counts.add(s);
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, producer.close()).await;
    Ok(counts)
}

fn send_event(
    proc: &str,
    seq: u64,
    value: String,
    status: Status,
    at: Option<(u32, u64)>,
    err: Option<String>,
) -> Event {
    Event::Send(SendEvent {
        t: now_ms(),
        proc: proc.to_string(),
        seq,
        value,
        status,
        partition: at.map(|a| a.0),
        offset: at.map(|a| a.1),
        err,
    })
}

#[derive(Debug, Default)]
struct ConsumeCounts {
    polled: u64,
    commits_ok: u64,
    errors: u64,
}

/// Records assignment changes of one group member.
struct Recorder {
    history: Arc<HistoryWriter>,
    proc: String,
    group: String,
    topic: String,
}

impl Recorder {
    fn record(&self, revoke: bool, partitions: &[TopicPartition]) {
        let partitions: Vec<u32> = partitions
            .iter()
            .filter(|(t, _)| **t == *self.topic)
            .map(|(_, p)| *p)
            .collect();
        if partitions.is_empty() {
            return;
        }
        let a = AssignEvent {
            t: now_ms(),
            proc: self.proc.clone(),
            group: Some(self.group.clone()),
            partitions,
        };
        let _ = self.history.append(&if revoke {
            Event::Revoke(a)
        } else {
            Event::Assign(a)
        });
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        self.record(false, partitions);
    }
    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        self.record(true, partitions);
    }
}

/// Decides when a consumer stops: after the producers are done, once idle or drained.
struct StopRule {
    stop: watch::Receiver<bool>,
    drain: Duration,
    stop_seen: Option<Instant>,
    last_records: Instant,
}

impl StopRule {
    fn new(stop: watch::Receiver<bool>, drain: Duration) -> StopRule {
        StopRule {
            stop,
            drain,
            stop_seen: None,
            last_records: Instant::now(),
        }
    }

    fn got_records(&mut self) {
        self.last_records = Instant::now();
    }

    fn should_stop(&mut self) -> bool {
        let now = Instant::now();
        if self.stop_seen.is_none() && *self.stop.borrow() {
            self.stop_seen = Some(now);
        }
        let Some(seen) = self.stop_seen else {
            return false;
        };
        now >= seen + self.drain || now >= seen.max(self.last_records) + CONSUMER_IDLE_STOP
    }
}

/// Splits one poll's records by partition, keeping their order.
fn by_partition(records: &[ConsumerRecord]) -> BTreeMap<u32, (Vec<u64>, Vec<String>)> {
    let mut out: BTreeMap<u32, (Vec<u64>, Vec<String>)> = BTreeMap::new();
    for r in records {
        let e = out.entry(r.partition).or_default();
        e.0.push(r.offset);
        e.1.push(
            r.value
                .as_ref()
                .map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned()),
        );
    }
    out
}

fn poll_event(
    proc: &str,
    group: Option<&str>,
    partition: u32,
    offsets: Vec<u64>,
    values: Vec<String>,
) -> Event {
    Event::Poll(PollEvent {
        t: now_ms(),
        proc: proc.to_string(),
        group: group.map(str::to_string),
        partition,
        offsets,
        values,
    })
}

async fn group_consumer(
    i: u32,
    cfg: &RunConfig,
    history: Arc<HistoryWriter>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeCounts> {
    let name = format!("c{i}");
    let cluster = connect(
        &cfg.brokers,
        cfg.request_timeout,
        Instant::now() + SETUP_TIMEOUT,
    )
    .await
    .with_context(|| format!("{name}: connecting"))?;
    let mut gcfg = GroupConfig::new(&cfg.group);
    gcfg.auto_commit = false;
    gcfg.offset_reset = OffsetReset::Earliest;
    let mut gc = GroupConsumer::subscribe(cluster, &[cfg.topic.as_str()], gcfg)
        .await
        .with_context(|| format!("{name}: joining group {}", cfg.group))?;
    gc.set_listener(Recorder {
        history: history.clone(),
        proc: name.clone(),
        group: cfg.group.clone(),
        topic: cfg.topic.clone(),
    });
    let mut counts = ConsumeCounts::default();
    let mut rule = StopRule::new(stop, cfg.drain);
    let hard_deadline = Instant::now() + cfg.duration + cfg.drain + SETUP_TIMEOUT;
    while !rule.should_stop() && Instant::now() < hard_deadline {
        let records = match gc.poll(POLL_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                counts.errors += 1;
                eprintln!("runnel-verify: {name}: poll failed: {e}");
                if !e.retriable() {
                    break;
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        rule.got_records();
        counts.polled += records.len() as u64;
        let parts = by_partition(&records);
        let mut commits = Vec::with_capacity(parts.len());
        for (p, (offsets, values)) in parts {
            if let Some(&last) = offsets.last() {
                commits.push((p, last + 1));
            }
            let _ = history.append(&poll_event(&name, Some(&cfg.group), p, offsets, values));
        }
        let list: Vec<(&str, u32, u64)> = commits
            .iter()
            .map(|&(p, o)| (cfg.topic.as_str(), p, o))
            .collect();
        let (status, err) =
            match tokio::time::timeout(cfg.op_timeout, gc.commit_offsets(&list)).await {
                Ok(Ok(())) => (Status::Ok, None),
                Ok(Err(e)) => (commit_status(&e), Some(e.to_string())),
                Err(_) => (
                    Status::Info,
                    Some(format!("no answer within {:?}", cfg.op_timeout)),
                ),
            };
        if status == Status::Ok {
            counts.commits_ok += commits.len() as u64;
        }
        for (p, o) in commits {
            let _ = history.append(&Event::Commit(CommitEvent {
                t: now_ms(),
                proc: name.clone(),
                group: cfg.group.clone(),
                partition: p,
                offset: o,
                status,
                err: err.clone(),
            }));
        }
    }
    if let Ok(Err(e)) = tokio::time::timeout(CLOSE_TIMEOUT, gc.close()).await {
        eprintln!("runnel-verify: {name}: close: {e}");
    }
    Ok(counts)
}

/// A refused commit did not happen; a commit that timed out or lost its connection may have.
fn commit_status(e: &ClientError) -> Status {
    if e.ambiguous() || e.retriable() {
        Status::Info
    } else {
        Status::Fail
    }
}

async fn reader(
    cfg: &RunConfig,
    history: Arc<HistoryWriter>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<ConsumeCounts> {
    let name = "r0";
    let cluster = connect(
        &cfg.brokers,
        cfg.request_timeout,
        Instant::now() + SETUP_TIMEOUT,
    )
    .await
    .context("r0: connecting")?;
    let mut consumer = runnel_client::Consumer::new(
        cluster,
        ConsumerConfig {
            initial_offset: Offset::Earliest,
            ..ConsumerConfig::default()
        },
    );
    let partitions = consumer
        .assign(&cfg.topic, None)
        .await
        .context("r0: assigning the topic")?;
    let _ = history.append(&Event::Assign(AssignEvent {
        t: now_ms(),
        proc: name.into(),
        group: None,
        partitions,
    }));
    let mut counts = ConsumeCounts::default();
    let mut rule = StopRule::new(stop, cfg.drain);
    let hard_deadline = Instant::now() + cfg.duration + cfg.drain + SETUP_TIMEOUT;
    while !rule.should_stop() && Instant::now() < hard_deadline {
        let records = match consumer.poll(POLL_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                counts.errors += 1;
                eprintln!("runnel-verify: {name}: poll failed: {e}");
                if !e.retriable() {
                    break;
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        if records.is_empty() {
            continue;
        }
        rule.got_records();
        counts.polled += records.len() as u64;
        for (p, (offsets, values)) in by_partition(&records) {
            let _ = history.append(&poll_event(name, None, p, offsets, values));
        }
    }
    Ok(counts)
}
