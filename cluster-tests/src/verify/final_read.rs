//! The final read of `check`: every partition, from its log start to the high watermark, through each broker
//! of the list on its own.
//!
//! Each broker is bootstrapped alone (`--brokers` of just that address) and the `Fetch` requests go to that
//! address with `read_replica` set: each broker serves its own replica, leader or follower, up to its own
//! high watermark, so every replica's copy is read and the checker compares them record by record (one
//! position holding two values is `inconsistent_offset`, an acknowledged value missing from a replica that
//! covers its offset is `lost`). A broker that does not host a partition answers `NOT_LEADER` or
//! `UNKNOWN_TOPIC_OR_PARTITION`; when metadata says it is a replica that is an error, otherwise the
//! partition is skipped for that broker. [`BrokerRead::read`] lists what each broker served, so the caller
//! can require that every partition was read through at least one broker.
//!
//! Before reading, [`converge`] waits (bounded) until every broker hosting a partition reports the same
//! high watermark twice in a row, so followers that were cut off have caught up.
//!
//! Invariants: every request is bounded by the request timeout; fetches per partition are bounded by
//! [`FETCHES_PER_PARTITION_MAX`] and stalled fetches by [`NO_PROGRESS_FETCHES_MAX`]; the convergence wait
//! by its deadline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use runnel_client::cluster::TopicInfo;
use runnel_client::connection::Connection;
use runnel_client::Cluster;
use runnel_protocol::batch::{records, validate, BatchIter};
use runnel_protocol::messages::{FetchPartition, FetchPartitionResponse, FetchRequest, FetchTopic};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::time::Instant;

use super::connect;
use crate::history::{now_ms, Event, FinalReadEnd, FinalReadEvent, HistoryWriter};

/// Bytes asked for per fetch.
pub const FETCH_BYTES: u32 = 4 * 1024 * 1024;
/// Fetches one partition's read may take (at 4 MiB each: 4 TiB, far beyond any test).
pub const FETCHES_PER_PARTITION_MAX: u32 = 1_000_000;
/// Consecutive fetches that return nothing below the high watermark before the read gives up.
pub const NO_PROGRESS_FETCHES_MAX: u32 = 20;
/// Pause between two convergence probes, and after a fetch that made no progress.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on bootstrapping each broker.
pub const BROKER_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What `check` reads.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub request_timeout: Duration,
    pub converge_timeout: Duration,
}

/// The outcome for one broker.
#[derive(Debug, Default, Clone)]
pub struct BrokerRead {
    pub broker: String,
    /// Partitions read to the high watermark, records found, partitions skipped (not hosted here).
    pub partitions_read: u32,
    pub records: u64,
    pub skipped: u32,
    /// The partitions read through this broker, and every partition of the topic as it sees them.
    pub read: Vec<u32>,
    pub partitions: Vec<u32>,
    /// Why a partition or the whole broker could not be read.
    pub errors: Vec<String>,
}

/// One broker, bootstrapped alone.
struct Target {
    addr: String,
    cluster: Cluster,
    topic: Arc<TopicInfo>,
    /// This broker's node id, when its advertised address is the one we dialled.
    node_id: Option<u32>,
}

impl Target {
    async fn open(addr: &str, cfg: &ReadConfig) -> anyhow::Result<Target> {
        let cluster = connect(
            addr,
            cfg.request_timeout,
            Instant::now() + BROKER_CONNECT_TIMEOUT,
        )
        .await
        .with_context(|| format!("bootstrapping from {addr} alone"))?;
        let topic = cluster
            .topic(&cfg.topic)
            .await
            .with_context(|| format!("topic {} via {addr}", cfg.topic))?;
        let node_id = cluster
            .metadata()
            .brokers
            .iter()
            .find(|b| b.addr() == addr)
            .map(|b| b.node_id);
        Ok(Target {
            addr: addr.to_string(),
            cluster,
            topic,
            node_id,
        })
    }

    /// True when metadata says this broker holds a replica of `p` (unknown node id: assume it might).
    fn hosts(&self, p: u32) -> Option<bool> {
        let id = self.node_id?;
        self.topic
            .partitions
            .iter()
            .find(|x| x.partition == p)
            .map(|x| x.replicas.contains(&id))
    }

    async fn conn(&self) -> anyhow::Result<Connection> {
        self.cluster
            .connection_at(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))
    }

    async fn fetch(
        &self,
        topic: &str,
        p: u32,
        offset: u64,
    ) -> anyhow::Result<FetchPartitionResponse> {
        let req = Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: FETCH_BYTES,
            topics: vec![FetchTopic {
                name: topic.to_string(),
                partitions: vec![FetchPartition {
                    partition: p,
                    fetch_offset: offset,
                    partition_max_bytes: FETCH_BYTES,
                }],
            }],
            read_replica: true,
        });
        let conn = self.conn().await?;
        let resp = conn.request(&req, self.cluster.request_timeout()).await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.cluster.drop_connection(&self.addr).await;
                return Err(e)
                    .with_context(|| format!("fetch of partition {p} from {}", self.addr));
            }
        };
        let Response::Fetch(f) = resp else {
            bail!("{}: Fetch answered with another response", self.addr);
        };
        f.topics
            .into_iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| t.partitions)
            .find(|x| x.partition == p)
            .ok_or_else(|| anyhow!("{}: no answer for partition {p}", self.addr))
    }

    /// This broker's (log start, high watermark) of its replica of `p`, or `None` when it does not host `p`.
    async fn bounds(&self, topic: &str, p: u32) -> anyhow::Result<Option<(u64, u64)>> {
        // An offset past any high watermark: the answer is OFFSET_OUT_OF_RANGE with the bounds, no data.
        let r = self.fetch(topic, p, u64::MAX).await?;
        match ErrorCode::from_u16(r.error_code) {
            ErrorCode::OffsetOutOfRange | ErrorCode::None => {
                Ok(Some((r.log_start_offset, r.high_watermark)))
            }
            ErrorCode::UnknownTopicOrPartition | ErrorCode::NotLeader
                if self.hosts(p) != Some(true) =>
            {
                Ok(None)
            }
            code => bail!(
                "{}: partition {p}: {code}: {}",
                self.addr,
                r.error_message.unwrap_or_default()
            ),
        }
    }
}

/// Waits until, for every partition, the brokers hosting it report the same high watermark on two
/// consecutive probes, or `timeout` passes. Returns whether they converged and the last probe.
pub async fn converge(
    cfg: &ReadConfig,
    timeout: Duration,
) -> (bool, BTreeMap<u32, Vec<(String, u64)>>) {
    let deadline = Instant::now() + timeout;
    let mut targets = Vec::new();
    for b in &cfg.brokers {
        if let Ok(t) = Target::open(b, cfg).await {
            targets.push(t);
        }
    }
    let mut previous: Option<BTreeMap<u32, Vec<(String, u64)>>> = None;
    loop {
        let mut probe: BTreeMap<u32, Vec<(String, u64)>> = BTreeMap::new();
        let mut complete = targets.len() == cfg.brokers.len();
        for t in &targets {
            for p in t.topic.partitions.iter().map(|x| x.partition) {
                match t.bounds(&cfg.topic, p).await {
                    Ok(Some((_, hwm))) => probe.entry(p).or_default().push((t.addr.clone(), hwm)),
                    Ok(None) => {}
                    Err(_) => complete = false,
                }
            }
        }
        let agree = probe.values().all(|l| l.iter().all(|(_, h)| *h == l[0].1));
        if complete && agree && previous.as_ref() == Some(&probe) {
            return (true, probe);
        }
        if Instant::now() + PROBE_INTERVAL >= deadline {
            return (false, probe);
        }
        previous = Some(probe);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Reads every partition through every broker of `cfg.brokers`, appending `final_read` and
/// `final_read_end` events.
pub async fn read_all(cfg: &ReadConfig, history: &HistoryWriter) -> Vec<BrokerRead> {
    let mut out = Vec::with_capacity(cfg.brokers.len());
    for addr in &cfg.brokers {
        let mut br = BrokerRead {
            broker: addr.clone(),
            ..BrokerRead::default()
        };
        match Target::open(addr, cfg).await {
            Err(e) => br.errors.push(format!("{e:#}")),
            Ok(t) => {
                for p in t.topic.partitions.iter().map(|x| x.partition) {
                    br.partitions.push(p);
                    match read_partition(&t, &cfg.topic, p, history).await {
                        Ok(Some(n)) => {
                            br.partitions_read += 1;
                            br.records += n;
                            br.read.push(p);
                        }
                        Ok(None) => br.skipped += 1,
                        Err(e) => {
                            let msg = format!("{e:#}");
                            let _ = history.append(&Event::FinalReadEnd(FinalReadEnd {
                                t: now_ms(),
                                broker: addr.clone(),
                                partition: p,
                                log_start: 0,
                                high_watermark: 0,
                                records: 0,
                                err: Some(msg.clone()),
                            }));
                            br.errors.push(msg);
                        }
                    }
                }
            }
        }
        out.push(br);
    }
    out
}

/// Reads one partition through one broker from its log start to its high watermark. `None`: not hosted.
async fn read_partition(
    t: &Target,
    topic: &str,
    p: u32,
    history: &HistoryWriter,
) -> anyhow::Result<Option<u64>> {
    let Some((log_start, hwm)) = t.bounds(topic, p).await? else {
        return Ok(None);
    };
    let mut offset = log_start;
    let mut target = hwm;
    let mut n = 0u64;
    let mut stalled = 0u32;
    let mut fetches = 0u32;
    while offset < target {
        fetches += 1;
        if fetches > FETCHES_PER_PARTITION_MAX {
            bail!(
                "{}: partition {p}: more than {FETCHES_PER_PARTITION_MAX} fetches",
                t.addr
            );
        }
        let r = t.fetch(topic, p, offset).await?;
        match ErrorCode::from_u16(r.error_code) {
            ErrorCode::None => {}
            code => bail!(
                "{}: partition {p} at offset {offset}: {code}: {}",
                t.addr,
                r.error_message.unwrap_or_default()
            ),
        }
        // The high watermark only grows while we read (a late write): read up to the newest one.
        target = target.max(r.high_watermark);
        let before = offset;
        let data: Bytes = r.records.to_contiguous();
        for item in BatchIter::new(data) {
            let (h, batch) =
                item.map_err(|e| anyhow!("{}: partition {p}: bad batch: {e}", t.addr))?;
            let next = h.base_offset.saturating_add(u64::from(h.record_count));
            if next <= offset {
                continue;
            }
            validate(&batch)
                .map_err(|e| anyhow!("{}: partition {p}: corrupt batch: {e}", t.addr))?;
            for rec in records(&batch).map_err(|e| anyhow!("{}: partition {p}: {e}", t.addr))? {
                if rec.offset < offset || rec.offset >= target {
                    continue;
                }
                let value = rec
                    .value
                    .as_ref()
                    .map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned());
                let _ = history.append(&Event::FinalRead(FinalReadEvent {
                    t: now_ms(),
                    broker: t.addr.clone(),
                    partition: p,
                    offset: rec.offset,
                    value,
                }));
                n += 1;
                offset = rec.offset + 1;
            }
            offset = offset.max(next.min(target));
        }
        if offset == before {
            stalled += 1;
            if stalled > NO_PROGRESS_FETCHES_MAX {
                bail!(
                    "{}: partition {p}: no progress at offset {offset} below the high watermark {target}",
                    t.addr
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        } else {
            stalled = 0;
        }
    }
    let _ = history.append(&Event::FinalReadEnd(FinalReadEnd {
        t: now_ms(),
        broker: t.addr.clone(),
        partition: p,
        log_start,
        high_watermark: target,
        records: n,
        err: None,
    }));
    Ok(Some(n))
}
