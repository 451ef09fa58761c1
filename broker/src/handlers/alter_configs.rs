//! AlterConfigs: changes one topic's config overrides (`runnel topic alter-config`) through
//! [`crate::metadata::Registry::alter_topic_configs`], which validates the resulting set, persists it and
//! applies it to the live partitions before this answers.

use runnel_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::create_topics::topic_result;
use crate::server::Broker;

pub async fn handle(broker: &Broker, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let r = broker
        .registry
        .alter_topic_configs(&req.topic, &req.configs, req.validate_only)
        .await
        .map(|_| ());
    AlterConfigsResponse {
        result: topic_result(req.topic, r),
    }
}
