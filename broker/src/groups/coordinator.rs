//! The group coordinator: consumer-group membership (in memory, see [`super::group`]) and committed offsets,
//! which are durable records in the internal `__consumer_offsets` topic.
//!
//! A group belongs to offsets partition `crc32c(group_id) % N`. Each commit is appended as one record batch
//! (one record per partition; key = group id, value = a bincode [`OffsetRecord`]) and applied to the in-memory
//! map only once the append is committed, so an acknowledged commit is durable and a failed one changes
//! nothing. On start the coordinator replays its offsets partitions from the log start to the high watermark.
//! Commits to one offsets partition are serialized (an async mutex around append + apply), so the map always
//! equals the log replayed in order, and a committed offset never goes backwards because of a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use runnel_protocol::batch::{records, BatchIter, RecordBatchBuilder};
use runnel_protocol::messages::*;
use runnel_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use super::assignor::TopicPartition;
use super::group::{Group, Heartbeat, HEARTBEAT_INTERVAL_MS};

/// Name of the internal offsets topic.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of the offsets topic.
pub const OFFSETS_PARTITIONS: u32 = 8;
/// Groups one coordinator holds.
pub const GROUPS_MAX: usize = 100_000;
/// Longest commit metadata string.
pub const COMMIT_METADATA_LEN_MAX: usize = 4096;
/// Bytes read per step while replaying an offsets partition.
const REPLAY_READ_BYTES: usize = 1 << 20;

type Failure = (ErrorCode, String);

/// The replayed-term marker of an offsets partition not yet replayed after a catch-up.
const NOT_CAUGHT_UP: u64 = u64::MAX;

/// The log an offsets partition offers the coordinator (a [`crate::partition::Partition`] in the broker).
pub trait OffsetsLog: Send + Sync {
    /// Appends one batch and resolves once it is committed.
    fn append(&self, batch: Bytes) -> BoxFuture<'_, Result<(), Failure>>;
    /// Whole committed batches from `offset`, at most about `max_bytes`.
    fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<Bytes>, Failure>;
    fn log_start_offset(&self) -> u64;
    fn high_watermark(&self) -> u64;
    /// Whether this broker leads the partition (coordinates its groups).
    fn leads(&self) -> bool;
    /// The partition's Raft term (a new term means another leader may have written in between).
    fn term(&self) -> u64;
    /// Resolves once everything committed before this leader's term is applied (readable).
    fn catch_up(&self) -> BoxFuture<'_, Result<(), Failure>>;
}

/// One committed offset as stored in the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    offset: u64,
    metadata: Option<String>,
}

#[derive(Default)]
struct GroupState {
    group: Group,
    offsets: BTreeMap<TopicPartition, Committed>,
}

/// Coordinates every group whose offsets partition is local.
pub struct Coordinator {
    logs: Vec<Arc<dyn OffsetsLog>>,
    /// Per offsets partition: serializes commits, and holds the term its state was last replayed in.
    commit_locks: Vec<tokio::sync::Mutex<u64>>,
    groups: Mutex<HashMap<String, GroupState>>,
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 * 1024 }>()
}

/// The offsets partition of a group.
pub fn partition_for(group_id: &str, partitions: u32) -> u32 {
    crc32c::crc32c(group_id.as_bytes()) % partitions.max(1)
}

fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_wire(tps: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| TopicPartitions {
            topic: t.to_string(),
            partitions: ps,
        })
        .collect()
}

fn from_wire(tps: &[TopicPartitions]) -> Vec<TopicPartition> {
    tps.iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
        .collect()
}

impl Coordinator {
    /// Builds the coordinator over the offsets partitions (index = partition number) and replays them.
    pub fn load(logs: Vec<Arc<dyn OffsetsLog>>) -> Result<Coordinator, Failure> {
        let c = Coordinator {
            // No partition counts as current yet: the replay below may precede a new leader's catch-up
            // (right after a restart its high watermark can still be below the commit point), so the first
            // request of each partition replays it again after `catch_up` (see `ensure_current`).
            commit_locks: logs
                .iter()
                .map(|_| tokio::sync::Mutex::new(NOT_CAUGHT_UP))
                .collect(),
            logs,
            groups: Mutex::new(HashMap::new()),
        };
        let mut replayed = 0usize;
        for log in &c.logs {
            replayed += c.replay(log.as_ref())?;
        }
        tracing::info!(
            records = replayed,
            partitions = c.logs.len(),
            "group coordinator loaded committed offsets"
        );
        Ok(c)
    }

    /// Makes sure this broker may coordinate `group_id` now: it leads the group's offsets partition, and
    /// if leadership changed since the partition was last replayed (another broker may have coordinated
    /// in between), it replays it again after catching up with everything committed. Members of those
    /// groups are forgotten then: they rejoin, as after a coordinator failover in Kafka.
    pub async fn ensure_current(&self, group_id: &str) -> Result<(), Failure> {
        let k = self.log_index(group_id);
        let log = &self.logs[k];
        if !log.leads() {
            return Err((
                ErrorCode::NotCoordinator,
                format!("this broker does not lead the offsets partition of group {group_id}"),
            ));
        }
        let mut loaded = self.commit_locks[k].lock().await;
        let term = log.term();
        if *loaded == term {
            return Ok(());
        }
        log.catch_up().await?;
        {
            let n = self.logs.len() as u32;
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.retain(|g, _| partition_for(g, n) as usize != k);
        }
        let replayed = self.replay(log.as_ref())?;
        tracing::info!(
            offsets_partition = k,
            term,
            records = replayed,
            "group coordinator took over an offsets partition"
        );
        *loaded = term;
        Ok(())
    }

    /// Applies every committed offsets record of `log`; returns how many.
    fn replay(&self, log: &dyn OffsetsLog) -> Result<usize, Failure> {
        let c = self;
        let mut replayed = 0usize;
        {
            let mut offset = log.log_start_offset();
            let hwm = log.high_watermark();
            while offset < hwm {
                let batches = log.read(offset, REPLAY_READ_BYTES)?;
                if batches.is_empty() {
                    break;
                }
                for b in batches {
                    for item in BatchIter::new(b) {
                        let (h, bytes) =
                            item.map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))?;
                        for rec in records(&bytes)
                            .map_err(|e| (ErrorCode::CorruptMessage, e.to_string()))?
                        {
                            let Some(v) = rec.value else { continue };
                            match bincode::serde::decode_from_slice::<OffsetRecord, _>(
                                &v,
                                bincode_config(),
                            ) {
                                Ok((r, _)) => {
                                    c.apply(&r);
                                    replayed += 1;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "skipping an undecodable offsets record")
                                }
                            }
                        }
                        offset = offset.max(h.next_offset());
                    }
                }
            }
        }
        Ok(replayed)
    }

    fn apply(&self, r: &OffsetRecord) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.entry(r.group.clone()).or_default();
        g.offsets.insert(
            (r.topic.clone(), r.partition),
            Committed {
                offset: r.offset,
                metadata: r.metadata.clone(),
            },
        );
    }

    fn log_index(&self, group_id: &str) -> usize {
        partition_for(group_id, self.logs.len() as u32) as usize
    }

    /// Handles a heartbeat (join, stay, leave).
    pub fn heartbeat(
        &self,
        req: GroupHeartbeatRequest,
        counts: &BTreeMap<String, u32>,
    ) -> GroupHeartbeatResponse {
        let fail =
            |code: ErrorCode, msg: String, req: &GroupHeartbeatRequest| GroupHeartbeatResponse {
                error_code: code.as_u16(),
                error_message: Some(msg),
                member_id: req.member_id.clone(),
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                assignment: None,
            };
        if req.group_id.is_empty() {
            return fail(ErrorCode::InvalidRequest, "group id is empty".into(), &req);
        }
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(&req.group_id) && groups.len() >= GROUPS_MAX {
            return fail(
                ErrorCode::InvalidRequest,
                format!("too many groups (limit {GROUPS_MAX})"),
                &req,
            );
        }
        let state = groups.entry(req.group_id.clone()).or_default();
        let hb = Heartbeat {
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            instance_id: req.instance_id.clone(),
            session_timeout_ms: req.session_timeout_ms,
            subscribed_topics: req.subscribed_topics.clone(),
            owned: req.owned.as_deref().map(from_wire),
        };
        let group_id = req.group_id.clone();
        match state.group.heartbeat(hb, Instant::now(), counts, |_| {
            format!("{group_id}-{}", random_id())
        }) {
            Ok(reply) => {
                if reply.member_epoch == -1 {
                    tracing::info!(group = %req.group_id, member = %reply.member_id, "member left; rebalancing");
                }
                GroupHeartbeatResponse {
                    error_code: 0,
                    error_message: None,
                    member_id: reply.member_id,
                    member_epoch: reply.member_epoch,
                    heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS,
                    assignment: Some(to_wire(&reply.assignment)),
                }
            }
            Err((code, msg)) => fail(code, msg, &req),
        }
    }

    /// Removes members whose session timed out (called periodically).
    pub fn expire(&self, counts: &BTreeMap<String, u32>) {
        let now = Instant::now();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        for (id, g) in groups.iter_mut() {
            for member in g.group.expire(now, counts) {
                tracing::info!(group = %id, member = %member, "member session expired; rebalancing");
            }
        }
    }

    /// Commits offsets. `high_watermark(topic, partition)` is `None` for an unknown partition.
    pub async fn commit(
        &self,
        req: OffsetCommitRequest,
        high_watermark: impl Fn(&str, u32) -> Option<u64>,
    ) -> OffsetCommitResponse {
        let all_failed = |code: ErrorCode, msg: String| OffsetCommitResponse {
            error_code: code.as_u16(),
            error_message: Some(msg),
            topics: vec![],
        };
        let tps: Vec<TopicPartition> = req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.partition)))
            .collect();
        {
            let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            let check = match groups.get(&req.group_id) {
                Some(g) => g.group.check_commit(&req.member_id, &tps),
                None if req.member_id.is_empty() => Ok(()),
                None => Err((
                    ErrorCode::UnknownMemberId,
                    format!("group {} has no member {}", req.group_id, req.member_id),
                )),
            };
            if let Err((code, msg)) = check {
                return all_failed(code, msg);
            }
        }
        // Per-partition validation: unknown partitions and offsets past the high watermark are refused.
        let mut results = Vec::new();
        let mut batch = RecordBatchBuilder::new(256);
        let mut to_apply = Vec::new();
        for t in &req.topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                let code = match high_watermark(&t.name, p.partition) {
                    None => ErrorCode::UnknownTopicOrPartition,
                    Some(hwm) if p.offset > hwm => ErrorCode::InvalidCommitOffset,
                    Some(_)
                        if p.metadata
                            .as_ref()
                            .is_some_and(|m| m.len() > COMMIT_METADATA_LEN_MAX) =>
                    {
                        ErrorCode::InvalidCommitOffset
                    }
                    Some(_) => {
                        let r = OffsetRecord {
                            group: req.group_id.clone(),
                            topic: t.name.clone(),
                            partition: p.partition,
                            offset: p.offset,
                            metadata: p.metadata.clone(),
                        };
                        match bincode::serde::encode_to_vec(&r, bincode_config()) {
                            Ok(v) => {
                                batch.push(now_ms(), Some(req.group_id.as_bytes()), &v, &[]);
                                to_apply.push(r);
                                ErrorCode::None
                            }
                            Err(_) => ErrorCode::InvalidCommitOffset,
                        }
                    }
                };
                parts.push(PartitionError {
                    partition: p.partition,
                    error_code: code.as_u16(),
                });
            }
            results.push(OffsetCommitTopicResponse {
                name: t.name.clone(),
                partitions: parts,
            });
        }
        if to_apply.is_empty() {
            return OffsetCommitResponse {
                error_code: 0,
                error_message: None,
                topics: results,
            };
        }
        let idx = self.log_index(&req.group_id);
        let (Some(log), Some(lock)) = (self.logs.get(idx), self.commit_locks.get(idx)) else {
            return all_failed(
                ErrorCode::CoordinatorNotAvailable,
                "no offsets partition".into(),
            );
        };
        let _serial = lock.lock().await;
        if let Err((code, msg)) = log.append(batch.finish()).await {
            return all_failed(code, format!("offsets not stored: {msg}"));
        }
        for r in &to_apply {
            self.apply(r);
        }
        OffsetCommitResponse {
            error_code: 0,
            error_message: None,
            topics: results,
        }
    }

    /// Committed offsets of a group (all of them when `req.topics` is none).
    pub fn fetch_offsets(&self, req: &OffsetFetchRequest) -> OffsetFetchResponse {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(&req.group_id) {
            tracing::info!(group = %req.group_id, "offset fetch for a group with no state here (nothing committed)");
        }
        let empty = BTreeMap::new();
        let offsets = groups
            .get(&req.group_id)
            .map(|g| &g.offsets)
            .unwrap_or(&empty);
        let mut by_topic: BTreeMap<String, Vec<CommittedPartition>> = BTreeMap::new();
        match &req.topics {
            None => {
                for ((t, p), c) in offsets {
                    by_topic
                        .entry(t.clone())
                        .or_default()
                        .push(CommittedPartition {
                            partition: *p,
                            committed_offset: Some(c.offset),
                            metadata: c.metadata.clone(),
                        });
                }
            }
            Some(topics) => {
                for t in topics {
                    for p in &t.partitions {
                        let c = offsets.get(&(t.topic.clone(), *p));
                        by_topic
                            .entry(t.topic.clone())
                            .or_default()
                            .push(CommittedPartition {
                                partition: *p,
                                committed_offset: c.map(|c| c.offset),
                                metadata: c.and_then(|c| c.metadata.clone()),
                            });
                    }
                }
            }
        }
        OffsetFetchResponse {
            error_code: 0,
            error_message: None,
            topics: by_topic
                .into_iter()
                .map(|(name, partitions)| CommittedTopic { name, partitions })
                .collect(),
        }
    }

    /// The groups this broker coordinates now (those of the offsets partitions it leads).
    pub fn list(&self) -> ListGroupsResponse {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<GroupListing> = groups
            .iter()
            .filter(|(id, _)| self.logs[self.log_index(id)].leads())
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                state: g.group.state().to_string(),
                members: g.group.member_count() as u32,
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        ListGroupsResponse { groups: out }
    }

    pub fn describe(&self, group_id: &str) -> DescribeGroupResponse {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        match groups.get(group_id) {
            None => DescribeGroupResponse {
                error_code: ErrorCode::GroupIdNotFound.as_u16(),
                error_message: Some(format!("group {group_id} does not exist")),
                group_id: group_id.to_string(),
                state: "dead".into(),
                ..Default::default()
            },
            Some(g) => DescribeGroupResponse {
                error_code: 0,
                error_message: None,
                group_id: group_id.to_string(),
                state: g.group.state().to_string(),
                group_epoch: g.group.epoch(),
                members: g
                    .group
                    .members()
                    .into_iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id,
                        instance_id: m.instance_id,
                        member_epoch: m.member_epoch,
                        assignment: to_wire(&m.assignment),
                    })
                    .collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_protocol::batch::{stamp, validate};

    /// An in-memory offsets log: committed batches with stamped offsets.
    #[derive(Default)]
    struct MemLog {
        batches: Mutex<Vec<Bytes>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl OffsetsLog for MemLog {
        fn append(&self, batch: Bytes) -> BoxFuture<'_, Result<(), Failure>> {
            Box::pin(async move {
                if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err((ErrorCode::StorageError, "disk full".into()));
                }
                let mut v = self.batches.lock().unwrap();
                let next = v
                    .last()
                    .map(|b| validate(b).unwrap().next_offset())
                    .unwrap_or(0);
                let mut b = batch.to_vec();
                stamp(&mut b, next, 0);
                v.push(Bytes::from(b));
                Ok(())
            })
        }
        fn read(&self, offset: u64, _max: usize) -> Result<Vec<Bytes>, Failure> {
            Ok(self
                .batches
                .lock()
                .unwrap()
                .iter()
                .filter(|b| validate(b).unwrap().next_offset() > offset)
                .cloned()
                .collect())
        }
        fn log_start_offset(&self) -> u64 {
            0
        }
        fn high_watermark(&self) -> u64 {
            self.batches
                .lock()
                .unwrap()
                .last()
                .map(|b| validate(b).unwrap().next_offset())
                .unwrap_or(0)
        }
        fn leads(&self) -> bool {
            true
        }
        fn term(&self) -> u64 {
            1
        }
        fn catch_up(&self) -> BoxFuture<'_, Result<(), Failure>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn commit_req(
        group: &str,
        member: &str,
        topic: &str,
        p: u32,
        offset: u64,
    ) -> OffsetCommitRequest {
        OffsetCommitRequest {
            group_id: group.into(),
            member_id: member.into(),
            member_epoch: -1,
            topics: vec![OffsetCommitTopic {
                name: topic.into(),
                partitions: vec![OffsetCommitPartition {
                    partition: p,
                    offset,
                    metadata: Some("m".into()),
                }],
            }],
        }
    }

    fn fetch(c: &Coordinator, group: &str) -> Vec<(String, u32, Option<u64>)> {
        c.fetch_offsets(&OffsetFetchRequest {
            group_id: group.into(),
            topics: None,
        })
        .topics
        .into_iter()
        .flat_map(|t| {
            t.partitions
                .into_iter()
                .map(move |p| (t.name.clone(), p.partition, p.committed_offset))
        })
        .collect()
    }

    #[tokio::test]
    async fn commits_survive_a_reload_and_are_checked() {
        let logs: Vec<Arc<MemLog>> = (0..3).map(|_| Arc::new(MemLog::default())).collect();
        let dyn_logs = || {
            logs.iter()
                .map(|l| l.clone() as Arc<dyn OffsetsLog>)
                .collect::<Vec<_>>()
        };
        let c = Coordinator::load(dyn_logs()).unwrap();
        let hwm = |t: &str, _p: u32| if t == "t" { Some(100) } else { None };
        let r = c.commit(commit_req("g", "", "t", 0, 42), hwm).await;
        assert_eq!(r.error_code, 0);
        let r = c.commit(commit_req("g", "", "t", 0, 50), hwm).await;
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        // Above the high watermark and unknown topics are refused per partition.
        let r = c.commit(commit_req("g", "", "t", 1, 101), hwm).await;
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::InvalidCommitOffset.as_u16()
        );
        let r = c.commit(commit_req("g", "", "nope", 0, 1), hwm).await;
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UnknownTopicOrPartition.as_u16()
        );
        // A failed append changes nothing.
        let idx = partition_for("g", 3) as usize;
        logs[idx]
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let r = c.commit(commit_req("g", "", "t", 0, 60), hwm).await;
        assert_eq!(r.error_code, ErrorCode::StorageError.as_u16());
        logs[idx]
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(fetch(&c, "g"), vec![("t".to_string(), 0, Some(50))]);
        // A new coordinator over the same logs sees the same offsets.
        let c2 = Coordinator::load(dyn_logs()).unwrap();
        assert_eq!(fetch(&c2, "g"), vec![("t".to_string(), 0, Some(50))]);
    }

    #[tokio::test]
    async fn members_and_admin_commits() {
        let c =
            Coordinator::load(vec![Arc::new(MemLog::default()) as Arc<dyn OffsetsLog>]).unwrap();
        let counts: BTreeMap<String, u32> = [("t".to_string(), 2)].into();
        let hwm = |_: &str, _: u32| Some(10);
        let join = c.heartbeat(
            GroupHeartbeatRequest {
                group_id: "g".into(),
                member_epoch: 0,
                session_timeout_ms: 10_000,
                subscribed_topics: Some(vec!["t".into()]),
                ..Default::default()
            },
            &counts,
        );
        assert_eq!(join.error_code, 0);
        assert_eq!(join.assignment.as_ref().unwrap()[0].partitions, vec![0, 1]);
        let m = join.member_id.clone();
        assert_eq!(
            c.commit(commit_req("g", &m, "t", 1, 5), hwm)
                .await
                .error_code,
            0
        );
        // An admin reset while the member lives is refused.
        assert_eq!(
            c.commit(commit_req("g", "", "t", 1, 0), hwm)
                .await
                .error_code,
            ErrorCode::GroupNotEmpty.as_u16()
        );
        assert_eq!(
            c.commit(commit_req("g", "zombie", "t", 1, 0), hwm)
                .await
                .error_code,
            ErrorCode::UnknownMemberId.as_u16()
        );
        assert_eq!(c.list().groups[0].members, 1);
        assert_eq!(c.describe("g").members.len(), 1);
        let leave = c.heartbeat(
            GroupHeartbeatRequest {
                group_id: "g".into(),
                member_id: m,
                member_epoch: -1,
                ..Default::default()
            },
            &counts,
        );
        assert_eq!(leave.member_epoch, -1);
        assert_eq!(
            c.commit(commit_req("g", "", "t", 1, 0), hwm)
                .await
                .error_code,
            0
        );
        assert_eq!(
            c.describe("nope").error_code,
            ErrorCode::GroupIdNotFound.as_u16()
        );
    }
}
