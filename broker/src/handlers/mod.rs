//! Request handlers, one module per API. Each takes the decoded request and the shared [`Broker`] and
//! returns the response body, or a request-level [`ErrorResponse`] (per-partition and per-topic errors live
//! in the bodies). Handlers convert between wire types and domain types; they never see raw frames.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod fetch;
pub mod groups;
pub mod init_producer_id;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use runnel_protocol::{ErrorCode, ErrorResponse, Request, Response};

use crate::metadata::LookupError;
use crate::partition::Partition;
use crate::server::Broker;

/// Why a partition cannot be served here: the code, a message, and the leader to try instead.
pub type Unservable = (ErrorCode, String, Option<u32>);

/// This broker's replica of `topic`-`partition` if it leads it (produce, fetch and list-offsets are served
/// by the leader only); otherwise NOT_LEADER with the leader this broker knows of, or
/// UNKNOWN_TOPIC_OR_PARTITION.
pub fn leader_partition(
    broker: &Broker,
    topic: &str,
    partition: u32,
) -> Result<Arc<Partition>, Unservable> {
    served_partition(broker, topic, partition, false)
}

/// This broker's replica of `topic`-`partition`, leader or follower (a Fetch with `read_replica`); a
/// broker without a replica answers like [`leader_partition`].
pub fn replica_partition(
    broker: &Broker,
    topic: &str,
    partition: u32,
) -> Result<Arc<Partition>, Unservable> {
    served_partition(broker, topic, partition, true)
}

fn served_partition(
    broker: &Broker,
    topic: &str,
    partition: u32,
    any_replica: bool,
) -> Result<Arc<Partition>, Unservable> {
    let not_leader = |hint: Option<u32>| {
        (
            ErrorCode::NotLeader,
            format!(
                "node {} does not lead {topic}-{partition} (leader: {})",
                broker.registry.node_id(),
                hint.map_or("unknown".to_string(), |h| format!("node {h}"))
            ),
            hint,
        )
    };
    let hint = || {
        broker
            .registry
            .topic(topic)
            .and_then(|t| crate::cluster::partition_view(broker, &t, partition as usize).leader)
    };
    match broker.registry.partition(topic, partition) {
        Ok(p) if p.is_leader() || any_replica => Ok(p),
        Ok(_) | Err(LookupError::NotHosted) => Err(not_leader(
            hint().filter(|h| *h != broker.registry.node_id()),
        )),
        Err(LookupError::UnknownTopicOrPartition) => Err((
            ErrorCode::UnknownTopicOrPartition,
            format!("topic {topic:?} has no partition {partition}"),
            None,
        )),
    }
}

/// Dispatches one request to its handler.
pub async fn handle(broker: &Arc<Broker>, req: Request) -> Result<Response, ErrorResponse> {
    // Between brokers and for version negotiation nothing waits; a client request waits (bounded) until
    // a broker that has just started has caught up with the cluster metadata.
    if !matches!(req, Request::RaftRpc(_) | Request::ApiVersions(_)) {
        broker.metadata_caught_up().await;
    }
    match req {
        Request::ApiVersions(r) => Ok(Response::ApiVersions(api_versions::handle(r))),
        Request::Metadata(r) => Ok(Response::Metadata(metadata::handle(broker, r))),
        Request::CreateTopics(r) => Ok(Response::CreateTopics(
            create_topics::handle(broker, r).await,
        )),
        Request::DeleteTopics(r) => Ok(Response::DeleteTopics(
            delete_topics::handle(broker, r).await,
        )),
        Request::CreatePartitions(r) => Ok(Response::CreatePartitions(
            create_partitions::handle(broker, r).await,
        )),
        Request::Produce(r) => produce::handle(broker, r).await.map(Response::Produce),
        Request::Fetch(r) => fetch::handle(broker, r).await.map(Response::Fetch),
        Request::ListOffsets(r) => Ok(Response::ListOffsets(list_offsets::handle(broker, r))),
        Request::FindCoordinator(r) => Ok(Response::FindCoordinator(
            groups::find_coordinator(broker, r).await,
        )),
        Request::GroupHeartbeat(r) => groups::heartbeat(broker, r)
            .await
            .map(Response::GroupHeartbeat),
        Request::OffsetCommit(r) => groups::offset_commit(broker, r)
            .await
            .map(Response::OffsetCommit),
        Request::OffsetFetch(r) => groups::offset_fetch(broker, r)
            .await
            .map(Response::OffsetFetch),
        Request::ListGroups(r) => groups::list_groups(broker, r)
            .await
            .map(Response::ListGroups),
        Request::DescribeGroup(r) => groups::describe_group(broker, r)
            .await
            .map(Response::DescribeGroup),
        Request::RaftRpc(r) => Ok(Response::RaftRpc(raft_rpc(broker, r).await)),
        Request::AlterConfigs(r) => Ok(Response::AlterConfigs(
            alter_configs::handle(broker, r).await,
        )),
        Request::InitProducerId(r) => Ok(Response::InitProducerId(
            init_producer_id::handle(broker, r).await,
        )),
    }
}

/// Broker-to-broker RPCs: Raft messages go to the group they name; metadata proposals to the controller;
/// leader-gossip asks are answered from the local partitions.
async fn raft_rpc(
    broker: &Arc<Broker>,
    r: runnel_protocol::messages::raft_rpc::RaftRpcRequest,
) -> runnel_protocol::messages::raft_rpc::RaftRpcResponse {
    use runnel_protocol::messages::raft_rpc::{
        RaftRpcResponse, RAFT_RPC_LEADERS, RAFT_RPC_METADATA_PROPOSE,
    };
    match r.kind {
        RAFT_RPC_LEADERS => crate::cluster::gossip::handle_leaders(broker),
        RAFT_RPC_METADATA_PROPOSE => match broker.registry.cluster() {
            Some(c) => c.controller.handle_propose(r).await,
            None => RaftRpcResponse {
                error_code: runnel_protocol::ErrorCode::InvalidRequest.as_u16(),
                error_message: Some("this broker is not part of a cluster".into()),
                payload: bytes::Bytes::new(),
            },
        },
        _ => broker.raft.handle(r).await,
    }
}
