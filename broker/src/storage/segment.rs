//! One segment: a preallocated `.log` file of frames (see [`super::frame`]) named by its zero-padded base
//! offset, read through a read-only map, plus its sparse offset index (`.index`) and time index
//! (`.timeindex`), kept in memory and written to their files when the segment is sealed or the log closes.
//!
//! Invariants: frames below `end` were fully written and form a chain (following skip frames) whose entries
//! have consecutive Raft indexes, non-decreasing terms and dense offsets; `high_water` is at least every
//! byte ever written, and frames written after a truncation start at or past it; index entries point at
//! real (non-skip) frames in ascending order of index, offset and position.
//!
//! CRC policy: a frame's payload CRC is checked once per process, when the bytes come from the disk rather
//! than from this process: frames at or past `trusted_from` were written by this process (their CRC was
//! derived from a batch CRC checked at the network boundary) or CRC-checked by the recovery scan at open,
//! so reads skip the payload pass there (headers are always checked). Other frames (sealed segments whose
//! indexes were trusted at open) are checked on every read, as before. Consumers check batch CRCs end to
//! end, as in Kafka, whose brokers never check on reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::error::{Result, StorageError};
use super::frame::{read_slot, FrameHeader, FrameKind, Slot};
use super::io::{FileIo, IoFile};
use super::meta::LogPos;

/// Bytes of one offset-index or time-index record in its file.
const INDEX_RECORD: usize = 16;

/// A sparse offset-index entry: the frame at `pos` holds Raft `index` and starts at Kafka `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub index: u64,
    pub offset: u64,
    pub pos: u64,
}

/// A sparse time-index entry: every data frame up to and including the one at `pos` has a max timestamp
/// of at most `max_ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub max_ts: i64,
    pub pos: u64,
}

pub(crate) fn segment_file_name(base_offset: u64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// Parses `00000000000000000042.log` into 42.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<dyn IoFile>,
    /// Map of `[0, alloc_len)`; replaced (never shrunk) when the file grows.
    pub map: Bytes,
    pub alloc_len: u64,
    /// Where the next frame goes; frames below it are complete.
    pub end: u64,
    /// At least every byte ever written to this file.
    pub high_water: u64,
    pub first: Option<LogPos>,
    pub last: Option<LogPos>,
    /// One past the last offset of this segment's entries.
    pub end_offset: u64,
    /// The first data entry (index, base offset), if any.
    pub first_data: Option<(u64, u64)>,
    /// Highest record timestamp of any data frame (i64::MIN when none).
    pub max_ts: i64,
    pub index: Vec<IndexEntry>,
    pub times: Vec<TimeEntry>,
    pub bytes_since_index: u64,
    /// Wall-clock ms when this segment started taking appends (for roll-by-age).
    pub created_ms: i64,
    /// Frames at or past this position skip the payload CRC on reads (see the module's CRC policy):
    /// 0 for a segment this process created or fully scanned, `u64::MAX` otherwise.
    pub trusted_from: u64,
}

/// Where a recovery scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanStop {
    /// Clean end marker (or no room for another header).
    End,
    /// An invalid or out-of-sequence frame at `pos`.
    Bad { pos: u64, reason: String },
    /// The callback asked to stop.
    Halted,
}

/// What the next entry of a chain must look like.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect {
    pub index: Option<u64>,
    pub offset: Option<u64>,
    pub min_term: u64,
}

impl Expect {
    /// No expectation: any chain is accepted (used by readers, whose chains were checked at write time).
    pub const ANY: Expect = Expect {
        index: None,
        offset: None,
        min_term: 0,
    };
}

impl Segment {
    pub fn paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(segment_file_name(base_offset, "log")),
            dir.join(segment_file_name(base_offset, "index")),
            dir.join(segment_file_name(base_offset, "timeindex")),
        )
    }

    /// Creates a new, empty segment file preallocated to `prealloc` bytes.
    pub fn create(
        io: &dyn FileIo,
        dir: &Path,
        base_offset: u64,
        prealloc: u64,
        now_ms: i64,
    ) -> Result<Segment> {
        let (path, _, _) = Segment::paths(dir, base_offset);
        let file = io
            .open(&path, true)
            .map_err(|e| StorageError::io("create", &path, &e))?;
        file.allocate(prealloc)
            .map_err(|e| StorageError::io("fallocate", &path, &e))?;
        let alloc_len = file
            .len()
            .map_err(|e| StorageError::io("stat", &path, &e))?;
        let map = file
            .map(alloc_len as usize)
            .map_err(|e| StorageError::io("mmap", &path, &e))?;
        io.sync_dir(dir)
            .map_err(|e| StorageError::io("fsync dir", dir, &e))?;
        Ok(Segment {
            base_offset,
            path,
            file,
            map,
            alloc_len,
            end: 0,
            high_water: 0,
            first: None,
            last: None,
            end_offset: base_offset,
            first_data: None,
            max_ts: i64::MIN,
            index: Vec::new(),
            times: Vec::new(),
            bytes_since_index: 0,
            created_ms: now_ms,
            trusted_from: 0,
        })
    }

    /// Opens an existing segment file and maps it whole. Frames are not scanned yet.
    pub fn open_file(
        io: &dyn FileIo,
        dir: &Path,
        base_offset: u64,
        now_ms: i64,
    ) -> Result<Segment> {
        let (path, _, _) = Segment::paths(dir, base_offset);
        let file = io
            .open(&path, false)
            .map_err(|e| StorageError::io("open", &path, &e))?;
        let alloc_len = file
            .len()
            .map_err(|e| StorageError::io("stat", &path, &e))?;
        let map = file
            .map(alloc_len as usize)
            .map_err(|e| StorageError::io("mmap", &path, &e))?;
        Ok(Segment {
            base_offset,
            path,
            file,
            map,
            alloc_len,
            end: 0,
            high_water: alloc_len,
            first: None,
            last: None,
            end_offset: base_offset,
            first_data: None,
            max_ts: i64::MIN,
            index: Vec::new(),
            times: Vec::new(),
            bytes_since_index: 0,
            created_ms: now_ms,
            trusted_from: u64::MAX,
        })
    }

    /// Grows the file (preallocated, in steps of at least `step`) so that `needed` bytes fit, and remaps.
    pub fn ensure_capacity(&mut self, needed: u64, step: u64) -> Result<()> {
        if needed <= self.alloc_len {
            return Ok(());
        }
        let new_len = needed.max(self.alloc_len + step);
        self.file
            .allocate(new_len)
            .map_err(|e| StorageError::io("fallocate", &self.path, &e))?;
        let len = self
            .file
            .len()
            .map_err(|e| StorageError::io("stat", &self.path, &e))?;
        self.map = self
            .file
            .map(len as usize)
            .map_err(|e| StorageError::io("mmap", &self.path, &e))?;
        self.alloc_len = len;
        Ok(())
    }

    /// Reads the slot at `pos` (limited to `limit`), checking the payload CRC unless the frame is in the
    /// trusted range (see the module's CRC policy).
    pub fn slot(&self, pos: u64, limit: u64) -> Slot {
        if pos >= self.trusted_from {
            super::frame::read_slot_unverified(&self.map, pos, limit)
        } else {
            read_slot(&self.map, pos, limit)
        }
    }

    /// The header of the entry frame with Raft `index`, walking headers from the sparse index (following
    /// skips) without checking payload CRCs: see [`super::frame::read_slot_unverified`].
    pub fn header_for_index_unverified(&self, index: u64) -> Option<FrameHeader> {
        let mut pos = self.pos_for_index(index);
        loop {
            if pos >= self.end {
                return None;
            }
            let Slot::Frame(h) = super::frame::read_slot_unverified(&self.map, pos, self.end)
            else {
                return None;
            };
            if h.kind == FrameKind::Skip {
                let target = h.aux as u64;
                if target <= pos {
                    return None;
                }
                pos = target;
                continue;
            }
            if h.index >= index {
                return (h.index == index).then_some(h);
            }
            pos += h.frame_len();
        }
    }

    /// The payload of the frame at `pos` as a zero-copy slice of the map.
    pub fn payload(&self, pos: u64, h: &FrameHeader) -> Bytes {
        let start = pos as usize + super::frame::FRAME_HEADER_LEN;
        self.map.slice(start..start + h.payload_len as usize)
    }

    /// Records a frame just placed at `pos` in the in-memory indexes and bookkeeping.
    pub fn note_frame(&mut self, pos: u64, h: &FrameHeader, index_interval: u64) {
        let lp = LogPos {
            term: h.term,
            index: h.index,
        };
        if self.first.is_none() {
            self.first = Some(lp);
        }
        self.last = Some(lp);
        self.end_offset = h.end_offset();
        if h.kind == FrameKind::Data {
            if self.first_data.is_none() {
                self.first_data = Some((h.index, h.base_offset));
            }
            self.max_ts = self.max_ts.max(h.aux);
        }
        self.bytes_since_index += h.frame_len();
        if self.bytes_since_index >= index_interval || self.index.is_empty() {
            self.bytes_since_index = 0;
            self.index.push(IndexEntry {
                index: h.index,
                offset: h.base_offset,
                pos,
            });
            self.times.push(TimeEntry {
                max_ts: self.max_ts,
                pos,
            });
        }
    }

    /// Walks the chain from `pos` (following skips) with CRC checks and sequence checks against `expect`,
    /// calling `on_frame` for each entry frame (it returns `false` to stop), up to `limit`. Returns where it
    /// stopped: the position after the last good frame, or of the frame that halted the walk.
    pub fn scan(
        &self,
        mut pos: u64,
        limit: u64,
        mut expect: Expect,
        mut on_frame: impl FnMut(u64, &FrameHeader) -> bool,
    ) -> (u64, ScanStop) {
        let mut hops = 0u64;
        loop {
            if pos >= limit {
                return (pos, ScanStop::End);
            }
            match self.slot(pos, limit) {
                Slot::End => return (pos, ScanStop::End),
                Slot::Bad(r) => {
                    return (
                        pos,
                        ScanStop::Bad {
                            pos,
                            reason: r.to_string(),
                        },
                    )
                }
                Slot::Frame(h) => {
                    let bad = |reason: String| (pos, ScanStop::Bad { pos, reason });
                    if expect.index.is_some_and(|i| h.index != i) {
                        return bad(format!(
                            "frame index {} where {} was expected",
                            h.index,
                            expect.index.unwrap_or_default()
                        ));
                    }
                    if expect.offset.is_some_and(|o| h.base_offset != o) {
                        return bad(format!(
                            "frame offset {} where {} was expected",
                            h.base_offset,
                            expect.offset.unwrap_or_default()
                        ));
                    }
                    if h.term < expect.min_term {
                        return bad(format!(
                            "frame term {} below the previous term {}",
                            h.term, expect.min_term
                        ));
                    }
                    if h.kind == FrameKind::Skip {
                        let target = h.aux as u64;
                        hops += 1;
                        if target <= pos || hops > 1_000_000 {
                            return bad("skip frame does not move forward".into());
                        }
                        pos = target;
                        continue;
                    }
                    if !on_frame(pos, &h) {
                        return (pos, ScanStop::Halted);
                    }
                    expect = Expect {
                        index: Some(h.index + 1),
                        offset: Some(h.end_offset()),
                        min_term: h.term,
                    };
                    pos += h.frame_len();
                }
            }
        }
    }

    /// After a bad frame at `bad_pos` where index `expected_index` should have been: is there a valid frame
    /// further on that was written after `expected_index` was already durable? Then the bad bytes were
    /// durable once: corruption, not a torn tail.
    pub fn durable_frame_after(
        &self,
        bad_pos: u64,
        limit: u64,
        expected_index: u64,
    ) -> Option<u64> {
        let mut pos = bad_pos + super::frame::FRAME_ALIGN;
        while pos + super::frame::FRAME_HEADER_LEN as u64 <= limit {
            if let Slot::Frame(h) = self.slot(pos, limit) {
                if h.index >= expected_index && h.durable_end > expected_index {
                    return Some(pos);
                }
            }
            pos += super::frame::FRAME_ALIGN;
        }
        None
    }

    /// Position of the last index entry at or before Raft `index` (0 if none).
    pub fn pos_for_index(&self, index: u64) -> u64 {
        let i = self.index.partition_point(|e| e.index <= index);
        if i == 0 {
            0
        } else {
            self.index[i - 1].pos
        }
    }

    /// Position of the last index entry whose frame starts at or before Kafka `offset` (0 if none).
    pub fn pos_for_offset(&self, offset: u64) -> u64 {
        let i = self.index.partition_point(|e| e.offset <= offset);
        if i == 0 {
            0
        } else {
            self.index[i - 1].pos
        }
    }

    /// A position from which the first data frame with max timestamp >= `ts` can be found by scanning.
    pub fn pos_for_timestamp(&self, ts: i64) -> u64 {
        // Entries whose max_ts < ts cover only frames older than the target: start after the last of them.
        let i = self.times.partition_point(|e| e.max_ts < ts);
        if i == 0 {
            0
        } else {
            self.times[i - 1].pos
        }
    }

    /// Drops index entries for frames after Raft `index`.
    pub fn truncate_indexes(&mut self, index: u64) {
        let keep = self.index.partition_point(|e| e.index <= index);
        let keep_pos = self.index.get(keep).map(|e| e.pos);
        self.index.truncate(keep);
        if let Some(p) = keep_pos {
            let t = self.times.partition_point(|e| e.pos < p);
            self.times.truncate(t);
        }
        self.bytes_since_index = 0;
    }

    /// Writes both index files from memory and syncs them (called when sealing or closing).
    pub fn write_indexes(&self, io: &dyn FileIo, dir: &Path) -> Result<()> {
        let (_, ipath, tpath) = Segment::paths(dir, self.base_offset);
        let mut ib = Vec::with_capacity(self.index.len() * INDEX_RECORD);
        for e in &self.index {
            ib.extend_from_slice(&e.index.to_le_bytes());
            ib.extend_from_slice(&((e.offset - self.base_offset) as u32).to_le_bytes());
            ib.extend_from_slice(&(e.pos as u32).to_le_bytes());
        }
        let mut tb = Vec::with_capacity(self.times.len() * INDEX_RECORD);
        for e in &self.times {
            tb.extend_from_slice(&e.max_ts.to_le_bytes());
            tb.extend_from_slice(&(e.pos as u32).to_le_bytes());
            tb.extend_from_slice(&0u32.to_le_bytes());
        }
        for (path, bytes) in [(ipath, ib), (tpath, tb)] {
            let f = io
                .open(&path, true)
                .map_err(|e| StorageError::io("open", &path, &e))?;
            f.write_all_vectored_at(&[&bytes], 0)
                .map_err(|e| StorageError::io("write", &path, &e))?;
            f.set_len(bytes.len() as u64)
                .map_err(|e| StorageError::io("truncate", &path, &e))?;
            f.sync_data()
                .map_err(|e| StorageError::io("fdatasync", &path, &e))?;
        }
        Ok(())
    }

    /// Loads both index files; `None` when missing or not plausible (then the caller rebuilds by scanning).
    pub fn load_indexes(
        &self,
        io: &dyn FileIo,
        dir: &Path,
    ) -> Option<(Vec<IndexEntry>, Vec<TimeEntry>)> {
        let (_, ipath, tpath) = Segment::paths(dir, self.base_offset);
        let read = |p: &Path| -> Option<Vec<u8>> {
            let f = io.open(p, false).ok()?;
            let len = f.len().ok()? as usize;
            if !len.is_multiple_of(INDEX_RECORD) || len > self.alloc_len as usize {
                return None;
            }
            let mut b = vec![0u8; len];
            f.read_exact_at(&mut b, 0).ok()?;
            Some(b)
        };
        let ib = read(&ipath)?;
        let tb = read(&tpath)?;
        let mut index = Vec::with_capacity(ib.len() / INDEX_RECORD);
        for r in ib.chunks_exact(INDEX_RECORD) {
            let e = IndexEntry {
                index: u64::from_le_bytes(r[0..8].try_into().ok()?),
                offset: self.base_offset + u32::from_le_bytes(r[8..12].try_into().ok()?) as u64,
                pos: u32::from_le_bytes(r[12..16].try_into().ok()?) as u64,
            };
            if let Some(p) = index.last() {
                let p: &IndexEntry = p;
                if e.index <= p.index || e.offset < p.offset || e.pos <= p.pos {
                    return None;
                }
            }
            index.push(e);
        }
        let mut times = Vec::with_capacity(tb.len() / INDEX_RECORD);
        for r in tb.chunks_exact(INDEX_RECORD) {
            let e = TimeEntry {
                max_ts: i64::from_le_bytes(r[0..8].try_into().ok()?),
                pos: u32::from_le_bytes(r[8..12].try_into().ok()?) as u64,
            };
            if let Some(p) = times.last() {
                let p: &TimeEntry = p;
                if e.max_ts < p.max_ts || e.pos <= p.pos {
                    return None;
                }
            }
            times.push(e);
        }
        if index.is_empty() || index.len() != times.len() {
            return None;
        }
        Some((index, times))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.index"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
    }
}
