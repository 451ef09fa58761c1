//! The high-watermark state machine. Applying an entry only moves the high watermark (the end offset of the
//! last applied data batch) and records memberships; the records themselves stay in the log.
//!
//! Trap T6: the snapshot is the **retention boundary**, not the applied index. A snapshot at log id P says
//! "everything up to P may be purged": P is the last entry before the first data entry retention keeps
//! (bounded by `applied`), so a follower that installs it and purges up to P loses no retained record and
//! is fed P+1.. by ordinary replication. Snapshot data is only `{ log_start_offset }`.
//!
//! Invariants: the high watermark never moves backwards; `apply` answers every responder; a snapshot never
//! covers a data entry that retention still keeps.

use std::io::{self, Cursor};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::{decode_small, encode_small};
use super::types::{
    log_id, to_pos, Appended, LogId, PartitionRaft, SnapshotMeta, StoredMembership,
};
use crate::storage::PartitionLog;

type Snapshot = openraft::alias::SnapshotOf<PartitionRaft, Cursor<Vec<u8>>>;

/// State shared by the state machine, the log store and the fetch path of one partition.
#[derive(Debug)]
pub struct PartitionShared {
    pub log: PartitionLog,
    /// The high watermark: first offset not yet committed.
    pub hwm: watch::Sender<u64>,
    /// Idempotent producers' last batches, folded from applied entries.
    pub producers: std::sync::Mutex<super::producers::ProducerTable>,
}

impl PartitionShared {
    pub fn new(log: PartitionLog) -> Arc<PartitionShared> {
        let start = log.bounds().log_start_offset;
        let (hwm, _) = watch::channel(start);
        Arc::new(PartitionShared {
            log,
            hwm,
            producers: std::sync::Mutex::new(Default::default()),
        })
    }

    /// On the leader, when the entry `(term, index)` it proposed is committed (a quorum has it on disk):
    /// raises the high watermark past it — committed data is readable at once, as Kafka's high watermark
    /// is; apply raises it to the same point later — and returns its base offset. `None` if the log does
    /// not hold that entry as a data batch (the caller then waits for apply's answer).
    pub(crate) fn commit_data(&self, term: u64, index: u64) -> Option<u64> {
        // Its header only: this replica wrote the entry itself, so its payload CRC is not read again.
        let h = self.log.entry_header(index)?;
        if h.index != index || h.term != term || h.kind != crate::storage::frame::FrameKind::Data {
            return None;
        }
        self.raise_hwm(h.end_offset());
        Some(h.base_offset)
    }

    /// Records an applied batch of an idempotent producer.
    fn record_producer(&self, b: &super::types::RecordBatch) {
        let Ok(h) = runnel_protocol::batch::RecordBatchHeader::parse(&b.payload) else {
            return;
        };
        if h.producer_id < 0 {
            return;
        }
        if let Ok(mut t) = self.producers.lock() {
            t.record(
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.record_count,
                b.base_offset,
            );
        }
    }

    pub(crate) fn raise_hwm(&self, to: u64) {
        self.hwm.send_if_modified(|h| {
            if to > *h {
                *h = to;
                true
            } else {
                false
            }
        });
    }
}

/// What a snapshot holds besides its meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The first offset after the snapshot's last entry.
    pub log_start_offset: u64,
}

/// The persisted form of the current snapshot (in the log's metadata file).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine of one partition replica.
#[derive(Debug)]
pub struct HwmStateMachine {
    shared: Arc<PartitionShared>,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Memberships applied since (and including the one effective at) the current snapshot, oldest first.
    history: Vec<StoredMembership>,
}

impl HwmStateMachine {
    pub fn new(shared: Arc<PartitionShared>) -> HwmStateMachine {
        HwmStateMachine {
            shared,
            applied: None,
            membership: StoredMembership::default(),
            history: Vec::new(),
        }
    }

    fn current_snapshot(&self) -> io::Result<Option<StoredSnapshot>> {
        self.shared
            .log
            .snapshot()
            .map(|b| decode_small::<StoredSnapshot>(&b))
            .transpose()
    }

    /// The snapshot boundary now: the last entry before the first data entry retention keeps, capped by
    /// `applied` and never below the current snapshot. Returns (boundary, log start offset after it).
    fn boundary(&self, now_ms: i64) -> io::Result<Option<(LogId, u64)>> {
        let Some(applied) = self.applied else {
            return Ok(None);
        };
        let log = &self.shared.log;
        let expired = log.retention_boundary(now_ms);
        let keep_from = log.first_data_after(expired.map(|p| p.index))?;
        let hwm = *self.shared.hwm.borrow();
        let (index, start) = match keep_from {
            None => (applied.index, hwm),
            Some((k, _)) if k > applied.index => (applied.index, hwm),
            Some((0, _)) => return Ok(None),
            Some((k, off)) => (k - 1, off),
        };
        if index == applied.index {
            return Ok(Some((applied, start)));
        }
        // The boundary entry's term comes from the log (it may already be purged: then no progress).
        let e = log.entries(index, index + 1, 0)?;
        match e.first() {
            Some(e) if e.index == index => Ok(Some((log_id(e.term, index), start))),
            _ => Ok(None),
        }
    }

    /// The membership in effect at `index`.
    fn membership_at(&self, index: u64) -> StoredMembership {
        self.history
            .iter()
            .rev()
            .find(|m| m.log_id().is_none_or(|l| l.index <= index))
            .cloned()
            .unwrap_or_default()
    }
}

/// Builds the snapshot computed by `try_create_snapshot_builder` and stores it durably.
#[derive(Debug)]
pub struct RetentionSnapshotBuilder {
    shared: Arc<PartitionShared>,
    meta: SnapshotMeta,
    data: SnapshotData,
}

impl RaftSnapshotBuilder<PartitionRaft> for RetentionSnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = encode_small(&self.data)?;
        let stored = StoredSnapshot {
            meta: self.meta.clone(),
            data: data.clone(),
        };
        self.shared.log.save_snapshot(encode_small(&stored)?)?;
        tracing::info!(
            dir = %self.shared.log.dir().display(),
            last_log_id = ?self.meta.last_log_id,
            log_start_offset = self.data.log_start_offset,
            "snapshot at the retention boundary"
        );
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<PartitionRaft> for HwmStateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = RetentionSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            Stream<Item = Result<EntryResponder<PartitionRaft>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            self.applied = Some(entry.log_id);
            let resp = match entry.payload {
                EntryPayload::Normal(b) => {
                    self.shared.record_producer(&b);
                    self.shared.raise_hwm(b.base_offset + b.record_count as u64);
                    Appended {
                        base_offset: b.base_offset,
                    }
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.history.push(self.membership.clone());
                    Appended {
                        base_offset: *self.shared.hwm.borrow(),
                    }
                }
                EntryPayload::Blank => Appended {
                    base_offset: *self.shared.hwm.borrow(),
                },
            };
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(
        &mut self,
        force: bool,
    ) -> Option<RetentionSnapshotBuilder> {
        let current = self.current_snapshot().ok().flatten();
        let current_last = current.as_ref().and_then(|s| s.meta.last_log_id);
        let boundary = match self.boundary(crate::storage::log::now_ms()) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot compute the retention boundary");
                None
            }
        };
        let (last, start) = match (boundary, &current) {
            (Some((b, s)), _) if current_last.is_none_or(|c| b > c) => (Some(b), s),
            _ if !force => return None,
            (_, Some(c)) => (
                c.meta.last_log_id,
                decode_small::<SnapshotData>(&c.data)
                    .map(|d| d.log_start_offset)
                    .unwrap_or(0),
            ),
            (b, None) => (b.map(|x| x.0), b.map_or(*self.shared.hwm.borrow(), |x| x.1)),
        };
        let membership = match last {
            Some(l) => self.membership_at(l.index),
            None => StoredMembership::default(),
        };
        // Memberships older than the one in effect at the new snapshot are no longer needed.
        if let Some(l) = last {
            let keep = self
                .history
                .iter()
                .rposition(|m| m.log_id().is_none_or(|x| x.index <= l.index));
            if let Some(k) = keep {
                self.history.drain(..k);
            }
        }
        Some(RetentionSnapshotBuilder {
            shared: self.shared.clone(),
            meta: SnapshotMeta {
                last_log_id: last,
                last_membership: membership,
            },
            data: SnapshotData {
                log_start_offset: start,
            },
        })
    }

    async fn get_snapshot_builder(&mut self) -> RetentionSnapshotBuilder {
        match self.try_create_snapshot_builder(true).await {
            Some(b) => b,
            None => RetentionSnapshotBuilder {
                shared: self.shared.clone(),
                meta: SnapshotMeta::default(),
                data: SnapshotData {
                    log_start_offset: *self.shared.hwm.borrow(),
                },
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let raw = snapshot.into_inner();
        let data = decode_small::<SnapshotData>(&raw)?;
        if let Some(l) = meta.last_log_id {
            // A purge past our last entry continues numbering from here.
            self.shared
                .log
                .set_purge_hint(to_pos(&l).index, data.log_start_offset);
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: raw,
        };
        self.shared.log.save_snapshot(encode_small(&stored)?)?;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.history = vec![self.membership.clone()];
        self.shared.raise_hwm(data.log_start_offset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.current_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Cursor::new(s.data),
        }))
    }
}
