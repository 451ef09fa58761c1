//! Consumer-group APIs: FindCoordinator, GroupHeartbeat, OffsetCommit, OffsetFetch, ListGroups, DescribeGroup.
//!
//! The coordinator is started on first use: the internal `__consumer_offsets` topic is created if missing
//! (unlimited retention: it holds the only copy of committed offsets), its partitions' committed batches are
//! replayed, and a task expires members whose session lapsed. On a single node this broker coordinates every
//! group; FindCoordinator answers with its own advertised address. In a cluster a group's coordinator is the
//! leader of its offsets partition: FindCoordinator names it, other brokers answer NOT_COORDINATOR, and a
//! broker that becomes leader replays the partition before serving its groups. `ListGroups` lists the groups
//! of the partitions this broker leads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use runnel_protocol::batch::validate;
use runnel_protocol::messages::*;
use runnel_protocol::{ErrorCode, ErrorResponse};

use crate::groups::coordinator::{Coordinator, OffsetsLog, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::metadata::LEADER_WAIT_MAX;
use crate::partition::Partition;
use crate::server::Broker;

/// Longest an offset commit above this broker's view of the partition's high watermark waits for the
/// view to catch up (the leaders' gossip runs every 500 ms) before it is refused.
const COMMIT_HWM_WAIT: Duration = Duration::from_millis(1_500);
/// How often that view is looked at meanwhile.
const COMMIT_HWM_POLL: Duration = Duration::from_millis(20);

/// How often expired group members are looked for.
const EXPIRE_INTERVAL: Duration = Duration::from_millis(250);

/// An offsets partition as the coordinator sees it.
struct PartitionOffsetsLog(Arc<Partition>);

impl OffsetsLog for PartitionOffsetsLog {
    fn append(&self, batch: Bytes) -> BoxFuture<'_, Result<(), (ErrorCode, String)>> {
        Box::pin(async move {
            let header =
                validate(&batch).map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))?;
            self.0
                .append(batch, &header, ACKS_ALL)
                .await
                .map(|_| ())
                .map_err(|e| (e.code(), e.to_string()))
        })
    }
    fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, (ErrorCode, String)> {
        self.0
            .read(offset, max_bytes)
            .map_err(|e| (e.code(), e.to_string()))
    }
    fn log_start_offset(&self) -> u64 {
        self.0.log_start_offset()
    }
    fn high_watermark(&self) -> u64 {
        self.0.high_watermark()
    }
    fn leads(&self) -> bool {
        self.0.is_leader()
    }
    fn term(&self) -> u64 {
        self.0.term()
    }
    fn catch_up(&self) -> BoxFuture<'_, Result<(), (ErrorCode, String)>> {
        Box::pin(async move {
            self.0
                .catch_up_applied()
                .await
                .map_err(|e| (e.code(), e.to_string()))
        })
    }
}

/// The coordinator, made current for `group_id` (see [`Coordinator::ensure_current`]).
async fn coordinator_for(
    broker: &Arc<Broker>,
    group_id: &str,
) -> Result<Arc<Coordinator>, ErrorResponse> {
    let c = coordinator(broker).await?;
    c.ensure_current(group_id)
        .await
        .map_err(|(code, message)| ErrorResponse { code, message })?;
    Ok(c)
}

fn unavailable(message: String) -> ErrorResponse {
    ErrorResponse {
        code: ErrorCode::CoordinatorNotAvailable,
        message,
    }
}

/// The coordinator, started on first use.
async fn coordinator(broker: &Arc<Broker>) -> Result<Arc<Coordinator>, ErrorResponse> {
    broker
        .groups
        .get_or_try_init(|| async {
            if broker.registry.topic(OFFSETS_TOPIC).is_none() {
                let configs = vec![("retention.ms".to_string(), "-1".to_string())];
                if let Err(e) = broker
                    .registry
                    .create_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, 0, &configs, false)
                    .await
                {
                    if e.code != ErrorCode::TopicAlreadyExists {
                        return Err(unavailable(format!(
                            "cannot create {OFFSETS_TOPIC}: {}",
                            e.message
                        )));
                    }
                }
            }
            if !broker
                .registry
                .await_leaders(OFFSETS_TOPIC, LEADER_WAIT_MAX)
                .await
            {
                return Err(unavailable(format!(
                    "{OFFSETS_TOPIC} has partitions without a leader"
                )));
            }
            let topic = broker
                .registry
                .topic(OFFSETS_TOPIC)
                .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC} vanished")))?;
            // Every broker hosts every offsets partition while their replication factor equals the
            // broker count (the default up to three brokers); other layouts are not served yet.
            let logs: Vec<Arc<dyn OffsetsLog>> = topic
                .partitions
                .iter()
                .map(|p| {
                    p.clone()
                        .map(|p| Arc::new(PartitionOffsetsLog(p)) as Arc<dyn OffsetsLog>)
                        .ok_or_else(|| {
                            unavailable(format!(
                                "this broker hosts no replica of some {OFFSETS_TOPIC} partition"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?;
            let c = Arc::new(
                Coordinator::load(logs)
                    .map_err(|(_, m)| unavailable(format!("replaying offsets: {m}")))?,
            );
            let (weak, b) = (Arc::downgrade(&c), broker.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EXPIRE_INTERVAL);
                loop {
                    tokio::select! {
                        _ = b.draining().cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let Some(c) = weak.upgrade() else { return };
                    c.expire(&partition_counts(&b));
                }
            });
            Ok(c)
        })
        .await
        .cloned()
}

/// Partition count of every topic.
fn partition_counts(broker: &Broker) -> BTreeMap<String, u32> {
    broker
        .registry
        .topics()
        .iter()
        .map(|t| (t.record.name.clone(), t.partitions.len() as u32))
        .collect()
}

/// On a single node, this broker. In a cluster, the leader of the group's offsets partition (the offsets
/// topic is created on the first ask).
pub async fn find_coordinator(
    broker: &Arc<Broker>,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let me = FindCoordinatorResponse {
        error_code: 0,
        error_message: None,
        node_id: broker.config.node_id,
        host: broker.advertised_host.clone(),
        port: broker.advertised_port,
    };
    if broker.registry.cluster().is_none() {
        return me;
    }
    let not_available = |message: String| FindCoordinatorResponse {
        error_code: ErrorCode::CoordinatorNotAvailable.as_u16(),
        error_message: Some(message),
        ..FindCoordinatorResponse::default()
    };
    if let Err(e) = coordinator(broker).await {
        return not_available(e.message);
    }
    let Some(topic) = broker.registry.topic(OFFSETS_TOPIC) else {
        return not_available(format!("{OFFSETS_TOPIC} does not exist yet"));
    };
    let k = crate::groups::coordinator::partition_for(&req.group_id, OFFSETS_PARTITIONS);
    let Some(leader) = crate::cluster::partition_view(broker, &topic, k as usize).leader else {
        return not_available(format!("{OFFSETS_TOPIC}-{k} has no leader yet"));
    };
    let (brokers, _) = super::metadata::brokers(broker);
    match brokers.into_iter().find(|b| b.node_id == leader) {
        Some(b) => FindCoordinatorResponse {
            error_code: 0,
            error_message: None,
            node_id: b.node_id,
            host: b.host,
            port: b.port,
        },
        None => not_available(format!("node {leader} is not a known broker")),
    }
}

pub async fn heartbeat(
    broker: &Arc<Broker>,
    req: GroupHeartbeatRequest,
) -> Result<GroupHeartbeatResponse, ErrorResponse> {
    let c = coordinator_for(broker, &req.group_id).await?;
    Ok(c.heartbeat(req, &partition_counts(broker)))
}

pub async fn offset_commit(
    broker: &Arc<Broker>,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, ErrorResponse> {
    let c = coordinator_for(broker, &req.group_id).await?;
    // The leader's high watermark as this broker knows it: its own figure when it leads, else its
    // replica's or the leaders' gossip, which trail the leader by up to a heartbeat or a gossip round.
    let hwm = |topic: &str, p: u32| {
        let t = broker.registry.topic(topic)?;
        if p as usize >= t.record.assignments.len() {
            return None;
        }
        Some(crate::cluster::partition_view(broker, &t, p as usize).high_watermark)
    };
    // A consumer commits what it has just read from the leader: give a trailing figure time to catch
    // up (bounded) before an offset above it is refused.
    let deadline = tokio::time::Instant::now() + COMMIT_HWM_WAIT;
    while req.topics.iter().any(|t| {
        t.partitions
            .iter()
            .any(|p| hwm(&t.name, p.partition).is_some_and(|h| p.offset > h))
    }) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(COMMIT_HWM_POLL).await;
    }
    Ok(c.commit(req, hwm).await)
}

pub async fn offset_fetch(
    broker: &Arc<Broker>,
    req: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, ErrorResponse> {
    Ok(coordinator_for(broker, &req.group_id)
        .await?
        .fetch_offsets(&req))
}

pub async fn list_groups(
    broker: &Arc<Broker>,
    _req: ListGroupsRequest,
) -> Result<ListGroupsResponse, ErrorResponse> {
    Ok(coordinator(broker).await?.list())
}

pub async fn describe_group(
    broker: &Arc<Broker>,
    req: DescribeGroupRequest,
) -> Result<DescribeGroupResponse, ErrorResponse> {
    Ok(coordinator_for(broker, &req.group_id)
        .await?
        .describe(&req.group_id))
}
