//! Produce: validates each partition's record batch (`batch::validate`: length, CRC, every record) and
//! appends it through the partition (`Partition::append`, which answers per `acks`). Partitions are handled
//! concurrently; the response lists them in request order and is sent when every partition is resolved or
//! the request's timeout passed (those still pending are REQUEST_TIMED_OUT: the write may still land).
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

async fn produce_one(
    broker: &Broker,
    topic: &str,
    data: &ProducePartitionData,
    acks: i8,
    deadline: Instant,
    timeout_ms: u32,
) -> ProducePartitionResponse {
    let pid = data.partition;
    let partition = match super::leader_partition(broker, topic, pid) {
        Ok(p) => p,
        Err((code, message, hint)) => return failed(pid, code, message, hint),
    };
    let header = match batch::validate(&data.batch) {
        Ok(h) => h,
        Err(e) => return failed(pid, batch_error_code(&e), e.to_string(), None),
    };
    let appended = tokio::time::timeout_at(
        deadline,
        partition.append(data.batch.clone(), &header, acks),
    )
    .await;
    match appended {
        Err(_) => failed(
            pid,
            ErrorCode::RequestTimedOut,
            format!("not acknowledged within {timeout_ms} ms; the batch may still be written"),
            None,
        ),
        Ok(Err(e)) => {
            let hint = match &e {
                PartitionError::NotLeader { leader_hint } => *leader_hint,
                _ => None,
            };
            failed(pid, e.code(), e.to_string(), hint)
        }
        Ok(Ok(out)) => {
            broker
                .metrics
                .add_produce(data.batch.len() as u64, u64::from(header.record_count));
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

pub async fn handle(
    broker: &Arc<Broker>,
    req: ProduceRequest,
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
    let results = futures::future::join_all(req.topics.iter().flat_map(|t| {
        t.partitions
            .iter()
            .map(|d| produce_one(broker, &t.name, d, req.acks, deadline, timeout_ms))
    }))
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
