//! Storage benchmark: appends `--total-mib` of `--record-bytes` records through the partition log in batches
//! of each `--batch-kib` size with group-commit fsync, then reads everything back; prints MB/s and the
//! p50/p99/p999 append-to-durable latency. In the same run it measures the raw baselines on the same file
//! system with the same bytes and batch size:
//! - raw group commit: plain `pwrite` of each batch by one thread while another loops `fdatasync`, with the
//!   same in-flight bound (the physical limit of the group-commit design; the ratio target is against it);
//! - raw sync-each: `write` + `fdatasync` per batch (capped at `--sync-each-mib`, it is slow).
//!
//! MB = 10^6 bytes of batch payload. Run in release mode:
//! `cargo run --release -p runnel-broker --bin runnel-storage-bench -- --total-mib 1024`

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use runnel_broker::storage::{EntryKind, LogConfig, NewEntry, PartitionLog, StorageContext};
use runnel_protocol::batch::{validate, RecordBatchBuilder};

#[derive(Parser, Debug)]
#[command(about = "Runnel storage benchmark (release mode)")]
struct Args {
    /// Directory for the benchmark files (removed afterwards). Default: a temp dir under the current dir.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// MiB to append per batch size.
    #[arg(long, default_value_t = 1024)]
    total_mib: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Batch sizes in KiB (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = vec![16u64, 1024])]
    batch_kib: Vec<u64>,
    /// Bytes appended but not yet durable, at most (MiB): the group-commit window.
    #[arg(long, default_value_t = 64)]
    inflight_mib: u64,
    /// MiB for the sync-each baseline (one fdatasync per batch is slow).
    #[arg(long, default_value_t = 64)]
    sync_each_mib: u64,
    /// Runs of the log and of the raw group baseline per batch size, alternating which goes first (the
    /// disk is shared and noisy); MB/s are averaged, latency histograms merged.
    #[arg(long, default_value_t = 2)]
    repeat: u32,
}

const MB: f64 = 1_000_000.0;

struct Flow {
    state: Mutex<(u64, u64)>, // (bytes appended, bytes durable)
    cv: Condvar,
}

impl Flow {
    fn new() -> Arc<Flow> {
        Arc::new(Flow {
            state: Mutex::new((0, 0)),
            cv: Condvar::new(),
        })
    }
    fn admit(&self, bytes: u64, limit: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 - s.1 + bytes > limit && s.0 > s.1 {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 += bytes;
    }
    fn done(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += bytes;
        self.cv.notify_all();
    }
    fn wait_all(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.1 < s.0 {
            s = self.cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }
}

fn make_batch(batch_bytes: usize, record_bytes: usize) -> (Bytes, u32, i64) {
    let per = record_bytes + 16;
    let n = (batch_bytes / per).max(1);
    let mut b = RecordBatchBuilder::new(n * per + 128);
    let v = vec![0xabu8; record_bytes];
    for i in 0..n {
        b.push(1_700_000_000_000 + i as i64, None, &v, &[]);
    }
    let b = b.finish();
    let h = validate(&b).expect("benchmark batch is valid");
    (b, h.record_count, h.max_timestamp)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

struct Result {
    mb_s: f64,
    hist: Histogram<u64>,
}

fn print_line(name: &str, r: &Result) {
    println!(
        "  {name:<22} {:>9.1} MB/s   append-to-durable p50 {:>8.3} ms  p99 {:>8.3} ms  p999 {:>8.3} ms",
        r.mb_s,
        r.hist.value_at_quantile(0.5) as f64 / 1000.0,
        r.hist.value_at_quantile(0.99) as f64 / 1000.0,
        r.hist.value_at_quantile(0.999) as f64 / 1000.0,
    );
}

fn bench_log(
    dir: &Path,
    batch: &Bytes,
    count: u32,
    max_ts: i64,
    n: u64,
    inflight: u64,
) -> (Result, PartitionLog) {
    let ctx = StorageContext::new();
    let log = PartitionLog::open(dir, LogConfig::default(), ctx).expect("open log");
    let hist = Arc::new(Mutex::new(histogram()));
    let flow = Flow::new();
    let len = batch.len() as u64;
    let start = Instant::now();
    for i in 0..n {
        flow.admit(len, inflight);
        let t0 = Instant::now();
        let (h, f) = (hist.clone(), flow.clone());
        let e = NewEntry {
            term: 1,
            index: i + 1,
            kind: EntryKind::Data,
            payload: batch.clone(),
            record_count: count,
            max_timestamp: max_ts,
        };
        log.append(
            [e],
            Some(Box::new(move |r| {
                r.expect("durable");
                let us = t0.elapsed().as_micros() as u64;
                let _ = h
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(us.max(1));
                f.done(len);
            })),
        )
        .expect("append");
    }
    flow.wait_all();
    let secs = start.elapsed().as_secs_f64();
    let hist = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (
        Result {
            mb_s: (n * len) as f64 / MB / secs,
            hist,
        },
        log,
    )
}

fn bench_raw_group(path: &Path, batch: &Bytes, n: u64, inflight: u64) -> Result {
    let file = Arc::new(
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .expect("raw file"),
    );
    let len = batch.len() as u64;
    let flow = Flow::new();
    // (end position, start time) of writes not yet known durable.
    let pending: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::new(Mutex::new(VecDeque::new()));
    let written = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(Mutex::new(false));
    let hist = Arc::new(Mutex::new(histogram()));
    let syncer = {
        let (file, flow, pending, written, stop, hist) = (
            file.clone(),
            flow.clone(),
            pending.clone(),
            written.clone(),
            stop.clone(),
            hist.clone(),
        );
        std::thread::spawn(move || loop {
            let upto = *written.lock().unwrap_or_else(|e| e.into_inner());
            let any = !pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            if !any {
                if *stop.lock().unwrap_or_else(|e| e.into_inner()) {
                    return;
                }
                std::thread::sleep(Duration::from_micros(20));
                continue;
            }
            file.sync_data().expect("fdatasync");
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut h = hist.lock().unwrap_or_else(|e| e.into_inner());
            while p.front().is_some_and(|(end, _)| *end <= upto) {
                if let Some((_, t0)) = p.pop_front() {
                    let _ = h.record((t0.elapsed().as_micros() as u64).max(1));
                    flow.done(len);
                }
            }
        })
    };
    let start = Instant::now();
    let mut pos = 0u64;
    for _ in 0..n {
        flow.admit(len, inflight);
        let t0 = Instant::now();
        file.write_all_at(batch, pos).expect("raw write");
        pos += len;
        // Publish the write before it can be counted durable.
        let mut w = written.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((pos, t0));
        *w = pos;
    }
    flow.wait_all();
    let secs = start.elapsed().as_secs_f64();
    *stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
    let _ = syncer.join();
    let _ = std::fs::remove_file(path);
    let hist = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Result {
        mb_s: (n * len) as f64 / MB / secs,
        hist,
    }
}

fn bench_raw_sync_each(path: &Path, batch: &Bytes, n: u64) -> Result {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .expect("raw file");
    let mut hist = histogram();
    let start = Instant::now();
    let mut pos = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        file.write_all_at(batch, pos).expect("raw write");
        file.sync_data().expect("fdatasync");
        pos += batch.len() as u64;
        let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    Result {
        mb_s: (n * batch.len() as u64) as f64 / MB / secs,
        hist,
    }
}

fn read_back(log: &PartitionLog) -> (f64, u64) {
    let end = log.bounds().next_offset;
    let start = Instant::now();
    let mut off = 0;
    let mut bytes = 0u64;
    let mut sum = 0u64;
    while off < end {
        let got = log.read_batches(off, 4 << 20, end).expect("read");
        let Some(last) = got.last() else { break };
        let h = validate(last).expect("valid batch");
        off = h.next_offset();
        for b in &got {
            bytes += b.len() as u64;
            sum = sum.wrapping_add(b[b.len() - 1] as u64);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sum);
    (bytes as f64 / MB / secs, bytes)
}

fn main() {
    let args = Args::parse();
    let base = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let root = base.join(format!("runnel-storage-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("bench dir");
    let inflight = args.inflight_mib << 20;
    println!(
        "runnel-storage-bench: {} MiB per batch size, {}-byte records, in-flight window {} MiB, dir {}",
        args.total_mib,
        args.record_bytes,
        args.inflight_mib,
        base.display()
    );
    for kib in &args.batch_kib {
        let (batch, count, max_ts) = make_batch((*kib as usize) << 10, args.record_bytes);
        let n = ((args.total_mib << 20) / batch.len() as u64).max(1);
        let total = n * batch.len() as u64;
        println!(
            "\nbatch {kib} KiB ({} bytes, {count} records), {n} batches, {:.1} MB",
            batch.len(),
            total as f64 / MB
        );
        let mut raw = Result {
            mb_s: 0.0,
            hist: histogram(),
        };
        let mut ours = Result {
            mb_s: 0.0,
            hist: histogram(),
        };
        let mut reads = Vec::new();
        let dir = root.join(format!("log-{kib}"));
        for r in 0..args.repeat.max(1) {
            let run_raw = |raw: &mut Result| {
                // Start each run with no foreign dirty data queued for writeback.
                rustix::fs::sync();
                let x = bench_raw_group(&root.join(format!("raw-{kib}")), &batch, n, inflight);
                println!("    run {r}: raw group {:.1} MB/s", x.mb_s);
                raw.mb_s += x.mb_s;
                let _ = raw.hist.add(&x.hist);
            };
            let mut run_log = |ours: &mut Result| {
                rustix::fs::sync();
                let _ = std::fs::remove_dir_all(&dir);
                let (x, log) = bench_log(&dir, &batch, count, max_ts, n, inflight);
                println!("    run {r}: partition log {:.1} MB/s", x.mb_s);
                ours.mb_s += x.mb_s;
                let _ = ours.hist.add(&x.hist);
                let (read_mb_s, read_bytes) = read_back(&log);
                assert_eq!(read_bytes, total, "read back everything");
                reads.push(read_mb_s);
            };
            if r % 2 == 0 {
                run_raw(&mut raw);
                run_log(&mut ours);
            } else {
                run_log(&mut ours);
                run_raw(&mut raw);
            }
        }
        let runs = args.repeat.max(1) as f64;
        raw.mb_s /= runs;
        ours.mb_s /= runs;
        let read_mb_s = reads.iter().sum::<f64>() / reads.len().max(1) as f64;
        let read_bytes = total;
        let each_n = ((args.sync_each_mib << 20) / batch.len() as u64).clamp(1, n);
        let each = bench_raw_sync_each(&root.join(format!("each-{kib}")), &batch, each_n);
        print_line("partition log", &ours);
        print_line("raw write+fdatasync(group)", &raw);
        print_line(
            &format!(
                "raw write+fdatasync(each, {} MB)",
                (each_n * batch.len() as u64) / 1_000_000
            ),
            &each,
        );
        println!(
            "  ratio log/raw-group {:.2}   log/raw-each {:.2}",
            ours.mb_s / raw.mb_s,
            ours.mb_s / each.mb_s
        );
        println!(
            "  sequential read (page cache, zero-copy, our own frames: no CRC pass) {:.1} MB/s over {:.1} MB",
            read_mb_s,
            read_bytes as f64 / MB
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&root);
}
