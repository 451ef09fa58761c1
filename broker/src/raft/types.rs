//! The partition Raft type config and its application data.
//!
//! One Raft entry is one producer batch ([`RecordBatch`]); the log store stamps its Kafka base offset at
//! append, and entries read back carry it. With `leader_id_std`, a log id is just (term, index), which is
//! exactly what the on-disk frame header stores.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record batch as a Raft entry. `payload` is the client batch (zero-copy); `base_offset` is meaningful
/// only on entries read back from the log (0 on entries being proposed).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub payload: Bytes,
    pub record_count: u32,
    pub max_timestamp: i64,
    pub base_offset: u64,
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("bytes", &self.payload.len())
            .field("record_count", &self.record_count)
            .field("max_timestamp", &self.max_timestamp)
            .field("base_offset", &self.base_offset)
            .finish()
    }
}

impl fmt::Display for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch({} records, {} bytes, base {})",
            self.record_count,
            self.payload.len(),
            self.base_offset
        )
    }
}

// serde exists only because openraft's `serde` feature requires it of D. The replication transport writes
// batches as raw frames, never through serde (which would copy the payload).
#[derive(Serialize)]
struct RecordBatchRef<'a> {
    payload: &'a [u8],
    record_count: u32,
    max_timestamp: i64,
    base_offset: u64,
}

#[derive(Deserialize)]
struct RecordBatchOwned {
    payload: Vec<u8>,
    record_count: u32,
    max_timestamp: i64,
    base_offset: u64,
}

impl Serialize for RecordBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RecordBatchRef {
            payload: &self.payload,
            record_count: self.record_count,
            max_timestamp: self.max_timestamp,
            base_offset: self.base_offset,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RecordBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let o = RecordBatchOwned::deserialize(d)?;
        Ok(RecordBatch {
            payload: Bytes::from(o.payload),
            record_count: o.record_count,
            max_timestamp: o.max_timestamp,
            base_offset: o.base_offset,
        })
    }
}

/// The response to an applied entry: the batch's base offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    pub base_offset: u64,
}

openraft::declare_raft_types!(
    /// The type config of every partition's Raft group.
    pub PartitionRaft:
        D = RecordBatch,
        R = Appended,
        NodeId = u64,
        Node = openraft::BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type LogId = openraft::alias::LogIdOf<PartitionRaft>;
pub type Vote = openraft::alias::VoteOf<PartitionRaft>;
pub type Entry = openraft::alias::EntryOf<PartitionRaft>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<PartitionRaft>;
pub type Membership = openraft::Membership<u64, openraft::BasicNode>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<PartitionRaft>;

pub(crate) fn log_id(term: u64, index: u64) -> LogId {
    LogId::new_term_index(term, index)
}

pub(crate) fn to_pos(id: &LogId) -> crate::storage::LogPos {
    crate::storage::LogPos {
        term: id.leader_id.term,
        index: id.index,
    }
}

pub(crate) fn from_pos(p: crate::storage::LogPos) -> LogId {
    log_id(p.term, p.index)
}
