//! Produce: validates each partition's record batch (`batch::validate`: length, CRC, every record) and
//! hands it to the partition (`Partition::submit`), then waits for the acknowledgements (per `acks`). The
//! response lists partitions in request order and is sent when every partition is resolved or the request's
//! timeout passed (those still pending are REQUEST_TIMED_OUT: the write may still land).
//!
//! Invariant: the produce requests of one connection are *submitted* in the order they arrived (each waits
//! for its predecessor's submission, never for its acknowledgement), so batches a client pipelines on one
//! connection enter each partition's log in the order it sent them.
//!
//! The batch bytes are a zero-copy slice of the request frame all the way to the partition.

use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::batch::{self, BatchError};
use runnel_protocol::messages::{
    ProducePartitionData, ProducePartitionResponse, ProduceRequest, ProduceResponse,
    ProduceTopicResponse, ACKS_ALL, ACKS_LEADER, ACKS_NONE,
};
use runnel_protocol::{ErrorCode, ErrorResponse};
use tokio::time::Instant;

use crate::partition::PartitionError;
use crate::server::Broker;

/// Used when a request says `timeout_ms = 0`.
pub const PRODUCE_TIMEOUT_MS_DEFAULT: u32 = 30_000;
/// Longest a produce request may wait for its appends.
pub const PRODUCE_TIMEOUT_MS_MAX: u32 = 300_000;

/// The error code for a batch that failed validation.
pub fn batch_error_code(e: &BatchError) -> ErrorCode {
    match e {
        BatchError::TooLarge(_) => ErrorCode::MessageTooLarge,
        BatchError::Incomplete { .. }
        | BatchError::BadMagic(_)
        | BatchError::BadCrc { .. }
        | BatchError::Malformed(_) => ErrorCode::CorruptMessage,
    }
}

fn failed(
    partition: u32,
    code: ErrorCode,
    message: String,
    leader_hint: Option<u32>,
) -> ProducePartitionResponse {
    ProducePartitionResponse {
        partition,
        error_code: code.as_u16(),
        error_message: Some(message),
        leader_hint,
        ..ProducePartitionResponse::default()
    }
}

/// What became of one partition's batch once submitted: answered already, or handed to Raft.
enum Submitted {
    Done(ProducePartitionResponse),
    Pending {
        partition: Arc<crate::partition::Partition>,
        records: u32,
        bytes: usize,
        append: crate::partition::PendingAppend,
    },
}

fn timed_out(pid: u32, timeout_ms: u32) -> ProducePartitionResponse {
    failed(
        pid,
        ErrorCode::RequestTimedOut,
        format!("not acknowledged within {timeout_ms} ms; the batch may still be written"),
        None,
    )
}

fn refused(pid: u32, e: PartitionError) -> ProducePartitionResponse {
    let hint = match &e {
        PartitionError::NotLeader { leader_hint } => *leader_hint,
        _ => None,
    };
    failed(pid, e.code(), e.to_string(), hint)
}

/// Validates one partition's batch and hands it to its partition (the part that must happen in request
/// order), without waiting for the acknowledgement.
async fn submit_one(
    broker: &Broker,
    topic: &str,
    data: &ProducePartitionData,
    acks: i8,
    deadline: Instant,
    timeout_ms: u32,
) -> Submitted {
    let pid = data.partition;
    let partition = match super::leader_partition(broker, topic, pid) {
        Ok(p) => p,
        Err((code, message, hint)) => return Submitted::Done(failed(pid, code, message, hint)),
    };
    let header = match batch::validate(&data.batch) {
        Ok(h) => h,
        Err(e) => return Submitted::Done(failed(pid, batch_error_code(&e), e.to_string(), None)),
    };
    let submitted = tokio::time::timeout_at(
        deadline,
        partition.submit(data.batch.clone(), &header, acks),
    )
    .await;
    match submitted {
        Err(_) => Submitted::Done(timed_out(pid, timeout_ms)),
        Ok(Err(e)) => Submitted::Done(refused(pid, e)),
        Ok(Ok(append)) => Submitted::Pending {
            partition,
            records: header.record_count,
            bytes: data.batch.len(),
            append,
        },
    }
}

/// Waits for a submitted batch's acknowledgement, at most until `deadline`.
async fn complete_one(
    broker: &Broker,
    pid: u32,
    submitted: Submitted,
    deadline: Instant,
    timeout_ms: u32,
) -> ProducePartitionResponse {
    let (partition, records, bytes, append) = match submitted {
        Submitted::Done(r) => return r,
        Submitted::Pending {
            partition,
            records,
            bytes,
            append,
        } => (partition, records, bytes, append),
    };
    match tokio::time::timeout_at(deadline, append).await {
        Err(_) => timed_out(pid, timeout_ms),
        Ok(Err(e)) => refused(pid, e),
        Ok(Ok(out)) => {
            broker.metrics.add_produce(bytes as u64, u64::from(records));
            ProducePartitionResponse {
                partition: pid,
                error_code: ErrorCode::None.as_u16(),
                error_message: None,
                base_offset: out.base_offset,
                log_append_time_ms: out.log_append_time_ms,
                log_start_offset: partition.log_start_offset(),
                leader_hint: None,
            }
        }
    }
}

/// Handles a produce request on its own.
pub async fn handle(
    broker: &Arc<Broker>,
    req: ProduceRequest,
) -> Result<ProduceResponse, ErrorResponse> {
    handle_in_turn(broker, req, None, None).await
}

/// Handles a produce request whose batches must enter their partitions' logs after those of the
/// connection's previous produce request: it waits for `after` (the previous request's submission)
/// before submitting its own, and signals `submitted` (by dropping it) once its batches are handed over or
/// refused, before it waits for their acknowledgements. That is what lets a client keep several batches of
/// one partition in flight on one connection and have them written in the order it sent them.
pub async fn handle_in_turn(
    broker: &Arc<Broker>,
    req: ProduceRequest,
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    submitted: Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<ProduceResponse, ErrorResponse> {
    if !matches!(req.acks, ACKS_ALL | ACKS_NONE | ACKS_LEADER) {
        return Err(ErrorResponse {
            code: ErrorCode::InvalidRequest,
            message: format!(
                "acks must be -1 (all), 0 (none) or 1 (leader); got {}",
                req.acks
            ),
        });
    }
    let timeout_ms = match req.timeout_ms {
        0 => PRODUCE_TIMEOUT_MS_DEFAULT,
        t => t.min(PRODUCE_TIMEOUT_MS_MAX),
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    if let Some(after) = after {
        // An error only means the previous request's task ended: its turn is over either way.
        let _ = tokio::time::timeout_at(deadline, after).await;
    }
    let mut pending = Vec::with_capacity(req.topics.iter().map(|t| t.partitions.len()).sum());
    for t in &req.topics {
        for d in &t.partitions {
            let s = submit_one(broker, &t.name, d, req.acks, deadline, timeout_ms).await;
            pending.push((d.partition, s));
        }
    }
    drop(submitted);
    let results = futures::future::join_all(
        pending
            .into_iter()
            .map(|(pid, s)| complete_one(broker, pid, s, deadline, timeout_ms)),
    )
    .await;
    let mut results = results.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| ProduceTopicResponse {
            name: t.name.clone(),
            partitions: results.by_ref().take(t.partitions.len()).collect(),
        })
        .collect();
    Ok(ProduceResponse { topics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_errors_map_to_codes() {
        assert_eq!(
            batch_error_code(&BatchError::TooLarge(1 << 30)),
            ErrorCode::MessageTooLarge
        );
        assert_eq!(
            batch_error_code(&BatchError::BadCrc {
                expected: 1,
                actual: 2
            }),
            ErrorCode::CorruptMessage
        );
        assert_eq!(
            batch_error_code(&BatchError::Malformed("x")),
            ErrorCode::CorruptMessage
        );
    }
}
