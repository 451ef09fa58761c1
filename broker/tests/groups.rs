//! Consumer-group APIs over real sockets: join and assignment, commits checked against membership and the
//! high watermark, admin resets refused while members live, and committed offsets surviving a restart
//! (they are records in `__consumer_offsets`, replayed when the coordinator starts).

mod common;

use common::*;
use runnel_broker::Server;
use runnel_protocol::messages::*;
use runnel_protocol::{ErrorCode, Request, Response};

async fn heartbeat(c: &mut Client, req: GroupHeartbeatRequest) -> GroupHeartbeatResponse {
    match c.call(Request::GroupHeartbeat(req)).await {
        Ok(Response::GroupHeartbeat(r)) => r,
        other => panic!("unexpected {other:?}"),
    }
}

async fn commit(c: &mut Client, member: &str, partition: u32, offset: u64) -> OffsetCommitResponse {
    let req = OffsetCommitRequest {
        group_id: "g".into(),
        member_id: member.into(),
        member_epoch: -1,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition,
                offset,
                metadata: None,
            }],
        }],
    };
    match c.call(Request::OffsetCommit(req)).await {
        Ok(Response::OffsetCommit(r)) => r,
        other => panic!("unexpected {other:?}"),
    }
}

async fn committed(c: &mut Client) -> Vec<(u32, Option<u64>)> {
    let req = OffsetFetchRequest {
        group_id: "g".into(),
        topics: None,
    };
    match c.call(Request::OffsetFetch(req)).await {
        Ok(Response::OffsetFetch(r)) => r
            .topics
            .into_iter()
            .filter(|t| t.name == "t")
            .flat_map(|t| t.partitions)
            .map(|p| (p.partition, p.committed_offset))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn join_commit_fence_and_reset() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 2).await;
    for p in 0..2 {
        assert_eq!(
            c.produce("t", p, batch(&["a", "b", "c"], 1))
                .await
                .error_code,
            0
        );
    }
    let join = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group_id: "g".into(),
            member_epoch: 0,
            session_timeout_ms: 10_000,
            subscribed_topics: Some(vec!["t".into()]),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(join.error_code, 0, "{join:?}");
    let assigned: Vec<u32> = join
        .assignment
        .unwrap()
        .into_iter()
        .flat_map(|t| t.partitions)
        .collect();
    assert_eq!(assigned, vec![0, 1]);
    let m = join.member_id.clone();
    assert_eq!(commit(&mut c, &m, 0, 2).await.error_code, 0);
    // Above the high watermark (3) is refused for that partition.
    let r = commit(&mut c, &m, 1, 4).await;
    assert_eq!(
        code(r.topics[0].partitions[0].error_code),
        ErrorCode::InvalidCommitOffset
    );
    // A stranger's commit and an admin reset while a member lives are refused.
    assert_eq!(
        code(commit(&mut c, "zombie", 0, 0).await.error_code),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(
        code(commit(&mut c, "", 0, 0).await.error_code),
        ErrorCode::GroupNotEmpty
    );
    let leave = heartbeat(
        &mut c,
        GroupHeartbeatRequest {
            group_id: "g".into(),
            member_id: m.clone(),
            member_epoch: -1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(leave.member_epoch, -1);
    // The leaver is fenced; an admin commit on the empty group works.
    assert_eq!(
        code(commit(&mut c, &m, 0, 3).await.error_code),
        ErrorCode::UnknownMemberId
    );
    assert_eq!(commit(&mut c, "", 1, 3).await.error_code, 0);
    assert_eq!(committed(&mut c).await, vec![(0, Some(2)), (1, Some(3))]);
    match c.call(Request::ListGroups(ListGroupsRequest {})).await {
        Ok(Response::ListGroups(r)) => assert_eq!(r.groups[0].group_id, "g"),
        other => panic!("unexpected {other:?}"),
    }
    match c
        .call(Request::FindCoordinator(FindCoordinatorRequest {
            group_id: "g".into(),
        }))
        .await
    {
        Ok(Response::FindCoordinator(r)) => assert_eq!(r.port, b.addr().port()),
        other => panic!("unexpected {other:?}"),
    }

    // Restart on the same data dir: the commits are still there.
    let dir = b.dir;
    let addr_cfg = test_config(dir.path());
    b.handle.shutdown().await;
    let handle = Server::start(addr_cfg).await.unwrap();
    let mut c = Client::connect(handle.local_addr()).await;
    assert_eq!(committed(&mut c).await, vec![(0, Some(2)), (1, Some(3))]);
    handle.shutdown().await;
}
