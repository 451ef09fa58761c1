//! Group commit: one flusher thread per [`StorageContext`] takes every queued flush request, fdatasyncs
//! each distinct file once, then runs the requests' completion callbacks — so many appends share one sync.
//!
//! Invariants: a callback runs only after the fdatasync covering its bytes returned; a failed sync is never
//! retried (the callback gets the error and the log marks itself stopped); the queue is bounded
//! ([`FLUSH_QUEUE_MAX`]) so writers feel back-pressure instead of growing memory.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::io::{FileIo, IoFile, RealIo};

/// Flush requests that may wait in the queue before `submit` blocks.
pub const FLUSH_QUEUE_MAX: usize = 8192;
/// Requests one round takes at most (one sync per distinct file among them).
pub const FLUSH_ROUND_MAX: usize = 4096;

/// Runs once the bytes are durable (`Ok`) or the sync failed (`Err`).
pub type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

struct FlushJob {
    file: Arc<dyn IoFile>,
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
        let (tx, rx) = sync_channel(FLUSH_QUEUE_MAX);
        let handle = std::thread::Builder::new()
            .name("runnel-flusher".into())
            .spawn(move || flusher_loop(rx))
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
        }
    }

    pub fn io(&self) -> &Arc<dyn FileIo> {
        &self.io
    }

    /// Queues an fdatasync of `file`; `done` runs after it. Blocks while the queue is full.
    pub fn submit_flush(&self, file: Arc<dyn IoFile>, done: FlushCallback) {
        let has_thread = self
            .flusher
            .handle
            .lock()
            .map(|h| h.is_some())
            .unwrap_or(false);
        if !has_thread {
            let r = file.sync_data();
            done(r);
            return;
        }
        match self.flusher.tx.try_send(Msg::Job(FlushJob { file, done })) {
            Ok(()) => {}
            Err(TrySendError::Full(m)) => {
                if let Err(e) = self.flusher.tx.send(m) {
                    run_inline(e.0);
                }
            }
            Err(TrySendError::Disconnected(m)) => run_inline(m),
        }
    }
}

fn run_inline(m: Msg) {
    if let Msg::Job(j) = m {
        let r = j.file.sync_data();
        (j.done)(r);
    }
}

fn flusher_loop(rx: Receiver<Msg>) {
    let mut round: Vec<FlushJob> = Vec::with_capacity(64);
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
        run_round(&mut round);
        if stop {
            // Drain what is left so no waiter hangs, then exit.
            while let Ok(m) = rx.try_recv() {
                run_inline(m);
            }
            return;
        }
    }
}

fn run_round(round: &mut Vec<FlushJob>) {
    // One fdatasync per distinct file, in first-seen order.
    let mut results: HashMap<*const (), io::Result<()>> = HashMap::new();
    for j in round.iter() {
        let key = Arc::as_ptr(&j.file) as *const ();
        results.entry(key).or_insert_with(|| j.file.sync_data());
    }
    for j in round.drain(..) {
        let key = Arc::as_ptr(&j.file) as *const ();
        let r = match results.get(&key) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
            None => Err(io::Error::other("flush result missing")),
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
            ctx.submit_flush(f.clone(), Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..n {
            assert!(rx.recv().unwrap());
        }
        let syncs = faults.syncs.load(Ordering::SeqCst);
        assert!(syncs >= 1 && syncs <= n as u64, "{syncs}");
        faults.fail_sync.store(true, Ordering::SeqCst);
        for _ in 0..10 {
            let tx = tx.clone();
            ctx.submit_flush(f.clone(), Box::new(move |r| tx.send(r.is_ok()).unwrap()));
        }
        for _ in 0..10 {
            assert!(!rx.recv().unwrap());
        }
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
