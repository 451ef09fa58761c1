//! CreateTopics: validates and creates each topic independently; one result per requested topic, in order.
//! Partitions 0 and replication factor 0 ask for the broker defaults. A name given twice in one request is
//! INVALID_REQUEST for the repeats. After creating, it waits (at most `timeout_ms`, capped by
//! `LEADER_WAIT_MAX`) for the new partitions to elect leaders, so a produce right after succeeds; a topic
//! still without leaders then is created all the same (clients retry LEADER_NOT_AVAILABLE / NOT_LEADER).

use std::collections::HashSet;

use runnel_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicResult};
use runnel_protocol::ErrorCode;

use crate::metadata::{TopicError, LEADER_WAIT_MAX};
use crate::server::Broker;

/// The wire form of a per-topic admin outcome.
pub fn topic_result(name: String, r: Result<(), TopicError>) -> TopicResult {
    match r {
        Ok(()) => TopicResult {
            name,
            error_code: ErrorCode::None.as_u16(),
            error_message: None,
        },
        Err(e) => TopicResult {
            name,
            error_code: e.code.as_u16(),
            error_message: Some(e.message),
        },
    }
}

/// The bounded wait for leaders after an admin change.
pub fn leader_wait(timeout_ms: u32) -> std::time::Duration {
    std::time::Duration::from_millis(timeout_ms as u64).min(LEADER_WAIT_MAX)
}

pub async fn handle(broker: &Broker, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut seen = HashSet::with_capacity(req.topics.len());
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let r = if !seen.insert(t.name.clone()) {
            Err(TopicError {
                code: ErrorCode::InvalidRequest,
                message: format!("topic {:?} is named twice in one request", t.name),
            })
        } else {
            broker
                .registry
                .create_topic(
                    &t.name,
                    t.partitions,
                    t.replication_factor,
                    &t.configs,
                    req.validate_only,
                )
                .await
        };
        if r.is_ok() && !req.validate_only {
            broker
                .registry
                .await_leaders(&t.name, leader_wait(req.timeout_ms))
                .await;
        }
        topics.push(topic_result(t.name, r));
    }
    CreateTopicsResponse { topics }
}
