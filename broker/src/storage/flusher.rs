//! Group commit: one flusher thread per [`StorageContext`] takes every queued flush request, fdatasyncs
//! each distinct file once, then runs the requests' completion callbacks — so many appends share one sync.
//!
//! Invariants: a callback runs only after the fdatasync covering its bytes returned; a failed sync is never
//! retried (the callback gets the error and the log marks itself stopped); the queue is bounded
//! ([`FLUSH_QUEUE_MAX`]) so writers feel back-pressure instead of growing memory.
//!
//! Observability: an optional [`FlushObserver`] hears of every fdatasync the flusher makes (its duration and
//! how many record batches it made durable), so the broker can export fsync latency and batches per fsync.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::io::{FileIo, IoFile, RealIo};

/// Flush requests that may wait in the queue before `submit` blocks.
pub const FLUSH_QUEUE_MAX: usize = 8192;
/// Requests one round takes at most (one sync per distinct file among them).
pub const FLUSH_ROUND_MAX: usize = 4096;

/// Runs once the bytes are durable (`Ok`) or the sync failed (`Err`).
pub type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Hears of every fdatasync the flusher makes. Called on the flusher thread between syncs: implementations
/// must be quick, must not block and should not allocate (atomic counters and histograms).
pub trait FlushObserver: Send + Sync + 'static {
    /// One fdatasync of one file took `elapsed` and made `batches` record batches durable (summed over the
    /// flush requests it covered; 0 when they carried only Raft control entries). `ok` is false when it failed.
    fn synced(&self, elapsed: Duration, batches: u64, ok: bool);
}

struct FlushJob {
    file: Arc<dyn IoFile>,
    /// Record batches this request makes durable (for the observer only).
    batches: u32,
    done: FlushCallback,
}

enum Msg {
    Job(FlushJob),
    Stop,
}

struct FlusherThread {
    tx: SyncSender<Msg>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for FlusherThread {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Ok(mut h) = self.handle.lock() {
            if let Some(h) = h.take() {
                let _ = h.join();
            }
        }
    }
}

/// Broker-wide storage services shared by every partition: the file-I/O seam and the group-commit flusher.
/// Cheap to clone; the flusher thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct StorageContext {
    io: Arc<dyn FileIo>,
    flusher: Arc<FlusherThread>,
    observer: Option<Arc<dyn FlushObserver>>,
}

impl std::fmt::Debug for StorageContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageContext")
            .field("io", &self.io)
            .finish()
    }
}

impl Default for StorageContext {
    fn default() -> Self {
        StorageContext::new()
    }
}

impl StorageContext {
    /// Real file system, one flusher thread.
    pub fn new() -> StorageContext {
        StorageContext::with_io(Arc::new(RealIo))
    }

    /// Uses `io` for every file operation (tests pass a [`super::io::FaultyIo`]).
    pub fn with_io(io: Arc<dyn FileIo>) -> StorageContext {
        StorageContext::with_observer(io, None)
    }

    /// Like [`StorageContext::with_io`], reporting every flusher fdatasync to `observer`.
    pub fn with_observer(
        io: Arc<dyn FileIo>,
        observer: Option<Arc<dyn FlushObserver>>,
    ) -> StorageContext {
        let (tx, rx) = sync_channel(FLUSH_QUEUE_MAX);
        let thread_observer = observer.clone();
        let handle = std::thread::Builder::new()
            .name("runnel-flusher".into())
            .spawn(move || flusher_loop(rx, thread_observer.as_deref()))
            .ok();
        if handle.is_none() {
            tracing::error!("could not start the flusher thread; flushes run inline");
        }
        StorageContext {
            io,
            flusher: Arc::new(FlusherThread {
                tx,
                handle: Mutex::new(handle),
            }),
            observer,
        }
    }

    pub fn io(&self) -> &Arc<dyn FileIo> {
        &self.io
    }

    /// Queues an fdatasync of `file`, which makes `batches` record batches durable; `done` runs after it.
    /// Blocks while the queue is full.
    pub fn submit_flush(&self, file: Arc<dyn IoFile>, batches: u32, done: FlushCallback) {
        let has_thread = self
            .flusher
            .handle
            .lock()
            .map(|h| h.is_some())
            .unwrap_or(false);
        let job = Msg::Job(FlushJob {
            file,
            batches,
            done,
        });
        if !has_thread {
            run_inline(job, self.observer.as_deref());
            return;
        }
        match self.flusher.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                if let Err(e) = self.flusher.tx.send(m) {
                    run_inline(e.0, self.observer.as_deref());
                }
            }
            Err(TrySendError::Disconnected(m)) => run_inline(m, self.observer.as_deref()),
        }
    }
}

/// One fdatasync, timed and reported.
fn timed_sync(
    file: &dyn IoFile,
    batches: u64,
    observer: Option<&dyn FlushObserver>,
) -> io::Result<()> {
    let started = Instant::now();
    let r = file.sync_data();
    if let Some(o) = observer {
        o.synced(started.elapsed(), batches, r.is_ok());
    }
    r
}

fn run_inline(m: Msg, observer: Option<&dyn FlushObserver>) {
    if let Msg::Job(j) = m {
        let r = timed_sync(j.file.as_ref(), u64::from(j.batches), observer);
        (j.done)(r);
    }
}

fn flusher_loop(rx: Receiver<Msg>, observer: Option<&dyn FlushObserver>) {
    let mut round: Vec<FlushJob> = Vec::with_capacity(64);
    let mut scratch = RoundScratch::default();
    loop {
        // Block for the first request, then take whatever else is already queued.
        let first = match rx.recv_timeout(Duration::from_secs(3600)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut stop = false;
        match first {
            Msg::Job(j) => round.push(j),
            Msg::Stop => stop = true,
        }
        while round.len() < FLUSH_ROUND_MAX {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => round.push(j),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        run_round(&mut round, &mut scratch, observer);
        if stop {
            // Drain what is left so no waiter hangs, then exit.
            while let Ok(m) = rx.try_recv() {
                run_inline(m, observer);
            }
            return;
        }
    }
}

/// Per-round bookkeeping, kept across rounds so a round does not allocate once warmed up.
#[derive(Default)]
struct RoundScratch {
    /// File (by pointer) → its slot in `order`.
    files: HashMap<*const (), usize>,
    /// In first-seen order: (index of the first job for the file, batches covered, sync result).
    order: Vec<(usize, u64, Option<io::Result<()>>)>,
}

fn run_round(
    round: &mut Vec<FlushJob>,
    scratch: &mut RoundScratch,
    observer: Option<&dyn FlushObserver>,
) {
    // One fdatasync per distinct file, in first-seen order; each reports the batches of every request it
    // covers.
    scratch.files.clear();
    scratch.order.clear();
    let RoundScratch { files, order } = scratch;
    for (i, j) in round.iter().enumerate() {
        let key = Arc::as_ptr(&j.file) as *const ();
        match files.get(&key) {
            Some(&slot) => {
                if let Some(o) = order.get_mut(slot) {
                    o.1 += u64::from(j.batches);
                }
            }
            None => {
                files.insert(key, order.len());
                order.push((i, u64::from(j.batches), None));
            }
        }
    }
    for (first, batches, result) in order.iter_mut() {
        if let Some(j) = round.get(*first) {
            *result = Some(timed_sync(j.file.as_ref(), *batches, observer));
        }
    }
    for j in round.drain(..) {
        let key = Arc::as_ptr(&j.file) as *const ();
        let r = match files.get(&key).and_then(|&slot| order.get(slot)) {
            Some((_, _, Some(Ok(())))) => Ok(()),
            Some((_, _, Some(Err(e)))) => Err(io::Error::new(e.kind(), e.to_string())),
            _ => Err(io::Error::other("flush result missing")),
        };
        (j.done)(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::FaultyIo;
    use std::sync::atomic::Ordering;
    use std::sync::mpsc::channel;

    #[test]
    fn many_requests_share_few_syncs_and_errors_reach_every_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let faults = io.faults.clone();
        let ctx = StorageContext::with_io(Arc::new(io));
        let f = ctx.io().open(&dir.path().join("f"), true).unwrap();
        let (tx, rx) = channel();
        let n = 500;
        for _ in 0..n {
            let tx = tx.clone();
            ctx.submit_flush(f.clone(), 1, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..n {
            assert!(rx.recv().unwrap());
        }
        let syncs = faults.syncs.load(Ordering::SeqCst);
        assert!(syncs >= 1 && syncs <= n as u64, "{syncs}");
        faults.fail_sync.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            let tx = tx.clone();
            ctx.submit_flush(f.clone(), 1, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..10 {
            assert!(!rx.recv().unwrap());
        }
    }

    #[derive(Default)]
    struct Recorder {
        syncs: std::sync::atomic::AtomicU64,
        batches: std::sync::atomic::AtomicU64,
        failed: std::sync::atomic::AtomicU64,
    }

    impl FlushObserver for Recorder {
        fn synced(&self, _elapsed: Duration, batches: u64, ok: bool) {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            self.batches.fetch_add(batches, Ordering::SeqCst);
            if !ok {
                self.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn the_observer_hears_every_sync_and_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let faults = io.faults.clone();
        let rec = Arc::new(Recorder::default());
        let ctx = StorageContext::with_observer(Arc::new(io), Some(rec.clone()));
        let files = [
            ctx.io().open(&dir.path().join("a"), true).unwrap(),
            ctx.io().open(&dir.path().join("b"), true).unwrap(),
        ];
        let (tx, rx) = channel();
        let n = 300u32;
        for i in 0..n {
            let tx = tx.clone();
            let f = files[(i % 2) as usize].clone();
            ctx.submit_flush(f, 3, Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..n {
            assert!(rx.recv().unwrap());
        }
        // Every batch is reported exactly once, by one of the syncs that covered it.
        assert_eq!(rec.batches.load(Ordering::SeqCst), 3 * u64::from(n));
        assert_eq!(
            rec.syncs.load(Ordering::SeqCst),
            faults.syncs.load(Ordering::SeqCst)
        );
        faults.fail_sync.store(true, Ordering::SeqCst);
        let tx2 = tx.clone();
        ctx.submit_flush(
            files[0].clone(),
            1,
            Box::new(move |r| tx2.send(r.is_ok()).unwrap()),
        );
        assert!(!rx.recv().unwrap());
        assert_eq!(rec.failed.load(Ordering::SeqCst), 1);
    }

    /// At the limit: with the flusher stuck, exactly FLUSH_QUEUE_MAX requests queue up and the next
    /// submit blocks (back-pressure) until the flusher moves again; then every callback runs.
    #[test]
    fn a_full_queue_blocks_the_submitter_until_the_flusher_drains_it() {
        use std::sync::atomic::AtomicUsize;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let ctx = StorageContext::new();
        let f = ctx.io().open(&dir.path().join("f"), true).unwrap();
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        ctx.submit_flush(
            f.clone(),
            1,
            Box::new(move |_| {
                started_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            }),
        );
        started_rx.recv().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..FLUSH_QUEUE_MAX {
            let d = done.clone();
            ctx.submit_flush(
                f.clone(),
                1,
                Box::new(move |_| {
                    d.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        let submitted = Arc::new(AtomicUsize::new(0));
        let extra = {
            let (ctx, f, d, s) = (ctx.clone(), f.clone(), done.clone(), submitted.clone());
            std::thread::spawn(move || {
                ctx.submit_flush(
                    f,
                    1,
                    Box::new(move |_| {
                        d.fetch_add(1, Ordering::SeqCst);
                    }),
                );
                s.store(1, Ordering::SeqCst);
            })
        };
        // The queue is full and the flusher is stuck: the extra submit must not get through.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            submitted.load(Ordering::SeqCst),
            0,
            "submit did not block at the limit"
        );
        release_tx.send(()).unwrap();
        extra.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while done.load(Ordering::SeqCst) < FLUSH_QUEUE_MAX + 1 {
            assert!(Instant::now() < deadline, "callbacks did not all run");
            std::thread::yield_now();
        }
    }
}
