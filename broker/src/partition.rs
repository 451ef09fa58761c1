//! TEMPORARY stand-in, replaced by the storage branch.
//!
//! The seam between the server and storage/raft: one partition replica as the handlers see it. This version
//! keeps every batch in memory (a `Vec` per partition), stamps base offsets at append, and commits at once
//! (high watermark = log end); nothing survives a restart. Its signatures are exactly those of the real
//! implementation (`/work/briefs/partition-api.md`), so the server code does not change when it is replaced.
//!
//! Invariants: batches are stored in offset order and are dense (`batches[i+1].base == batches[i].next`);
//! `high_watermark == log_end_offset`; the watch channel always holds the current high watermark.

use std::{path::PathBuf, sync::Arc};

use bytes::{Bytes, BytesMut};
use runnel_protocol::batch::{self, RecordBatchHeader};
use runnel_protocol::ErrorCode;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: u32,
}

/// Per-partition log settings (topic configs map onto these).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll the active segment at this size; default 128 MiB.
    pub segment_bytes: u64,
    /// Roll after this age; default 7 days.
    pub segment_ms: u64,
    /// Default None (unlimited).
    pub retention_bytes: Option<u64>,
    /// Default Some(7 days).
    pub retention_ms: Option<u64>,
    /// Sparse index granularity; default 4096.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            index_interval_bytes: 4096,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
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
}

impl PartitionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PartitionError::NotLeader { .. } => ErrorCode::NotLeader,
            PartitionError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            PartitionError::Storage(_) => ErrorCode::StorageError,
            PartitionError::ShuttingDown => ErrorCode::BrokerShuttingDown,
            PartitionError::Timeout => ErrorCode::RequestTimedOut,
        }
    }
}

/// Broker-wide storage services shared by every partition. The stand-in has none.
#[derive(Clone, Default)]
pub struct StorageContext {}

impl StorageContext {
    pub fn new() -> StorageContext {
        StorageContext {}
    }
}

struct StoredBatch {
    base_offset: u64,
    next_offset: u64,
    max_timestamp: i64,
    bytes: Bytes,
}

struct Log {
    batches: Vec<StoredBatch>,
    end: u64,
    closed: bool,
}

/// One partition replica on this broker. Shared as `Arc<Partition>`.
pub struct Partition {
    id: PartitionId,
    node_id: u32,
    log: std::sync::Mutex<Log>,
    hwm_tx: tokio::sync::watch::Sender<u64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Creates `dir` (so the server's layout is exercised) and an empty in-memory log led by this node.
    pub async fn open(
        id: PartitionId,
        dir: PathBuf,
        node_id: u32,
        voters: Vec<u32>,
        _config: LogConfig,
        _ctx: StorageContext,
    ) -> Result<Arc<Partition>, PartitionError> {
        if voters != [node_id] {
            return Err(PartitionError::Storage(
                "the in-memory stand-in supports a single voter only".into(),
            ));
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| PartitionError::Storage(format!("create {}: {e}", dir.display())))?;
        let (hwm_tx, _) = tokio::sync::watch::channel(0);
        Ok(Arc::new(Partition {
            id,
            node_id,
            log: std::sync::Mutex::new(Log {
                batches: Vec::new(),
                end: 0,
                closed: false,
            }),
            hwm_tx,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A poisoned lock only means another thread panicked mid-append; the Vec is still consistent.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one validated batch, stamping its base offset. Commits immediately, whatever `acks`.
    pub async fn append(
        &self,
        batch: Bytes,
        header: &RecordBatchHeader,
        _acks: i8,
    ) -> Result<AppendOutcome, PartitionError> {
        if batch.len() < batch::BATCH_HEADER_LEN {
            return Err(PartitionError::Storage(
                "batch shorter than its header".into(),
            ));
        }
        let mut log = self.lock();
        if log.closed {
            return Err(PartitionError::ShuttingDown);
        }
        let base = log.end;
        let mut owned = BytesMut::from(&batch[..]);
        batch::stamp(&mut owned, base, 0);
        let next = base + header.record_count as u64;
        log.batches.push(StoredBatch {
            base_offset: base,
            next_offset: next,
            max_timestamp: header.max_timestamp,
            bytes: owned.freeze(),
        });
        log.end = next;
        drop(log);
        self.hwm_tx.send_replace(next);
        Ok(AppendOutcome {
            base_offset: base,
            log_append_time_ms: now_ms(),
        })
    }

    pub fn high_watermark(&self) -> u64 {
        self.lock().end
    }

    pub fn log_start_offset(&self) -> u64 {
        0
    }

    pub fn log_end_offset(&self) -> u64 {
        self.lock().end
    }

    /// Whole batches from the one containing `offset`, at most `max_bytes` but at least one batch.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, PartitionError> {
        let log = self.lock();
        if offset > log.end {
            return Err(PartitionError::OffsetOutOfRange {
                offset,
                log_start: 0,
                high_watermark: log.end,
            });
        }
        let first = log.batches.partition_point(|b| b.next_offset <= offset);
        let mut out = Vec::new();
        let mut total = 0usize;
        for b in log.batches.iter().skip(first) {
            if !out.is_empty() && total + b.bytes.len() > max_bytes {
                break;
            }
            total += b.bytes.len();
            out.push(b.bytes.clone());
        }
        Ok(out)
    }

    pub fn watch_high_watermark(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hwm_tx.subscribe()
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64, PartitionError> {
        let log = self.lock();
        Ok(log
            .batches
            .iter()
            .find(|b| b.max_timestamp >= ts)
            .map_or(log.end, |b| b.base_offset))
    }

    pub fn leader(&self) -> Option<u32> {
        Some(self.node_id)
    }

    pub fn is_leader(&self) -> bool {
        true
    }

    pub fn term(&self) -> u64 {
        1
    }

    /// Later calls to `append` fail with `ShuttingDown`. Idempotent.
    pub async fn shutdown(&self) -> Result<(), PartitionError> {
        self.lock().closed = true;
        tracing::debug!(topic = %self.id.topic, partition = self.id.partition, "partition shut down");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::batch::{validate, RecordBatchBuilder};

    fn batch(n: u32, ts: i64) -> (Bytes, RecordBatchHeader) {
        let mut b = RecordBatchBuilder::new(128);
        for i in 0..n {
            b.push(ts + i as i64, None, b"v", &[]);
        }
        let b = b.finish();
        let h = validate(&b).unwrap();
        (b, h)
    }

    #[tokio::test]
    async fn append_stamps_dense_offsets_and_read_follows_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let id = PartitionId {
            topic: "t".into(),
            partition: 0,
        };
        let p = Partition::open(
            id,
            dir.path().join("t-0"),
            1,
            vec![1],
            LogConfig::default(),
            StorageContext::new(),
        )
        .await
        .unwrap();
        let mut rx = p.watch_high_watermark();
        let (b1, h1) = batch(3, 100);
        let (b2, h2) = batch(2, 200);
        assert_eq!(p.append(b1.clone(), &h1, -1).await.unwrap().base_offset, 0);
        assert_eq!(p.append(b2, &h2, -1).await.unwrap().base_offset, 3);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 5);
        assert_eq!(p.high_watermark(), 5);
        // The batch containing offset 4 is the second one; at least one batch even with max_bytes 0.
        let got = p.read(4, 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(validate(&got[0]).unwrap().base_offset, 3);
        assert_eq!(p.read(0, usize::MAX).unwrap().len(), 2);
        assert_eq!(p.read(0, b1.len()).unwrap().len(), 1);
        assert!(p.read(5, 100).unwrap().is_empty());
        assert!(matches!(
            p.read(6, 100),
            Err(PartitionError::OffsetOutOfRange {
                high_watermark: 5,
                ..
            })
        ));
        assert_eq!(p.offset_for_timestamp(150).unwrap(), 3);
        assert_eq!(p.offset_for_timestamp(0).unwrap(), 0);
        assert_eq!(p.offset_for_timestamp(10_000).unwrap(), 5);
        p.shutdown().await.unwrap();
        p.shutdown().await.unwrap();
        let (b3, h3) = batch(1, 1);
        assert!(matches!(
            p.append(b3, &h3, -1).await,
            Err(PartitionError::ShuttingDown)
        ));
    }
}
