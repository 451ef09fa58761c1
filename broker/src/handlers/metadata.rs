//! Metadata: the brokers (from `--peers`), the controller (the metadata group's leader; this node on a single
//! node), and for each requested topic (all when the request names none) its partitions with leader, term,
//! replicas, caught-up replicas, offsets, and effective configs — from the local replica or leader gossip
//! (see [`crate::cluster::view`]).

use runnel_protocol::messages::{
    BrokerMeta, MetadataRequest, MetadataResponse, PartitionMeta, TopicMeta,
};
use runnel_protocol::ErrorCode;

use crate::cluster::topic_views;
use crate::metadata::Topic;
use crate::server::Broker;

fn topic_meta(broker: &Broker, t: &Topic) -> TopicMeta {
    let partitions = topic_views(broker, t)
        .into_iter()
        .map(|v| PartitionMeta {
            partition: v.partition,
            error_code: if v.leader.is_some() {
                ErrorCode::None.as_u16()
            } else {
                ErrorCode::LeaderNotAvailable.as_u16()
            },
            leader: v.leader,
            leader_term: v.term,
            replicas: v.replicas,
            in_sync: v.caught_up,
            high_watermark: v.high_watermark,
            log_start_offset: v.log_start_offset,
            log_end_offset: v.log_end_offset,
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

/// The brokers of the cluster (from `--peers`; this node alone on a single node) and the controller.
pub fn brokers(broker: &Broker) -> (Vec<BrokerMeta>, Option<u32>) {
    let node_id = broker.registry.node_id();
    match broker.registry.cluster() {
        None => (
            vec![BrokerMeta {
                node_id,
                host: broker.advertised_host.clone(),
                port: broker.advertised_port,
            }],
            Some(node_id),
        ),
        Some(c) => {
            let list = broker
                .config
                .peers
                .iter()
                .map(|p| {
                    if p.node_id == node_id {
                        return BrokerMeta {
                            node_id,
                            host: broker.advertised_host.clone(),
                            port: broker.advertised_port,
                        };
                    }
                    let (host, port) = crate::server::split_host_port(&p.addr)
                        .unwrap_or_else(|| (p.addr.clone(), 0));
                    BrokerMeta {
                        node_id: p.node_id,
                        host,
                        port,
                    }
                })
                .collect();
            (list, c.controller.leader())
        }
    }
}

pub fn handle(broker: &Broker, req: MetadataRequest) -> MetadataResponse {
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
    let (brokers, controller_id) = brokers(broker);
    MetadataResponse {
        cluster_id: broker.registry.cluster_id(),
        controller_id,
        brokers,
        topics,
        metadata_epoch: broker.registry.epoch(),
    }
}
