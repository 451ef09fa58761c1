//! The assignment-based consumer: the caller assigns partitions, optionally seeks, and polls; `unassign`
//! gives a partition up (the group consumer in [`crate::group`] does so when the coordinator revokes it).
//!
//! Positions: a newly assigned partition starts at `initial_offset` (default [`Offset::Latest`], like Kafka's
//! `auto.offset.reset=latest`); [`Consumer::seek`] moves it to the log start, the high watermark, an absolute
//! offset, or the first offset at or after a timestamp (resolved through `ListOffsets` on the leader).
//!
//! Prefetch: at most one `Fetch` is in flight per leader broker, covering every assigned partition it leads
//! whose records have all been handed out. A fetch is issued as soon as a partition's buffered records are
//! drained, so the broker is already long-polling for the next records while the caller processes these.
//!
//! Policies:
//! - The first batch of a fetch may start before the requested offset; records before it are skipped.
//! - Batches are CRC-checked (`check_crcs`, default on); a corrupt batch is an error from `poll`.
//! - `NOT_LEADER`, `LEADER_NOT_AVAILABLE`, `UNKNOWN_TOPIC_OR_PARTITION`, connection errors and timeouts refresh
//!   metadata and retry the partition after a short backoff: the consumer follows leaders.
//! - `OFFSET_OUT_OF_RANGE` resets the partition to the **earliest** offset (the log start), so a consumer
//!   whose position was removed by retention continues with the oldest record still kept.
//!
//! Invariants: records of one partition are returned in offset order, each exactly once per position (a
//! seek discards what was buffered or in flight for the partition, by epoch); memory is bounded by one
//! fetch response per broker buffered plus one in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::batch::{records, validate, BatchIter, RecordBatchHeader};
use runnel_protocol::limits::FETCH_MAX_BYTES_MAX;
use runnel_protocol::messages::{
    FetchPartition, FetchRequest, FetchResponse, FetchTopic, ListOffsetsPartition,
    ListOffsetsRequest, ListOffsetsTopic, EARLIEST, LATEST,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// Default long-poll wait of one fetch.
pub const FETCH_MAX_WAIT_DEFAULT: Duration = Duration::from_millis(500);
/// Default bytes a fetch response may carry over all partitions.
pub const FETCH_MAX_BYTES_DEFAULT: u32 = 16 * 1024 * 1024;
/// Default bytes per partition in one fetch.
pub const PARTITION_MAX_BYTES_DEFAULT: u32 = 4 * 1024 * 1024;
/// Default most records one `poll` returns.
pub const MAX_POLL_RECORDS_DEFAULT: usize = 10_000;
/// Backoff before a partition is fetched again after an error.
pub const FETCH_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Consecutive OFFSET_OUT_OF_RANGE answers above the high watermark a partition's position survives
/// (each after a metadata refresh and [`FETCH_RETRY_BACKOFF`]: about 10 s) before it is reset.
pub const OUT_OF_RANGE_RETRIES_MAX: u32 = 100;
/// Fetches that may be in flight at once (one per leader broker; bounds the result channel).
pub const FETCHES_IN_FLIGHT_MAX: usize = 64;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records written from now on.
    Latest,
    /// An absolute offset.
    At(u64),
    /// The first offset whose batch has a timestamp at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub fetch_max_wait: Duration,
    pub fetch_min_bytes: u32,
    pub fetch_max_bytes: u32,
    pub partition_max_bytes: u32,
    pub max_poll_records: usize,
    pub check_crcs: bool,
    /// Where a partition starts when it is assigned without a seek.
    pub initial_offset: Offset,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            fetch_max_wait: FETCH_MAX_WAIT_DEFAULT,
            fetch_min_bytes: 1,
            fetch_max_bytes: FETCH_MAX_BYTES_DEFAULT,
            partition_max_bytes: PARTITION_MAX_BYTES_DEFAULT,
            max_poll_records: MAX_POLL_RECORDS_DEFAULT,
            check_crcs: true,
            initial_offset: Offset::Latest,
        }
    }
}

/// One consumed record. Key, value and header bytes are zero-copy slices of the fetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

struct PartState {
    topic: Arc<str>,
    partition: u32,
    /// False once unassigned: the slot is kept (in-flight results name it by index) and reused if the
    /// partition is assigned again, so slots are bounded by the distinct partitions ever assigned.
    assigned: bool,
    /// Next offset to fetch; `None` while a seek is unresolved.
    fetch_position: Option<u64>,
    /// Next offset to hand to the caller.
    position: Option<u64>,
    seek: Option<Offset>,
    /// Bumped by every seek; results of fetches issued under an older epoch are dropped.
    epoch: u64,
    in_flight: bool,
    buffered: usize,
    paused_until: Option<Instant>,
    max_bytes: u32,
    /// Consecutive OFFSET_OUT_OF_RANGE answers above the high watermark (see [`OUT_OF_RANGE_RETRIES_MAX`]).
    out_of_range: u32,
    /// The last fetch answered NOT_LEADER with a leader hint that was followed at once; the next such
    /// answer backs off (two brokers naming each other cannot make the consumer spin).
    hint_followed: bool,
}

struct FetchDone {
    node: u32,
    /// (partition index, epoch, fetch offset) for each partition of the request.
    parts: Vec<(usize, u64, u64)>,
    result: Result<FetchResponse>,
}

/// An assignment-based consumer. Not `Sync`: one task polls it.
pub struct Consumer {
    cluster: Cluster,
    config: ConsumerConfig,
    parts: Vec<PartState>,
    index: HashMap<(Arc<str>, u32), usize>,
    buffered: VecDeque<(usize, ConsumerRecord)>,
    fetching: HashSet<u32>,
    done_tx: mpsc::Sender<FetchDone>,
    done_rx: mpsc::Receiver<FetchDone>,
}

impl Consumer {
    pub fn new(cluster: Cluster, config: ConsumerConfig) -> Consumer {
        let (done_tx, done_rx) = mpsc::channel(FETCHES_IN_FLIGHT_MAX);
        Consumer {
            cluster,
            config,
            parts: Vec::new(),
            index: HashMap::new(),
            buffered: VecDeque::new(),
            fetching: HashSet::new(),
            done_tx,
            done_rx,
        }
    }

    /// Adds `partitions` of `topic` to the assignment (all of its partitions when `None`), each starting at
    /// `initial_offset`. Fails if the topic or a partition does not exist.
    pub async fn assign(&mut self, topic: &str, partitions: Option<&[u32]>) -> Result<Vec<u32>> {
        let info = self.cluster.topic(topic).await?;
        let n = info.partitions.len() as u32;
        let wanted: Vec<u32> = match partitions {
            Some(ps) => ps.to_vec(),
            None => (0..n).collect(),
        };
        if let Some(bad) = wanted.iter().find(|&&p| p >= n) {
            return Err(ClientError::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!(
                    "topic {topic} has {n} partitions, no partition {bad}"
                )),
            ));
        }
        let name: Arc<str> = Arc::from(topic);
        for &p in &wanted {
            let key = (name.clone(), p);
            if let Some(&i) = self.index.get(&key) {
                if !self.parts[i].assigned {
                    self.parts[i].assigned = true;
                    self.reset(i, self.config.initial_offset);
                }
                continue;
            }
            self.index.insert(key, self.parts.len());
            self.parts.push(PartState {
                topic: name.clone(),
                partition: p,
                assigned: true,
                fetch_position: None,
                position: None,
                seek: Some(self.config.initial_offset),
                epoch: 0,
                in_flight: false,
                buffered: 0,
                paused_until: None,
                max_bytes: self.config.partition_max_bytes,
                out_of_range: 0,
                hint_followed: false,
            });
        }
        Ok(wanted)
    }

    /// The assigned (topic, partition) pairs.
    pub fn assignment(&self) -> Vec<(Arc<str>, u32)> {
        self.parts
            .iter()
            .filter(|p| p.assigned)
            .map(|p| (p.topic.clone(), p.partition))
            .collect()
    }

    /// Removes a partition from the assignment: nothing more is fetched or returned for it, and what was
    /// buffered or in flight is dropped. Returns false if it was not assigned.
    pub fn unassign(&mut self, topic: &str, partition: u32) -> bool {
        let Some(&i) = self.index.get(&(Arc::from(topic), partition)) else {
            return false;
        };
        if !self.parts[i].assigned {
            return false;
        }
        self.reset(i, Offset::Latest);
        let p = &mut self.parts[i];
        p.assigned = false;
        p.seek = None;
        true
    }

    /// Changes the most records one `poll` returns (at least 1).
    pub fn set_max_poll_records(&mut self, n: usize) {
        self.config.max_poll_records = n.max(1);
    }

    /// The cluster handle this consumer reads through.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Moves an assigned partition to `offset`; takes effect at the next `poll` and discards anything
    /// buffered or in flight for it.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        let i = *self
            .index
            .get(&(Arc::from(topic), partition))
            .filter(|&&i| self.parts[i].assigned)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("{topic}/{partition} is not assigned"))
            })?;
        self.reset(i, offset);
        Ok(())
    }

    /// Seeks every assigned partition.
    pub fn seek_all(&mut self, offset: Offset) {
        for i in 0..self.parts.len() {
            if self.parts[i].assigned {
                self.reset(i, offset);
            }
        }
    }

    fn reset(&mut self, i: usize, offset: Offset) {
        let p = &mut self.parts[i];
        p.epoch += 1;
        p.out_of_range = 0;
        p.seek = Some(offset);
        p.fetch_position = None;
        p.position = None;
        p.paused_until = None;
        if p.buffered > 0 {
            p.buffered = 0;
            self.buffered.retain(|(j, _)| *j != i);
        }
    }

    /// The next offset `poll` will return for a partition, once known.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        let i = *self.index.get(&(Arc::from(topic), partition))?;
        let p = &self.parts[i];
        p.position.or(p.fetch_position)
    }

    /// Resolves pending seeks now (`poll` does it too); returns once every assigned partition has a position
    /// or `timeout` passes.
    pub async fn wait_positions(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.resolve_seeks()).await {
                Ok(r) => r?,
                Err(_) => return Ok(false),
            }
            if self
                .parts
                .iter()
                .all(|p| !p.assigned || p.fetch_position.is_some())
            {
                return Ok(true);
            }
            let wake = self.next_pause_end().unwrap_or(deadline).min(deadline);
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Returns the records available now, or waits up to `timeout` for some. An empty vector means none
    /// arrived in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Dropping an unfinished resolve is safe: it changes state only after a response arrives.
            match tokio::time::timeout_at(deadline, self.resolve_seeks()).await {
                Ok(r) => r?,
                Err(_) => return Ok(Vec::new()),
            }
            self.start_fetches();
            if !self.buffered.is_empty() {
                return Ok(self.drain());
            }
            let wake = self.next_pause_end().unwrap_or(deadline).min(deadline);
            tokio::select! {
                done = self.done_rx.recv() => {
                    // The consumer holds a sender itself, so the channel never closes.
                    if let Some(done) = done {
                        self.handle(done).await?;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    fn drain(&mut self) -> Vec<ConsumerRecord> {
        let n = self.buffered.len().min(self.config.max_poll_records.max(1));
        let mut out = Vec::with_capacity(n);
        for (i, r) in self.buffered.drain(..n) {
            let p = &mut self.parts[i];
            p.buffered -= 1;
            p.position = Some(r.offset.saturating_add(1));
            out.push(r);
        }
        // Prefetch: partitions drained just now are fetched while the caller processes these records.
        self.start_fetches();
        out
    }

    /// The earliest pause still in the future (an expired pause must not wake the poll loop again).
    fn next_pause_end(&self) -> Option<Instant> {
        let now = Instant::now();
        self.parts
            .iter()
            .filter_map(|p| p.paused_until)
            .filter(|t| *t > now)
            .min()
    }

    fn paused(p: &PartState, now: Instant) -> bool {
        p.paused_until.is_some_and(|t| t > now)
    }

    /// Resolves pending seeks with `ListOffsets`, one request per leader.
    async fn resolve_seeks(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut by_leader: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut refresh = false;
        for i in 0..self.parts.len() {
            let p = &mut self.parts[i];
            let Some(seek) = p.seek else { continue };
            if Self::paused(p, now) {
                continue;
            }
            if let Offset::At(n) = seek {
                p.seek = None;
                p.fetch_position = Some(n);
                p.position = Some(n);
                continue;
            }
            match self.cluster.leader(&p.topic, p.partition) {
                Some(l) => by_leader.entry(l).or_default().push(i),
                None => {
                    p.paused_until = Some(now + FETCH_RETRY_BACKOFF);
                    refresh = true;
                }
            }
        }
        for (leader, idxs) in by_leader {
            let mut topics: Vec<ListOffsetsTopic> = Vec::new();
            for &i in &idxs {
                let p = &self.parts[i];
                let timestamp = match p.seek {
                    Some(Offset::Earliest) => EARLIEST,
                    Some(Offset::Timestamp(t)) => t.max(0),
                    _ => LATEST,
                };
                let lp = ListOffsetsPartition {
                    partition: p.partition,
                    timestamp,
                };
                match topics.iter_mut().find(|t| *t.name == *p.topic) {
                    Some(t) => t.partitions.push(lp),
                    None => topics.push(ListOffsetsTopic {
                        name: p.topic.to_string(),
                        partitions: vec![lp],
                    }),
                }
            }
            let req = Request::ListOffsets(ListOffsetsRequest { topics });
            let result = async {
                let c = self.cluster.connection(leader).await?;
                c.request(&req, self.cluster.request_timeout()).await
            }
            .await;
            let resp = match result {
                Ok(Response::ListOffsets(r)) => r,
                Ok(_) => {
                    return Err(ClientError::Protocol(
                        "ListOffsets answered with another response".into(),
                    ))
                }
                Err(e) if e.retriable() => {
                    refresh |= e.needs_metadata_refresh();
                    for &i in &idxs {
                        self.parts[i].paused_until = Some(Instant::now() + FETCH_RETRY_BACKOFF);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            for &i in &idxs {
                let p = &mut self.parts[i];
                let found = resp
                    .topics
                    .iter()
                    .filter(|t| *t.name == *p.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|x| x.partition == p.partition);
                let Some(r) = found else {
                    return Err(ClientError::Protocol(format!(
                        "ListOffsets response lacks {}/{}",
                        p.topic, p.partition
                    )));
                };
                if r.error_code == 0 {
                    p.seek = None;
                    p.fetch_position = Some(r.offset);
                    p.position = Some(r.offset);
                    continue;
                }
                let e =
                    ClientError::broker(ErrorCode::from_u16(r.error_code), r.error_message.clone());
                if !e.retriable() {
                    return Err(e);
                }
                refresh |= e.needs_metadata_refresh();
                p.paused_until = Some(Instant::now() + FETCH_RETRY_BACKOFF);
            }
        }
        if refresh {
            // Best effort: if no broker answers, the paused partitions retry after their backoff.
            let _ = self.cluster.refresh_metadata().await;
        }
        Ok(())
    }

    /// Issues one fetch per leader that has none in flight, for its fetchable partitions.
    fn start_fetches(&mut self) {
        let now = Instant::now();
        let mut by_leader: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, p) in self.parts.iter().enumerate() {
            if p.in_flight || p.buffered > 0 || p.fetch_position.is_none() || Self::paused(p, now) {
                continue;
            }
            if let Some(l) = self.cluster.leader(&p.topic, p.partition) {
                if !self.fetching.contains(&l) {
                    by_leader.entry(l).or_default().push(i);
                }
            }
        }
        for (leader, idxs) in by_leader {
            if self.fetching.len() >= FETCHES_IN_FLIGHT_MAX {
                break;
            }
            let mut topics: Vec<FetchTopic> = Vec::new();
            let mut parts = Vec::with_capacity(idxs.len());
            for i in idxs {
                let p = &mut self.parts[i];
                let offset = p.fetch_position.unwrap_or(0);
                p.in_flight = true;
                parts.push((i, p.epoch, offset));
                let fp = FetchPartition {
                    partition: p.partition,
                    fetch_offset: offset,
                    partition_max_bytes: p.max_bytes,
                };
                match topics.iter_mut().find(|t| *t.name == *p.topic) {
                    Some(t) => t.partitions.push(fp),
                    None => topics.push(FetchTopic {
                        name: p.topic.to_string(),
                        partitions: vec![fp],
                    }),
                }
            }
            let max_wait = self.config.fetch_max_wait;
            let req = Request::Fetch(FetchRequest {
                max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                topics,
                read_replica: false,
            });
            self.fetching.insert(leader);
            let cluster = self.cluster.clone();
            let tx = self.done_tx.clone();
            tokio::spawn(async move {
                let result = async {
                    let c = cluster.connection(leader).await?;
                    match c
                        .request(&req, cluster.request_timeout() + max_wait)
                        .await?
                    {
                        Response::Fetch(r) => Ok(r),
                        _ => Err(ClientError::Protocol(
                            "Fetch answered with another response".into(),
                        )),
                    }
                }
                .await;
                let _ = tx
                    .send(FetchDone {
                        node: leader,
                        parts,
                        result,
                    })
                    .await;
            });
        }
    }

    async fn handle(&mut self, done: FetchDone) -> Result<()> {
        self.fetching.remove(&done.node);
        for &(i, _, _) in &done.parts {
            if let Some(p) = self.parts.get_mut(i) {
                p.in_flight = false;
            }
        }
        let resp = match done.result {
            Ok(r) => r,
            Err(e) if e.retriable() => {
                let until = Instant::now() + FETCH_RETRY_BACKOFF;
                for &(i, _, _) in &done.parts {
                    self.parts[i].paused_until = Some(until);
                }
                if e.needs_metadata_refresh() {
                    let _ = self.cluster.refresh_metadata().await;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut refresh = false;
        for (i, epoch, fetch_offset) in done.parts {
            let p = &self.parts[i];
            if p.epoch != epoch || p.fetch_position != Some(fetch_offset) {
                continue; // seeked meanwhile
            }
            let found = resp
                .topics
                .iter()
                .filter(|t| *t.name == *p.topic)
                .flat_map(|t| t.partitions.iter())
                .find(|x| x.partition == p.partition);
            let Some(r) = found else {
                continue; // not answered: fetched again next round
            };
            let code = ErrorCode::from_u16(r.error_code);
            match code {
                ErrorCode::None => {
                    self.parts[i].out_of_range = 0;
                    self.parts[i].hint_followed = false;
                    let data = r.records.to_contiguous();
                    self.absorb(i, data)?;
                }
                // Below the log start the records are gone (retention): start over at the earliest.
                // Above the high watermark the answer may come from a broker that is behind (a deposed
                // leader that still thinks it leads, a restarted one, a new leader not caught up): the
                // position is kept and fetched again after a metadata refresh; only a persistent answer
                // (the log really was cut below our position) resets it.
                ErrorCode::OffsetOutOfRange
                    if fetch_offset >= r.log_start_offset
                        && self.parts[i].out_of_range < OUT_OF_RANGE_RETRIES_MAX =>
                {
                    let p = &mut self.parts[i];
                    p.out_of_range += 1;
                    p.paused_until = Some(Instant::now() + FETCH_RETRY_BACKOFF);
                    refresh = true;
                    tracing::debug!(topic = %p.topic, partition = p.partition, offset = fetch_offset,
                        high_watermark = r.high_watermark, "fetch position above the broker's high watermark; retrying");
                }
                ErrorCode::OffsetOutOfRange => {
                    if fetch_offset >= r.log_start_offset {
                        tracing::warn!(topic = %p.topic, partition = p.partition, offset = fetch_offset,
                            high_watermark = r.high_watermark, "fetch position stayed above the high watermark; resetting to the earliest offset");
                    }
                    self.reset(i, Offset::Earliest)
                }
                _ => {
                    let e = ClientError::broker(code, r.error_message.clone());
                    if !e.retriable() {
                        return Err(e);
                    }
                    // NOT_LEADER naming another leader: fetch from it next round, without a metadata round
                    // trip or a pause (once in a row).
                    let hint = r
                        .leader_hint
                        .filter(|h| code == ErrorCode::NotLeader && *h != done.node);
                    let p = &self.parts[i];
                    let followed = !p.hint_followed
                        && hint.is_some_and(|h| {
                            self.cluster.apply_leader_hint(&p.topic, p.partition, h)
                        });
                    let p = &mut self.parts[i];
                    p.hint_followed = followed;
                    if !followed {
                        refresh |= e.needs_metadata_refresh();
                        p.paused_until = Some(Instant::now() + FETCH_RETRY_BACKOFF);
                    }
                }
            }
        }
        if refresh {
            let _ = self.cluster.refresh_metadata().await;
        }
        Ok(())
    }

    /// Buffers the records of one partition's fetched batches from its fetch position on.
    fn absorb(&mut self, i: usize, data: Bytes) -> Result<()> {
        let check = self.config.check_crcs;
        let p = &mut self.parts[i];
        let Some(mut pos) = p.fetch_position else {
            return Ok(());
        };
        let mut complete = 0usize;
        for item in BatchIter::new(data.clone()) {
            let (h, batch): (RecordBatchHeader, Bytes) = item.map_err(corrupt)?;
            complete += 1;
            // Offsets come from the broker: saturate rather than overflow on hostile values.
            let next = h.base_offset.saturating_add(u64::from(h.record_count));
            if next <= pos {
                continue;
            }
            if check {
                validate(&batch).map_err(corrupt)?;
            }
            for r in records(&batch).map_err(corrupt)? {
                if r.offset < pos {
                    continue;
                }
                pos = r.offset.saturating_add(1);
                p.buffered += 1;
                self.buffered.push_back((
                    i,
                    ConsumerRecord {
                        topic: p.topic.clone(),
                        partition: p.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                    },
                ));
            }
            pos = pos.max(next);
        }
        p.fetch_position = Some(pos);
        if complete == 0 && !data.is_empty() {
            // A batch larger than the per-partition limit: ask for more next time.
            p.max_bytes = p.max_bytes.saturating_mul(2).min(FETCH_MAX_BYTES_MAX);
        }
        Ok(())
    }
}

fn corrupt(e: runnel_protocol::batch::BatchError) -> ClientError {
    ClientError::broker(
        ErrorCode::CorruptMessage,
        Some(format!("fetched batch is invalid: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClientConfig;
    use crate::testing::{self, FakeBroker, Incoming};
    use runnel_protocol::batch::{stamp, RecordBatchBuilder};
    use runnel_protocol::messages::{
        FetchPartitionResponse, FetchTopicResponse, ListOffsetsPartitionResponse,
        ListOffsetsResponse, ListOffsetsTopicResponse, Records,
    };

    async fn setup(partitions: u32) -> (FakeBroker, Consumer) {
        let fb = testing::start(&[("t", partitions)]).await;
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        (fb, Consumer::new(cluster, ConsumerConfig::default()))
    }

    fn batch(base: u64, values: &[&str]) -> Bytes {
        let mut b = RecordBatchBuilder::new(256);
        for (i, v) in values.iter().enumerate() {
            b.push(1000 + i as i64, Some(b"k"), v.as_bytes(), &[]);
        }
        let mut v = b.finish().to_vec();
        stamp(&mut v, base, 1);
        Bytes::from(v)
    }

    fn fetch_answer(
        req: &Request,
        per_partition: impl Fn(u32, u64) -> (ErrorCode, Vec<Bytes>),
    ) -> Response {
        let Request::Fetch(f) = req else {
            panic!("expected fetch, got {req:?}")
        };
        Response::Fetch(FetchResponse {
            topics: f
                .topics
                .iter()
                .map(|t| FetchTopicResponse {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let (code, batches) = per_partition(p.partition, p.fetch_offset);
                            FetchPartitionResponse {
                                partition: p.partition,
                                error_code: code.as_u16(),
                                records: Records(batches),
                                ..Default::default()
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    fn offsets_answer(req: &Request, offset: impl Fn(i64) -> u64) -> Response {
        let Request::ListOffsets(l) = req else {
            panic!("expected list offsets, got {req:?}")
        };
        Response::ListOffsets(ListOffsetsResponse {
            topics: l
                .topics
                .iter()
                .map(|t| ListOffsetsTopicResponse {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| ListOffsetsPartitionResponse {
                            partition: p.partition,
                            offset: offset(p.timestamp),
                            ..Default::default()
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    async fn next_req(fb: &mut FakeBroker) -> Incoming {
        tokio::time::timeout(Duration::from_secs(5), fb.requests.recv())
            .await
            .expect("no request within 5 s")
            .expect("fake broker gone")
    }

    #[tokio::test]
    async fn seek_earliest_skips_records_before_the_position_and_prefetches() {
        let (mut fb, mut c) = setup(1).await;
        c.assign("t", None).await.unwrap();
        c.seek("t", 0, Offset::At(2)).unwrap();
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        let inc = next_req(&mut fb).await;
        let Request::Fetch(f) = &inc.request else {
            panic!()
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 2);
        // The broker answers with the whole batch containing offset 2.
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| {
                (
                    ErrorCode::None,
                    vec![batch(0, &["a", "b", "c", "d"]), batch(4, &["e"])],
                )
            }))
            .unwrap();
        let (mut c, recs) = poll.await.unwrap();
        let got: Vec<(u64, &[u8])> = recs
            .iter()
            .map(|r| (r.offset, r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(got, vec![(2, &b"c"[..]), (3, b"d"), (4, b"e")]);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(c.position("t", 0), Some(5));
        // Prefetch: the next fetch is already in flight, from offset 5, before poll is called again.
        let inc = next_req(&mut fb).await;
        let Request::Fetch(f) = &inc.request else {
            panic!()
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 5);
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| {
                (ErrorCode::None, vec![batch(5, &["f"])])
            }))
            .unwrap();
        let recs = c.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].offset, 5);
    }

    #[tokio::test]
    async fn poll_returns_at_most_max_poll_records_and_fetches_again_only_when_drained() {
        let fb = testing::start(&[("t", 1)]).await;
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        let mut fb = fb;
        let mut c = Consumer::new(
            cluster,
            ConsumerConfig {
                max_poll_records: 2,
                initial_offset: Offset::At(0),
                ..Default::default()
            },
        );
        c.assign("t", None).await.unwrap();
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| {
                (ErrorCode::None, vec![batch(0, &["a", "b", "c", "d", "e"])])
            }))
            .unwrap();
        let (mut c, r) = poll.await.unwrap();
        assert_eq!(r.len(), 2);
        // Three records are still buffered: no fetch is issued for the partition.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fb.requests.recv())
                .await
                .is_err()
        );
        assert_eq!(c.poll(Duration::from_secs(1)).await.unwrap().len(), 2);
        let last = c.poll(Duration::from_secs(1)).await.unwrap();
        assert_eq!(last.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![4]);
        // Drained: the next fetch (from offset 5) goes out.
        let inc = next_req(&mut fb).await;
        let Request::Fetch(f) = &inc.request else {
            panic!()
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 5);
    }

    /// An OFFSET_OUT_OF_RANGE answer with the given log start and high watermark.
    fn out_of_range(req: &Request, log_start: u64, hwm: u64) -> Response {
        let mut r = fetch_answer(req, |_, _| (ErrorCode::OffsetOutOfRange, vec![]));
        if let Response::Fetch(f) = &mut r {
            let p = &mut f.topics[0].partitions[0];
            p.log_start_offset = log_start;
            p.high_watermark = hwm;
        }
        r
    }

    /// A consumer of `t`/0 seeked to `offset`, polling (up to 5 s) in a task.
    async fn polling_from(
        offset: u64,
    ) -> (
        FakeBroker,
        tokio::task::JoinHandle<(Consumer, Vec<ConsumerRecord>)>,
    ) {
        let (fb, mut c) = setup(1).await;
        c.assign("t", Some(&[0])).await.unwrap();
        c.seek("t", 0, Offset::At(offset)).unwrap();
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        (fb, poll)
    }

    #[tokio::test]
    async fn offset_out_of_range_below_the_log_start_resets_to_earliest() {
        let (mut fb, poll) = polling_from(100).await;
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(out_of_range(&inc.request, 150, 200))
            .unwrap();
        let inc = next_req(&mut fb).await;
        let Request::ListOffsets(l) = &inc.request else {
            panic!("expected a reset to earliest, got {:?}", inc.request)
        };
        assert_eq!(l.topics[0].partitions[0].timestamp, EARLIEST);
        inc.reply.send(offsets_answer(&inc.request, |_| 7)).unwrap();
        let inc = next_req(&mut fb).await;
        let Request::Fetch(f) = &inc.request else {
            panic!()
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 7);
        inc.reply
            .send(fetch_answer(&inc.request, |_, o| {
                (ErrorCode::None, vec![batch(o, &["x"])])
            }))
            .unwrap();
        let (_c, recs) = poll.await.unwrap();
        assert_eq!(recs[0].offset, 7);
    }

    /// A broker behind the position (a stale or new leader) answers out of range above its high
    /// watermark: the position is kept and fetched again, never rewound to the log start.
    #[tokio::test]
    async fn offset_out_of_range_above_the_high_watermark_keeps_the_position() {
        let (mut fb, poll) = polling_from(100).await;
        for _ in 0..3 {
            let inc = next_req(&mut fb).await;
            let Request::Fetch(f) = &inc.request else {
                panic!("expected the same fetch again, got {:?}", inc.request)
            };
            assert_eq!(f.topics[0].partitions[0].fetch_offset, 100);
            inc.reply.send(out_of_range(&inc.request, 0, 50)).unwrap();
        }
        let inc = next_req(&mut fb).await;
        let Request::Fetch(f) = &inc.request else {
            panic!("expected the same fetch again, got {:?}", inc.request)
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 100);
        inc.reply
            .send(fetch_answer(&inc.request, |_, o| {
                (ErrorCode::None, vec![batch(o, &["x"])])
            }))
            .unwrap();
        let (_c, recs) = poll.await.unwrap();
        assert_eq!(recs[0].offset, 100);
    }

    #[tokio::test]
    async fn latest_by_default_and_retriable_errors_back_off() {
        let (mut fb, mut c) = setup(2).await;
        c.assign("t", None).await.unwrap();
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        let inc = next_req(&mut fb).await;
        let Request::ListOffsets(l) = &inc.request else {
            panic!()
        };
        assert!(l.topics[0].partitions.iter().all(|p| p.timestamp == LATEST));
        inc.reply
            .send(offsets_answer(&inc.request, |_| 10))
            .unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(fetch_answer(&inc.request, |p, o| {
                if p == 0 {
                    (ErrorCode::NotLeader, vec![])
                } else {
                    (ErrorCode::None, vec![batch(o, &["p1"])])
                }
            }))
            .unwrap();
        let (mut c, recs) = poll.await.unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].partition, recs[0].offset), (1, 10));
        // Partition 0 is fetched again after its backoff.
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        let mut saw_p0 = false;
        while !saw_p0 {
            let inc = next_req(&mut fb).await;
            let Request::Fetch(f) = &inc.request else {
                panic!()
            };
            saw_p0 = f.topics[0].partitions.iter().any(|p| p.partition == 0);
            inc.reply
                .send(fetch_answer(&inc.request, |p, o| {
                    if p == 0 {
                        (ErrorCode::None, vec![batch(o, &["p0"])])
                    } else {
                        (ErrorCode::None, vec![])
                    }
                }))
                .unwrap();
        }
        let (_c, recs) = poll.await.unwrap();
        assert!(recs.iter().any(|r| r.partition == 0 && r.offset == 10));
    }

    fn fetched_partitions(inc: &Incoming) -> Vec<(u32, u64)> {
        let Request::Fetch(f) = &inc.request else {
            panic!("expected fetch, got {:?}", inc.request)
        };
        f.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition, p.fetch_offset))
            .collect()
    }

    #[tokio::test]
    async fn unassign_drops_buffered_and_in_flight_records_and_reassign_reuses_the_slot() {
        let (mut fb, mut c) = setup(2).await;
        c.assign("t", None).await.unwrap();
        c.seek_all(Offset::At(0));
        let poll = tokio::spawn(async move {
            let r = c.poll(Duration::from_secs(5)).await.unwrap();
            (c, r)
        });
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(fetch_answer(&inc.request, |p, o| {
                (
                    ErrorCode::None,
                    vec![batch(o, &[if p == 0 { "a" } else { "x" }])],
                )
            }))
            .unwrap();
        let (mut c, recs) = poll.await.unwrap();
        assert_eq!(recs.len(), 2);
        // The prefetch for both partitions is in flight while p0 is unassigned.
        let inflight = next_req(&mut fb).await;
        assert_eq!(fetched_partitions(&inflight), vec![(0, 1), (1, 1)]);
        assert!(c.unassign("t", 0));
        assert!(!c.unassign("t", 0));
        assert!(!c.unassign("t", 7));
        assert_eq!(c.assignment(), vec![(Arc::from("t"), 1)]);
        assert_eq!(c.position("t", 0), None);
        assert!(c.seek("t", 0, Offset::At(0)).is_err());
        inflight
            .reply
            .send(fetch_answer(&inflight.request, |p, o| {
                (
                    ErrorCode::None,
                    vec![batch(o, &[if p == 0 { "b" } else { "y" }])],
                )
            }))
            .unwrap();
        let recs = c.poll(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            recs.iter()
                .map(|r| (r.partition, r.offset))
                .collect::<Vec<_>>(),
            vec![(1, 1)]
        );
        let inc = next_req(&mut fb).await;
        assert_eq!(fetched_partitions(&inc), vec![(1, 2)]);
        // Assigned again: the same slot, a fresh start (here an explicit seek).
        c.assign("t", Some(&[0])).await.unwrap();
        c.seek("t", 0, Offset::At(1)).unwrap();
        assert_eq!(c.parts.len(), 2);
        let poll = tokio::spawn(async move { c.poll(Duration::from_secs(5)).await });
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| (ErrorCode::None, vec![])))
            .unwrap();
        let inc = next_req(&mut fb).await;
        assert_eq!(fetched_partitions(&inc), vec![(0, 1), (1, 2)]);
        inc.reply
            .send(fetch_answer(&inc.request, |p, o| {
                (
                    ErrorCode::None,
                    if p == 0 {
                        vec![batch(o, &["b"])]
                    } else {
                        vec![]
                    },
                )
            }))
            .unwrap();
        let recs = poll.await.unwrap().unwrap();
        assert_eq!(
            recs.iter()
                .map(|r| (r.partition, r.offset))
                .collect::<Vec<_>>(),
            vec![(0, 1)]
        );
    }

    #[tokio::test]
    async fn offsets_at_the_top_of_the_range_do_not_overflow() {
        let (mut fb, mut c) = setup(1).await;
        c.assign("t", None).await.unwrap();
        c.seek_all(Offset::At(u64::MAX - 1));
        let poll = tokio::spawn(async move { c.poll(Duration::from_secs(5)).await });
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| {
                (ErrorCode::None, vec![batch(u64::MAX - 1, &["a", "b", "c"])])
            }))
            .unwrap();
        let recs = poll.await.unwrap().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].offset, u64::MAX);
    }

    /// A consumer bootstrapped from `a`, assigned every partition of "t" from offset 3, polling (5 s) in
    /// the background.
    async fn poll_from_offset_3(
        a: &FakeBroker,
    ) -> tokio::task::JoinHandle<Result<Vec<ConsumerRecord>>> {
        let cluster = Cluster::connect(ClientConfig::new(&a.addr).unwrap())
            .await
            .unwrap();
        let mut c = Consumer::new(
            cluster,
            ConsumerConfig {
                initial_offset: Offset::At(3),
                ..Default::default()
            },
        );
        c.assign("t", None).await.unwrap();
        tokio::spawn(async move { c.poll(Duration::from_secs(5)).await })
    }

    /// Broker `b` gets the fetch from offset 3, answers one record there, and the poll returns it.
    async fn serve_offset_3(
        b: &mut FakeBroker,
        poll: tokio::task::JoinHandle<Result<Vec<ConsumerRecord>>>,
    ) {
        let inc = next_req(b).await;
        let Request::Fetch(f) = &inc.request else {
            panic!("expected a fetch, got {:?}", inc.request)
        };
        assert_eq!(f.topics[0].partitions[0].fetch_offset, 3);
        inc.reply
            .send(fetch_answer(&inc.request, |_, o| {
                (ErrorCode::None, vec![batch(o, &["z"])])
            }))
            .unwrap();
        let recs = poll.await.unwrap().unwrap();
        assert_eq!(recs[0].offset, 3);
    }

    #[tokio::test]
    async fn fetch_follows_the_leader_after_not_leader() {
        let (meta, mut a, mut b) = testing::two_brokers("t").await;
        let poll = poll_from_offset_3(&a).await;
        let inc = next_req(&mut a).await;
        testing::set_leader(&meta, 2);
        inc.reply
            .send(fetch_answer(&inc.request, |_, _| {
                (ErrorCode::NotLeader, vec![])
            }))
            .unwrap();
        serve_offset_3(&mut b, poll).await;
    }

    /// A NOT_LEADER naming the new leader sends the next fetch there, although the metadata still names
    /// the old one (a refresh would send it back to broker 1).
    #[tokio::test]
    async fn fetch_follows_a_leader_hint_at_once() {
        let (_meta, mut a, mut b) = testing::two_brokers("t").await;
        let poll = poll_from_offset_3(&a).await;
        let inc = next_req(&mut a).await;
        let mut resp = fetch_answer(&inc.request, |_, _| (ErrorCode::NotLeader, vec![]));
        if let Response::Fetch(f) = &mut resp {
            for p in f.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.leader_hint = Some(2);
            }
        }
        inc.reply.send(resp).unwrap();
        serve_offset_3(&mut b, poll).await;
    }

    #[tokio::test]
    async fn corrupt_batches_are_an_error_not_a_panic() {
        let (mut fb, mut c) = setup(1).await;
        c.assign("t", None).await.unwrap();
        c.seek_all(Offset::At(0));
        let poll = tokio::spawn(async move { c.poll(Duration::from_secs(5)).await });
        let inc = next_req(&mut fb).await;
        let mut bad = batch(0, &["a"]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        inc.reply
            .send(fetch_answer(&inc.request, move |_, _| {
                (ErrorCode::None, vec![Bytes::from(bad.clone())])
            }))
            .unwrap();
        let e = poll.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::CorruptMessage));
    }

    #[tokio::test]
    async fn poll_times_out_empty_and_unknown_partitions_are_refused() {
        let (_fb, mut c) = setup(1).await;
        assert!(c.assign("t", Some(&[1])).await.is_err());
        assert!(c.assign("nope", None).await.is_err());
        assert!(c.seek("t", 0, Offset::Earliest).is_err());
        c.assign("t", None).await.unwrap();
        // The fake broker never answers: poll returns empty at its deadline.
        let r = c.poll(Duration::from_millis(50)).await.unwrap();
        assert!(r.is_empty());
    }
}
