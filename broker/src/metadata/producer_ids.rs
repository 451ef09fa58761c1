//! Producer ids for idempotent producers (`InitProducerId`), handed out of blocks reserved in the metadata,
//! like Kafka's producer id blocks allocated by the KRaft controller.
//!
//! The metadata snapshot holds `next_producer_id`: every id below it belongs to a block some broker has
//! reserved. A broker reserves the next [`PRODUCER_ID_BLOCK`] ids by moving it forward — in cluster mode a
//! metadata change proposed to the controller (compare-and-set on the epoch, rebuilt and retried a bounded
//! number of times), on a single node a save of the metadata file — and then hands them out from memory,
//! one per call.
//!
//! Invariants:
//! - An id is handed out only once the reservation of its block is durable (committed by the metadata group,
//!   or fsynced into the metadata file), so no later reservation, here or on another broker, covers it
//!   again. A restarted broker reserves a fresh block; what was left of its old one is never used.
//! - At most one reservation per broker is in flight: callers that find the block empty queue on one async
//!   mutex; the first reserves, the others then take ids from the new block.
//! - No id is handed out twice: ids are taken under that mutex and blocks never overlap.
//! - A caller that queued while a reservation failed gets that failure instead of starting another
//!   reservation (one slow controller does not cost every queued caller a full proposal timeout).

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use runnel_protocol::ErrorCode;

use super::{terr, TopicError};

/// Producer ids one reservation takes.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The block of ids this broker hands out from.
#[derive(Debug, Default)]
pub struct ProducerIdBlock {
    /// The ids of the current block not handed out yet.
    ids: tokio::sync::Mutex<Range<i64>>,
    /// Failed reservations so far, and the last failure (read by callers that queued behind it).
    failures: AtomicU64,
    last_failure: std::sync::Mutex<Option<TopicError>>,
}

impl ProducerIdBlock {
    pub fn new() -> ProducerIdBlock {
        ProducerIdBlock::default()
    }

    /// The next id: from the current block, or from a new block reserved with `reserve` (which must return
    /// a durable, never-before-reserved, non-empty range).
    pub async fn next<F, Fut>(&self, reserve: F) -> Result<i64, TopicError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Range<i64>, TopicError>>,
    {
        let failures_seen = self.failures.load(Ordering::Acquire);
        let mut ids = self.ids.lock().await;
        if let Some(id) = ids.next() {
            return Ok(id);
        }
        if self.failures.load(Ordering::Acquire) != failures_seen {
            let last = self
                .last_failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(last.unwrap_or_else(|| {
                terr(ErrorCode::RequestTimedOut, "reserving producer ids failed")
            }));
        }
        match reserve().await {
            Ok(block) if !block.is_empty() => {
                tracing::info!(
                    from = block.start,
                    to = block.end,
                    "reserved a block of producer ids"
                );
                *ids = block;
                ids.next()
                    .ok_or_else(|| terr(ErrorCode::Unknown, "an empty producer id block"))
            }
            Ok(block) => Err(terr(
                ErrorCode::Unknown,
                format!("reserved an empty producer id block {block:?}"),
            )),
            Err(e) => {
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
                self.failures.fetch_add(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;

    #[tokio::test]
    async fn ids_come_from_consecutive_blocks_and_one_reservation_serves_many() {
        let block = Arc::new(ProducerIdBlock::new());
        let next = Arc::new(AtomicI64::new(0));
        let reservations = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..(PRODUCER_ID_BLOCK as usize * 2 + 10) {
            let (block, next, reservations) = (block.clone(), next.clone(), reservations.clone());
            tasks.push(tokio::spawn(async move {
                block
                    .next(|| async {
                        reservations.fetch_add(1, Ordering::SeqCst);
                        // Slow, so that many callers find the block empty while it is in flight.
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        let start = next.fetch_add(PRODUCER_ID_BLOCK, Ordering::SeqCst);
                        Ok(start..start + PRODUCER_ID_BLOCK)
                    })
                    .await
            }));
        }
        let mut ids = BTreeSet::new();
        for t in tasks {
            assert!(
                ids.insert(t.await.unwrap().unwrap()),
                "an id handed out twice"
            );
        }
        assert_eq!(
            reservations.load(Ordering::SeqCst),
            3,
            "one reservation per block"
        );
        assert_eq!(ids.first(), Some(&0));
        assert_eq!(ids.last(), Some(&(PRODUCER_ID_BLOCK * 2 + 9)));
    }

    /// Yields that let a spawned task reach its first await on the single-threaded test runtime.
    const YIELDS: usize = 10;

    #[tokio::test]
    async fn callers_queued_behind_a_failed_reservation_get_its_error() {
        let block = Arc::new(ProducerIdBlock::new());
        let reservations = Arc::new(AtomicU64::new(0));
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (block, reservations) = (block.clone(), reservations.clone());
            tokio::spawn(async move {
                block
                    .next(|| async move {
                        reservations.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.await;
                        Err(terr(ErrorCode::RequestTimedOut, "no controller"))
                    })
                    .await
            })
        };
        // The test runtime is single-threaded: a few yields let the spawned task run up to its gate.
        for _ in 0..YIELDS {
            if reservations.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(reservations.load(Ordering::SeqCst), 1);
        let second = {
            let (block, reservations) = (block.clone(), reservations.clone());
            tokio::spawn(async move {
                block
                    .next(|| async move {
                        reservations.fetch_add(1, Ordering::SeqCst);
                        Ok(0..1)
                    })
                    .await
            })
        };
        // Let the second caller queue on the block's mutex before the reservation fails.
        for _ in 0..YIELDS {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        assert_eq!(
            first.await.unwrap().unwrap_err().code,
            ErrorCode::RequestTimedOut
        );
        let e = second.await.unwrap().unwrap_err();
        assert_eq!(
            e.message, "no controller",
            "the queued caller gets that error"
        );
        assert_eq!(
            reservations.load(Ordering::SeqCst),
            1,
            "and does not reserve"
        );
        // A later caller tries again.
        let id = block.next(|| async { Ok(5..7) }).await.unwrap();
        assert_eq!(id, 5);
        assert_eq!(block.next(|| async { Ok(100..101) }).await.unwrap(), 6);
        assert_eq!(block.next(|| async { Ok(100..101) }).await.unwrap(), 100);
    }
}
