//! CreatePartitions: grows a topic to `new_total` partitions (never shrinks: a smaller or equal total is
//! INVALID_PARTITIONS), then waits
//! for the new partitions' leaders as CreateTopics does.

use runnel_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::create_topics::{leader_wait, topic_result};
use crate::server::Broker;

pub async fn handle(broker: &Broker, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let r = broker
        .registry
        .create_partitions(&req.topic, req.new_total)
        .await;
    if r.is_ok() {
        broker
            .registry
            .await_leaders(&req.topic, leader_wait(req.timeout_ms))
            .await;
    }
    CreatePartitionsResponse {
        result: topic_result(req.topic, r),
    }
}
