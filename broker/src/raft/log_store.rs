//! openraft's log store over the segment log: [`SegLogStore`] (`RaftLogStorage`) and [`SegLogReader`]
//! (`RaftLogReader`). Both are thin: every entry lives in the segment files, and reads are zero-copy.
//!
//! Invariants: `append` returns once the entries are readable and hands the durability callback to the
//! group-commit flusher; `save_vote` is durable (and a flush barrier) before it returns; readers share the
//! log, so a reader made earlier sees later appends; replication reads are byte-budgeted.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use futures::Stream;
use openraft::storage::{
    IOFlushed, LeaderBoundedStreamError, LeaderBoundedStreamResult, RaftLogStorage,
};
use openraft::{EntryPayload, LogState, OptionalSend, RaftLogReader};

use super::types::{from_pos, to_pos, Entry, LogId, Membership, PartitionRaft, RecordBatch, Vote};
use crate::storage::{EntryKind, NewEntry, PartitionLog, StoredEntry};

/// Payload bytes one `limited_get_log_entries` call returns at most (at least one entry is returned even
/// if larger), so a replication RPC stays bounded whatever `max_payload_entries` is.
pub const REPLICATION_READ_BYTES_MAX: usize = 4 * 1024 * 1024;

fn bincode_cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 * 1024 }>()
}

pub(crate) fn encode_small<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode_cfg()).map_err(|e| io::Error::other(e.to_string()))
}

pub(crate) fn decode_small<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(b, bincode_cfg())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

fn to_new_entry(e: Entry) -> io::Result<NewEntry> {
    let term = e.log_id.leader_id.term;
    let index = e.log_id.index;
    Ok(match e.payload {
        EntryPayload::Blank => NewEntry {
            term,
            index,
            kind: EntryKind::Blank,
            payload: bytes::Bytes::new(),
            record_count: 0,
            max_timestamp: 0,
        },
        EntryPayload::Normal(b) => NewEntry {
            term,
            index,
            kind: EntryKind::Data,
            payload: b.payload,
            record_count: b.record_count,
            max_timestamp: b.max_timestamp,
        },
        EntryPayload::Membership(m) => NewEntry {
            term,
            index,
            kind: EntryKind::Membership,
            payload: encode_small(&m)?.into(),
            record_count: 0,
            max_timestamp: 0,
        },
    })
}

fn to_entry(e: StoredEntry) -> io::Result<Entry> {
    let payload = match e.kind {
        EntryKind::Blank => EntryPayload::Blank,
        EntryKind::Data => EntryPayload::Normal(RecordBatch {
            payload: e.payload,
            record_count: e.record_count,
            max_timestamp: e.max_timestamp,
            base_offset: e.base_offset,
        }),
        EntryKind::Membership => EntryPayload::Membership(decode_small::<Membership>(&e.payload)?),
    };
    Ok(Entry {
        log_id: super::types::log_id(e.term, e.index),
        payload,
    })
}

fn range_of<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

fn read(log: &PartitionLog, start: u64, end: u64, max_bytes: usize) -> io::Result<Vec<Entry>> {
    log.entries(start, end, max_bytes)?
        .into_iter()
        .map(to_entry)
        .collect()
}

fn read_vote(log: &PartitionLog) -> io::Result<Option<Vote>> {
    log.vote().map(|b| decode_small::<Vote>(&b)).transpose()
}

/// The log store of one partition replica.
#[derive(Clone, Debug)]
pub struct SegLogStore {
    log: PartitionLog,
    /// Persist every commit point at once (the metadata group) rather than lazily.
    persist_every_commit: bool,
}

impl SegLogStore {
    pub fn new(log: PartitionLog, persist_every_commit: bool) -> SegLogStore {
        SegLogStore {
            log,
            persist_every_commit,
        }
    }
}

/// A log reader; clones share the log, so every reader sees every append.
#[derive(Clone, Debug)]
pub struct SegLogReader {
    log: PartitionLog,
}

impl RaftLogReader<PartitionRaft> for SegLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (s, e) = range_of(&range);
        read(&self.log, s, e, usize::MAX)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_vote(&self.log)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        read(&self.log, start, end, REPLICATION_READ_BYTES_MAX)
    }

    /// Reads in byte-budgeted chunks and re-checks the vote before every chunk and at the end: as soon as
    /// the vote no longer is this leader's committed vote, the stream ends with `LeaderChanged`.
    async fn leader_bounded_stream<RB>(
        &mut self,
        leader: openraft::alias::LeaderIdOf<PartitionRaft>,
        range: RB,
    ) -> impl Stream<Item = LeaderBoundedStreamResult<PartitionRaft>> + OptionalSend
    where
        RB: RangeBounds<u64> + Clone + Debug + OptionalSend,
    {
        let (mut start, end) = range_of(&range);
        let mut items: Vec<LeaderBoundedStreamResult<PartitionRaft>> = Vec::new();
        let changed = |v: Option<Vote>| {
            LeaderBoundedStreamError::LeaderChanged(openraft::errors::LeaderChanged::new(leader, v))
        };
        let valid = |v: &Option<Vote>| {
            v.as_ref()
                .is_some_and(|v| v.leader_id() == &leader && v.is_committed())
        };
        loop {
            let vote = match read_vote(&self.log) {
                Ok(v) => v,
                Err(e) => {
                    items.push(Err(e.into()));
                    break;
                }
            };
            if !valid(&vote) {
                items.push(Err(changed(vote)));
                break;
            }
            if start >= end {
                break;
            }
            match read(&self.log, start, end, REPLICATION_READ_BYTES_MAX) {
                Ok(chunk) if chunk.is_empty() => start = end,
                Ok(chunk) => {
                    start = chunk.last().map_or(end, |e| e.log_id.index + 1);
                    items.extend(chunk.into_iter().map(Ok));
                }
                Err(e) => {
                    items.push(Err(e.into()));
                    break;
                }
            }
        }
        futures::stream::iter(items)
    }
}

impl RaftLogStorage<PartitionRaft> for SegLogStore {
    type LogReader = SegLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, io::Error> {
        let b = self.log.bounds();
        Ok(LogState {
            last_purged_log_id: b.last_purged.map(from_pos),
            last_log_id: b.last.map(from_pos),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        SegLogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.log.save_vote(encode_small(vote)?)?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let committed = committed.as_ref().map(to_pos);
        if self.persist_every_commit {
            self.log.set_committed_now(committed)?;
        } else {
            self.log.set_committed(committed)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.log.committed().map(from_pos))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<PartitionRaft>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries
            .into_iter()
            .map(to_new_entry)
            .collect::<io::Result<Vec<_>>>()?;
        self.log.append(
            entries,
            Some(Box::new(move |r| {
                callback.io_completed(r.map_err(io::Error::from))
            })),
        )?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.log.truncate_after(last_log_id.map(|l| l.index))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.log.purge(to_pos(&log_id))?;
        Ok(())
    }
}
