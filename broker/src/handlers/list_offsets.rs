//! ListOffsets: `-2` (earliest) answers the log start offset, `-1` (latest) the high watermark, any other
//! non-negative timestamp the first offset of the first batch whose max timestamp is at or after it (the high
//! watermark if none). The response's `timestamp` is `-1`: the broker does not look up the record's time.

use runnel_protocol::messages::{
    ListOffsetsPartitionResponse, ListOffsetsRequest, ListOffsetsResponse,
    ListOffsetsTopicResponse, EARLIEST, LATEST,
};
use runnel_protocol::ErrorCode;

use crate::partition::PartitionError;
use crate::server::Broker;

fn entry(
    partition: u32,
    r: Result<u64, (ErrorCode, String, Option<u32>)>,
) -> ListOffsetsPartitionResponse {
    match r {
        Ok(offset) => ListOffsetsPartitionResponse {
            partition,
            error_code: ErrorCode::None.as_u16(),
            error_message: None,
            offset,
            timestamp: -1,
            leader_hint: None,
        },
        Err((code, message, leader_hint)) => ListOffsetsPartitionResponse {
            partition,
            error_code: code.as_u16(),
            error_message: Some(message),
            offset: 0,
            timestamp: -1,
            leader_hint,
        },
    }
}

pub fn handle(broker: &Broker, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|q| {
                    let r = match super::leader_partition(broker, &t.name, q.partition) {
                        Err(e) => Err(e),
                        Ok(p) => match q.timestamp {
                            EARLIEST => Ok(p.log_start_offset()),
                            LATEST => Ok(p.high_watermark()),
                            ts if ts < 0 => Err((
                                ErrorCode::InvalidRequest,
                                format!("timestamp {ts}: use -2 (earliest), -1 (latest) or a time in ms"),
                                None,
                            )),
                            ts => p.offset_for_timestamp(ts).map_err(|e| {
                                let hint = match &e {
                                    PartitionError::NotLeader { leader_hint } => *leader_hint,
                                    _ => None,
                                };
                                (e.code(), e.to_string(), hint)
                            }),
                        },
                    };
                    entry(q.partition, r)
                })
                .collect();
            ListOffsetsTopicResponse {
                name: t.name,
                partitions,
            }
        })
        .collect();
    ListOffsetsResponse { topics }
}
