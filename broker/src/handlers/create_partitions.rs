//! CreatePartitions: grows a topic to `new_total` partitions (never shrinks: a smaller or equal total is
//! INVALID_PARTITIONS).

use runnel_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::create_topics::topic_result;
use crate::server::Broker;

pub async fn handle(broker: &Broker, req: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let r = broker
        .registry
        .create_partitions(&req.topic, req.new_total)
        .await;
    CreatePartitionsResponse {
        result: topic_result(req.topic, r),
    }
}
