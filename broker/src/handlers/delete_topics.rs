//! DeleteTopics: deletes each named topic independently (its partitions are shut down and their files
//! removed); one result per name, in order.

use runnel_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::create_topics::topic_result;
use crate::server::Broker;

pub async fn handle(broker: &Broker, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut topics = Vec::with_capacity(req.names.len());
    for name in req.names {
        let r = broker.registry.delete_topic(&name).await;
        topics.push(topic_result(name, r));
    }
    DeleteTopicsResponse { topics }
}
