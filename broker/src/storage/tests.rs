//! Tests of the partition log: appends and lookups, rolling, truncation, purge, recovery, retention, fault
//! injection, and the crash property (cut every file at or after its synced length, add garbage, reopen: a
//! prefix of what was written that holds everything synced).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use runnel_protocol::batch::{validate, RecordBatchBuilder};

use super::io::{FaultyIo, FileIo, RealIo};
use super::*;

fn batch(records: usize, value_len: usize, ts: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new(records * (value_len + 16) + 64);
    let v = vec![b'x'; value_len];
    for i in 0..records {
        b.push(ts + i as i64, None, &v, &[]);
    }
    b.finish()
}

fn data(term: u64, index: u64, payload: Bytes) -> NewEntry {
    let h = validate(&payload).unwrap();
    NewEntry {
        term,
        index,
        kind: EntryKind::Data,
        payload,
        record_count: h.record_count,
        max_timestamp: h.max_timestamp,
    }
}

fn blank(term: u64, index: u64) -> NewEntry {
    NewEntry {
        term,
        index,
        kind: EntryKind::Blank,
        payload: Bytes::new(),
        record_count: 0,
        max_timestamp: 0,
    }
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, cfg: &LogConfig, ctx: &StorageContext) -> PartitionLog {
    PartitionLog::open(dir, cfg.clone(), ctx.clone()).unwrap()
}

/// Appends and waits until durable.
fn append_durable(log: &PartitionLog, entries: Vec<NewEntry>) {
    let (tx, rx) = channel();
    log.append(entries, Some(Box::new(move |r| tx.send(r).unwrap())))
        .unwrap();
    rx.recv().unwrap().unwrap();
}

#[test]
fn append_stamps_offsets_and_reads_back_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let log = open(dir.path(), &LogConfig::default(), &ctx);
    let b1 = batch(3, 10, 1000);
    let b2 = batch(2, 10, 2000);
    append_durable(
        &log,
        vec![blank(1, 1), data(1, 2, b1.clone()), data(1, 3, b2.clone())],
    );
    let bounds = log.bounds();
    assert_eq!(bounds.next_offset, 5);
    assert_eq!(bounds.last, Some(LogPos { term: 1, index: 3 }));
    let es = log.entries(0, 100, usize::MAX).unwrap();
    assert_eq!(es.len(), 3);
    assert_eq!(es[0].kind, EntryKind::Blank);
    assert_eq!((es[1].base_offset, es[1].record_count), (0, 3));
    assert_eq!((es[2].base_offset, es[2].record_count), (3, 2));
    // The stored batch is the client's, with the base offset stamped and the CRC still valid.
    let h = validate(&es[2].payload).unwrap();
    assert_eq!(h.base_offset, 3);
    assert_eq!(&es[2].payload[8..], &b2[8..]);
    let got = log.read_batches(4, 1, 5).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(validate(&got[0]).unwrap().base_offset, 3);
    // Never past the limit (the high watermark).
    assert!(log.read_batches(0, 1 << 20, 3).unwrap().len() == 1);
    assert!(log.read_batches(3, 1 << 20, 3).unwrap().is_empty());
    assert_eq!(log.offset_for_timestamp(1001, 5).unwrap(), 0);
    assert_eq!(log.offset_for_timestamp(1500, 5).unwrap(), 3);
    assert_eq!(log.offset_for_timestamp(9999, 5).unwrap(), 5);
    // A byte-budgeted read still returns at least one entry.
    assert_eq!(log.entries(2, 4, 1).unwrap().len(), 1);
}

#[test]
fn appends_must_be_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let log = open(dir.path(), &LogConfig::default(), &ctx);
    append_durable(&log, vec![blank(1, 5)]);
    assert!(matches!(
        log.append(vec![blank(1, 7)], None),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        log.append(vec![blank(0, 6)], None),
        Err(StorageError::Invalid(_))
    ));
    log.append(vec![blank(2, 6)], None).unwrap();
}

#[test]
fn rolls_by_size_and_finds_entries_across_segments_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = small_config();
    let log = open(dir.path(), &cfg, &ctx);
    let mut idx = 1;
    let mut offsets = Vec::new();
    let mut next = 0;
    for round in 0..10 {
        let mut es = Vec::new();
        for k in 0..5 {
            let b = batch(2, 100, 10_000 + (round * 5 + k) * 10);
            offsets.push(next);
            next += 2;
            es.push(data(1, idx, b));
            idx += 1;
        }
        append_durable(&log, es);
    }
    assert!(log.segment_count() > 3, "{}", log.segment_count());
    let check = |log: &PartitionLog| {
        let bases = log.segment_bases();
        assert!(bases.windows(2).all(|w| w[0] < w[1]));
        for (i, off) in offsets.iter().enumerate() {
            let got = log.read_batches(*off + 1, 1, next).unwrap();
            assert_eq!(validate(&got[0]).unwrap().base_offset, *off);
            let e = log.entries(i as u64 + 1, i as u64 + 2, usize::MAX).unwrap();
            assert_eq!(e[0].base_offset, *off);
            // The header-only lookup (a leader's commit) finds the same entry in any segment.
            let h = log.entry_header(i as u64 + 1).unwrap();
            assert_eq!((h.index, h.term, h.base_offset), (i as u64 + 1, 1, *off));
            assert_eq!(h.end_offset(), *off + 2);
        }
        assert!(log.entry_header(offsets.len() as u64 + 1).is_none());
        let all = log.read_batches(0, usize::MAX, next).unwrap();
        assert_eq!(all.len(), offsets.len());
        // Entry m has max timestamp 10_000 + 10m + 1: the first reaching 10_255 is m = 26, offset 52.
        assert_eq!(log.offset_for_timestamp(10_000 + 255, next).unwrap(), 52);
        assert_eq!(log.entries(0, 1000, usize::MAX).unwrap().len(), 50);
    };
    check(&log);
    log.close().unwrap();
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    check(&log);
    // Index files of sealed segments exist and are used.
    let n = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".index")
        })
        .count();
    assert!(n >= 3);
}

#[test]
fn truncate_never_changes_bytes_a_reader_holds_and_numbering_follows() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = LogConfig::default();
    let log = open(dir.path(), &cfg, &ctx);
    append_durable(
        &log,
        vec![
            data(1, 1, batch(2, 50, 1)),
            data(1, 2, batch(3, 50, 2)),
            data(1, 3, batch(4, 50, 3)),
        ],
    );
    let held = log.entries(3, 4, usize::MAX).unwrap().remove(0).payload;
    let copy = held.to_vec();
    log.truncate_after(Some(1)).unwrap();
    assert_eq!(log.bounds().next_offset, 2);
    assert_eq!(log.bounds().last, Some(LogPos { term: 1, index: 1 }));
    append_durable(&log, vec![data(2, 2, batch(7, 300, 9)), blank(2, 3)]);
    assert_eq!(
        &held[..],
        &copy[..],
        "a held payload changed under a reader"
    );
    let es = log.entries(0, 10, usize::MAX).unwrap();
    assert_eq!(
        es.iter()
            .map(|e| (e.term, e.index, e.base_offset))
            .collect::<Vec<_>>(),
        vec![(1, 1, 0), (2, 2, 2), (2, 3, 9)]
    );
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    let es2 = log.entries(0, 10, usize::MAX).unwrap();
    assert_eq!(es, es2);
    log.truncate_after(None).unwrap();
    assert_eq!(log.bounds().last, None);
    assert_eq!(log.bounds().next_offset, 0);
}

#[test]
fn purge_deletes_whole_segments_after_recording_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = small_config();
    let log = open(dir.path(), &cfg, &ctx);
    for i in 1..=30 {
        append_durable(&log, vec![data(1, i, batch(1, 300, i as i64))]);
    }
    let before = log.segment_count();
    log.purge(LogPos { term: 1, index: 20 }).unwrap();
    assert!(log.segment_count() < before);
    let b = log.bounds();
    assert_eq!(b.log_start_offset, 20);
    assert_eq!(b.last_purged, Some(LogPos { term: 1, index: 20 }));
    assert_eq!(log.entries(0, 100, usize::MAX).unwrap()[0].index, 21);
    // Reads below the start return nothing from purged entries.
    let got = log.read_batches(5, usize::MAX, 30).unwrap();
    assert_eq!(validate(&got[0]).unwrap().base_offset, 20);
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    assert_eq!(log.bounds().log_start_offset, 20);
    assert_eq!(log.entries(0, 100, usize::MAX).unwrap().len(), 10);
    // Purge past the end (a snapshot install): numbering continues from the hint.
    log.set_purge_hint(40, 77);
    log.purge(LogPos { term: 2, index: 40 }).unwrap();
    assert_eq!(log.segment_count(), 0);
    append_durable(&log, vec![data(2, 41, batch(1, 10, 5))]);
    assert_eq!(log.entries(41, 42, usize::MAX).unwrap()[0].base_offset, 77);
}

#[test]
fn retention_boundary_by_size_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let mut cfg = small_config();
    cfg.retention_ms = Some(1000);
    let log = open(dir.path(), &cfg, &ctx);
    for i in 1..=30 {
        append_durable(&log, vec![data(1, i, batch(1, 300, 1_000 * i as i64))]);
    }
    // At time 20_500 everything with timestamps <= 19_500 is expired: whole sealed segments only.
    let b = log.retention_boundary(20_500).unwrap();
    assert!(b.index < 20, "{b:?}");
    assert!(log.retention_boundary(0).is_none());
    drop(log);
    let mut cfg2 = small_config();
    cfg2.retention_ms = None;
    cfg2.retention_bytes = Some(4096);
    let log = open(dir.path(), &cfg2, &ctx);
    let b = log.retention_boundary(0).unwrap();
    // Retention never reaches into the active segment, and keeps at least retention_bytes.
    assert!(b.index < 30, "{b:?}");
    log.purge(b).unwrap();
    let kept: u64 = log.segment_ends().iter().map(|(_, e)| e).sum::<u64>();
    assert!(kept >= 4096, "{kept}");
    assert!(log.retention_boundary(0).is_none());
}

#[test]
fn torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = LogConfig::default();
    let log = open(dir.path(), &cfg, &ctx);
    append_durable(
        &log,
        vec![data(1, 1, batch(2, 100, 1)), data(1, 2, batch(2, 100, 1))],
    );
    log.append(vec![data(1, 3, batch(2, 100, 1))], None)
        .unwrap();
    let (path, end) = log.segment_ends().remove(0);
    drop(log);
    // Tear the last frame: its tail never reached the disk.
    let f = RealIo.open(&path, false).unwrap();
    f.write_all_vectored_at(&[&[0u8; 40]], end - 40).unwrap();
    let log = open(dir.path(), &cfg, &ctx);
    assert_eq!(log.bounds().last, Some(LogPos { term: 1, index: 2 }));
    assert_eq!(log.bounds().next_offset, 4);
    append_durable(&log, vec![data(2, 3, batch(1, 10, 1))]);
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    assert_eq!(log.entries(0, 10, usize::MAX).unwrap().len(), 3);
}

/// XORs an 8-byte aligned chunk: frames are 8-aligned, so the chunk always holds CRC-covered bytes.
fn flip_chunk(path: &Path, at: u64) {
    let at = at / 8 * 8;
    let f = RealIo.open(path, false).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    for x in &mut b {
        *x ^= 0x5a;
    }
    f.write_all_vectored_at(&[&b], at).unwrap();
}

#[test]
fn a_flipped_bit_in_the_active_segment_fails_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = LogConfig::default();
    let log = open(dir.path(), &cfg, &ctx);
    for i in 1..=20 {
        append_durable(&log, vec![data(1, i, batch(1, 300, 1))]);
    }
    let (active, end) = log.segment_ends().pop().unwrap();
    drop(log);
    // Later frames prove the damaged bytes were durable: an error, not a silent truncation.
    flip_chunk(&active, end / 2);
    assert!(matches!(
        PartitionLog::open(dir.path(), cfg.clone(), ctx.clone()),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_fails_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = small_config();
    let log = open(dir.path(), &cfg, &ctx);
    for i in 1..=20 {
        append_durable(&log, vec![data(1, i, batch(1, 300, 1))]);
    }
    let (sealed, end) = log.segment_ends().remove(0);
    log.close().unwrap();
    drop(log);
    flip_chunk(&sealed, end / 2 + 64);
    let log = open(dir.path(), &cfg, &ctx);
    assert!(matches!(
        log.entries(0, 100, usize::MAX),
        Err(StorageError::Corrupt { .. })
    ));
    assert!(matches!(
        log.read_batches(0, usize::MAX, 20),
        Err(StorageError::Corrupt { .. })
    ));
}

#[test]
fn enospc_on_append_is_an_error_and_loses_nothing_synced() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let faults = io.faults.clone();
    let ctx = StorageContext::with_io(Arc::new(io));
    let cfg = LogConfig::default();
    let log = open(dir.path(), &cfg, &ctx);
    for i in 1..=5 {
        append_durable(&log, vec![data(1, i, batch(2, 100, 1))]);
    }
    faults.write_budget.store(100, Ordering::SeqCst);
    let e = log
        .append(vec![data(1, 6, batch(2, 500, 1))], None)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
    assert_eq!(log.bounds().last, Some(LogPos { term: 1, index: 5 }));
    faults.write_budget.store(u64::MAX, Ordering::SeqCst);
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    assert_eq!(log.entries(0, 100, usize::MAX).unwrap().len(), 5);
    assert_eq!(log.bounds().next_offset, 10);
    // Preallocation failing (disk full at roll) is an error too.
    faults.fail_allocate.store(true, Ordering::SeqCst);
    let big: Vec<NewEntry> = (6..30).map(|i| data(1, i, batch(1, 1 << 20, 1))).collect();
    assert!(log.append(big, None).is_err());
}

#[test]
fn fsync_failure_stops_the_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let faults = io.faults.clone();
    let ctx = StorageContext::with_io(Arc::new(io));
    let log = open(dir.path(), &LogConfig::default(), &ctx);
    append_durable(&log, vec![blank(1, 1)]);
    faults.fail_sync.store(true, Ordering::SeqCst);
    let (tx, rx) = channel();
    log.append(
        vec![blank(1, 2)],
        Some(Box::new(move |r| tx.send(r).unwrap())),
    )
    .unwrap();
    assert!(rx.recv().unwrap().is_err());
    faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(log.stopped().is_some());
    assert!(matches!(
        log.append(vec![blank(1, 3)], None),
        Err(StorageError::Stopped(_))
    ));
    assert!(matches!(
        log.save_vote(vec![1]),
        Err(StorageError::Stopped(_))
    ));
}

#[test]
fn vote_committed_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let cfg = LogConfig::default();
    let log = open(dir.path(), &cfg, &ctx);
    append_durable(&log, vec![blank(1, 1), blank(1, 2)]);
    log.save_vote(vec![7, 7]).unwrap();
    log.set_committed(Some(LogPos { term: 1, index: 2 }))
        .unwrap();
    log.save_snapshot(vec![1, 2, 3]).unwrap();
    drop(log);
    let log = open(dir.path(), &cfg, &ctx);
    assert_eq!(log.vote(), Some(vec![7, 7]));
    assert_eq!(log.committed(), Some(LogPos { term: 1, index: 2 }));
    assert_eq!(log.snapshot(), Some(vec![1, 2, 3]));
}

// ---- crash property ----

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(bool, usize)>), // (is data, value size)
    Sync,
    Truncate(u8), // keep the last entry minus this many
    Purge(u8),    // purge this many from the front
    NewTerm,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => proptest::collection::vec((proptest::bool::weighted(0.8), 1usize..600), 1..5).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => (0u8..6).prop_map(Op::Truncate),
        1 => (0u8..4).prop_map(Op::Purge),
        1 => Just(Op::NewTerm),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ent {
    term: u64,
    index: u64,
    base_offset: u64,
    payload_tail: Vec<u8>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn crash_recovers_a_prefix_holding_everything_synced(
        ops in proptest::collection::vec(arb_op(), 1..40),
        cuts in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..200)), 16),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = StorageContext::new();
        let cfg = LogConfig { segment_bytes: 4096, index_interval_bytes: 256, ..LogConfig::default() };
        let log = open(dir.path(), &cfg, &ctx);
        let mut model: Vec<Ent> = Vec::new();
        let mut purged = 0u64; // entries with index <= purged are gone
        let mut synced = 0u64; // entries with index <= synced are durable
        let mut synced_ends: std::collections::HashMap<std::path::PathBuf, u64> = Default::default();
        let mut term = 1u64;
        let mut next_off = 0u64;
        let mut seq = 0i64;
        let snapshot_ends = |log: &PartitionLog, m: &mut std::collections::HashMap<std::path::PathBuf, u64>| {
            m.clear();
            for (p, e) in log.segment_ends() { m.insert(p, e); }
        };
        for op in ops {
            match op {
                Op::Append(es) => {
                    let mut batch_es = Vec::new();
                    for (is_data, size) in es {
                        let index = model.last().map_or(purged + 1, |e| e.index + 1);
                        let e = if is_data {
                            seq += 1;
                            data(term, index, batch(1 + size % 3, size, seq))
                        } else {
                            blank(term, index)
                        };
                        let tail = if is_data { e.payload[8..].to_vec() } else { vec![] };
                        model.push(Ent { term, index, base_offset: next_off, payload_tail: tail });
                        next_off += e.record_count as u64;
                        batch_es.push(e);
                    }
                    log.append(batch_es, None).unwrap();
                }
                Op::Sync => {
                    log.sync().unwrap();
                    synced = model.last().map_or(purged, |e| e.index);
                    snapshot_ends(&log, &mut synced_ends);
                }
                Op::Truncate(back) => {
                    if model.is_empty() { continue; }
                    let keep_pos = model.len().saturating_sub(1 + back as usize);
                    let keep = model[keep_pos].index;
                    log.truncate_after(Some(keep)).unwrap();
                    model.truncate(keep_pos + 1);
                    next_off = model.last().map_or(next_off, |e| e.base_offset + data_count(&log, e.index));
                    // Truncation syncs what it keeps.
                    synced = keep;
                    snapshot_ends(&log, &mut synced_ends);
                }
                Op::Purge(n) => {
                    if model.len() <= n as usize + 1 || n == 0 { continue; }
                    let upto = model[n as usize - 1].clone();
                    log.sync().unwrap();
                    log.purge(LogPos { term: upto.term, index: upto.index }).unwrap();
                    model.drain(..n as usize);
                    purged = upto.index;
                    synced = model.last().map_or(purged, |e| e.index);
                    snapshot_ends(&log, &mut synced_ends);
                }
                Op::NewTerm => term += 1,
            }
        }
        let ends = log.segment_ends();
        drop(log);
        // Crash: each segment file loses everything after a random point at or after its synced length, and
        // gains garbage there.
        for (i, (path, end)) in ends.iter().enumerate() {
            // Sealed segments were synced (zero end marker included) when they were sealed.
            let synced_len = if i + 1 == ends.len() {
                synced_ends.get(path).copied().unwrap_or(0).min(*end)
            } else {
                end + FRAME_HEADER_LEN_U64
            };
            let (r, garbage) = &cuts[i % cuts.len()];
            let span = end + FRAME_HEADER_LEN_U64 - synced_len;
            let cut = synced_len + r % (span + 1);
            let f = RealIo.open(path, false).unwrap();
            f.set_len(cut).unwrap();
            f.write_all_vectored_at(&[garbage], cut).unwrap();
        }
        let log = open(dir.path(), &cfg, &ctx);
        let got: Vec<Ent> = log.entries(0, u64::MAX, usize::MAX).unwrap().into_iter().map(|e| Ent {
            term: e.term,
            index: e.index,
            base_offset: e.base_offset,
            payload_tail: if e.kind == EntryKind::Data { e.payload[8..].to_vec() } else { vec![] },
        }).collect();
        prop_assert!(got.len() <= model.len());
        prop_assert_eq!(&got[..], &model[..got.len()]);
        let synced_count = model.iter().filter(|e| e.index <= synced).count();
        prop_assert!(got.len() >= synced_count, "lost synced entries: got {} of {} synced", got.len(), synced_count);
        // Offsets are dense and identical; the stamped batches carry them.
        for e in log.entries(0, u64::MAX, usize::MAX).unwrap() {
            if e.kind == EntryKind::Data {
                prop_assert_eq!(validate(&e.payload).unwrap().base_offset, e.base_offset);
            }
        }
        prop_assert_eq!(log.bounds().log_start_offset, model.first().map_or(log.bounds().log_start_offset, |e| e.base_offset));
    }
}

const FRAME_HEADER_LEN_U64: u64 = super::frame::FRAME_HEADER_LEN as u64;

fn data_count(log: &PartitionLog, index: u64) -> u64 {
    log.entries(index, index + 1, usize::MAX)
        .unwrap()
        .first()
        .map_or(0, |e| e.record_count as u64)
}

#[test]
fn config_changes_apply_at_runtime_and_stats_follow() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = StorageContext::new();
    let log = open(dir.path(), &LogConfig::default(), &ctx);
    let mut index = 1;
    let mut fill = |log: &PartitionLog, n: usize| {
        for _ in 0..n {
            append_durable(log, vec![data(1, index, batch(4, 200, 1_000))]);
            index += 1;
        }
    };
    fill(&log, 20);
    assert_eq!(log.stats().segments, 1, "128 MiB segments: no roll yet");
    assert_eq!(log.retention_boundary(i64::MAX / 2), None);
    // Invalid settings are refused and change nothing.
    let bad = LogConfig {
        segment_bytes: 1,
        ..LogConfig::default()
    };
    assert!(matches!(log.set_config(bad), Err(StorageError::Invalid(_))));
    assert_eq!(log.config(), LogConfig::default());
    // Smaller segments: the next appends roll.
    log.set_config(small_config()).unwrap();
    fill(&log, 40);
    let s = log.stats();
    assert!(s.segments >= 3, "{s:?}");
    assert!(
        s.log_bytes > 40 * 800 && s.allocated_bytes >= s.log_bytes,
        "{s:?}"
    );
    assert_eq!((s.purged_segments, s.purged_bytes), (0, 0));
    // Size retention set at runtime moves the retention boundary; a purge there deletes and counts.
    assert_eq!(log.retention_boundary(0), None);
    log.set_config(LogConfig {
        retention_bytes: Some(4096),
        retention_ms: None,
        ..small_config()
    })
    .unwrap();
    let b = log
        .retention_boundary(0)
        .expect("a boundary once retention shrinks");
    log.purge(b).unwrap();
    let after = log.stats();
    assert!(after.segments < s.segments, "{after:?}");
    assert_eq!(after.purged_segments, s.segments - after.segments);
    assert!(after.purged_bytes > 0);
}
