//! The partition log: an ordered set of segments that is at once the Raft log (entries addressed by Raft
//! index) and the Kafka log (data entries addressed by offset). Appends stamp each entry's base offset from
//! the previous entry, so every replica with the same entries computes the same offsets.
//!
//! Invariants:
//! - Entries are contiguous by Raft index from `last_purged + 1` to `last`, with non-decreasing terms;
//!   offsets are dense: each entry's base offset is the previous entry's end offset.
//! - An append's completion callback runs only after an fdatasync covering it; a failed fdatasync stops
//!   the log for good (every later write fails with [`StorageError::Stopped`]).
//! - Truncation is logical (a skip frame, no `ftruncate` of mapped files); purge records the new log start
//!   durably before it deletes whole segments, and segments are deleted nowhere else.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::error::{Result, StorageError};
use super::flusher::StorageContext;
use super::frame::{align, FrameHeader, FrameKind, Slot, FRAME_HEADER_LEN, FRAME_PAYLOAD_MAX};
use super::meta::{LogPos, MetaFile};
use super::segment::{parse_segment_name, Expect, ScanStop, Segment};

/// Smallest accepted `segment_bytes`.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest accepted `segment_bytes` (positions in index files are u32).
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// Segment files grow (preallocated) in steps of at most this.
pub const PREALLOC_STEP_BYTES: u64 = 16 * 1024 * 1024;
/// What a new segment file is preallocated to before its first write.
pub const SEGMENT_FIRST_ALLOC_BYTES: u64 = 1024 * 1024;
/// The committed log id is persisted (with an fdatasync) at most this often; it may lag, never lead.
pub const COMMITTED_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

const ZERO_SLOT: [u8; FRAME_HEADER_LEN] = [0u8; FRAME_HEADER_LEN];
const PAD: [u8; 8] = [0u8; 8];

/// Per-partition log settings (topic configs map onto these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll the active segment at this size; default 128 MiB.
    pub segment_bytes: u64,
    /// Roll the active segment after this age; default 7 days.
    pub segment_ms: u64,
    /// Delete old segments beyond this many bytes; default None (unlimited).
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this; default Some(7 days).
    pub retention_ms: Option<u64>,
    /// Sparse index granularity; default 4096.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
        LogConfig {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: WEEK_MS,
            retention_bytes: None,
            retention_ms: Some(WEEK_MS),
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    /// Checks the settings against the named limits.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(StorageError::Invalid(format!(
                "segment_bytes {} outside [{SEGMENT_BYTES_MIN}, {SEGMENT_BYTES_MAX}]",
                self.segment_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(StorageError::Invalid(
                "index_interval_bytes must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Blank,
    Data,
    Membership,
}

impl EntryKind {
    fn frame_kind(self) -> FrameKind {
        match self {
            EntryKind::Blank => FrameKind::Blank,
            EntryKind::Data => FrameKind::Data,
            EntryKind::Membership => FrameKind::Membership,
        }
    }

    fn from_frame(k: FrameKind) -> Option<EntryKind> {
        match k {
            FrameKind::Blank => Some(EntryKind::Blank),
            FrameKind::Data => Some(EntryKind::Data),
            FrameKind::Membership => Some(EntryKind::Membership),
            FrameKind::Skip => None,
        }
    }
}

/// An entry to append. For data entries `payload` is the client's record batch; its first 8 bytes (the
/// base offset field) are replaced by the stamped offset as it is written, without copying the batch, and
/// its CRC must already have been checked (`batch::validate` or `batch::check_crc` where it came off the
/// network): the frame CRC is derived from it, not computed over the payload again.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub payload: Bytes,
    pub record_count: u32,
    pub max_timestamp: i64,
}

/// An entry read back: `payload` is a zero-copy slice of the segment map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub base_offset: u64,
    pub record_count: u32,
    pub max_timestamp: i64,
    pub payload: Bytes,
}

impl StoredEntry {
    /// One past the last offset of this entry (its base offset for non-data entries).
    pub fn end_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }
}

/// A snapshot of the log's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBounds {
    /// The last purged entry.
    pub last_purged: Option<LogPos>,
    /// The last entry present, or `last_purged` when none is.
    pub last: Option<LogPos>,
    /// The first offset still stored.
    pub log_start_offset: u64,
    /// The offset the next data entry will get.
    pub next_offset: u64,
}

/// Called once an append is durable (`Ok`) or its flush failed.
pub type DurableCallback = Box<dyn FnOnce(Result<()>) + Send>;

#[derive(Debug)]
struct State {
    /// The settings in force; [`PartitionLog::set_config`] replaces them at runtime.
    config: LogConfig,
    segments: Vec<Segment>,
    meta: MetaFile,
    /// The last entry present (or `meta.last_purged` when none).
    last: Option<LogPos>,
    next_offset: u64,
    last_committed_persist: Option<Instant>,
    committed_dirty: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct Durable {
    /// Bumped by every truncation; flush completions of older generations do not move `end`.
    generation: u64,
    /// One past the last Raft index known durable.
    end: u64,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    ctx: StorageContext,
    state: RwLock<State>,
    durable: Mutex<Durable>,
    stopped: Mutex<Option<String>>,
    /// (index, log start offset) announced by an installed snapshot, for a purge past the last entry.
    purge_hint: Mutex<Option<(u64, u64)>>,
    /// Segments and bytes deleted by purges since the log was opened (for metrics).
    purged_segments: AtomicU64,
    purged_bytes: AtomicU64,
}

/// Sizes of the log for metrics: segments present, bytes of entries in them, bytes allocated on disk for
/// their `.log` files (segments are preallocated), and what purges deleted since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: u64,
    pub log_bytes: u64,
    pub allocated_bytes: u64,
    pub purged_segments: u64,
    pub purged_bytes: u64,
}

/// The partition log. Cheap to clone; all clones share one state.
#[derive(Clone, Debug)]
pub struct PartitionLog {
    inner: Arc<Inner>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn check_running(&self) -> Result<()> {
        match lock(&self.stopped).as_ref() {
            Some(m) => Err(StorageError::Stopped(m.clone())),
            None => Ok(()),
        }
    }

    /// Stops the log for good after a failed write or sync.
    fn stop(&self, why: &StorageError) {
        let mut s = lock(&self.stopped);
        if s.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %why, "partition log stopped");
            *s = Some(why.to_string());
        }
    }
}

/// How much a segment file grows at a time under `config`.
fn prealloc_step(config: &LogConfig) -> u64 {
    PREALLOC_STEP_BYTES.min(align(config.segment_bytes))
}

impl State {
    fn last_purged(&self) -> Option<LogPos> {
        self.meta.body.last_purged
    }

    /// First index readable (entries at or below `last_purged` are gone).
    fn first_readable(&self) -> u64 {
        self.last_purged().map_or(0, |p| p.index + 1)
    }

    fn has_entries(&self) -> bool {
        match (self.last, self.last_purged()) {
            (None, _) => false,
            (Some(l), Some(p)) => l.index > p.index,
            (Some(_), None) => true,
        }
    }

    /// The segment holding Raft `index`, if present.
    fn segment_for_index(&self, index: u64) -> Option<usize> {
        let i = self
            .segments
            .partition_point(|s| s.first.is_some_and(|f| f.index <= index));
        let i = i.checked_sub(1)?;
        let s = &self.segments[i];
        s.last.filter(|l| l.index >= index).map(|_| i)
    }

    /// Finds the frame of Raft `index`: (segment, position, header).
    fn locate(&self, index: u64) -> Result<Option<(usize, u64, FrameHeader)>> {
        let Some(si) = self.segment_for_index(index) else {
            return Ok(None);
        };
        let seg = &self.segments[si];
        let mut found = None;
        let (pos, stop) = seg.scan(seg.pos_for_index(index), seg.end, Expect::ANY, |p, h| {
            if h.index == index {
                found = Some((p, *h));
                return false;
            }
            h.index < index
        });
        if let ScanStop::Bad { reason, .. } = stop {
            return Err(StorageError::corrupt(&seg.path, pos, reason));
        }
        Ok(found.map(|(p, h)| (si, p, h)))
    }
}

impl PartitionLog {
    /// Opens the log in `dir` (created if missing), running crash recovery.
    pub fn open(dir: &Path, config: LogConfig, ctx: StorageContext) -> Result<PartitionLog> {
        config.validate()?;
        let io = ctx.io().clone();
        io.create_dir_all(dir)
            .map_err(|e| StorageError::io("mkdir", dir, &e))?;
        let meta = MetaFile::open(io.as_ref(), dir)?;
        let mut bases: Vec<u64> = io
            .list_dir(dir)
            .map_err(|e| StorageError::io("list", dir, &e))?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .collect();
        bases.sort_unstable();
        let now = now_ms();
        let last_purged = meta.body.last_purged;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let n = bases.len();
        for (i, base) in bases.iter().copied().enumerate() {
            let mut seg = Segment::open_file(io.as_ref(), dir, base, now)?;
            let expect = match segments.last() {
                Some(prev) => Expect {
                    index: prev.last.map(|l| l.index + 1),
                    offset: Some(prev.end_offset),
                    min_term: prev.last.map_or(0, |l| l.term),
                },
                None => Expect {
                    index: None,
                    offset: Some(base),
                    min_term: 0,
                },
            };
            if expect.offset != Some(base) {
                return Err(StorageError::corrupt(
                    &seg.path,
                    0,
                    format!(
                        "segment starts at offset {base} but the previous one ends at {:?}",
                        expect.offset
                    ),
                ));
            }
            let is_last = i + 1 == n;
            if is_last {
                recover_active(&mut seg, expect, config.index_interval_bytes as u64)?;
            } else {
                recover_sealed(io.as_ref(), dir, &mut seg, expect, &config)?;
            }
            segments.push(seg);
        }
        // Redo an interrupted purge: whole segments at or below last_purged go.
        if let Some(p) = last_purged {
            while segments
                .first()
                .is_some_and(|s| s.last.is_none_or(|l| l.index <= p.index))
            {
                let s = segments.remove(0);
                remove_segment_files(io.as_ref(), dir, &s)?;
            }
            if let Some(f) = segments.first().and_then(|s| s.first) {
                if f.index > p.index + 1 {
                    return Err(StorageError::corrupt(
                        &segments[0].path,
                        0,
                        format!(
                            "log starts at index {} but only {} was purged",
                            f.index, p.index
                        ),
                    ));
                }
            }
        }
        // Drop trailing empty segments that no entry reaches (e.g. created just before a crash).
        while segments.len() > 1 && segments.last().is_some_and(|s| s.first.is_none()) {
            if let Some(s) = segments.pop() {
                remove_segment_files(io.as_ref(), dir, &s)?;
            }
        }
        let last_entry = segments.iter().rev().find_map(|s| s.last);
        let (last, next_offset) = match (last_entry, last_purged) {
            (Some(l), Some(p)) if l.index > p.index => (Some(l), segments_end_offset(&segments)),
            (Some(l), None) => (Some(l), segments_end_offset(&segments)),
            (_, p) => (p, meta.body.log_start_offset),
        };
        if let Some(s) = segments.last() {
            // Whatever survived is made durable now, so durable_end hints start from the truth.
            s.file
                .sync_data()
                .map_err(|e| StorageError::io("fdatasync", &s.path, &e))?;
        }
        let durable_end = last.map_or(0, |l| l.index + 1);
        let state = State {
            config,
            segments,
            meta,
            last,
            next_offset,
            last_committed_persist: None,
            committed_dirty: false,
            closed: false,
        };
        tracing::debug!(dir = %dir.display(), last = ?state.last, next_offset, "partition log opened");
        Ok(PartitionLog {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                ctx,
                state: RwLock::new(state),
                durable: Mutex::new(Durable {
                    generation: 0,
                    end: durable_end,
                }),
                stopped: Mutex::new(None),
                purge_hint: Mutex::new(None),
                purged_segments: AtomicU64::new(0),
                purged_bytes: AtomicU64::new(0),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The settings in force.
    pub fn config(&self) -> LogConfig {
        self.inner.read().config.clone()
    }

    /// Replaces the settings at runtime. The next append rolls and sizes segments by the new
    /// `segment_bytes` / `segment_ms`; the next retention check uses the new retention; existing segments
    /// are not rewritten. Fails (changing nothing) when `config` is invalid.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        let mut st = self.inner.write();
        if st.config != config {
            tracing::debug!(dir = %self.inner.dir.display(), old = ?st.config, new = ?config, "log config changed");
            st.config = config;
        }
        Ok(())
    }

    /// `Some(reason)` once a failed write or sync stopped the log.
    pub fn stopped(&self) -> Option<String> {
        lock(&self.inner.stopped).clone()
    }

    /// The log's bounds.
    pub fn bounds(&self) -> LogBounds {
        let st = self.inner.read();
        LogBounds {
            last_purged: st.last_purged(),
            last: st.last,
            log_start_offset: st.meta.body.log_start_offset,
            next_offset: st.next_offset,
        }
    }

    /// Appends `entries` (consecutive Raft indexes following the last entry). They are readable when this
    /// returns; `on_durable` runs once they are durable. On error a prefix of `entries` may have been
    /// appended (not yet durable), and `on_durable` is dropped without being called.
    pub fn append(
        &self,
        entries: impl IntoIterator<Item = NewEntry>,
        on_durable: Option<DurableCallback>,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.check_running()?;
        let entries: Vec<NewEntry> = entries.into_iter().collect();
        let mut st = inner.write();
        if st.closed {
            return Err(StorageError::Stopped("log is closed".into()));
        }
        // Validate the whole call first, so a contract violation changes nothing.
        let mut expect_index = if st.has_entries() {
            st.last.map(|l| l.index + 1)
        } else {
            st.last_purged().map(|p| p.index + 1)
        };
        let mut min_term = if st.has_entries() {
            st.last.map_or(0, |l| l.term)
        } else {
            0
        };
        for e in &entries {
            if expect_index.is_some_and(|i| i != e.index) {
                return Err(StorageError::Invalid(format!(
                    "append of index {} where {} was expected",
                    e.index,
                    expect_index.unwrap_or_default()
                )));
            }
            if e.term < min_term {
                return Err(StorageError::Invalid(format!(
                    "append of term {} after term {min_term}",
                    e.term
                )));
            }
            if e.payload.len() > FRAME_PAYLOAD_MAX {
                return Err(StorageError::Invalid(format!(
                    "entry of {} bytes exceeds {FRAME_PAYLOAD_MAX}",
                    e.payload.len()
                )));
            }
            match e.kind {
                EntryKind::Data if e.payload.len() < 8 || e.record_count == 0 => {
                    return Err(StorageError::Invalid(
                        "data entry without a record batch".into(),
                    ))
                }
                EntryKind::Blank | EntryKind::Membership if e.record_count != 0 => {
                    return Err(StorageError::Invalid("non-data entry with records".into()))
                }
                _ => {}
            }
            expect_index = Some(e.index + 1);
            min_term = e.term;
        }
        if entries.is_empty() {
            if let Some(cb) = on_durable {
                cb(Ok(()));
            }
            return Ok(());
        }
        let durable_hint = lock(&inner.durable).end;
        let now = now_ms();
        let mut i = 0;
        while i < entries.len() {
            // Pick the segment for entries[i], rolling when the active one is full or old.
            let flen = align((FRAME_HEADER_LEN + entries[i].payload.len()) as u64);
            let need_new = match st.segments.last() {
                None => true,
                Some(a) => {
                    let has_data = a.end_offset > a.base_offset;
                    let full = a.end + flen > st.config.segment_bytes;
                    let old = now.saturating_sub(a.created_ms) >= st.config.segment_ms as i64;
                    has_data && (full || old)
                }
            };
            if need_new {
                self.roll(&mut st, now)?;
            }
            // Take as many entries as fit in this segment.
            let seg_bytes = st.config.segment_bytes;
            let mut j = i;
            let mut total = 0u64;
            let start = st.segments.last().map_or(0, |a| a.end);
            let mut seg_has_data = st
                .segments
                .last()
                .is_some_and(|a| a.end_offset > a.base_offset);
            while j < entries.len() {
                let l = align((FRAME_HEADER_LEN + entries[j].payload.len()) as u64);
                if j > i && seg_has_data && start + total + l > seg_bytes {
                    break;
                }
                seg_has_data |= entries[j].kind == EntryKind::Data;
                total += l;
                j += 1;
            }
            self.write_group(&mut st, &entries[i..j], start, total, durable_hint)?;
            i = j;
        }
        // One flush request for the active segment covers everything (older segments were synced on roll).
        let Some(active) = st.segments.last() else {
            return Err(StorageError::Invalid(
                "no active segment after append".into(),
            ));
        };
        let file = active.file.clone();
        let path = active.path.clone();
        let last_index = entries.last().map_or(0, |e| e.index);
        let batches = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Data)
            .count()
            .min(u32::MAX as usize) as u32;
        let generation = lock(&inner.durable).generation;
        drop(st);
        let weak = Arc::downgrade(inner);
        inner.ctx.submit_flush(
            file,
            batches,
            Box::new(move |r| {
                let res = match r {
                    Ok(()) => {
                        if let Some(inner) = weak.upgrade() {
                            let mut d = lock(&inner.durable);
                            if d.generation == generation {
                                d.end = d.end.max(last_index + 1);
                            }
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let err = StorageError::io("fdatasync", &path, &e);
                        if let Some(inner) = weak.upgrade() {
                            inner.stop(&err);
                        }
                        Err(err)
                    }
                };
                if let Some(cb) = on_durable {
                    cb(res);
                }
            }),
        );
        Ok(())
    }

    /// Writes `entries` as consecutive frames at `start` of the active segment with one vectored write.
    fn write_group(
        &self,
        st: &mut State,
        entries: &[NewEntry],
        start: u64,
        total: u64,
        durable_hint: u64,
    ) -> Result<()> {
        let step = prealloc_step(&st.config);
        let interval = st.config.index_interval_bytes as u64;
        let mut next_offset = st.next_offset;
        let Some(seg) = st.segments.last_mut() else {
            return Err(StorageError::Invalid("no active segment".into()));
        };
        seg.ensure_capacity(start + total + FRAME_HEADER_LEN as u64, step)?;
        // Headers (plus the stamped 8 offset bytes for data) live here; payloads are written from the
        // caller's buffers directly.
        let mut heads: Vec<([u8; FRAME_HEADER_LEN + 8], usize)> = Vec::with_capacity(entries.len());
        let mut headers: Vec<FrameHeader> = Vec::with_capacity(entries.len());
        for e in entries {
            let data = e.kind == EntryKind::Data;
            let stamp = next_offset.to_be_bytes();
            let mut h = FrameHeader {
                payload_len: e.payload.len() as u32,
                crc: 0,
                term: e.term,
                index: e.index,
                base_offset: next_offset,
                record_count: if data { e.record_count } else { 0 },
                kind: e.kind.frame_kind(),
                aux: if data { e.max_timestamp } else { 0 },
                durable_end: durable_hint,
            };
            let mut buf = [0u8; FRAME_HEADER_LEN + 8];
            let used = if data {
                let hb = h.encode_with_batch_crc(&stamp, &e.payload);
                buf[..FRAME_HEADER_LEN].copy_from_slice(&hb);
                buf[FRAME_HEADER_LEN..].copy_from_slice(&stamp);
                FRAME_HEADER_LEN + 8
            } else {
                let hb = h.encode_with_crc(&[&e.payload]);
                buf[..FRAME_HEADER_LEN].copy_from_slice(&hb);
                FRAME_HEADER_LEN
            };
            heads.push((buf, used));
            next_offset = h.end_offset();
            headers.push(h);
        }
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(entries.len() * 3 + 1);
        for ((e, (hb, used)), h) in entries.iter().zip(&heads).zip(&headers) {
            bufs.push(&hb[..*used]);
            let rest = if e.kind == EntryKind::Data {
                &e.payload[8..]
            } else {
                &e.payload[..]
            };
            bufs.push(rest);
            let pad = (h.frame_len() as usize) - FRAME_HEADER_LEN - e.payload.len();
            if pad > 0 {
                bufs.push(&PAD[..pad]);
            }
        }
        bufs.push(&ZERO_SLOT);
        let written_end = start + total + FRAME_HEADER_LEN as u64;
        if let Err(e) = seg.file.write_all_vectored_at(&bufs, start) {
            // Bytes past `end` may now hold a torn frame; nobody can see them, and high_water keeps later
            // writes after a truncation clear of them.
            seg.high_water = seg.high_water.max(written_end);
            return Err(StorageError::io("write", &seg.path, &e));
        }
        let mut pos = start;
        for h in &headers {
            seg.note_frame(pos, h, interval);
            pos += h.frame_len();
        }
        seg.end = pos;
        seg.high_water = seg.high_water.max(written_end);
        if let Some(h) = headers.last() {
            st.last = Some(LogPos {
                term: h.term,
                index: h.index,
            });
        }
        st.next_offset = next_offset;
        Ok(())
    }

    /// Seals the active segment (synced data and indexes) and starts a new one at the next offset.
    fn roll(&self, st: &mut State, now: i64) -> Result<()> {
        let inner = &self.inner;
        let io = inner.ctx.io().clone();
        if let Some(a) = st.segments.last() {
            if let Err(e) = a.file.sync_data() {
                let err = StorageError::io("fdatasync", &a.path, &e);
                inner.stop(&err);
                return Err(err);
            }
            a.write_indexes(io.as_ref(), &inner.dir)?;
        }
        // A new segment starts small (an idle partition costs 1 MiB of disk, not a whole step) and grows
        // by whole steps once written to.
        let seg = Segment::create(
            io.as_ref(),
            &inner.dir,
            st.next_offset,
            prealloc_step(&st.config).min(SEGMENT_FIRST_ALLOC_BYTES),
            now,
        )?;
        tracing::debug!(dir = %inner.dir.display(), base_offset = seg.base_offset, "rolled a new segment");
        st.segments.push(seg);
        Ok(())
    }

    /// Blocks until everything appended so far is durable (a synchronous barrier).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_running()?;
        let st = self.inner.read();
        if let Some(a) = st.segments.last() {
            if let Err(e) = a.file.sync_data() {
                let err = StorageError::io("fdatasync", &a.path, &e);
                self.inner.stop(&err);
                return Err(err);
            }
        }
        let last = st.last;
        drop(st);
        let mut d = lock(&self.inner.durable);
        if let Some(l) = last {
            d.end = d.end.max(l.index + 1);
        }
        Ok(())
    }

    /// Removes every entry after Raft index `keep` (all entries after the purge point when `None`).
    /// Logical: a skip frame is written after `keep` and synced; later segments are deleted first.
    pub fn truncate_after(&self, keep: Option<u64>) -> Result<()> {
        let inner = &self.inner;
        inner.check_running()?;
        let io = inner.ctx.io().clone();
        let mut st = inner.write();
        let floor = st.last_purged().map(|p| p.index);
        let keep = match (keep, floor) {
            (Some(k), Some(f)) if k < f => {
                return Err(StorageError::Invalid(format!(
                    "truncate_after({k}) below the purged index {f}"
                )))
            }
            (None, f) => f,
            (k, _) => k,
        };
        if !st.has_entries() || keep.is_some_and(|k| st.last.is_some_and(|l| k >= l.index)) {
            return Ok(());
        }
        {
            let mut d = lock(&inner.durable);
            d.generation += 1;
            d.end = d.end.min(keep.map_or(0, |k| k + 1));
        }
        let result = self.truncate_locked(&mut st, io.as_ref(), keep, floor);
        if let Err(e) = &result {
            inner.stop(e);
        }
        result
    }

    fn truncate_locked(
        &self,
        st: &mut State,
        io: &dyn super::io::FileIo,
        keep: Option<u64>,
        floor: Option<u64>,
    ) -> Result<()> {
        let dir = self.inner.dir.clone();
        let keep_in_log = keep.filter(|k| floor.is_none_or(|f| *k > f));
        let Some(k) = keep_in_log else {
            // Nothing stays: every segment goes; numbering continues from the purge point.
            for s in st.segments.drain(..) {
                remove_segment_files(io, &dir, &s)?;
            }
            io.sync_dir(&dir)
                .map_err(|e| StorageError::io("fsync dir", &dir, &e))?;
            st.last = st.last_purged();
            st.next_offset = st.meta.body.log_start_offset;
            return Ok(());
        };
        let Some((si, pos, h)) = st.locate(k)? else {
            return Err(StorageError::Invalid(format!(
                "truncate_after({k}): entry not found"
            )));
        };
        // Later segments first (then the skip frame): a crash in between leaves a consistent prefix.
        if si + 1 < st.segments.len() {
            for s in st.segments.drain(si + 1..) {
                remove_segment_files(io, &dir, &s)?;
            }
            io.sync_dir(&dir)
                .map_err(|e| StorageError::io("fsync dir", &dir, &e))?;
        }
        let step = prealloc_step(&st.config);
        let seg = &mut st.segments[si];
        let after = pos + h.frame_len();
        if after < seg.end {
            let target = align(seg.high_water.max(after + FRAME_HEADER_LEN as u64));
            seg.ensure_capacity(target + FRAME_HEADER_LEN as u64, step)?;
            let mut skip = FrameHeader {
                payload_len: 0,
                crc: 0,
                term: h.term,
                index: k + 1,
                base_offset: h.end_offset(),
                record_count: 0,
                kind: FrameKind::Skip,
                aux: target as i64,
                durable_end: lock(&self.inner.durable).end,
            };
            let sb = skip.encode_with_crc(&[]);
            seg.file
                .write_all_vectored_at(&[&ZERO_SLOT], target)
                .map_err(|e| StorageError::io("write", &seg.path, &e))?;
            seg.file
                .write_all_vectored_at(&[&sb], after)
                .map_err(|e| StorageError::io("write", &seg.path, &e))?;
            seg.file
                .sync_data()
                .map_err(|e| StorageError::io("fdatasync", &seg.path, &e))?;
            tracing::debug!(path = %seg.path.display(), after, target, "logical truncation");
            seg.end = target;
            seg.high_water = seg.high_water.max(target + FRAME_HEADER_LEN as u64);
        }
        seg.last = Some(LogPos {
            term: h.term,
            index: k,
        });
        seg.end_offset = h.end_offset();
        if seg.first_data.is_some_and(|(i, _)| i > k) {
            seg.first_data = None;
        }
        seg.truncate_indexes(k);
        st.last = seg.last;
        st.next_offset = h.end_offset();
        Ok(())
    }

    /// Purges every entry up to and including `upto`: records the new log start durably, then deletes the
    /// segments that hold only purged entries. `upto` may lie past the last entry (after a snapshot install).
    pub fn purge(&self, upto: LogPos) -> Result<()> {
        let inner = &self.inner;
        inner.check_running()?;
        let io = inner.ctx.io().clone();
        let mut st = inner.write();
        if st.last_purged().is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let dir = inner.dir.clone();
        let located = st.locate(upto.index)?;
        let past_end = st.last.is_none_or(|l| upto.index > l.index) || !st.has_entries();
        let log_start = match located {
            Some((_, _, h)) => h.end_offset(),
            None if past_end => match *lock(&inner.purge_hint) {
                Some((i, o)) if i == upto.index => o,
                _ => st.next_offset,
            },
            None => st.meta.body.log_start_offset,
        };
        st.meta.body.last_purged = Some(upto);
        st.meta.body.log_start_offset = st.meta.body.log_start_offset.max(log_start);
        if let Err(e) = st.meta.persist() {
            inner.stop(&e);
            return Err(e);
        }
        if past_end {
            st.last = Some(upto);
            st.next_offset = st.meta.body.log_start_offset;
        }
        let (mut removed, mut freed) = (0u64, 0u64);
        while st
            .segments
            .first()
            .is_some_and(|s| s.last.is_none_or(|l| l.index <= upto.index))
        {
            let s = st.segments.remove(0);
            remove_segment_files(io.as_ref(), &dir, &s)?;
            removed += 1;
            freed += s.alloc_len;
        }
        if removed > 0 {
            io.sync_dir(&dir)
                .map_err(|e| StorageError::io("fsync dir", &dir, &e))?;
            inner.purged_segments.fetch_add(removed, Ordering::Relaxed);
            inner.purged_bytes.fetch_add(freed, Ordering::Relaxed);
            tracing::info!(
                dir = %dir.display(),
                segments = removed,
                bytes = freed,
                log_start_offset = st.meta.body.log_start_offset,
                "retention: deleted segments"
            );
        }
        Ok(())
    }

    /// Announces the log start offset of a snapshot at `index` so a later `purge` past the last entry
    /// continues offset numbering from it.
    pub fn set_purge_hint(&self, index: u64, log_start_offset: u64) {
        *lock(&self.inner.purge_hint) = Some((index, log_start_offset));
    }

    /// The frame header of the entry with Raft `index`, without checking its payload CRC: for an entry
    /// this process appended (a leader's own proposal, when it commits). `None` if it is not in the log.
    pub fn entry_header(&self, index: u64) -> Option<FrameHeader> {
        let st = self.inner.read();
        if st.last.is_none_or(|l| index > l.index) {
            return None;
        }
        let si = st.segment_for_index(index)?;
        st.segments[si].header_for_index_unverified(index)
    }

    /// Entries with Raft index in `[start, end)`, stopping early (but after at least one entry) once
    /// `max_bytes` of payload are collected. Missing entries can only be at the front (purged) or back.
    pub fn entries(&self, start: u64, end: u64, max_bytes: usize) -> Result<Vec<StoredEntry>> {
        let st = self.inner.read();
        let first_present = st
            .segments
            .iter()
            .find_map(|s| s.first)
            .map_or(0, |f| f.index);
        let start = start.max(st.first_readable()).max(first_present);
        let end = match st.last {
            Some(l) if st.has_entries() => end.min(l.index + 1),
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let Some(mut si) = st.segment_for_index(start) else {
            return Ok(out);
        };
        let mut bytes = 0usize;
        let mut next = start;
        'segs: while si < st.segments.len() && next < end {
            let seg = &st.segments[si];
            let mut err = None;
            let mut done = false;
            let (pos, stop) = seg.scan(seg.pos_for_index(next), seg.end, Expect::ANY, |p, h| {
                if h.index < next {
                    return true;
                }
                if h.index >= end || (!out.is_empty() && bytes + h.payload_len as usize > max_bytes)
                {
                    done = true;
                    return false;
                }
                let Some(kind) = EntryKind::from_frame(h.kind) else {
                    err = Some("skip frame in an entry position");
                    return false;
                };
                bytes += h.payload_len as usize;
                out.push(StoredEntry {
                    term: h.term,
                    index: h.index,
                    kind,
                    base_offset: h.base_offset,
                    record_count: h.record_count,
                    max_timestamp: if kind == EntryKind::Data { h.aux } else { 0 },
                    payload: seg.payload(p, h),
                });
                next = h.index + 1;
                true
            });
            if let Some(r) = err {
                return Err(StorageError::corrupt(&seg.path, pos, r));
            }
            if let ScanStop::Bad { reason, .. } = stop {
                return Err(StorageError::corrupt(&seg.path, pos, reason));
            }
            if done {
                break 'segs;
            }
            si += 1;
        }
        if out.is_empty() || out.first().is_some_and(|e| e.index != start) {
            return Err(StorageError::corrupt(
                &self.inner.dir,
                0,
                format!("entries [{start}, {end}) are missing from the log"),
            ));
        }
        Ok(out)
    }

    /// Whole data batches, the first containing `offset`, totalling at most `max_bytes` (at least one
    /// batch if any), none reaching past `limit` (the high watermark). Zero-copy slices of the maps.
    pub fn read_batches(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<Vec<Bytes>> {
        let st = self.inner.read();
        let mut out = Vec::new();
        if offset >= limit || offset >= st.next_offset {
            return Ok(out);
        }
        let floor = st.first_readable();
        let mut si = st
            .segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let mut total = 0usize;
        let mut first = true;
        while si < st.segments.len() {
            let seg = &st.segments[si];
            let from = if first { seg.pos_for_offset(offset) } else { 0 };
            first = false;
            let mut done = false;
            let (pos, stop) = seg.scan(from, seg.end, Expect::ANY, |p, h| {
                if h.kind != FrameKind::Data || h.index < floor || h.end_offset() <= offset {
                    return true;
                }
                if h.base_offset >= limit || h.end_offset() > limit {
                    done = true;
                    return false;
                }
                let len = h.payload_len as usize;
                if !out.is_empty() && total + len > max_bytes {
                    done = true;
                    return false;
                }
                total += len;
                out.push(seg.payload(p, h));
                true
            });
            if let ScanStop::Bad { reason, .. } = stop {
                return Err(StorageError::corrupt(&seg.path, pos, reason));
            }
            if done {
                break;
            }
            si += 1;
        }
        Ok(out)
    }

    /// The base offset of the first data batch whose max timestamp is >= `ts`, or `limit` if none below it.
    pub fn offset_for_timestamp(&self, ts: i64, limit: u64) -> Result<u64> {
        let st = self.inner.read();
        let floor = st.first_readable();
        for seg in &st.segments {
            if seg.max_ts < ts || seg.end_offset <= st.meta.body.log_start_offset {
                continue;
            }
            let mut found = None;
            let (pos, stop) = seg.scan(seg.pos_for_timestamp(ts), seg.end, Expect::ANY, |_, h| {
                if h.kind == FrameKind::Data && h.index >= floor && h.aux >= ts {
                    found = Some(h.base_offset);
                    return false;
                }
                true
            });
            if let ScanStop::Bad { reason, .. } = stop {
                return Err(StorageError::corrupt(&seg.path, pos, reason));
            }
            if let Some(o) = found {
                return Ok(o.min(limit));
            }
        }
        Ok(limit)
    }

    /// The first data entry (index, base offset) with Raft index above `after` (and above the purge point).
    pub fn first_data_after(&self, after: Option<u64>) -> Result<Option<(u64, u64)>> {
        let st = self.inner.read();
        let threshold = match (after, st.last_purged()) {
            (Some(a), Some(p)) => Some(a.max(p.index)),
            (a, p) => a.or(p.map(|p| p.index)),
        };
        for seg in &st.segments {
            if seg
                .last
                .is_none_or(|l| threshold.is_some_and(|t| l.index <= t))
            {
                continue;
            }
            match seg.first_data {
                None => continue,
                Some((i, o)) if threshold.is_none_or(|t| i > t) => return Ok(Some((i, o))),
                Some(_) => {}
            }
            let from = threshold.map_or(0, |t| seg.pos_for_index(t + 1));
            let mut found = None;
            let (pos, stop) = seg.scan(from, seg.end, Expect::ANY, |_, h| {
                if h.kind == FrameKind::Data && threshold.is_none_or(|t| h.index > t) {
                    found = Some((h.index, h.base_offset));
                    return false;
                }
                true
            });
            if let ScanStop::Bad { reason, .. } = stop {
                return Err(StorageError::corrupt(&seg.path, pos, reason));
            }
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The retention boundary: the last entry of the newest sealed segment that retention (by bytes or by
    /// age at `now_ms`) would delete, if any. The Raft layer turns it into a snapshot + purge (never delete
    /// segments elsewhere).
    pub fn retention_boundary(&self, now_ms: i64) -> Option<LogPos> {
        let st = self.inner.read();
        let cfg = &st.config;
        let floor = st.last_purged().map(|p| p.index);
        let mut total: u64 = st.segments.iter().map(|s| s.end).sum();
        let mut boundary = None;
        let sealed = st.segments.len().saturating_sub(1);
        for seg in &st.segments[..sealed] {
            let Some(last) = seg.last else { continue };
            let by_age = cfg.retention_ms.is_some_and(|ms| {
                seg.max_ts != i64::MIN && seg.max_ts.saturating_add(ms as i64) < now_ms
            });
            let by_size = cfg
                .retention_bytes
                .is_some_and(|max| total.saturating_sub(seg.end) >= max);
            if !(by_age || by_size) {
                break;
            }
            total = total.saturating_sub(seg.end);
            if floor.is_none_or(|f| last.index > f) {
                boundary = Some(last);
            }
        }
        boundary
    }

    /// Saves the Raft vote durably. A barrier: everything appended before is synced first.
    pub fn save_vote(&self, vote: Vec<u8>) -> Result<()> {
        self.inner.check_running()?;
        let mut st = self.inner.write();
        if let Some(a) = st.segments.last() {
            if let Err(e) = a.file.sync_data() {
                let err = StorageError::io("fdatasync", &a.path, &e);
                self.inner.stop(&err);
                return Err(err);
            }
        }
        st.meta.body.vote = Some(vote);
        let r = st.meta.persist();
        if let Err(e) = &r {
            self.inner.stop(e);
        }
        r
    }

    pub fn vote(&self) -> Option<Vec<u8>> {
        self.inner.read().meta.body.vote.clone()
    }

    /// Records the committed entry. Persisted lazily (at most every [`COMMITTED_PERSIST_INTERVAL`], and on
    /// vote, purge, snapshot and close): after a crash it may lag, never lead.
    pub fn set_committed(&self, committed: Option<LogPos>) -> Result<()> {
        self.record_committed(committed, false)
    }

    /// Like [`PartitionLog::set_committed`], but persisted now (when durable here), whatever the interval.
    pub fn set_committed_now(&self, committed: Option<LogPos>) -> Result<()> {
        self.record_committed(committed, true)
    }

    fn record_committed(&self, committed: Option<LogPos>, now: bool) -> Result<()> {
        self.inner.check_running()?;
        let mut st = self.inner.write();
        st.meta.body.committed = committed;
        st.committed_dirty = true;
        let due = now
            || st
                .last_committed_persist
                .is_none_or(|t| t.elapsed() >= COMMITTED_PERSIST_INTERVAL);
        if due {
            // Never record a commit point above what is durable here.
            let durable_end = lock(&self.inner.durable).end;
            if let Some(c) = committed {
                if c.index >= durable_end {
                    return Ok(());
                }
            }
            st.last_committed_persist = Some(Instant::now());
            st.committed_dirty = false;
            let r = st.meta.persist();
            if let Err(e) = &r {
                self.inner.stop(e);
            }
            return r;
        }
        Ok(())
    }

    /// The committed entry as last recorded, clamped to the last entry present.
    pub fn committed(&self) -> Option<LogPos> {
        let st = self.inner.read();
        let c = st.meta.body.committed?;
        match st.last {
            Some(l) if c.index > l.index => Some(l),
            None => None,
            _ => Some(c),
        }
    }

    /// Stores the state machine's snapshot blob durably.
    pub fn save_snapshot(&self, blob: Vec<u8>) -> Result<()> {
        self.inner.check_running()?;
        let mut st = self.inner.write();
        st.meta.body.snapshot = Some(blob);
        let r = st.meta.persist();
        if let Err(e) = &r {
            self.inner.stop(e);
        }
        r
    }

    pub fn snapshot(&self) -> Option<Vec<u8>> {
        self.inner.read().meta.body.snapshot.clone()
    }

    /// Syncs data, writes the active segment's indexes and persists the metadata. Idempotent; later writes
    /// fail.
    pub fn close(&self) -> Result<()> {
        let mut st = self.inner.write();
        if st.closed {
            return Ok(());
        }
        st.closed = true;
        if self.stopped().is_some() {
            return Ok(());
        }
        let io = self.inner.ctx.io().clone();
        if let Some(a) = st.segments.last() {
            a.file
                .sync_data()
                .map_err(|e| StorageError::io("fdatasync", &a.path, &e))?;
            a.write_indexes(io.as_ref(), &self.inner.dir)?;
        }
        if st.committed_dirty {
            st.meta.persist()?;
        }
        Ok(())
    }

    /// Number of segments (for tests and metrics).
    pub fn segment_count(&self) -> usize {
        self.inner.read().segments.len()
    }

    /// Sizes for metrics (one short read lock, no allocation).
    pub fn stats(&self) -> LogStats {
        let st = self.inner.read();
        LogStats {
            segments: st.segments.len() as u64,
            log_bytes: st.segments.iter().map(|s| s.end).sum(),
            allocated_bytes: st.segments.iter().map(|s| s.alloc_len).sum(),
            purged_segments: self.inner.purged_segments.load(Ordering::Relaxed),
            purged_bytes: self.inner.purged_bytes.load(Ordering::Relaxed),
        }
    }

    /// Each segment's file and its current end (frames below it are complete), for crash tests.
    #[doc(hidden)]
    pub fn segment_ends(&self) -> Vec<(PathBuf, u64)> {
        self.inner
            .read()
            .segments
            .iter()
            .map(|s| (s.path.clone(), s.end))
            .collect()
    }

    /// Base offsets of the segments (for tests and metrics).
    pub fn segment_bases(&self) -> Vec<u64> {
        self.inner
            .read()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }
}

fn segments_end_offset(segments: &[Segment]) -> u64 {
    segments.last().map_or(0, |s| s.end_offset)
}

fn remove_segment_files(io: &dyn super::io::FileIo, dir: &Path, s: &Segment) -> Result<()> {
    let (log, index, time) = Segment::paths(dir, s.base_offset);
    for p in [index, time, log] {
        io.remove_file(&p)
            .map_err(|e| StorageError::io("remove", &p, &e))?;
    }
    Ok(())
}

/// Full scan of the last segment: every frame is CRC-checked and re-indexed. The scan stops at the first
/// bad, non-contiguous or older-term frame; if a valid frame written after that point was durable, the bad
/// bytes were durable too and the log is corrupt (an error); otherwise it is a torn tail, cut logically.
fn recover_active(seg: &mut Segment, expect: Expect, interval: u64) -> Result<()> {
    let limit = seg.alloc_len;
    let mut frames = Vec::new();
    let (end, stop) = seg.scan(0, limit, expect, |p, h| {
        frames.push((p, *h));
        true
    });
    for (p, h) in &frames {
        seg.note_frame(*p, h, interval);
    }
    if let ScanStop::Bad { pos, reason } = &stop {
        let expected_index = frames
            .last()
            .map(|(_, h)| h.index + 1)
            .or(expect.index)
            .unwrap_or(0);
        if let Some(at) = seg.durable_frame_after(*pos, limit, expected_index) {
            return Err(StorageError::corrupt(
                &seg.path,
                *pos,
                format!(
                    "{reason}; a later frame at byte {at} proves index {expected_index} was durable"
                ),
            ));
        }
        tracing::warn!(
            path = %seg.path.display(),
            pos,
            reason = %reason,
            last_index = ?frames.last().map(|(_, h)| h.index),
            "recovery: truncating a torn tail"
        );
    }
    seg.end = end;
    seg.high_water = end + FRAME_HEADER_LEN as u64;
    // Every frame below `end` was CRC-checked just now; the ones written later are ours.
    seg.trusted_from = 0;
    if let Slot::Frame(_) | Slot::Bad(_) = seg.slot(end, limit) {
        // Leave a clean end marker so garbage after the tail can never be read as a frame.
        seg.file
            .write_all_vectored_at(&[&ZERO_SLOT], end)
            .map_err(|e| StorageError::io("write", &seg.path, &e))?;
    }
    Ok(())
}

/// Loads a sealed segment: its index files when they match the frames (the tail after the last index entry
/// is scanned), otherwise a full scan that rebuilds and rewrites them. Sealed segments were synced when
/// sealed, so any bad frame in them is corruption.
fn recover_sealed(
    io: &dyn super::io::FileIo,
    dir: &Path,
    seg: &mut Segment,
    expect: Expect,
    config: &LogConfig,
) -> Result<()> {
    let interval = config.index_interval_bytes as u64;
    let limit = seg.alloc_len;
    // The first frame must continue the previous segment.
    let mut first_ok = false;
    let (_, stop) = seg.scan(0, limit, expect, |_, _| {
        first_ok = true;
        false
    });
    if let ScanStop::Bad { pos, reason } = stop {
        return Err(StorageError::corrupt(&seg.path, pos, reason));
    }
    if !first_ok {
        return Err(StorageError::corrupt(
            &seg.path,
            0,
            "sealed segment holds no entry",
        ));
    }
    if let Some((index, times)) = seg.load_indexes(io, dir) {
        if let Some(last_e) = index.last().copied() {
            if let Slot::Frame(h) = seg.slot(last_e.pos, limit) {
                if h.index == last_e.index
                    && h.base_offset == last_e.offset
                    && h.kind != FrameKind::Skip
                {
                    // Trust the indexed prefix; scan the tail for bookkeeping.
                    let mut frames = Vec::new();
                    let tail_expect = Expect {
                        index: Some(h.index),
                        offset: Some(h.base_offset),
                        min_term: h.term,
                    };
                    let (end, stop) = seg.scan(last_e.pos, limit, tail_expect, |p, h| {
                        frames.push((p, *h));
                        true
                    });
                    if let ScanStop::Bad { pos, reason } = stop {
                        return Err(StorageError::corrupt(&seg.path, pos, reason));
                    }
                    // First entry and first data entry come from the head of the segment.
                    let mut head = None;
                    let mut first_data = None;
                    let _ = seg.scan(0, limit, expect, |_, h| {
                        if head.is_none() {
                            head = Some(LogPos {
                                term: h.term,
                                index: h.index,
                            });
                        }
                        if h.kind == FrameKind::Data {
                            first_data = Some((h.index, h.base_offset));
                            return false;
                        }
                        true
                    });
                    seg.first = head;
                    seg.first_data = first_data;
                    seg.max_ts = times.last().map_or(i64::MIN, |t| t.max_ts);
                    seg.index = index;
                    seg.times = times;
                    for (_, h) in &frames {
                        seg.last = Some(LogPos {
                            term: h.term,
                            index: h.index,
                        });
                        seg.end_offset = h.end_offset();
                        if h.kind == FrameKind::Data {
                            seg.max_ts = seg.max_ts.max(h.aux);
                        }
                    }
                    seg.end = end;
                    seg.high_water = end + FRAME_HEADER_LEN as u64;
                    return Ok(());
                }
            }
        }
    }
    tracing::info!(path = %seg.path.display(), "rebuilding segment indexes");
    let mut frames = Vec::new();
    let (end, stop) = seg.scan(0, limit, expect, |p, h| {
        frames.push((p, *h));
        true
    });
    if let ScanStop::Bad { pos, reason } = stop {
        return Err(StorageError::corrupt(&seg.path, pos, reason));
    }
    for (p, h) in &frames {
        seg.note_frame(*p, h, interval);
    }
    seg.end = end;
    seg.high_water = end + FRAME_HEADER_LEN as u64;
    seg.write_indexes(io, dir)?;
    Ok(())
}
