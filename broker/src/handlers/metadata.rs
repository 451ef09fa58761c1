//! Metadata: this node as the only broker and controller, and for each requested topic (all when the request
//! names none) its partitions with leader, term, replicas, in-sync replicas, offsets, and effective configs.

use runnel_protocol::messages::{
    BrokerMeta, MetadataRequest, MetadataResponse, PartitionMeta, TopicMeta,
};
use runnel_protocol::ErrorCode;

use crate::metadata::Topic;
use crate::server::Broker;

fn topic_meta(broker: &Broker, t: &Topic) -> TopicMeta {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let replicas = t.record.assignments.get(i).cloned().unwrap_or_default();
            let leader = p.leader();
            // A single node: its replica is in sync while it serves the partition.
            let in_sync = if leader.is_some() {
                replicas.clone()
            } else {
                Vec::new()
            };
            PartitionMeta {
                partition: i as u32,
                error_code: if leader.is_some() {
                    ErrorCode::None.as_u16()
                } else {
                    ErrorCode::LeaderNotAvailable.as_u16()
                },
                leader,
                leader_term: p.term(),
                replicas,
                in_sync,
                high_watermark: p.high_watermark(),
                log_start_offset: p.log_start_offset(),
                log_end_offset: p.log_end_offset(),
            }
        })
        .collect();
    TopicMeta {
        error_code: ErrorCode::None.as_u16(),
        name: t.record.name.clone(),
        internal: t.record.name.starts_with("__"),
        partitions,
        configs: broker.registry.effective_config(&t.record).pairs(),
    }
}

pub fn handle(broker: &Broker, req: MetadataRequest) -> MetadataResponse {
    let node_id = broker.registry.node_id();
    let topics = match req.topics {
        None => broker
            .registry
            .topics()
            .iter()
            .map(|t| topic_meta(broker, t))
            .collect(),
        Some(names) => names
            .into_iter()
            .map(|name| match broker.registry.topic(&name) {
                Some(t) => topic_meta(broker, &t),
                None => TopicMeta {
                    error_code: ErrorCode::UnknownTopicOrPartition.as_u16(),
                    name,
                    ..TopicMeta::default()
                },
            })
            .collect(),
    };
    MetadataResponse {
        cluster_id: broker.registry.cluster_id().to_string(),
        controller_id: Some(node_id),
        brokers: vec![BrokerMeta {
            node_id,
            host: broker.advertised_host.clone(),
            port: broker.advertised_port,
        }],
        topics,
    }
}
