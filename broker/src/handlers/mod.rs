//! Request handlers, one module per API. Each takes the decoded request and the shared [`Broker`] and
//! returns the response body, or a request-level [`ErrorResponse`] (per-partition and per-topic errors live
//! in the bodies). Handlers convert between wire types and domain types; they never see raw frames.

pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod fetch;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::sync::Arc;

use runnel_protocol::{ErrorResponse, Request, Response};

use crate::server::Broker;

/// Dispatches one request to its handler.
pub async fn handle(broker: &Arc<Broker>, req: Request) -> Result<Response, ErrorResponse> {
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
        Request::FindCoordinator(r) => Ok(Response::FindCoordinator(groups::find_coordinator(
            broker, r,
        ))),
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
        Request::RaftRpc(r) => Ok(Response::RaftRpc(broker.raft.handle(r).await)),
    }
}
