//! CreateTopics: validates and creates each topic independently; one result per requested topic, in order.
//! Partitions 0 and replication factor 0 ask for the broker defaults. A name given twice in one request is
//! INVALID_REQUEST for the repeats.

use std::collections::HashSet;

use runnel_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicResult};
use runnel_protocol::ErrorCode;

use crate::metadata::TopicError;
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
        topics.push(topic_result(t.name, r));
    }
    CreateTopicsResponse { topics }
}
