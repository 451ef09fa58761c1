//! The seam between storage/raft and the server: one partition replica ([`Partition`]) = its segment log +
//! its Raft group. The server only ever uses this API; no openraft type appears here.
//!
//! Invariants: `read` serves only whole batches below the high watermark (committed data), as zero-copy
//! slices of the mapped segments; an append with acks=all resolves only once committed; after `shutdown`
//! every call fails with `ShuttingDown`.
//!
//! Operability: each partition logs one line per leadership change and counts new leaderships
//! ([`Partition::leader_changes`]); [`Partition::set_log_config`] changes segment and retention settings of
//! the live log; [`Partition::log_stats`] gives segment count and bytes for metrics.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::batch::{RecordBatchHeader, BATCH_HEADER_LEN};
use runnel_protocol::messages::produce::ACKS_NONE;
use runnel_protocol::ErrorCode;

use crate::raft::producers::SequenceCheck;
use crate::raft::{GroupConfig, GroupError, Leadership, RaftGroup, RaftNet, Replication};
use crate::storage::log::now_ms;
use crate::storage::{PartitionLog, StorageError};

pub use crate::storage::{LogConfig, LogStats, StorageContext};

/// How often a partition checks whether retention should snapshot + purge.
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: u32,
}

impl PartitionId {
    /// The partition's Raft group name on the wire: `"<topic>-<partition>"`.
    pub fn group_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The batch's first offset; `u64::MAX` (-1 on the wire) for acks=none, which does not wait for it.
    pub base_offset: u64,
    pub log_append_time_ms: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    #[error("this broker is not the partition's leader")]
    NotLeader { leader_hint: Option<u32> },
    #[error("offset {offset} is outside [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        high_watermark: u64,
    },
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("partition is shutting down")]
    ShuttingDown,
    #[error("timed out")]
    Timeout,
    #[error("producer {producer_id}: sequence {sequence} was already written but is no longer remembered")]
    DuplicateSequence { producer_id: i64, sequence: i32 },
    #[error("producer {producer_id}: epoch {epoch} is older than one already written")]
    ProducerFenced { producer_id: i64, epoch: i16 },
    #[error("producer {producer_id}: sequence {sequence} is out of order (expected {expected}); an earlier batch has not been written")]
    OutOfOrderSequence {
        producer_id: i64,
        sequence: i32,
        expected: i32,
    },
}

impl PartitionError {
    /// NotLeader→NotLeader, OffsetOutOfRange→OffsetOutOfRange, Storage→StorageError,
    /// ShuttingDown→BrokerShuttingDown, Timeout→RequestTimedOut
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionError::NotLeader { .. } => ErrorCode::NotLeader,
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            PartitionError::ShuttingDown => ErrorCode::BrokerShuttingDown,
            PartitionError::Timeout => ErrorCode::RequestTimedOut,
            PartitionError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
            PartitionError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            PartitionError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        }
    }
}

impl From<GroupError> for PartitionError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotLeader { leader } => PartitionError::NotLeader {
                leader_hint: leader.and_then(|l| u32::try_from(l).ok()),
            },
            GroupError::Storage(s) | GroupError::Unsupported(s) => PartitionError::Storage(s),
            GroupError::ShuttingDown => PartitionError::ShuttingDown,
            GroupError::Timeout(_) => PartitionError::Timeout,
        }
    }
}

impl From<StorageError> for PartitionError {
    fn from(e: StorageError) -> Self {
        PartitionError::Storage(e.to_string())
    }
}

/// Tuning beyond the API's `open` arguments (Raft timing, the retention check period, the broker's Raft
/// network for multi-voter partitions).
#[derive(Clone, Debug)]
pub struct PartitionOptions {
    pub group: GroupConfig,
    pub retention_check_interval: Duration,
    /// Required when the partition has voters other than this node.
    pub replication: Option<Arc<RaftNet>>,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        PartitionOptions {
            group: GroupConfig::default(),
            retention_check_interval: RETENTION_CHECK_INTERVAL,
            replication: None,
        }
    }
}

impl PartitionOptions {
    /// Options for a replica of a multi-voter partition: `net`'s timing (`--raft-heartbeat-ms`) over `net`.
    pub fn replicated(net: Arc<RaftNet>) -> PartitionOptions {
        PartitionOptions {
            group: net.timing().clone(),
            retention_check_interval: RETENTION_CHECK_INTERVAL,
            replication: Some(net),
        }
    }
}

/// One partition replica on this broker: its segment log and its Raft group. Shared as `Arc<Partition>`.
pub struct Partition {
    id: PartitionId,
    group: RaftGroup,
    log: PartitionLog,
    hwm: tokio::sync::watch::Receiver<u64>,
    closed: AtomicBool,
    /// New leaderships seen since the partition was opened (the first election included).
    leader_changes: Arc<AtomicU64>,
    retention_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    leadership_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Idempotent batches being replicated, by producer id, in proposal order: a retry of one waits for
    /// its outcome instead of writing it again, and the next batch must follow the last one. Held to
    /// check, propose and register (so proposals of one producer enter the log in sequence order), never
    /// across a commit.
    in_flight: Arc<tokio::sync::Mutex<HashMap<i64, InFlightProducer>>>,
}

/// One idempotent producer's batches on their way through Raft (one epoch: a newer one replaces them).
struct InFlightProducer {
    epoch: i16,
    /// The sequence right after the last batch proposed (batches may resolve out of order, so the queue's
    /// tail is not a substitute).
    next_seq: i32,
    batches: VecDeque<InFlightBatch>,
}

/// An idempotent batch on its way through Raft.
struct InFlightBatch {
    first_seq: i32,
    outcome: tokio::sync::watch::Receiver<Option<Result<u64, PartitionError>>>,
}

/// The outcome of an in-flight idempotent batch, once its task records it.
async fn outcome_of(
    mut rx: tokio::sync::watch::Receiver<Option<Result<u64, PartitionError>>>,
) -> Result<u64, PartitionError> {
    let r = rx
        .wait_for(|o| o.is_some())
        .await
        .map_err(|_| PartitionError::Timeout)?
        .clone();
    r.unwrap_or(Err(PartitionError::Timeout))
}

/// An append handed to Raft: resolves when it is acknowledged per its `acks`.
pub type PendingAppend = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<AppendOutcome, PartitionError>> + Send + 'static>,
>;

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("group", &self.group)
            .finish()
    }
}

impl Partition {
    /// Opens (running crash recovery) or creates the replica whose files live in `dir` (created if missing).
    /// `voters` is the replica set; with `voters == [node_id]` (single node) a new group is initialized with
    /// that membership and becomes leader by itself within a moment.
    pub async fn open(
        id: PartitionId,
        dir: PathBuf,
        node_id: u32,
        voters: Vec<u32>,
        config: LogConfig,
        ctx: StorageContext,
    ) -> Result<Arc<Partition>, PartitionError> {
        Partition::open_with(
            id,
            dir,
            node_id,
            voters,
            config,
            ctx,
            PartitionOptions::default(),
        )
        .await
    }

    /// [`Partition::open`] with explicit [`PartitionOptions`].
    pub async fn open_with(
        id: PartitionId,
        dir: PathBuf,
        node_id: u32,
        voters: Vec<u32>,
        config: LogConfig,
        ctx: StorageContext,
        options: PartitionOptions,
    ) -> Result<Arc<Partition>, PartitionError> {
        let voters: Vec<u64> = voters.into_iter().map(u64::from).collect();
        let replication = if voters == [u64::from(node_id)] {
            None
        } else {
            let Some(net) = options.replication.clone() else {
                return Err(PartitionError::Storage(format!(
                    "voters {voters:?} need the broker's raft network (multi-node is not configured)"
                )));
            };
            Some(Replication {
                net,
                group: id.group_name(),
                quiesce: id.topic != crate::cluster::controller::METADATA_GROUP_TOPIC,
            })
        };
        let log = tokio::task::spawn_blocking(move || PartitionLog::open(&dir, config, ctx))
            .await
            .map_err(|e| PartitionError::Storage(format!("opening the log: {e}")))??;
        let group = RaftGroup::open(
            u64::from(node_id),
            &voters,
            log.clone(),
            options.group,
            replication,
        )
        .await?;
        let hwm = group.watch_high_watermark();
        let mut leadership = group.watch_leadership();
        // Mark the current value seen, so the loop below reports only later changes.
        let first = *leadership.borrow_and_update();
        let p = Arc::new(Partition {
            id,
            group,
            log,
            hwm,
            closed: AtomicBool::new(false),
            leader_changes: Arc::new(AtomicU64::new(u64::from(first.leader.is_some()))),
            retention_task: Mutex::new(None),
            leadership_task: Mutex::new(None),
            in_flight: Arc::new(tokio::sync::Mutex::new(HashMap::new())),
        });
        let weak = Arc::downgrade(&p);
        let task = tokio::spawn(retention_loop(weak, options.retention_check_interval));
        if let Ok(mut t) = p.retention_task.lock() {
            *t = Some(task);
        }
        let task = tokio::spawn(leadership_loop(
            p.id.clone(),
            p.leader_changes.clone(),
            leadership,
            first,
        ));
        if let Ok(mut t) = p.leadership_task.lock() {
            *t = Some(task);
        }
        tracing::info!(
            topic = %p.id.topic,
            partition = p.id.partition,
            hwm = p.high_watermark(),
            leader = ?first.leader,
            term = first.term,
            "partition open"
        );
        Ok(p)
    }

    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    fn check_open(&self) -> Result<(), PartitionError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PartitionError::ShuttingDown);
        }
        Ok(())
    }

    /// Appends one record batch that the caller already validated (`batch::validate` gave `header`).
    /// acks == ACKS_ALL (-1) or ACKS_LEADER (1): resolves once the batch is committed (durable on a quorum;
    /// the high watermark has passed it). acks == ACKS_NONE (0): resolves once the batch is handed to Raft,
    /// without waiting. Err(NotLeader{..}) on a follower.
    pub async fn append(
        &self,
        batch: Bytes,
        header: &RecordBatchHeader,
        acks: i8,
    ) -> Result<AppendOutcome, PartitionError> {
        self.submit(batch, header, acks).await?.await
    }

    /// The first half of [`Partition::append`]: checks the batch and hands it to Raft, then returns the
    /// future of its acknowledgement. Batches submitted by calls that return one after another enter the
    /// log in that order.
    pub async fn submit(
        &self,
        batch: Bytes,
        header: &RecordBatchHeader,
        acks: i8,
    ) -> Result<PendingAppend, PartitionError> {
        self.check_open()?;
        // Guard the log's contract: a batch it would refuse must not reach Raft (a refused append is fatal
        // to the group).
        if batch.len() < BATCH_HEADER_LEN
            || header.record_count == 0
            || batch.len() > crate::storage::frame::FRAME_PAYLOAD_MAX
        {
            return Err(PartitionError::Storage(format!(
                "refusing a malformed batch of {} bytes with {} records",
                batch.len(),
                header.record_count
            )));
        }
        let log_append_time_ms = now_ms();
        let outcome = move |base_offset: u64| AppendOutcome {
            base_offset,
            log_append_time_ms,
        };
        if acks == ACKS_NONE {
            self.group
                .write(batch, header.record_count, header.max_timestamp, false)
                .await?;
            return Ok(Box::pin(std::future::ready(Ok(outcome(u64::MAX)))));
        }
        if header.producer_id >= 0 {
            let committed = self.submit_idempotent(batch, header).await?;
            return Ok(Box::pin(async move { committed.await.map(outcome) }));
        }
        let proposal = self
            .group
            .propose(batch, header.record_count, header.max_timestamp)
            .await?;
        Ok(Box::pin(async move {
            proposal
                .committed
                .await
                .map(outcome)
                .map_err(PartitionError::from)
        }))
    }

    /// An idempotent producer's batch: written once whatever the retries, and only right after the
    /// producer's previous batch. The leader first makes sure it has applied everything committed before
    /// its term (so its producer table is complete); then a batch already committed is answered with its
    /// original offset, a batch still being replicated is awaited, one that does not follow the last
    /// written or in-flight batch is OUT_OF_ORDER, and only the next one is proposed.
    async fn submit_idempotent(
        &self,
        batch: Bytes,
        header: &RecordBatchHeader,
    ) -> Result<
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, PartitionError>> + Send>>,
        PartitionError,
    > {
        let (pid, epoch, seq) = (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        );
        let last_seq = seq.wrapping_add(header.record_count.max(1) as i32 - 1);
        let mut in_flight = self.in_flight.lock().await;
        self.group.catch_up_applied().await?;
        let fenced = || PartitionError::ProducerFenced {
            producer_id: pid,
            epoch,
        };
        // What the batches still in flight say, when they are of this epoch: Some(true) = it follows them.
        let mut follows_in_flight = None;
        if let Some(f) = in_flight.get(&pid) {
            if epoch < f.epoch {
                return Err(fenced());
            }
            if epoch == f.epoch {
                if let Some(b) = f.batches.iter().find(|b| b.first_seq == seq) {
                    let rx = b.outcome.clone();
                    drop(in_flight);
                    return Ok(Box::pin(outcome_of(rx)));
                }
                if !f.batches.is_empty() {
                    let expected = f.next_seq;
                    if seq == expected {
                        follows_in_flight = Some(true);
                    } else if seq > expected {
                        return Err(PartitionError::OutOfOrderSequence {
                            producer_id: pid,
                            sequence: seq,
                            expected,
                        });
                    } else {
                        follows_in_flight = Some(false);
                    }
                }
            }
        }
        if follows_in_flight != Some(true) {
            match self
                .group
                .check_sequence(pid, epoch, seq, header.record_count)
            {
                SequenceCheck::Append if follows_in_flight.is_none() => {}
                SequenceCheck::Duplicate { base_offset } => {
                    return Ok(Box::pin(std::future::ready(Ok(base_offset))))
                }
                SequenceCheck::DuplicateUnknown => {
                    return Err(PartitionError::DuplicateSequence {
                        producer_id: pid,
                        sequence: seq,
                    })
                }
                // Below what is in flight yet not written: a batch whose proposal failed while later
                // ones are still being cleaned up. Retriable: by the retry, the table decides.
                SequenceCheck::Append => {
                    return Err(PartitionError::OutOfOrderSequence {
                        producer_id: pid,
                        sequence: seq,
                        expected: in_flight.get(&pid).map_or(seq, |f| f.next_seq),
                    })
                }
                SequenceCheck::Fenced => return Err(fenced()),
                SequenceCheck::OutOfOrder { expected } => {
                    return Err(PartitionError::OutOfOrderSequence {
                        producer_id: pid,
                        sequence: seq,
                        expected,
                    })
                }
            }
        }
        let proposal = self
            .group
            .propose(batch, header.record_count, header.max_timestamp)
            .await?;
        let (tx, rx) = tokio::sync::watch::channel(None);
        let entry = in_flight.entry(pid).or_insert_with(|| InFlightProducer {
            epoch,
            next_seq: seq,
            batches: VecDeque::new(),
        });
        if entry.epoch != epoch {
            // A newer epoch: the older one's batches were proposed before this one and resolve on their own.
            *entry = InFlightProducer {
                epoch,
                next_seq: seq,
                batches: VecDeque::new(),
            };
        }
        entry.next_seq = last_seq.wrapping_add(1);
        entry.batches.push_back(InFlightBatch {
            first_seq: seq,
            outcome: rx.clone(),
        });
        drop(in_flight);
        // The outcome is recorded and the batch unregistered once applied (the producer table then has it,
        // so a retry is answered from there), by a task of its own, so a request that stops waiting (its
        // deadline passed) never leaves a registration that retries would wait on. The request itself is
        // answered at commit.
        let registry = self.in_flight.clone();
        tokio::spawn(async move {
            let r = proposal.applied.await.map_err(PartitionError::from);
            tx.send_replace(Some(r));
            let mut in_flight = registry.lock().await;
            if let Some(f) = in_flight.get_mut(&pid).filter(|f| f.epoch == epoch) {
                f.batches.retain(|b| b.first_seq != seq);
                if f.batches.is_empty() {
                    in_flight.remove(&pid);
                }
            }
        });
        Ok(Box::pin(async move {
            proposal.committed.await.map_err(PartitionError::from)
        }))
    }

    /// First offset NOT yet committed.
    pub fn high_watermark(&self) -> u64 {
        *self.hwm.borrow()
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.log.bounds().log_start_offset
    }

    /// One past the last appended offset (may be > HWM).
    pub fn log_end_offset(&self) -> u64 {
        self.log.bounds().next_offset
    }

    /// Whole committed batches, the first one containing `offset`, totalling at most `max_bytes` (but at
    /// least one batch when one is available, even if larger), never at or past the high watermark.
    /// The Bytes are zero-copy slices of the mmap'd segments (their base_offset field is stamped).
    /// offset == high_watermark → Ok(empty vec). offset < log_start or > high_watermark → OffsetOutOfRange.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, PartitionError> {
        self.check_open()?;
        let hwm = self.high_watermark();
        let log_start = self.log_start_offset();
        // Past the high watermark but within the log: committed elsewhere, not yet applied here (e.g. a
        // leader just elected): nothing to read yet, not an error.
        if offset > hwm && offset <= self.log_end_offset() {
            return Ok(Vec::new());
        }
        if offset < log_start || offset > hwm {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                log_start,
                high_watermark: hwm,
            });
        }
        if offset == hwm {
            return Ok(Vec::new());
        }
        Ok(self.log.read_batches(offset, max_bytes, hwm)?)
    }

    /// Changes whenever the high watermark moves (long-poll fetch waits on it).
    pub fn watch_high_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hwm.clone()
    }

    /// The first offset of the first batch whose max_timestamp >= ts; the high watermark if none.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64, PartitionError> {
        self.check_open()?;
        let hwm = self.high_watermark();
        Ok(self.log.offset_for_timestamp(ts, hwm)?)
    }

    pub fn leader(&self) -> Option<u32> {
        self.group.leader().and_then(|l| u32::try_from(l).ok())
    }

    pub fn is_leader(&self) -> bool {
        self.group.is_leader()
    }

    pub fn term(&self) -> u64 {
        self.group.term()
    }

    /// Waits until this leader has applied everything committed before its term (once per term).
    pub async fn catch_up_applied(&self) -> Result<(), PartitionError> {
        self.check_open()?;
        Ok(self.group.catch_up_applied().await?)
    }

    /// Starts an election now (the preferred replica of a new partition does, so leaders spread).
    pub async fn campaign(&self) -> Result<(), PartitionError> {
        self.check_open()?;
        Ok(self.group.campaign().await?)
    }

    /// Hands leadership to `to` if this replica leads (drain before a restart).
    pub async fn transfer_leadership(&self, to: u32) -> Result<(), PartitionError> {
        self.check_open()?;
        Ok(self.group.transfer_leadership(u64::from(to)).await?)
    }

    /// On the leader: (replica, entries it is behind), the leader included at 0; `None` elsewhere.
    pub fn replica_lag(&self) -> Option<Vec<(u32, u64)>> {
        self.group.replica_lag().map(|v| {
            v.into_iter()
                .filter_map(|(n, lag)| u32::try_from(n).ok().map(|n| (n, lag)))
                .collect()
        })
    }

    /// New leaderships (another leader, or a new term) seen since the partition was opened, the first
    /// election included.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Relaxed)
    }

    /// The log settings in force.
    pub fn log_config(&self) -> LogConfig {
        self.log.config()
    }

    /// Replaces the log settings of the live partition (segment size and age apply from the next append,
    /// retention from the next check). Fails, changing nothing, when `config` is invalid.
    pub fn set_log_config(&self, config: LogConfig) -> Result<(), PartitionError> {
        self.check_open()?;
        Ok(self.log.set_config(config)?)
    }

    /// Segment count and sizes, for metrics.
    pub fn log_stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Applies retention now: if whole segments have expired, snapshot at the boundary and let Raft purge
    /// them. Returns whether a snapshot was requested (the purge follows asynchronously).
    pub async fn enforce_retention(&self) -> Result<bool, PartitionError> {
        self.check_open()?;
        Ok(self.group.enforce_retention().await?)
    }

    /// Stops the Raft group and flushes; later calls fail with ShuttingDown. Idempotent.
    pub async fn shutdown(&self) -> Result<(), PartitionError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for task in [&self.retention_task, &self.leadership_task] {
            if let Ok(mut t) = task.lock() {
                if let Some(t) = t.take() {
                    t.abort();
                }
            }
        }
        self.group.shutdown().await?;
        Ok(())
    }
}

/// Logs one line per leadership change and counts new leaderships in `changes`, until the group stops
/// (its sender closes) or the partition shuts down (the task is aborted).
async fn leadership_loop(
    id: PartitionId,
    changes: Arc<AtomicU64>,
    mut rx: tokio::sync::watch::Receiver<Leadership>,
    mut prev: Leadership,
) {
    while rx.changed().await.is_ok() {
        let next = *rx.borrow_and_update();
        if next == prev {
            continue;
        }
        if prev.is_new_leadership(&next) {
            changes.fetch_add(1, Ordering::Relaxed);
        }
        tracing::info!(
            topic = %id.topic,
            partition = id.partition,
            leader = ?next.leader,
            term = next.term,
            previous_leader = ?prev.leader,
            previous_term = prev.term,
            "partition leadership changed"
        );
        prev = next;
    }
}

async fn retention_loop(p: Weak<Partition>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(p) = p.upgrade() else { return };
        if p.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = p.group.enforce_retention().await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e, "retention check failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::batch::{validate, RecordBatchBuilder};
    use runnel_protocol::messages::produce::{ACKS_ALL, ACKS_LEADER};
    use std::time::Instant;

    fn batch(n: usize, ts: i64) -> (Bytes, RecordBatchHeader) {
        let mut b = RecordBatchBuilder::new(n * 64 + 64);
        for i in 0..n {
            b.push(
                ts + i as i64,
                Some(b"k"),
                format!("value-{i}").as_bytes(),
                &[],
            );
        }
        let b = b.finish();
        let h = validate(&b).unwrap();
        (b, h)
    }

    fn pid() -> PartitionId {
        PartitionId {
            topic: "t".into(),
            partition: 0,
        }
    }

    async fn open(dir: &std::path::Path, cfg: LogConfig) -> Arc<Partition> {
        Partition::open(
            pid(),
            dir.to_path_buf(),
            1,
            vec![1],
            cfg,
            StorageContext::new(),
        )
        .await
        .unwrap()
    }

    /// Polls `cond` until it holds or the deadline passes.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A batch of `n` records of idempotent producer 7.
    fn numbered(n: usize, epoch: i16, seq: i32) -> (Bytes, RecordBatchHeader) {
        let mut b = RecordBatchBuilder::new(n * 64 + 64).idempotent(7, epoch, seq);
        for i in 0..n {
            b.push(i as i64, None, format!("s{seq}-{i}").as_bytes(), &[]);
        }
        let b = b.finish();
        let h = validate(&b).unwrap();
        (b, h)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_idempotent_batches_are_written_in_order_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path(), LogConfig::default()).await;
        // Five batches handed over before the first is committed.
        let mut pending = Vec::new();
        for i in 0..5 {
            let (b, h) = numbered(2, 0, i * 2);
            pending.push(p.submit(b, &h, ACKS_ALL).await.unwrap());
        }
        // A retry of one still in flight is not written again, even when the first request stopped waiting;
        // a batch past the last one is refused.
        drop(pending.remove(2));
        let (b, h) = numbered(2, 0, 4);
        pending.push(p.submit(b, &h, ACKS_ALL).await.unwrap());
        let (b, h) = numbered(1, 0, 12);
        match p.submit(b, &h, ACKS_ALL).await {
            Err(PartitionError::OutOfOrderSequence { expected: 10, .. }) => {}
            Err(e) => panic!("expected OUT_OF_ORDER (expected 10), got {e}"),
            Ok(_) => panic!("expected OUT_OF_ORDER (expected 10), got a pending append"),
        }
        let mut offsets = Vec::new();
        for f in pending {
            offsets.push(f.await.unwrap().base_offset);
        }
        assert_eq!(offsets, vec![0, 2, 6, 8, 4]);
        assert_eq!(p.high_watermark(), 10);
        // Committed now: a retry is answered from the producer table, the next batch is accepted, a gap
        // is still refused, and only a new epoch may restart the sequence.
        let (b, h) = numbered(2, 0, 6);
        assert_eq!(p.append(b, &h, ACKS_ALL).await.unwrap().base_offset, 6);
        let (b, h) = numbered(1, 0, 11);
        assert!(matches!(
            p.append(b, &h, ACKS_ALL).await,
            Err(PartitionError::OutOfOrderSequence { expected: 10, .. })
        ));
        let (b, h) = numbered(1, 1, 0);
        assert_eq!(p.append(b, &h, ACKS_ALL).await.unwrap().base_offset, 10);
        let (b, h) = numbered(1, 0, 10);
        assert!(matches!(
            p.append(b, &h, ACKS_ALL).await,
            Err(PartitionError::ProducerFenced { .. })
        ));
        let read: usize = p
            .read(0, 1 << 20)
            .unwrap()
            .iter()
            .map(|b| validate(b).unwrap().record_count as usize)
            .sum();
        assert_eq!(read, 11, "every batch once");
        p.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn append_read_and_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path(), LogConfig::default()).await;
        assert!(p.is_leader());
        assert_eq!(p.leader(), Some(1));
        assert!(p.term() >= 1);
        assert_eq!(p.high_watermark(), 0);
        let mut watch = p.watch_high_watermark();
        let (b1, h1) = batch(3, 1_000);
        let (b2, h2) = batch(2, 2_000);
        let o1 = p.append(b1.clone(), &h1, ACKS_ALL).await.unwrap();
        let o2 = p.append(b2.clone(), &h2, ACKS_LEADER).await.unwrap();
        assert_eq!((o1.base_offset, o2.base_offset), (0, 3));
        assert!(o1.log_append_time_ms > 0);
        assert_eq!(p.high_watermark(), 5);
        assert_eq!(p.log_end_offset(), 5);
        assert!(watch.has_changed().unwrap());
        watch.borrow_and_update();
        let got = p.read(0, 1 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(validate(&got[1]).unwrap().base_offset, 3);
        assert_eq!(&got[1][8..], &b2[8..]);
        // At least one batch even when it exceeds max_bytes; the batch holding the offset comes first.
        let got = p.read(4, 1).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(validate(&got[0]).unwrap().base_offset, 3);
        assert!(p.read(5, 100).unwrap().is_empty());
        assert!(matches!(
            p.read(6, 100),
            Err(PartitionError::OffsetOutOfRange {
                high_watermark: 5,
                ..
            })
        ));
        assert_eq!(p.offset_for_timestamp(0).unwrap(), 0);
        assert_eq!(p.offset_for_timestamp(1_500).unwrap(), 3);
        assert_eq!(p.offset_for_timestamp(99_999).unwrap(), 5);
        // acks=none hands the batch over without waiting; the high watermark catches up.
        let (b3, h3) = batch(1, 3_000);
        let o3 = p.append(b3, &h3, ACKS_NONE).await.unwrap();
        assert_eq!(o3.base_offset, u64::MAX);
        eventually("acks=none batch committed", || p.high_watermark() == 6).await;
        p.shutdown().await.unwrap();
        p.shutdown().await.unwrap();
        assert!(matches!(p.read(0, 10), Err(PartitionError::ShuttingDown)));
        assert!(matches!(
            p.append(b1, &h1, ACKS_ALL).await,
            Err(PartitionError::ShuttingDown)
        ));
        assert_eq!(
            PartitionError::ShuttingDown.code(),
            ErrorCode::BrokerShuttingDown
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_recovers_log_and_high_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let p = open(dir.path(), cfg.clone()).await;
        let mut expect = Vec::new();
        for i in 0..40 {
            let (b, h) = batch(2, i * 10);
            expect.push(p.append(b, &h, ACKS_ALL).await.unwrap().base_offset);
        }
        assert_eq!(expect, (0..40).map(|i| i * 2).collect::<Vec<_>>());
        let before = p.read(0, usize::MAX).unwrap();
        p.shutdown().await.unwrap();
        drop(p);
        let p = open(dir.path(), cfg).await;
        assert_eq!(p.high_watermark(), 80);
        assert_eq!(p.read(0, usize::MAX).unwrap(), before);
        let (b, h) = batch(1, 1);
        assert_eq!(p.append(b, &h, ACKS_ALL).await.unwrap().base_offset, 80);
        p.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_snapshots_and_purges_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4096,
            retention_bytes: Some(8192),
            retention_ms: None,
            ..LogConfig::default()
        };
        let p = open(dir.path(), cfg.clone()).await;
        for i in 0..200 {
            let (b, h) = batch(4, i);
            p.append(b, &h, ACKS_ALL).await.unwrap();
        }
        let hwm = p.high_watermark();
        assert!(p.enforce_retention().await.unwrap());
        eventually("retention purge", || p.log_start_offset() > 0).await;
        let start = p.log_start_offset();
        assert_eq!(p.high_watermark(), hwm);
        assert!(matches!(
            p.read(start - 1, 100),
            Err(PartitionError::OffsetOutOfRange { .. })
        ));
        let got = p.read(start, 100).unwrap();
        assert_eq!(validate(&got[0]).unwrap().base_offset, start);
        p.shutdown().await.unwrap();
        drop(p);
        let p = open(dir.path(), cfg).await;
        assert_eq!(p.log_start_offset(), start);
        assert_eq!(p.high_watermark(), hwm);
        p.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_changes_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = open(dir.path(), LogConfig::default()).await;
        assert_eq!(p.leader_changes(), 1, "the first election counts");
        p.shutdown().await.unwrap();
        // A single member never loses its leadership; drive the loop with a scripted sequence instead.
        let l = |leader: Option<u64>, term: u64| Leadership { leader, term };
        let changes = Arc::new(AtomicU64::new(1));
        let (tx, rx) = tokio::sync::watch::channel(l(Some(1), 1));
        let task = tokio::spawn(leadership_loop(pid(), changes.clone(), rx, l(Some(1), 1)));
        for (next, want) in [
            (l(None, 2), 1),    // lost: a change, not a new leadership
            (l(Some(2), 2), 2), // elected elsewhere
            (l(Some(2), 3), 3), // re-elected in a new term
            (l(Some(1), 3), 4), // another leader
        ] {
            tx.send(next).unwrap();
            eventually("the loop to see the change", || {
                changes.load(Ordering::Relaxed) == want
            })
            .await;
        }
        drop(tx);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the loop ends with its sender")
            .unwrap();
        assert_eq!(changes.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_new_leadership_is_another_leader_or_a_new_term() {
        let l = |leader: Option<u64>, term: u64| Leadership { leader, term };
        assert!(l(None, 0).is_new_leadership(&l(Some(1), 1)));
        assert!(l(Some(1), 1).is_new_leadership(&l(Some(1), 2)));
        assert!(l(Some(1), 1).is_new_leadership(&l(Some(2), 1)));
        assert!(
            !l(Some(1), 1).is_new_leadership(&l(None, 2)),
            "losing a leader"
        );
        assert!(l(None, 2).is_new_leadership(&l(Some(1), 2)));
        assert!(!l(Some(1), 2).is_new_leadership(&l(Some(1), 2)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_config_changes_apply_to_the_live_partition() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_bytes: 4096,
            retention_bytes: None,
            retention_ms: None,
            ..LogConfig::default()
        };
        let p = open(dir.path(), cfg.clone()).await;
        for i in 0..200 {
            let (b, h) = batch(4, i);
            p.append(b, &h, ACKS_ALL).await.unwrap();
        }
        let before = p.log_stats();
        assert!(before.segments > 3, "{before:?}");
        assert!(!p.enforce_retention().await.unwrap(), "no retention yet");
        let bad = LogConfig {
            segment_bytes: 0,
            ..cfg.clone()
        };
        assert!(matches!(
            p.set_log_config(bad),
            Err(PartitionError::Storage(_))
        ));
        let tighter = LogConfig {
            retention_bytes: Some(8192),
            ..cfg
        };
        p.set_log_config(tighter.clone()).unwrap();
        assert_eq!(p.log_config(), tighter);
        assert!(p.enforce_retention().await.unwrap());
        eventually("retention purge", || p.log_start_offset() > 0).await;
        let after = p.log_stats();
        assert!(after.segments < before.segments, "{after:?}");
        assert!(after.purged_segments > 0);
        p.shutdown().await.unwrap();
        assert!(matches!(
            p.set_log_config(tighter),
            Err(PartitionError::ShuttingDown)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_voters_need_the_raft_network() {
        let dir = tempfile::tempdir().unwrap();
        let r = Partition::open(
            pid(),
            dir.path().to_path_buf(),
            1,
            vec![1, 2, 3],
            LogConfig::default(),
            StorageContext::new(),
        )
        .await;
        match r {
            Err(PartitionError::Storage(m)) => assert!(m.contains("raft network"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Nothing was created for the refused replica.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
