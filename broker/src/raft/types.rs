//! The partition Raft type config and its application data.
//!
//! One Raft entry is one producer batch ([`RecordBatch`]); the log store stamps its Kafka base offset at
//! append, and entries read back carry it. With `leader_id_std`, a log id is just (term, index), which is
//! exactly what the on-disk frame header stores.

use std::fmt;

use bytes::Bytes;
use serde::de::Error as _;
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

// serde exists because openraft's `serde` feature requires it of D, and the replication transport encodes
// AppendEntries with bincode: the payload goes as one length-prefixed byte string (`as_bytes`: a memcpy, not
// serde's default element-by-element sequence, which cost the leader ~40 % of its CPU under load). It is
// still one copy per follower; a raw-frame transport would avoid it.
#[derive(Serialize)]
struct RecordBatchRef<'a> {
    #[serde(with = "as_bytes")]
    payload: &'a [u8],
    record_count: u32,
    max_timestamp: i64,
    base_offset: u64,
}

#[derive(Deserialize)]
struct RecordBatchOwned {
    #[serde(with = "as_bytes")]
    payload: Vec<u8>,
    record_count: u32,
    max_timestamp: i64,
    base_offset: u64,
}

/// A byte string as serde bytes (bincode: length + raw bytes) rather than a sequence of u8 values.
mod as_bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
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
        // The network boundary of a replica: the log store derives frame CRCs from the batch's own CRC,
        // so it is checked here (one pass), and a batch damaged in transit fails the RPC (the leader
        // sends it again) rather than reaching the log.
        runnel_protocol::batch::check_crc(&o.payload).map_err(D::Error::custom)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn real_batch() -> Bytes {
        let mut b = runnel_protocol::batch::RecordBatchBuilder::new(16 * 1024);
        let v: Vec<u8> = (0..=255u8).cycle().take(1_000).collect();
        for i in 0..10 {
            b.push(i, None, &v, &[]);
        }
        b.finish()
    }

    #[test]
    fn a_batch_encodes_as_one_byte_string_and_round_trips() {
        let payload = real_batch();
        let b = RecordBatch {
            payload: payload.clone(),
            record_count: 10,
            max_timestamp: 9,
            base_offset: 9,
        };
        let enc = crate::raft::network::encode(&b).unwrap();
        // Payload + a few bytes of length and fields: no per-element overhead.
        assert!(enc.len() < payload.len() + 32, "{} bytes", enc.len());
        let (back, _): (RecordBatch, usize) =
            bincode::serde::decode_from_slice(&enc, bincode::config::standard()).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn a_batch_damaged_in_transit_fails_to_decode() {
        let b = RecordBatch {
            payload: real_batch(),
            record_count: 10,
            max_timestamp: 9,
            base_offset: 9,
        };
        let mut enc = crate::raft::network::encode(&b).unwrap().to_vec();
        let n = enc.len();
        enc[n - 100] ^= 0x10; // a byte of the last record's value
        let r: Result<(RecordBatch, usize), _> =
            bincode::serde::decode_from_slice(&enc, bincode::config::standard());
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("CRC mismatch"), "{e}");
    }
}
