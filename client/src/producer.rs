//! The producer: records are appended straight into per-partition record batches (the on-disk format, built
//! with `RecordBatchBuilder`), and a background sender ships each batch to its partition leader.
//!
//! Flow: [`Producer::enqueue`] picks the partition (explicit > `murmur2(key)` > sticky, see
//! [`crate::partitioner`]), waits for buffer memory, copies key/value/headers into the partition's open batch
//! and returns a [`DeliveryFuture`]. A batch closes when the next record would not fit in
//! `batch_size_bytes`, when it has lingered `linger` since its first record, on `flush`, or at once when a
//! caller is waiting for buffer memory. The sender groups closed batches by leader into one `Produce` request
//! per broker.
//!
//! Invariants:
//! - **Ordering:** at most `max_in_flight_per_partition` batches of a partition are in flight (5 by
//!   default, like Kafka), sent in order through one ordered lane per broker, and the broker submits the
//!   requests of a connection in arrival order, so they are written in `enqueue` order. When one comes back
//!   with a retriable error the partition *drains*: nothing new is sent until all its in-flight batches
//!   have answered, then the failed ones are re-sent first, in their original order. With idempotence the
//!   broker refuses a batch that does not follow the last one written (OUT_OF_ORDER_SEQUENCE, retried),
//!   so a retry never lets a later batch overtake an earlier one; when a batch fails for good, the
//!   partition starts a new producer epoch and renumbers what it still holds, so no sequence gap blocks
//!   it. Without idempotence a retry may reorder or (after a timeout or a lost connection) duplicate
//!   batches, as in Kafka; set `max_in_flight_per_partition = 1` to keep order then.
//! - **Bounded memory:** every record reserves its size estimate from a semaphore of `buffer_memory_bytes`
//!   before it is copied; the reservation is returned when its batch completes. `enqueue` waits when the
//!   buffer is full (back-pressure).
//! - **Bounded retries:** a batch is sent at most `1 + retries` times (`retries ≤ PRODUCE_RETRIES_MAX`), with
//!   exponential backoff, and only for errors that [`ClientError::retriable`] accepts; ambiguous failures
//!   (sent, then no answer) are retried only with `retry_ambiguous` (the default, at-least-once).
//! - **No per-record allocation:** a record costs one copy into its batch; every record of a batch shares the
//!   batch's completion state (an `Arc`), its future holds only an index into it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use runnel_protocol::batch::{self, RecordBatchBuilder, BATCH_HEADER_LEN};
use runnel_protocol::limits::{BATCH_SIZE_BYTES_MAX, RECORDS_PER_BATCH_MAX};
use runnel_protocol::messages::{
    InitProducerIdRequest, ProducePartitionData, ProduceRequest, ProduceTopicData, ACKS_ALL,
    ACKS_LEADER, ACKS_NONE,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};
use crate::partitioner::partition_for_key;

/// Default time a batch waits for more records after its first one.
pub const LINGER_MS_DEFAULT: u64 = 5;
/// Default size at which a batch is closed.
pub const BATCH_SIZE_BYTES_DEFAULT: usize = 256 * 1024;
/// Default bound on the bytes of records buffered and in flight.
pub const BUFFER_MEMORY_BYTES_DEFAULT: usize = 32 * 1024 * 1024;
/// Largest `buffer_memory_bytes` (the semaphore counts permits in `u32` steps).
pub const BUFFER_MEMORY_BYTES_MAX: usize = 1 << 31;
/// Most times a batch is re-sent after a retriable error.
pub const PRODUCE_RETRIES_MAX: u32 = 30;
/// Default number of batches of one partition in flight at once.
pub const MAX_IN_FLIGHT_PER_PARTITION_DEFAULT: usize = 5;
/// Largest `max_in_flight_per_partition`: the broker remembers the last 5 batches of each idempotent
/// producer, so a retry of any batch still in flight is recognised.
pub const MAX_IN_FLIGHT_PER_PARTITION_MAX: usize = 5;
/// Default first retry backoff; doubles per attempt up to [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF_DEFAULT: Duration = Duration::from_millis(100);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How many replicas must have a batch before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Committed by a majority (the default).
    All,
    /// Appended by the leader.
    Leader,
    /// Answered when handed to the partition, without waiting for storage.
    None,
}

impl Acks {
    fn wire(self) -> i8 {
        match self {
            Acks::All => ACKS_ALL,
            Acks::Leader => ACKS_LEADER,
            Acks::None => ACKS_NONE,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Acks, String> {
        match s {
            "all" | "-1" => Ok(Acks::All),
            "leader" | "1" => Ok(Acks::Leader),
            "none" | "0" => Ok(Acks::None),
            _ => Err(format!("acks must be all, leader or none, not {s:?}")),
        }
    }
}

impl std::fmt::Display for Acks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acks::All => "all",
            Acks::Leader => "leader",
            Acks::None => "none",
        })
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub linger: Duration,
    pub batch_size_bytes: usize,
    pub buffer_memory_bytes: usize,
    pub acks: Acks,
    /// Re-sends after retriable errors, at most [`PRODUCE_RETRIES_MAX`].
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Also retry after ambiguous failures ([`ClientError::ambiguous`]: sent, then timed out or lost the
    /// connection). `true` (the default) is at-least-once: no acknowledged-or-retried record is dropped, but a
    /// batch may be written twice. `false` reports those records as failed instead (no duplicates from
    /// retries).
    pub retry_ambiguous: bool,
    /// Idempotent writes (the default): before its first record the producer obtains a producer id from
    /// the cluster (`InitProducerId`: unique, handed out of blocks the controller reserves) and numbers the
    /// records of each partition; the partition leader writes a retried batch once and answers its
    /// retries with the original offsets, across leader changes too. Safe with `retry_ambiguous`.
    pub idempotent: bool,
    /// Batches of one partition sent before the first is answered, 1..=[`MAX_IN_FLIGHT_PER_PARTITION_MAX`].
    pub max_in_flight_per_partition: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(LINGER_MS_DEFAULT),
            batch_size_bytes: BATCH_SIZE_BYTES_DEFAULT,
            buffer_memory_bytes: BUFFER_MEMORY_BYTES_DEFAULT,
            acks: Acks::All,
            retries: PRODUCE_RETRIES_MAX,
            retry_backoff: RETRY_BACKOFF_DEFAULT,
            retry_ambiguous: true,
            idempotent: true,
            max_in_flight_per_partition: MAX_IN_FLIGHT_PER_PARTITION_DEFAULT,
        }
    }
}

impl ProducerConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ClientError::InvalidArgument(m));
        if self.batch_size_bytes <= BATCH_HEADER_LEN || self.batch_size_bytes > BATCH_SIZE_BYTES_MAX
        {
            return bad(format!(
                "batch_size_bytes must be in {}..={BATCH_SIZE_BYTES_MAX}",
                BATCH_HEADER_LEN + 1
            ));
        }
        if self.buffer_memory_bytes == 0 || self.buffer_memory_bytes > BUFFER_MEMORY_BYTES_MAX {
            return bad(format!(
                "buffer_memory_bytes must be in 1..={BUFFER_MEMORY_BYTES_MAX}"
            ));
        }
        if self.max_in_flight_per_partition == 0
            || self.max_in_flight_per_partition > MAX_IN_FLIGHT_PER_PARTITION_MAX
        {
            return bad(format!(
                "max_in_flight_per_partition must be in 1..={MAX_IN_FLIGHT_PER_PARTITION_MAX}"
            ));
        }
        if self.retries > PRODUCE_RETRIES_MAX {
            return bad(format!("retries must be at most {PRODUCE_RETRIES_MAX}"));
        }
        Ok(())
    }

    /// Backoff before re-send number `attempt` (1-based): `retry_backoff · 2^(attempt-1)`, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(1u32 << exp)
            .min(RETRY_BACKOFF_MAX)
    }
}

/// One record to send. Key, value and headers are borrowed: they are copied into the batch by `enqueue`.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    pub topic: &'a str,
    pub partition: Option<u32>,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a [u8], &'a [u8])],
    /// Milliseconds since the epoch; `None` = now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    pub fn new(topic: &'a str, value: &'a [u8]) -> ProducerRecord<'a> {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value,
            headers: &[],
            timestamp: None,
        }
    }
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }
    pub fn partition(mut self, p: u32) -> Self {
        self.partition = Some(p);
        self
    }
}

/// The offset of a record acknowledged with `acks = none` (the broker did not wait to learn it).
pub const OFFSET_UNKNOWN: u64 = u64::MAX;

/// Where an acknowledged record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: Arc<str>,
    pub partition: u32,
    /// [`OFFSET_UNKNOWN`] with `acks = none`.
    pub offset: u64,
    /// The record's timestamp (create time, ms since the epoch).
    pub timestamp: i64,
}

/// Completion state shared by every record of one batch.
struct BatchShared {
    topic: Arc<str>,
    partition: u32,
    state: Mutex<BatchState>,
}

#[derive(Default)]
struct BatchState {
    /// The batch's base offset, or why it failed.
    result: Option<Result<u64>>,
    done_at: Option<Instant>,
    wakers: Vec<Waker>,
}

impl BatchShared {
    fn complete(&self, result: Result<u64>) {
        let wakers = {
            let mut st = lock(&self.state);
            if st.result.is_some() {
                return;
            }
            st.result = Some(result);
            st.done_at = Some(Instant::now());
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves when the record's batch is acknowledged (or finally failed).
pub struct DeliveryFuture {
    batch: Arc<BatchShared>,
    index: u32,
    timestamp: i64,
    waker_slot: Option<usize>,
}

impl std::fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.batch.topic)
            .field("partition", &self.batch.partition)
            .field("index", &self.index)
            .finish()
    }
}

impl DeliveryFuture {
    /// The result if the batch already completed, without waiting.
    pub fn try_result(&self) -> Option<Result<RecordMetadata>> {
        let st = lock(&self.batch.state);
        st.result.as_ref().map(|r| self.metadata(r))
    }

    /// When the batch's answer arrived (for latency measurement), if it did.
    pub fn completed_at(&self) -> Option<Instant> {
        lock(&self.batch.state).done_at
    }

    fn metadata(&self, r: &Result<u64>) -> Result<RecordMetadata> {
        match r {
            Ok(base) => Ok(RecordMetadata {
                topic: self.batch.topic.clone(),
                partition: self.batch.partition,
                offset: if *base == OFFSET_UNKNOWN {
                    OFFSET_UNKNOWN
                } else {
                    base.saturating_add(u64::from(self.index))
                },
                timestamp: self.timestamp,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut st = lock(&this.batch.state);
        if let Some(r) = &st.result {
            return Poll::Ready(this.metadata(r));
        }
        match this.waker_slot {
            Some(i) if st.wakers.get(i).is_some_and(|w| w.will_wake(cx.waker())) => {}
            Some(i) if i < st.wakers.len() => st.wakers[i] = cx.waker().clone(),
            _ => {
                this.waker_slot = Some(st.wakers.len());
                st.wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

struct OpenBatch {
    builder: RecordBatchBuilder,
    shared: Arc<BatchShared>,
    created: Instant,
    reserved: usize,
}

struct ReadyBatch {
    /// Position among the partition's batches (retries go back in this order).
    ordinal: u64,
    records: i32,
    bytes: Bytes,
    shared: Arc<BatchShared>,
    reserved: usize,
    /// Sends so far.
    attempts: u32,
    not_before: Option<Instant>,
    /// The last attempt was an immediate retry towards a leader hint (the next one backs off again, so
    /// two brokers naming each other cannot spin).
    hint_followed: bool,
}

#[derive(Default)]
struct PartitionQueue {
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    in_flight: usize,
    /// A batch came back failed: send nothing new until every in-flight batch has answered.
    draining: bool,
    /// A batch failed for good (idempotent producers): once drained, start a new epoch.
    new_epoch: bool,
    next_ordinal: u64,
    /// The epoch and sequence number of this partition's next record (idempotent producers).
    epoch: i16,
    next_seq: i32,
}

struct TopicState {
    name: Arc<str>,
    partitions: Vec<PartitionQueue>,
    /// The partition keyless records stick to while its open batch has room.
    sticky: Option<u32>,
    /// (metadata generation, partition count) as last read from the cluster metadata.
    known: Option<(u64, u32)>,
}

#[derive(Default)]
struct State {
    /// By topic name, looked up once or twice per record: a fast hash (topic names are not attacker-chosen).
    topics: HashMap<Arc<str>, TopicState, rustc_hash::FxBuildHasher>,
    /// Batches created and not yet completed.
    outstanding: usize,
    /// Active `flush` calls: while > 0, open batches are sent without lingering.
    flushing: usize,
    closed: bool,
}

struct Inner {
    cluster: Cluster,
    config: ProducerConfig,
    state: Mutex<State>,
    memory: Semaphore,
    /// Callers waiting for buffer memory: open batches are then sent without lingering.
    memory_waiters: AtomicUsize,
    /// Wakes the sender (new batch, completion, flush, close).
    wake: Notify,
    /// Signalled whenever `outstanding` drops to zero.
    idle: Notify,
    /// The idempotent producer id: obtained by the first `enqueue` (concurrent ones wait for it); never set
    /// without idempotence.
    producer_id: tokio::sync::OnceCell<i64>,
    /// One ordered lane per broker: produce requests to a broker are queued on its connection in the order
    /// they were dispatched (see [`lane`]).
    lanes: Mutex<HashMap<u32, mpsc::UnboundedSender<Vec<InFlight>>>>,
}

impl Inner {
    /// The producer id batches are numbered with, if idempotence is on (set before any record is queued).
    fn producer_id(&self) -> Option<i64> {
        self.producer_id.get().copied()
    }
}

/// Closes the producer when the last user handle goes; the sender then drains what is buffered and stops.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        lock(&self.inner.state).closed = true;
        self.inner.wake.notify_one();
    }
}

/// A batching, retrying producer. Cheap to clone; all clones share buffers and the sender.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl Producer {
    /// Starts a producer (and its sender task) on `cluster`. Must be called within a tokio runtime.
    pub fn new(cluster: Cluster, config: ProducerConfig) -> Result<Producer> {
        config.validate()?;
        let inner = Arc::new(Inner {
            cluster,
            memory: Semaphore::new(config.buffer_memory_bytes),
            config,
            state: Mutex::new(State::default()),
            memory_waiters: AtomicUsize::new(0),
            wake: Notify::new(),
            idle: Notify::new(),
            producer_id: tokio::sync::OnceCell::new(),
            lanes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(run_sender(inner.clone()));
        Ok(Producer {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    pub fn config(&self) -> &ProducerConfig {
        &self.inner().config
    }

    /// Sends one record and waits for its acknowledgement.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&[u8], &[u8])],
        partition: Option<u32>,
    ) -> Result<RecordMetadata> {
        let rec = ProducerRecord {
            topic,
            partition,
            key,
            value,
            headers,
            timestamp: None,
        };
        self.enqueue(rec).await?.await
    }

    /// Appends one record to its partition's batch, waiting for buffer memory if needed, and returns the
    /// future of its acknowledgement. Records enqueued one after another for the same partition are written
    /// in that order. The first call of an idempotent producer first obtains its producer id (see
    /// [`init_producer_id`]); if that fails, the call fails with why and a later one tries again.
    pub async fn enqueue(&self, rec: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        let inner = self.inner();
        // The partition count, from this producer's cache while the cluster metadata has not been refreshed
        // since (a lookup in the shared metadata per record costs more than the rest of `enqueue`).
        let generation = inner.cluster.metadata_generation();
        let cached = {
            let st = lock(&inner.state);
            if st.closed {
                return Err(ClientError::Closed);
            }
            st.topics
                .get(rec.topic)
                .and_then(|t| t.known.filter(|(g, _)| *g == generation))
                .map(|(_, n)| n)
        };
        let size = RecordBatchBuilder::record_size_estimate(rec.key, rec.value, rec.headers);
        let max = (BATCH_SIZE_BYTES_MAX - BATCH_HEADER_LEN).min(inner.config.buffer_memory_bytes);
        if size > max {
            return Err(ClientError::RecordTooLarge { size, max });
        }
        if inner.config.idempotent {
            inner
                .producer_id
                .get_or_try_init(|| init_producer_id(&inner.cluster, &inner.config))
                .await?;
        }
        let mut partitions = match cached {
            Some(n) => n,
            None => inner.cluster.topic(rec.topic).await?.partitions.len() as u32,
        };
        if let Some(p) = rec.partition {
            if p >= partitions {
                // The topic may have grown since the cache was filled.
                let meta = inner.cluster.refresh_metadata().await?;
                partitions = meta
                    .topic(rec.topic)
                    .map_or(0, |t| t.partitions.len() as u32);
                if p >= partitions {
                    return Err(ClientError::broker(
                        ErrorCode::UnknownTopicOrPartition,
                        Some(format!(
                            "topic {} has {partitions} partitions, no partition {p}",
                            rec.topic
                        )),
                    ));
                }
            }
        }
        if partitions == 0 {
            return Err(ClientError::broker(
                ErrorCode::LeaderNotAvailable,
                Some(format!("topic {} has no partitions yet", rec.topic)),
            ));
        }
        self.reserve(size).await?;
        let timestamp = rec.timestamp.unwrap_or_else(now_ms);
        let mut st = lock(&inner.state);
        if st.closed {
            drop(st);
            inner.memory.add_permits(size);
            return Err(ClientError::Closed);
        }
        let State {
            topics,
            outstanding,
            ..
        } = &mut *st;
        let ts = match topics.get_mut(rec.topic) {
            Some(ts) => ts,
            None => {
                let name: Arc<str> = Arc::from(rec.topic);
                topics.entry(name.clone()).or_insert(TopicState {
                    name,
                    partitions: Vec::new(),
                    sticky: None,
                    known: None,
                })
            }
        };
        ts.known = Some((generation, partitions));
        if ts.partitions.len() < partitions as usize {
            ts.partitions
                .resize_with(partitions as usize, PartitionQueue::default);
        }
        let batch_size = inner.config.batch_size_bytes;
        let p = match (rec.partition, rec.key) {
            (Some(p), _) => p,
            (None, Some(k)) => partition_for_key(k, partitions),
            (None, None) => {
                let fits = |q: &PartitionQueue| {
                    q.open.as_ref().is_some_and(|o| {
                        o.builder.size_bytes() + size <= batch_size
                            && o.builder.len() < RECORDS_PER_BATCH_MAX
                    })
                };
                match ts.sticky {
                    Some(s) if s < partitions && fits(&ts.partitions[s as usize]) => s,
                    prev => {
                        let next = prev.map_or(0, |s| (s + 1) % partitions);
                        ts.sticky = Some(next);
                        next
                    }
                }
            }
        };
        let q = &mut ts.partitions[p as usize];
        let mut wake = false;
        if let Some(o) = &q.open {
            if o.builder.size_bytes() + size > batch_size
                || o.builder.len() >= RECORDS_PER_BATCH_MAX
            {
                close_open(q, inner.producer_id());
                wake = true;
            }
        }
        let open = q.open.get_or_insert_with(|| {
            wake = true;
            *outstanding += 1;
            OpenBatch {
                builder: RecordBatchBuilder::new(batch_size.max(size + BATCH_HEADER_LEN)),
                shared: Arc::new(BatchShared {
                    topic: ts.name.clone(),
                    partition: p,
                    state: Mutex::new(BatchState::default()),
                }),
                created: Instant::now(),
                reserved: 0,
            }
        });
        let index = open.builder.len();
        open.builder
            .push(timestamp, rec.key, rec.value, rec.headers);
        open.reserved += size;
        let fut = DeliveryFuture {
            batch: open.shared.clone(),
            index,
            timestamp,
            waker_slot: None,
        };
        if open.builder.size_bytes() >= batch_size {
            close_open(q, inner.producer_id());
            wake = true;
        }
        drop(st);
        if wake {
            inner.wake.notify_one();
        }
        Ok(fut)
    }

    async fn reserve(&self, size: usize) -> Result<()> {
        let inner = self.inner();
        let n = size as u32; // size ≤ buffer_memory_bytes ≤ BUFFER_MEMORY_BYTES_MAX < u32::MAX
        match inner.memory.try_acquire_many(n) {
            Ok(p) => p.forget(),
            Err(_) => {
                inner.memory_waiters.fetch_add(1, Ordering::SeqCst);
                inner.wake.notify_one();
                let r = inner.memory.acquire_many(n).await;
                inner.memory_waiters.fetch_sub(1, Ordering::SeqCst);
                r.map_err(|_| ClientError::Closed)?.forget();
            }
        }
        Ok(())
    }

    /// Sends everything buffered now, without lingering, and waits until every batch created so far has
    /// completed (acknowledged or failed).
    pub async fn flush(&self) {
        let inner = self.inner();
        lock(&inner.state).flushing += 1;
        inner.wake.notify_one();
        loop {
            let idle = inner.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if lock(&inner.state).outstanding == 0 {
                break;
            }
            idle.await;
        }
        lock(&inner.state).flushing -= 1;
    }

    /// Refuses new records, sends what is buffered and waits for it.
    pub async fn close(&self) {
        lock(&self.inner().state).closed = true;
        self.flush().await;
    }

    /// Bytes of buffer memory currently free (for tests and diagnostics).
    pub fn available_memory(&self) -> usize {
        self.inner().memory.available_permits()
    }
}

/// Obtains a producer id with `InitProducerId` from any reachable broker. A retriable failure (no broker
/// reachable, no controller yet, a timeout) is retried `config.retries` times with the producer's backoff
/// ([`ProducerConfig::backoff`]); the last failure is returned, a broker's message prefixed with what failed.
pub async fn init_producer_id(cluster: &Cluster, config: &ProducerConfig) -> Result<i64> {
    let mut attempt = 0u32;
    loop {
        let e = match init_producer_id_once(cluster).await {
            Ok(id) => return Ok(id),
            Err(e) => e,
        };
        if !e.retriable() || attempt >= config.retries {
            return Err(match e {
                ClientError::Broker { code, message } => ClientError::Broker {
                    code,
                    message: format!("cannot obtain a producer id: {message}"),
                },
                other => other,
            });
        }
        attempt += 1;
        tracing::debug!(attempt, error = %e, "InitProducerId failed; retrying");
        tokio::time::sleep(config.backoff(attempt)).await;
    }
}

async fn init_producer_id_once(cluster: &Cluster) -> Result<i64> {
    let req = Request::InitProducerId(InitProducerIdRequest::default());
    match cluster.request_any(&req).await? {
        Response::InitProducerId(r) if r.error_code != 0 => Err(ClientError::broker(
            ErrorCode::from_u16(r.error_code),
            r.error_message,
        )),
        Response::InitProducerId(r) if r.producer_id < 0 => Err(ClientError::Protocol(format!(
            "InitProducerId succeeded with producer id {}",
            r.producer_id
        ))),
        Response::InitProducerId(r) => Ok(r.producer_id),
        other => Err(ClientError::Protocol(format!(
            "InitProducerId answered with a {:?} response",
            other.api_key()
        ))),
    }
}

/// Seals the open batch into the ready queue; with a producer id, numbers its records next in this
/// partition's sequence (sealed batches are sent in order, so sequences follow sends).
fn close_open(q: &mut PartitionQueue, producer_id: Option<i64>) {
    if let Some(mut o) = q.open.take() {
        let records = o.builder.len() as i32;
        if let Some(pid) = producer_id {
            o.builder = o.builder.idempotent(pid, q.epoch, q.next_seq);
            q.next_seq = q.next_seq.wrapping_add(records);
        }
        q.next_ordinal += 1;
        q.ready.push_back(ReadyBatch {
            ordinal: q.next_ordinal,
            records,
            bytes: o.builder.finish(),
            shared: o.shared,
            reserved: o.reserved,
            attempts: 0,
            not_before: None,
            hint_followed: false,
        });
    }
}

/// After a batch failed for good, with nothing in flight: the partition's next batches start a new epoch
/// at sequence 0 (the broker accepts any sequence in a newer epoch), and the batches still held are
/// renumbered so, so that the gap the failed batch left does not refuse them.
fn start_new_epoch(q: &mut PartitionQueue, producer_id: Option<i64>) {
    let Some(pid) = producer_id else { return };
    q.epoch = q.epoch.saturating_add(1);
    q.next_seq = 0;
    for b in q.ready.iter_mut() {
        if let Some(bytes) = batch::restamp(&b.bytes, pid, q.epoch, q.next_seq) {
            b.bytes = bytes;
        }
        q.next_seq = q.next_seq.wrapping_add(b.records);
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A batch taken for sending.
struct InFlight {
    topic: Arc<str>,
    partition: u32,
    batch: ReadyBatch,
}

/// Takes every batch that may be sent now (counting it in flight on its partition) and returns the next
/// time a lingering or backing-off batch becomes sendable.
fn collect(inner: &Inner, now: Instant) -> (Vec<InFlight>, Option<Instant>) {
    let mut st = lock(&inner.state);
    let hurry = st.flushing > 0 || st.closed || inner.memory_waiters.load(Ordering::SeqCst) > 0;
    let linger = inner.config.linger;
    let max = inner.config.max_in_flight_per_partition;
    let producer_id = inner.producer_id();
    let mut out = Vec::new();
    let mut next: Option<Instant> = None;
    let mut earliest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
    for ts in st.topics.values_mut() {
        for (p, q) in ts.partitions.iter_mut().enumerate() {
            // A lingered batch is sealed even when it cannot be sent yet (window full, draining), so the
            // sticky partitioner moves on instead of piling every keyless record onto a stuck partition.
            if let Some(o) = &q.open {
                if hurry || o.created + linger <= now {
                    close_open(q, producer_id);
                } else {
                    earliest(o.created + linger);
                }
            }
            if q.draining {
                if q.in_flight > 0 {
                    continue;
                }
                q.draining = false;
                if std::mem::take(&mut q.new_epoch) {
                    start_new_epoch(q, producer_id);
                }
            }
            while q.in_flight < max {
                if q.ready.is_empty() {
                    match &q.open {
                        Some(o) if hurry || o.created + linger <= now => close_open(q, producer_id),
                        Some(o) => {
                            earliest(o.created + linger);
                            break;
                        }
                        None => break,
                    }
                }
                match q.ready.front().and_then(|b| b.not_before) {
                    Some(t) if t > now => {
                        earliest(t);
                        break;
                    }
                    _ => {}
                }
                let Some(batch) = q.ready.pop_front() else {
                    break;
                };
                q.in_flight += 1;
                out.push(InFlight {
                    topic: ts.name.clone(),
                    partition: p as u32,
                    batch,
                });
            }
        }
    }
    (out, next)
}

async fn run_sender(inner: Arc<Inner>) {
    loop {
        let (batches, next) = collect(&inner, Instant::now());
        if !batches.is_empty() {
            dispatch(&inner, batches);
        }
        {
            let st = lock(&inner.state);
            if st.closed && st.outstanding == 0 {
                // Ends the lanes (they hold the producer alive).
                lock(&inner.lanes).clear();
                return;
            }
        }
        match next {
            Some(t) => {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = tokio::time::sleep_until(t) => {}
                }
            }
            None => inner.wake.notified().await,
        }
    }
}

/// Groups batches by leader and hands one produce request per broker to that broker's lane. Batches whose
/// leader is unknown are handed back as failed attempts (retried after a metadata refresh, within the retry
/// bound).
fn dispatch(inner: &Arc<Inner>, batches: Vec<InFlight>) {
    // Per leader, the requests to send in order; a request holds at most one batch per partition (the
    // n-th batch of a partition goes into the n-th request).
    let mut by_leader: HashMap<u32, Vec<Vec<InFlight>>> = HashMap::new();
    let mut nth: HashMap<(Arc<str>, u32), usize> = HashMap::new();
    let mut leaderless = Vec::new();
    for b in batches {
        let Some(l) = inner.cluster.leader(&b.topic, b.partition) else {
            leaderless.push(b);
            continue;
        };
        let n = nth.entry((b.topic.clone(), b.partition)).or_insert(0);
        let requests = by_leader.entry(l).or_default();
        if requests.len() <= *n {
            requests.push(Vec::new());
        }
        requests[*n].push(b);
        *n += 1;
    }
    if !leaderless.is_empty() {
        let inner = inner.clone();
        tokio::spawn(async move {
            let _ = inner.cluster.refresh_metadata().await;
            for b in leaderless {
                let e = ClientError::broker(
                    ErrorCode::LeaderNotAvailable,
                    Some(format!("no known leader for {}/{}", b.topic, b.partition)),
                );
                finish(&inner, b, Err(e), false);
            }
        });
    }
    let mut lanes = lock(&inner.lanes);
    for (leader, group) in by_leader
        .into_iter()
        .flat_map(|(l, rs)| rs.into_iter().map(move |r| (l, r)))
    {
        let group = match lanes.get(&leader) {
            None => group,
            Some(l) => match l.send(group) {
                Ok(()) => continue,
                Err(mpsc::error::SendError(group)) => group,
            },
        };
        let (tx, rx) = mpsc::unbounded_channel();
        // A fresh channel with its receiver in hand cannot refuse.
        let _ = tx.send(group);
        lanes.insert(leader, tx);
        tokio::spawn(lane(inner.clone(), leader, rx));
    }
}

/// One broker's lane: queues each produce request on the broker's connection in dispatch order (so the
/// batches of a partition reach the broker in sequence order), and waits for the answers concurrently.
/// Unbounded, yet bounded in practice: every queued group holds batches counted in flight, at most
/// `max_in_flight_per_partition` per partition.
async fn lane(inner: Arc<Inner>, leader: u32, mut groups: mpsc::UnboundedReceiver<Vec<InFlight>>) {
    let timeout = inner.cluster.request_timeout();
    while let Some(group) = groups.recv().await {
        let req = produce_request(&inner, &group, timeout);
        let sent = async {
            let conn = inner.cluster.connection(leader).await?;
            let pending = conn.send(&req, timeout).await;
            Ok::<_, ClientError>((conn, pending))
        }
        .await;
        let inner = inner.clone();
        tokio::spawn(async move {
            let result = match sent {
                Err(e) => Err(e),
                Ok((conn, pending)) => {
                    let answer = match pending {
                        Ok(pending) => pending.await,
                        Err(e) => Err(e),
                    };
                    if let Err(ClientError::Timeout { .. }) = answer {
                        // A broker that stopped answering: open a fresh connection next time.
                        inner
                            .cluster
                            .drop_connection(&conn.addr().to_string())
                            .await;
                    }
                    answer
                }
            };
            settle(&inner, leader, group, result).await;
        });
    }
}

fn produce_request(inner: &Inner, group: &[InFlight], timeout: Duration) -> Request {
    let mut topics: Vec<ProduceTopicData> = Vec::new();
    for b in group {
        let data = ProducePartitionData {
            partition: b.partition,
            batch: b.batch.bytes.clone(),
        };
        match topics.iter_mut().find(|t| *t.name == *b.topic) {
            Some(t) => t.partitions.push(data),
            None => topics.push(ProduceTopicData {
                name: b.topic.to_string(),
                partitions: vec![data],
            }),
        }
    }
    Request::Produce(ProduceRequest {
        acks: inner.config.acks.wire(),
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
        topics,
    })
}

/// Completes (or re-queues) the batches of one produce request from its answer.
async fn settle(inner: &Inner, leader: u32, group: Vec<InFlight>, result: Result<Response>) {
    let mut refresh = false;
    // (batch, result, whether a NOT_LEADER named another leader, now noted in the metadata cache)
    let mut outcomes: Vec<(InFlight, Result<u64>, bool)> = Vec::with_capacity(group.len());
    match result {
        Ok(Response::Produce(resp)) => {
            for b in group {
                let part = resp
                    .topics
                    .iter()
                    .filter(|t| *t.name == *b.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition == b.partition);
                let r = match part {
                    None => Err(ClientError::Protocol(format!(
                        "produce response lacks {}/{}",
                        b.topic, b.partition
                    ))),
                    Some(p) if p.error_code == 0 => Ok(p.base_offset),
                    Some(p) => Err(ClientError::broker(
                        ErrorCode::from_u16(p.error_code),
                        p.error_message.clone(),
                    )),
                };
                // NOT_LEADER naming another leader: go there next, without a metadata round trip.
                let hinted = part
                    .filter(|p| ErrorCode::from_u16(p.error_code) == ErrorCode::NotLeader)
                    .and_then(|p| p.leader_hint)
                    .filter(|h| *h != leader)
                    .is_some_and(|h| inner.cluster.apply_leader_hint(&b.topic, b.partition, h));
                if let Err(e) = &r {
                    refresh |= e.needs_metadata_refresh() && !hinted;
                }
                outcomes.push((b, r, hinted));
            }
        }
        Ok(_) => {
            for b in group {
                outcomes.push((
                    b,
                    Err(ClientError::Protocol(
                        "Produce answered with another response".into(),
                    )),
                    false,
                ));
            }
        }
        Err(e) => {
            refresh = e.needs_metadata_refresh();
            for b in group {
                outcomes.push((b, Err(e.clone()), false));
            }
        }
    }
    if refresh {
        let _ = inner.cluster.refresh_metadata().await;
    }
    for (b, r, hinted) in outcomes {
        finish(inner, b, r, hinted);
    }
}

/// Completes a batch, or puts it back at the front of its partition queue for a bounded retry: at once
/// when `hinted` (a NOT_LEADER named the new leader) unless the last attempt already followed a hint,
/// otherwise after the backoff.
fn finish(inner: &Inner, mut b: InFlight, r: Result<u64>, hinted: bool) {
    b.batch.attempts += 1;
    let retry = match &r {
        Err(e) => {
            e.retriable()
                && (inner.config.retry_ambiguous || !e.ambiguous())
                && b.batch.attempts <= inner.config.retries
        }
        Ok(_) => false,
    };
    let mut st = lock(&inner.state);
    let q = st
        .topics
        .get_mut(&b.topic)
        .and_then(|t| t.partitions.get_mut(b.partition as usize));
    if let Some(q) = q {
        q.in_flight = q.in_flight.saturating_sub(1);
        if r.is_err() {
            q.draining = true;
            // A batch given up: its sequence stays unwritten, so the next ones need a new epoch.
            q.new_epoch |= !retry && inner.producer_id().is_some();
        }
        if retry {
            let immediate = hinted && !b.batch.hint_followed;
            b.batch.hint_followed = immediate;
            let backoff = if immediate {
                Duration::ZERO
            } else {
                inner.config.backoff(b.batch.attempts)
            };
            if let Err(e) = &r {
                tracing::debug!(topic = %b.topic, partition = b.partition, attempt = b.batch.attempts,
                    backoff_ms = backoff.as_millis() as u64, error = %e, "batch failed; retrying");
            }
            b.batch.not_before = Some(Instant::now() + backoff);
            // Back in its place: before every later batch of the partition, behind earlier retried ones.
            let at = q
                .ready
                .iter()
                .position(|x| x.ordinal > b.batch.ordinal)
                .unwrap_or(q.ready.len());
            q.ready.insert(at, b.batch);
            drop(st);
            inner.wake.notify_one();
            return;
        }
    }
    st.outstanding = st.outstanding.saturating_sub(1);
    let idle = st.outstanding == 0;
    drop(st);
    b.batch.shared.complete(r);
    inner.memory.add_permits(b.batch.reserved);
    if idle {
        inner.idle.notify_waiters();
    }
    inner.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClientConfig;
    use crate::testing::{self, FakeBroker};
    use runnel_protocol::batch::{records, validate};
    use runnel_protocol::messages::{
        InitProducerIdResponse, ProducePartitionResponse, ProduceResponse, ProduceTopicResponse,
    };

    async fn setup(topics: &[(&str, u32)], config: ProducerConfig) -> (FakeBroker, Producer) {
        let fb = testing::start(topics).await;
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        let p = Producer::new(cluster, config).unwrap();
        (fb, p)
    }

    /// Answers a produce request: every partition gets `code` and base offset `next[partition]`.
    fn answer(req: &Request, code: ErrorCode, next: &mut HashMap<u32, u64>) -> Response {
        let Request::Produce(r) = req else {
            panic!("expected produce, got {req:?}")
        };
        Response::Produce(ProduceResponse {
            topics: r
                .topics
                .iter()
                .map(|t| ProduceTopicResponse {
                    name: t.name.clone(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            let h = validate(&p.batch).unwrap();
                            let base = next.entry(p.partition).or_insert(0);
                            let out = *base;
                            if code == ErrorCode::None {
                                *base += h.record_count as u64;
                            }
                            ProducePartitionResponse {
                                partition: p.partition,
                                error_code: code.as_u16(),
                                base_offset: out,
                                ..Default::default()
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    fn batches(req: &Request) -> Vec<(u32, Bytes)> {
        let Request::Produce(r) = req else { panic!() };
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (p.partition, p.batch.clone())))
            .collect()
    }

    async fn next_req(fb: &mut FakeBroker) -> testing::Incoming {
        tokio::time::timeout(Duration::from_secs(5), fb.requests.recv())
            .await
            .expect("no request within 5 s")
            .expect("fake broker gone")
    }

    #[tokio::test]
    async fn records_are_batched_and_acked_with_dense_offsets() {
        let (mut fb, p) = setup(&[("t", 1)], ProducerConfig::default()).await;
        let mut futs = vec![];
        for i in 0..10u32 {
            let v = format!("v{i}");
            futs.push(
                p.enqueue(ProducerRecord::new("t", v.as_bytes()))
                    .await
                    .unwrap(),
            );
        }
        let inc = next_req(&mut fb).await;
        let bs = batches(&inc.request);
        assert_eq!(bs.len(), 1);
        let recs = records(&bs[0].1).unwrap();
        assert_eq!(recs.len(), 10);
        assert_eq!(recs[3].value.as_deref(), Some(&b"v3"[..]));
        let mut next = HashMap::from([(0, 100)]);
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut next))
            .unwrap();
        for (i, f) in futs.into_iter().enumerate() {
            let m = f.await.unwrap();
            assert_eq!((m.partition, m.offset), (0, 100 + i as u64));
            assert_eq!(&*m.topic, "t");
        }
        p.flush().await;
        assert_eq!(p.available_memory(), BUFFER_MEMORY_BYTES_DEFAULT);
    }

    #[tokio::test]
    async fn a_full_batch_is_sent_without_waiting_for_linger() {
        let cfg = ProducerConfig {
            linger: Duration::from_secs(3600),
            batch_size_bytes: 1000,
            max_in_flight_per_partition: 1,
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let value = [7u8; 100];
        let per = RecordBatchBuilder::record_size_estimate(None, &value, &[]);
        let mut futs = vec![];
        for _ in 0..20 {
            futs.push(
                p.enqueue(ProducerRecord::new("t", &value).partition(0))
                    .await
                    .unwrap(),
            );
        }
        let mut next = HashMap::new();
        let mut counts = vec![];
        // Full batches go out at once, one at a time (one in flight per partition here), each closed only
        // when the next record would not have fitted.
        loop {
            let inc =
                match tokio::time::timeout(Duration::from_millis(300), fb.requests.recv()).await {
                    Ok(r) => r.unwrap(),
                    Err(_) => break,
                };
            let bs = batches(&inc.request);
            assert_eq!(bs.len(), 1);
            let len = bs[0].1.len();
            assert!(len <= 1000 && len + per > 1000, "batch of {len} bytes");
            counts.push(records(&bs[0].1).unwrap().len());
            assert!(
                tokio::time::timeout(Duration::from_millis(50), fb.requests.recv())
                    .await
                    .is_err(),
                "a second batch went out while one was in flight"
            );
            inc.reply
                .send(answer(&inc.request, ErrorCode::None, &mut next))
                .unwrap();
        }
        assert!(counts.len() >= 2, "{counts:?}");
        let sent: usize = counts.iter().sum();
        assert!(sent < 20, "the lingering tail was sent: {counts:?}");
        // flush sends the lingering tail.
        let flusher = {
            let p = p.clone();
            tokio::spawn(async move { p.flush().await })
        };
        let inc = next_req(&mut fb).await;
        let rest = records(&batches(&inc.request)[0].1).unwrap().len();
        assert_eq!(sent + rest, 20);
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut next))
            .unwrap();
        flusher.await.unwrap();
        let offs: Vec<u64> = futures::future::join_all(futs)
            .await
            .into_iter()
            .map(|r| r.unwrap().offset)
            .collect();
        assert_eq!(offs, (0..20).collect::<Vec<_>>());
    }

    /// (epoch, base sequence, record count) of the one batch a produce request carries.
    fn numbering(inc: &testing::Incoming) -> (i16, i32, u32) {
        let bs = batches(&inc.request);
        assert_eq!(bs.len(), 1, "one partition per request here");
        let h = validate(&bs[0].1).unwrap();
        (h.producer_epoch, h.base_sequence, h.record_count)
    }

    async fn nothing_sent_within(fb: &mut FakeBroker, ms: u64, why: &str) {
        assert!(
            tokio::time::timeout(Duration::from_millis(ms), fb.requests.recv())
                .await
                .is_err(),
            "{why}"
        );
    }

    /// 9 batches of 2 records on partition 0 (the last one sent by a flush).
    async fn nine_full_batches(p: &Producer) -> Vec<DeliveryFuture> {
        let value = [7u8; 300];
        let mut futs = vec![];
        for _ in 0..18 {
            futs.push(
                p.enqueue(ProducerRecord::new("t", &value).partition(0))
                    .await
                    .unwrap(),
            );
        }
        flush_in_background(p);
        futs
    }

    fn pipelined(max: usize) -> ProducerConfig {
        ProducerConfig {
            linger: Duration::from_secs(3600),
            batch_size_bytes: 800,
            max_in_flight_per_partition: max,
            retry_backoff: Duration::from_millis(5),
            ..Default::default()
        }
    }

    /// Answers produce requests with success until `total` have arrived, `window` (those already received)
    /// outstanding at a time as the producer sends them; returns each one's (epoch, base sequence) in
    /// arrival order.
    async fn answer_pipelined(
        fb: &mut FakeBroker,
        mut window: VecDeque<testing::Incoming>,
        total: usize,
        next: &mut HashMap<u32, u64>,
    ) -> Vec<(i16, i32)> {
        let mut seen = window.len();
        let mut out = vec![];
        while let Some(inc) = window.pop_front() {
            let (epoch, seq, _) = numbering(&inc);
            out.push((epoch, seq));
            inc.reply
                .send(answer(&inc.request, ErrorCode::None, next))
                .unwrap();
            if seen < total {
                window.push_back(next_req(fb).await);
                seen += 1;
            }
        }
        out
    }

    #[tokio::test]
    async fn batches_of_a_partition_are_pipelined_up_to_the_limit() {
        let (mut fb, p) = setup(&[("t", 1)], pipelined(3)).await;
        let futs = nine_full_batches(&p).await;
        let mut next = HashMap::new();
        let mut window = VecDeque::new();
        for _ in 0..3 {
            window.push_back(next_req(&mut fb).await);
        }
        nothing_sent_within(&mut fb, 100, "a fourth batch went out with three in flight").await;
        // Each answer frees one slot of the window.
        let numbers = answer_pipelined(&mut fb, window, 9, &mut next).await;
        assert_eq!(numbers, (0..9).map(|i| (0, i * 2)).collect::<Vec<_>>());
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().offset, i as u64);
        }
    }

    #[tokio::test]
    async fn a_retried_batch_goes_out_again_before_the_ones_behind_it() {
        let (mut fb, p) = setup(&[("t", 1)], pipelined(3)).await;
        let futs = nine_full_batches(&p).await;
        let mut next = HashMap::new();
        let first: Vec<_> = [
            next_req(&mut fb).await,
            next_req(&mut fb).await,
            next_req(&mut fb).await,
        ]
        .into();
        let mut it = first.into_iter();
        let a = it.next().unwrap();
        assert_eq!(numbering(&a).1, 0);
        a.reply
            .send(answer(&a.request, ErrorCode::NotEnoughReplicas, &mut next))
            .unwrap();
        // The partition drains: nothing new while two batches are still in flight.
        nothing_sent_within(&mut fb, 100, "a batch went out while draining").await;
        for inc in it {
            inc.reply
                .send(answer(
                    &inc.request,
                    ErrorCode::OutOfOrderSequence,
                    &mut next,
                ))
                .unwrap();
        }
        // Then the three go out again in their order, and the rest follow.
        let mut window = VecDeque::new();
        for _ in 0..3 {
            window.push_back(next_req(&mut fb).await);
        }
        let numbers = answer_pipelined(&mut fb, window, 9, &mut next).await;
        assert_eq!(numbers, (0..9).map(|i| (0, i * 2)).collect::<Vec<_>>());
        for (i, f) in futs.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().offset, i as u64, "record {i}");
        }
    }

    #[tokio::test]
    async fn a_batch_given_up_starts_a_new_epoch_for_the_rest() {
        let (mut fb, p) = setup(&[("t", 1)], pipelined(2)).await;
        let futs = nine_full_batches(&p).await;
        let mut next = HashMap::new();
        let a = next_req(&mut fb).await;
        let b = next_req(&mut fb).await;
        assert_eq!((numbering(&a).1, numbering(&b).1), (0, 2));
        // Not retriable: the first batch fails for good, the second was refused as out of order.
        a.reply
            .send(answer(&a.request, ErrorCode::CorruptMessage, &mut next))
            .unwrap();
        b.reply
            .send(answer(&b.request, ErrorCode::OutOfOrderSequence, &mut next))
            .unwrap();
        let mut window = VecDeque::new();
        for _ in 0..2 {
            window.push_back(next_req(&mut fb).await);
        }
        let numbers = answer_pipelined(&mut fb, window, 8, &mut next).await;
        // The eight batches left start over at sequence 0 in epoch 1.
        assert_eq!(numbers, (0..8).map(|i| (1, i * 2)).collect::<Vec<_>>());
        let mut futs = futs.into_iter();
        for _ in 0..2 {
            let e = futs.next().unwrap().await.unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::CorruptMessage));
        }
        for (i, f) in futs.enumerate() {
            assert_eq!(f.await.unwrap().offset, i as u64);
        }
    }

    #[tokio::test]
    async fn keyless_records_move_on_from_a_partition_whose_window_is_full() {
        let cfg = ProducerConfig {
            linger: Duration::from_millis(5),
            max_in_flight_per_partition: 1,
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 2)], cfg).await;
        let mut futs = vec![p.enqueue(ProducerRecord::new("t", b"a")).await.unwrap()];
        // Its batch goes out and is never answered: that partition's window stays full.
        let stuck = next_req(&mut fb).await;
        let stuck_partition = batches(&stuck.request)[0].0;
        // The other partition is answered; keyless records must keep reaching it.
        let mut next = HashMap::new();
        let mut answered_late = 0;
        for i in 0..60 {
            futs.push(p.enqueue(ProducerRecord::new("t", b"b")).await.unwrap());
            tokio::time::sleep(Duration::from_millis(10)).await;
            while let Ok(inc) = fb.requests.try_recv() {
                assert_ne!(batches(&inc.request)[0].0, stuck_partition);
                if i >= 40 {
                    answered_late += 1;
                }
                inc.reply
                    .send(answer(&inc.request, ErrorCode::None, &mut next))
                    .unwrap();
            }
        }
        assert!(
            answered_late > 0,
            "keyless records piled onto the stuck partition"
        );
        drop((futs, stuck));
    }

    #[tokio::test]
    async fn acks_none_gives_unknown_offsets_without_overflow() {
        let cfg = ProducerConfig {
            acks: Acks::None,
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let c = p.enqueue(ProducerRecord::new("t", b"c")).await.unwrap();
        let d = p.enqueue(ProducerRecord::new("t", b"d")).await.unwrap();
        let inc = next_req(&mut fb).await;
        let Request::Produce(r) = &inc.request else {
            panic!()
        };
        assert_eq!(r.acks, ACKS_NONE);
        let Response::Produce(mut resp) =
            answer(&inc.request, ErrorCode::None, &mut HashMap::new())
        else {
            panic!()
        };
        resp.topics[0].partitions[0].base_offset = u64::MAX;
        inc.reply.send(Response::Produce(resp)).unwrap();
        assert_eq!(c.await.unwrap().offset, OFFSET_UNKNOWN);
        assert_eq!(d.await.unwrap().offset, OFFSET_UNKNOWN);
    }

    #[tokio::test]
    async fn a_lone_record_waits_for_linger() {
        let cfg = ProducerConfig {
            linger: Duration::from_millis(80),
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let t0 = Instant::now();
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let inc = next_req(&mut fb).await;
        assert!(t0.elapsed() >= Duration::from_millis(80));
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut HashMap::new()))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 0);
    }

    #[tokio::test]
    async fn retriable_errors_are_retried_up_to_the_bound_then_fail() {
        let cfg = ProducerConfig {
            linger: Duration::ZERO,
            retries: 3,
            retry_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        for _ in 0..4 {
            let inc = next_req(&mut fb).await;
            inc.reply
                .send(answer(
                    &inc.request,
                    ErrorCode::NotLeader,
                    &mut HashMap::new(),
                ))
                .unwrap();
        }
        let e = f.await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotLeader));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fb.requests.recv())
                .await
                .is_err(),
            "sent more than 1 + retries times"
        );
        // A retriable error followed by success delivers.
        let f = p.enqueue(ProducerRecord::new("t", b"y")).await.unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::LeaderNotAvailable,
                &mut HashMap::new(),
            ))
            .unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::None,
                &mut HashMap::from([(0, 5)]),
            ))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 5);
    }

    #[tokio::test]
    async fn ambiguous_failures_are_not_retried_when_disabled() {
        let cfg = ProducerConfig {
            linger: Duration::ZERO,
            retry_backoff: Duration::from_millis(1),
            retry_ambiguous: false,
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::RequestTimedOut,
                &mut HashMap::new(),
            ))
            .unwrap();
        assert_eq!(
            f.await.unwrap_err().code(),
            Some(ErrorCode::RequestTimedOut)
        );
        // A definite "not written" error is still retried.
        let f = p.enqueue(ProducerRecord::new("t", b"y")).await.unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::NotLeader,
                &mut HashMap::new(),
            ))
            .unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut HashMap::new()))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 0);
    }

    #[tokio::test]
    async fn not_leader_refreshes_metadata_and_follows_the_new_leader() {
        let (meta, mut a, mut b) = testing::two_brokers("t").await;
        let cluster = Cluster::connect(ClientConfig::new(&a.addr).unwrap())
            .await
            .unwrap();
        let cfg = ProducerConfig {
            linger: Duration::ZERO,
            retry_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let p = Producer::new(cluster, cfg).unwrap();
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let inc = next_req(&mut a).await;
        testing::set_leader(&meta, 2);
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::NotLeader,
                &mut HashMap::new(),
            ))
            .unwrap();
        let inc = next_req(&mut b).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::None,
                &mut HashMap::from([(0, 42)]),
            ))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 42);
    }

    /// A NOT_LEADER that names the new leader sends the retry there at once, without a metadata round
    /// trip: here the metadata still names the old leader (broker 1), so only the hint can bring the
    /// retry to broker 2.
    #[tokio::test]
    async fn a_not_leader_hint_is_followed_at_once() {
        let (_meta, mut a, mut b) = testing::two_brokers("t").await;
        let cluster = Cluster::connect(ClientConfig::new(&a.addr).unwrap())
            .await
            .unwrap();
        let cfg = ProducerConfig {
            linger: Duration::ZERO,
            retry_backoff: Duration::from_secs(30),
            ..Default::default()
        };
        let p = Producer::new(cluster, cfg).unwrap();
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let inc = next_req(&mut a).await;
        let mut resp = answer(&inc.request, ErrorCode::NotLeader, &mut HashMap::new());
        if let Response::Produce(r) = &mut resp {
            for part in r.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                part.leader_hint = Some(2);
            }
        }
        inc.reply.send(resp).unwrap();
        let inc = next_req(&mut b).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::None,
                &mut HashMap::from([(0, 7)]),
            ))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 7);
    }

    #[tokio::test]
    async fn non_retriable_errors_fail_at_once() {
        let cfg = ProducerConfig {
            linger: Duration::ZERO,
            retry_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::CorruptMessage,
                &mut HashMap::new(),
            ))
            .unwrap();
        assert_eq!(f.await.unwrap_err().code(), Some(ErrorCode::CorruptMessage));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fb.requests.recv())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn enqueue_waits_at_the_buffer_memory_limit() {
        let value = [1u8; 200];
        let per = RecordBatchBuilder::record_size_estimate(None, &value, &[]);
        let cfg = ProducerConfig {
            linger: Duration::from_secs(3600),
            buffer_memory_bytes: per * 3,
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], cfg).await;
        let mut futs = vec![];
        for _ in 0..3 {
            futs.push(p.enqueue(ProducerRecord::new("t", &value)).await.unwrap());
        }
        assert_eq!(p.available_memory(), 0);
        let blocked = {
            let p = p.clone();
            tokio::spawn(async move { p.enqueue(ProducerRecord::new("t", &[1u8; 200])).await })
        };
        // The waiting caller makes the lingering batch go out at once; it stays blocked until that completes.
        let inc = next_req(&mut fb).await;
        assert_eq!(records(&batches(&inc.request)[0].1).unwrap().len(), 3);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), async {
                while !blocked.is_finished() {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .is_err(),
            "enqueue went past the buffer memory limit"
        );
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut HashMap::new()))
            .unwrap();
        let f = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("enqueue stayed blocked after memory was freed")
            .unwrap()
            .unwrap();
        for f in futs {
            f.await.unwrap();
        }
        let flusher = {
            let p = p.clone();
            tokio::spawn(async move { p.flush().await })
        };
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(
                &inc.request,
                ErrorCode::None,
                &mut HashMap::from([(0, 3)]),
            ))
            .unwrap();
        assert_eq!(f.await.unwrap().offset, 3);
        flusher.await.unwrap();
        assert_eq!(p.available_memory(), per * 3);
        // A record larger than the whole buffer is refused rather than waiting forever.
        let big = vec![0u8; per * 4];
        assert!(matches!(
            p.enqueue(ProducerRecord::new("t", &big)).await,
            Err(ClientError::RecordTooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn partition_choice_explicit_keyed_and_sticky() {
        let cfg = ProducerConfig {
            linger: Duration::from_secs(3600),
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 4)], cfg).await;
        let f1 = p
            .enqueue(ProducerRecord::new("t", b"a").partition(3))
            .await
            .unwrap();
        let f2 = p
            .enqueue(ProducerRecord::new("t", b"b").key(b"foobar"))
            .await
            .unwrap();
        let f3 = p.enqueue(ProducerRecord::new("t", b"c")).await.unwrap();
        let f4 = p.enqueue(ProducerRecord::new("t", b"d")).await.unwrap();
        let e = p
            .enqueue(ProducerRecord::new("t", b"e").partition(4))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
        let e = p
            .enqueue(ProducerRecord::new("nope", b"e"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
        let flusher = {
            let p = p.clone();
            tokio::spawn(async move { p.flush().await })
        };
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut HashMap::new()))
            .unwrap();
        flusher.await.unwrap();
        assert_eq!(f1.await.unwrap().partition, 3);
        assert_eq!(f2.await.unwrap().partition, partition_for_key(b"foobar", 4));
        // Keyless records stick to one partition while its batch is open.
        let (a, b) = (f3.await.unwrap(), f4.await.unwrap());
        assert_eq!(a.partition, b.partition);
        assert_eq!(b.offset, a.offset + 1);
    }

    #[tokio::test]
    async fn close_refuses_new_records_after_draining() {
        let (mut fb, p) = setup(&[("t", 1)], ProducerConfig::default()).await;
        let f = p.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        let closer = {
            let p = p.clone();
            tokio::spawn(async move { p.close().await })
        };
        let inc = next_req(&mut fb).await;
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut HashMap::new()))
            .unwrap();
        closer.await.unwrap();
        f.await.unwrap();
        assert_eq!(
            p.enqueue(ProducerRecord::new("t", b"y")).await.unwrap_err(),
            ClientError::Closed
        );
    }

    /// Sends what `p` buffers without waiting for its linger (the flush itself runs on).
    fn flush_in_background(p: &Producer) {
        let p = p.clone();
        tokio::spawn(async move { p.flush().await });
    }

    /// Batches of an idempotent producer carry the id a broker handed out (`InitProducerId`, asked once
    /// per producer) and consecutive sequences; another producer gets another id; without idempotence no
    /// id is asked for and batches carry none.
    #[tokio::test]
    async fn an_idempotent_producer_numbers_batches_with_the_id_the_broker_gave() {
        let lingering = ProducerConfig {
            linger: Duration::from_secs(3600),
            ..Default::default()
        };
        let (mut fb, p) = setup(&[("t", 1)], lingering.clone()).await;
        let mut next = HashMap::new();
        for (i, expected_seq) in [(0, 0), (1, 3)] {
            let mut futs = Vec::new();
            for _ in 0..3 {
                futs.push(p.enqueue(ProducerRecord::new("t", b"v")).await.unwrap());
            }
            flush_in_background(&p);
            let inc = next_req(&mut fb).await;
            let bs = batches(&inc.request);
            let h = validate(&bs[0].1).unwrap();
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (testing::FAKE_FIRST_PRODUCER_ID, 0, expected_seq),
                "batch {i}"
            );
            inc.reply
                .send(answer(&inc.request, ErrorCode::None, &mut next))
                .unwrap();
            for f in futs {
                f.await.unwrap();
            }
        }
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        let other = Producer::new(cluster.clone(), lingering.clone()).unwrap();
        let f = other.enqueue(ProducerRecord::new("t", b"w")).await.unwrap();
        flush_in_background(&other);
        let inc = next_req(&mut fb).await;
        let h = validate(&batches(&inc.request)[0].1).unwrap();
        assert_eq!(h.producer_id, testing::FAKE_FIRST_PRODUCER_ID + 1);
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut next))
            .unwrap();
        f.await.unwrap();

        let plain = ProducerConfig {
            idempotent: false,
            ..lingering
        };
        let plain = Producer::new(cluster, plain).unwrap();
        let f = plain.enqueue(ProducerRecord::new("t", b"x")).await.unwrap();
        flush_in_background(&plain);
        let inc = next_req(&mut fb).await;
        let h = validate(&batches(&inc.request)[0].1).unwrap();
        assert_eq!((h.producer_id, h.base_sequence), (-1, -1));
        inc.reply
            .send(answer(&inc.request, ErrorCode::None, &mut next))
            .unwrap();
        f.await.unwrap();
        assert_eq!(
            init_producer_id(&other.inner().cluster, &ProducerConfig::default())
                .await
                .unwrap(),
            testing::FAKE_FIRST_PRODUCER_ID + 2,
            "the non-idempotent producer asked for no id"
        );
    }

    /// Retriable InitProducerId failures are retried `retries` times; past that, or for a non-retriable
    /// code, `enqueue` fails with the broker's code and says what failed; a later `enqueue` asks again.
    #[tokio::test]
    async fn init_producer_id_failures_are_retried_then_surface() {
        let fail = |code: ErrorCode| InitProducerIdResponse {
            error_code: code.as_u16(),
            error_message: Some("no controller yet".into()),
            producer_id: -1,
            producer_epoch: -1,
        };
        let cfg = |retries| ProducerConfig {
            retries,
            retry_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        let (fb, p) = setup(&[("t", 1)], cfg(1)).await;
        fb.init_producer_id.lock().unwrap().extend([
            fail(ErrorCode::NotController),
            fail(ErrorCode::NotController),
        ]);
        let e = p.enqueue(ProducerRecord::new("t", b"v")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotController), "{e}");
        assert!(
            e.to_string()
                .contains("cannot obtain a producer id: no controller yet"),
            "{e}"
        );
        assert!(
            fb.init_producer_id.lock().unwrap().is_empty(),
            "two attempts"
        );
        assert_eq!(
            p.available_memory(),
            BUFFER_MEMORY_BYTES_DEFAULT,
            "nothing queued"
        );

        fb.init_producer_id.lock().unwrap().extend([
            fail(ErrorCode::InvalidRequest),
            fail(ErrorCode::NotController),
        ]);
        let e = p.enqueue(ProducerRecord::new("t", b"v")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "not retried");
        assert_eq!(fb.init_producer_id.lock().unwrap().len(), 1);

        // One retriable failure is within `retries`: the next call gets an id.
        p.enqueue(ProducerRecord::new("t", b"v")).await.unwrap();
        assert_eq!(
            p.inner().producer_id(),
            Some(testing::FAKE_FIRST_PRODUCER_ID)
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = ProducerConfig::default();
        assert_eq!(c.backoff(1), RETRY_BACKOFF_DEFAULT);
        assert_eq!(c.backoff(2), RETRY_BACKOFF_DEFAULT * 2);
        assert_eq!(c.backoff(PRODUCE_RETRIES_MAX), RETRY_BACKOFF_MAX);
        assert_eq!(c.backoff(u32::MAX), RETRY_BACKOFF_MAX);
        let bad = ProducerConfig {
            retries: PRODUCE_RETRIES_MAX + 1,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = ProducerConfig {
            batch_size_bytes: BATCH_SIZE_BYTES_MAX + 1,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
