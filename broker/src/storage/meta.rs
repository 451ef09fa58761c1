//! Crash-safe per-partition metadata (`raft_meta`): the Raft vote, the last committed log id, the last
//! purged log id with its log start offset, and the state machine's snapshot blob.
//!
//! Layout: two fixed 4 KiB slots. A write goes to the slot that does NOT hold the newest durable state and is
//! fdatasync'ed before returning, so a crash mid-write leaves the other slot intact. On open the valid slot
//! with the highest sequence number wins.
//!
//! ```text
//! slot: magic u32 | crc32c u32 (over seq..body end) | seq u64 | body_len u32 | body (bincode, serde)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{Result, StorageError};
use super::io::{FileIo, IoFile};

/// Size of one slot; the body must fit in it.
pub const META_SLOT_BYTES: usize = 4096;
const META_MAGIC: u32 = 0x524e_4d54; // "RNMT"
const META_SLOT_HEADER: usize = 20;
/// Largest vote or snapshot blob the metadata accepts.
pub const META_BLOB_MAX: usize = 1024;

/// A Raft log position: (term, index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPos {
    pub term: u64,
    pub index: u64,
}

/// What the metadata file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaBody {
    /// The Raft vote, encoded by the Raft layer.
    pub vote: Option<Vec<u8>>,
    /// The last committed entry (lazily persisted: may lag, never leads the truth).
    pub committed: Option<LogPos>,
    /// The last purged entry.
    pub last_purged: Option<LogPos>,
    /// The first offset still stored (= end offset of `last_purged`).
    pub log_start_offset: u64,
    /// The state machine's current snapshot, encoded by the Raft layer.
    pub snapshot: Option<Vec<u8>>,
}

/// The open metadata file.
#[derive(Debug)]
pub struct MetaFile {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    seq: u64,
    /// Slot holding the newest durable state (the next write goes to the other one).
    current_slot: usize,
    pub body: MetaBody,
}

fn decode_slot(b: &[u8]) -> Option<(u64, MetaBody)> {
    if b.len() < META_SLOT_HEADER {
        return None;
    }
    let magic = u32::from_le_bytes(b[0..4].try_into().ok()?);
    if magic != META_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(b[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let len = u32::from_le_bytes(b[16..20].try_into().ok()?) as usize;
    let end = META_SLOT_HEADER.checked_add(len)?;
    if end > b.len() || crc32c::crc32c(&b[8..end]) != crc {
        return None;
    }
    let (body, _) = bincode::serde::decode_from_slice::<MetaBody, _>(
        &b[META_SLOT_HEADER..end],
        bincode::config::standard().with_limit::<META_SLOT_BYTES>(),
    )
    .ok()?;
    Some((seq, body))
}

impl MetaFile {
    /// Opens (or creates) the metadata file in `dir`.
    pub fn open(io: &dyn FileIo, dir: &Path) -> Result<MetaFile> {
        let path = dir.join("raft_meta");
        let file = io
            .open(&path, true)
            .map_err(|e| StorageError::io("open", &path, &e))?;
        let len = file
            .len()
            .map_err(|e| StorageError::io("stat", &path, &e))?;
        let mut best: Option<(u64, usize, MetaBody)> = None;
        let mut any_bytes = false;
        for slot in 0..2 {
            let at = (slot * META_SLOT_BYTES) as u64;
            if len < at + META_SLOT_HEADER as u64 {
                continue;
            }
            let n = ((len - at) as usize).min(META_SLOT_BYTES);
            let mut buf = vec![0u8; n];
            file.read_exact_at(&mut buf, at)
                .map_err(|e| StorageError::io("read", &path, &e))?;
            any_bytes |= buf.iter().any(|&x| x != 0);
            if let Some((seq, body)) = decode_slot(&buf) {
                if best.as_ref().is_none_or(|(s, _, _)| seq > *s) {
                    best = Some((seq, slot, body));
                }
            }
        }
        match best {
            Some((seq, slot, body)) => Ok(MetaFile {
                file,
                path,
                seq,
                current_slot: slot,
                body,
            }),
            None if any_bytes => Err(StorageError::corrupt(
                &path,
                0,
                "both metadata slots are damaged",
            )),
            None => Ok(MetaFile {
                file,
                path,
                seq: 0,
                current_slot: 1,
                body: MetaBody::default(),
            }),
        }
    }

    /// Writes `self.body` to the spare slot and fdatasyncs it.
    pub fn persist(&mut self) -> Result<()> {
        if self
            .body
            .vote
            .as_ref()
            .is_some_and(|v| v.len() > META_BLOB_MAX)
            || self
                .body
                .snapshot
                .as_ref()
                .is_some_and(|v| v.len() > META_BLOB_MAX)
        {
            return Err(StorageError::Invalid(format!(
                "metadata blob larger than {META_BLOB_MAX} bytes"
            )));
        }
        let body = bincode::serde::encode_to_vec(&self.body, bincode::config::standard())
            .map_err(|e| StorageError::Invalid(format!("encoding metadata: {e}")))?;
        if body.len() + META_SLOT_HEADER > META_SLOT_BYTES {
            return Err(StorageError::Invalid(
                "metadata does not fit its slot".into(),
            ));
        }
        let seq = self.seq + 1;
        let mut buf = vec![0u8; META_SLOT_HEADER + body.len()];
        buf[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
        buf[8..16].copy_from_slice(&seq.to_le_bytes());
        buf[16..20].copy_from_slice(&(body.len() as u32).to_le_bytes());
        buf[META_SLOT_HEADER..].copy_from_slice(&body);
        let crc = crc32c::crc32c(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let slot = 1 - self.current_slot;
        let at = (slot * META_SLOT_BYTES) as u64;
        self.file
            .write_all_vectored_at(&[&buf], at)
            .map_err(|e| StorageError::io("write", &self.path, &e))?;
        self.file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &self.path, &e))?;
        self.seq = seq;
        self.current_slot = slot;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::RealIo;

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaFile::open(&RealIo, dir.path()).unwrap();
        assert_eq!(m.body, MetaBody::default());
        m.body.vote = Some(vec![1, 2, 3]);
        m.persist().unwrap();
        m.body.committed = Some(LogPos { term: 2, index: 9 });
        m.persist().unwrap();
        let slot = m.current_slot;
        drop(m);
        let m = MetaFile::open(&RealIo, dir.path()).unwrap();
        assert_eq!(m.body.committed, Some(LogPos { term: 2, index: 9 }));
        // Tear the newest slot: the older state comes back.
        let f = RealIo.open(&dir.path().join("raft_meta"), false).unwrap();
        f.write_all_vectored_at(&[&[0xff; 7]], (slot * META_SLOT_BYTES + 9) as u64)
            .unwrap();
        let m = MetaFile::open(&RealIo, dir.path()).unwrap();
        assert_eq!(m.body.vote, Some(vec![1, 2, 3]));
        assert_eq!(m.body.committed, None);
        // Both slots damaged: a clear error, not a silent reset.
        f.write_all_vectored_at(&[&[0xff; 7]], ((1 - slot) * META_SLOT_BYTES + 9) as u64)
            .unwrap();
        assert!(matches!(
            MetaFile::open(&RealIo, dir.path()),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
