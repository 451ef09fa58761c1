//! The network seam. A single-member group never sends an RPC; [`NoNetwork`] answers every call with
//! "unreachable". Multi-node replication plugs a real `RaftNetworkFactory` in here (one connection per
//! node pair, shared by all groups, as in openraft-multi).

use std::future::Future;
use std::io;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use super::types::{PartitionRaft, Vote};

type Snapshot = openraft::alias::SnapshotOf<PartitionRaft, std::io::Cursor<Vec<u8>>>;

/// The factory for groups with no remote members.
#[derive(Clone, Debug, Default)]
pub struct NoNetwork;

/// A connection that never connects.
#[derive(Clone, Debug, Default)]
pub struct NoConnection;

fn unreachable() -> Unreachable<PartitionRaft> {
    Unreachable::new(&io::Error::new(
        io::ErrorKind::NotConnected,
        "multi-node replication is not implemented yet",
    ))
}

impl RaftNetworkFactory<PartitionRaft> for NoNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoConnection {
        NoConnection
    }
}

impl RaftNetworkV2<PartitionRaft> for NoConnection {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Err(RPCError::Unreachable(unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        Err(StreamingError::Unreachable(unreachable()))
    }
}
