//! Fetch: reads committed batches from each requested partition and long-polls.
//!
//! Sizes: each partition gets at most `partition_max_bytes`, the response at most `max_bytes` (capped by
//! `FETCH_MAX_BYTES_MAX` less room for the response's own fields, so the frame stays under
//! `FRAME_SIZE_MAX`). As in Kafka, the first batch of the response is returned whole even when larger than
//! those limits, so a consumer always progresses; later partitions only get what still fits.
//!
//! Long poll: when fewer than `min_bytes` are available and no partition has an error, the handler waits for
//! any partition's high watermark to move, for `max_wait_ms` (capped by `FETCH_MAX_WAIT_MS_MAX`) to pass, or
//! for the broker to start draining, and reads again. The watches are marked seen *before* each read, so an
//! append between the read and the wait still wakes it.
//!
//! Leader only, unless the request sets `read_replica`: then this broker's own replica answers, leader or
//! follower, bounded by its own high watermark (what it has applied as committed), like every read.
//!
//! Record bytes are the `Bytes` that `Partition::read` returns, passed to the response untouched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use runnel_protocol::limits::{FETCH_MAX_BYTES_MAX, FETCH_MAX_WAIT_MS_MAX};
use runnel_protocol::messages::{
    FetchPartitionResponse, FetchRequest, FetchResponse, FetchTopicResponse, Records,
};
use runnel_protocol::{ErrorCode, ErrorResponse};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::partition::{Partition, PartitionError};
use crate::server::Broker;

/// Room reserved in the response for its fixed fields and per-topic overhead.
const RESPONSE_BASE_OVERHEAD: usize = 64;
/// Room reserved per partition entry (fixed fields and a short error message).
const RESPONSE_PARTITION_OVERHEAD: usize = 128;

struct Slot {
    topic: usize,
    partition: u32,
    offset: u64,
    max_bytes: usize,
    part: Result<Arc<Partition>, super::Unservable>,
}

/// The response budget for record bytes.
fn budget(req: &FetchRequest) -> usize {
    let overhead = RESPONSE_BASE_OVERHEAD
        + req
            .topics
            .iter()
            .map(|t| t.name.len() + 8 + t.partitions.len() * RESPONSE_PARTITION_OVERHEAD)
            .sum::<usize>();
    (req.max_bytes.min(FETCH_MAX_BYTES_MAX) as usize)
        .min((FETCH_MAX_BYTES_MAX as usize).saturating_sub(overhead))
}

fn error_entry(
    partition: u32,
    code: ErrorCode,
    message: String,
    high_watermark: u64,
    log_start_offset: u64,
    leader_hint: Option<u32>,
) -> FetchPartitionResponse {
    FetchPartitionResponse {
        partition,
        error_code: code.as_u16(),
        error_message: Some(message),
        high_watermark,
        log_start_offset,
        leader_hint,
        records: Records::default(),
    }
}

/// Drops batches from the end until `chunks` total at most `limit` bytes.
fn trim_to(chunks: &mut Vec<Bytes>, limit: usize) {
    let mut total: usize = chunks.iter().map(|c| c.len()).sum();
    while total > limit {
        match chunks.pop() {
            Some(c) => total -= c.len(),
            None => break,
        }
    }
}

/// One read of every slot. Returns the per-slot entries, the record bytes gathered and whether any
/// partition reported an error.
fn read_all(slots: &[Slot], budget: usize) -> (Vec<FetchPartitionResponse>, usize, bool) {
    let mut used = 0usize;
    let mut any_error = false;
    let mut out = Vec::with_capacity(slots.len());
    for s in slots {
        let p = match &s.part {
            Ok(p) => p,
            Err((code, message, hint)) => {
                any_error = true;
                out.push(error_entry(
                    s.partition,
                    *code,
                    message.clone(),
                    0,
                    0,
                    *hint,
                ));
                continue;
            }
        };
        let hwm = p.high_watermark();
        let log_start = p.log_start_offset();
        let limit = s.max_bytes.min(budget.saturating_sub(used));
        let records = if used > 0 && limit == 0 {
            Ok(Vec::new())
        } else {
            p.read(s.offset, limit)
        };
        match records {
            Ok(mut chunks) => {
                if used > 0 {
                    trim_to(&mut chunks, limit);
                }
                let n: usize = chunks.iter().map(|c| c.len()).sum();
                used += n;
                out.push(FetchPartitionResponse {
                    partition: s.partition,
                    error_code: ErrorCode::None.as_u16(),
                    error_message: None,
                    high_watermark: hwm,
                    log_start_offset: log_start,
                    leader_hint: None,
                    records: Records(chunks),
                });
            }
            Err(e) => {
                any_error = true;
                let (hwm, log_start, hint) = match &e {
                    PartitionError::OffsetOutOfRange {
                        log_start,
                        high_watermark,
                        ..
                    } => (*high_watermark, *log_start, None),
                    PartitionError::NotLeader { leader_hint } => (hwm, log_start, *leader_hint),
                    _ => (hwm, log_start, None),
                };
                out.push(error_entry(
                    s.partition,
                    e.code(),
                    e.to_string(),
                    hwm,
                    log_start,
                    hint,
                ));
            }
        }
    }
    (out, used, any_error)
}

/// Waits until a watched high watermark moves, `deadline` passes or the broker drains. A watch whose
/// partition went away is dropped from the set so it cannot wake the loop again.
async fn wait_for_change(
    watches: &mut [Option<watch::Receiver<u64>>],
    deadline: Instant,
    broker: &Broker,
) {
    let closed = {
        let changes: Vec<_> = watches
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| {
                w.as_mut()
                    .map(|rx| async move { (i, rx.changed().await.is_ok()) }.boxed())
            })
            .collect();
        let any_change = async {
            if changes.is_empty() {
                std::future::pending::<Option<usize>>().await
            } else {
                let ((i, ok), _, _) = futures::future::select_all(changes).await;
                (!ok).then_some(i)
            }
        };
        tokio::select! {
            c = any_change => c,
            _ = tokio::time::sleep_until(deadline) => None,
            _ = broker.draining().cancelled() => None,
        }
    };
    if let Some(i) = closed {
        if let Some(w) = watches.get_mut(i) {
            *w = None;
        }
    }
}

pub async fn handle(
    broker: &Arc<Broker>,
    req: FetchRequest,
) -> Result<FetchResponse, ErrorResponse> {
    let max_wait = Duration::from_millis(req.max_wait_ms.min(FETCH_MAX_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + max_wait;
    let budget = budget(&req);
    let slots: Vec<Slot> = req
        .topics
        .iter()
        .enumerate()
        .flat_map(|(ti, t)| {
            t.partitions.iter().map(move |p| Slot {
                topic: ti,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes as usize,
                part: if req.read_replica {
                    super::replica_partition(broker, &t.name, p.partition)
                } else {
                    super::leader_partition(broker, &t.name, p.partition)
                },
            })
        })
        .collect();
    let mut watches: Vec<Option<watch::Receiver<u64>>> = slots
        .iter()
        .map(|s| s.part.as_ref().ok().map(|p| p.watch_high_watermark()))
        .collect();
    let entries = loop {
        for w in watches.iter_mut().flatten() {
            w.borrow_and_update();
        }
        let (entries, got, any_error) = read_all(&slots, budget);
        if got >= req.min_bytes as usize
            || any_error
            || Instant::now() >= deadline
            || broker.is_draining()
        {
            broker.metrics.add_fetch_bytes(got as u64);
            break entries;
        }
        wait_for_change(&mut watches, deadline, broker).await;
    };
    let mut topics: Vec<FetchTopicResponse> = req
        .topics
        .iter()
        .map(|t| FetchTopicResponse {
            name: t.name.clone(),
            partitions: Vec::with_capacity(t.partitions.len()),
        })
        .collect();
    for (slot, entry) in slots.iter().zip(entries) {
        if let Some(t) = topics.get_mut(slot.topic) {
            t.partitions.push(entry);
        }
    }
    Ok(FetchResponse { topics })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::messages::{FetchPartition, FetchTopic};

    #[test]
    fn trimming_keeps_whole_batches_within_the_limit() {
        let mut v = vec![
            Bytes::from(vec![0; 10]),
            Bytes::from(vec![0; 10]),
            Bytes::from(vec![0; 10]),
        ];
        trim_to(&mut v, 25);
        assert_eq!(v.len(), 2);
        trim_to(&mut v, 9);
        assert!(v.is_empty());
    }

    #[test]
    fn budget_is_capped_below_the_frame_limit() {
        let req = |max_bytes| FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition::default(); 2],
            }],
            read_replica: false,
        };
        assert_eq!(budget(&req(1000)), 1000);
        let b = budget(&req(u32::MAX));
        assert!(b < FETCH_MAX_BYTES_MAX as usize);
        assert!(b > FETCH_MAX_BYTES_MAX as usize - 4096);
    }
}
