//! [`GroupConsumer`]: a consumer whose partitions come from a consumer group.
//!
//! A background task (`member`) keeps the membership alive and publishes each new assignment; the consumer
//! applies it inside [`GroupConsumer::poll`], as Kafka's consumer does, so assignment changes never race
//! with the caller's processing:
//! - revoked partitions: [`RebalanceListener::on_revoked`], commit their positions (with auto-commit), stop
//!   fetching them (buffered and in-flight records are dropped), report them released and wake the heartbeat
//!   task so the coordinator can hand them on at once;
//! - added partitions: start at the group's committed offset (`OffsetFetch`) or, where none, at
//!   [`GroupConfig::offset_reset`], then [`RebalanceListener::on_assigned`];
//! - a lost membership (session expired, fenced): every partition is dropped *without* committing
//!   ([`RebalanceListener::on_lost`]); the task has already rejoined.
//!
//! Commits carry the member id and epoch of the membership the consumer last *applied*, never a newer one, so
//! a member that was fenced while its records were being processed has that commit refused by the coordinator
//! instead of overwriting the new owner's progress. A commit stores each partition's position: the offset
//! after the last record `poll` returned (at-least-once: records returned are taken as processed by the next
//! `poll`, a revocation, `commit` or `close`). Positions already committed are not sent again.
//!
//! Dropping a `GroupConsumer` without [`GroupConsumer::close`] behaves like a crash: the task stops without
//! leaving, and the coordinator moves the partitions after the session timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::messages::{
    OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic, OffsetFetchRequest,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coordinator::{
    body_error, validate_group_id, CoordinatorClient, COORDINATOR_ATTEMPTS_MAX,
    COORDINATOR_RETRY_BACKOFF, GROUP_ID_LEN_MAX,
};
use super::member::{
    heartbeat_timeout, to_wire, Heartbeat, MemberConfig, Membership, Shared, LEAVE_TIMEOUT,
};
use super::{
    GroupConfig, OffsetReset, RebalanceListener, TopicPartition, SESSION_TIMEOUT_MAX,
    SESSION_TIMEOUT_MIN, SUBSCRIBED_TOPICS_MAX,
};
use crate::admin::validate_topic_name;
use crate::cluster::Cluster;
use crate::consumer::{Consumer, ConsumerRecord, Offset};
use crate::error::{ClientError, Result};

/// Attempts of the commit made when partitions are revoked (the coordinator is waiting for the release).
pub const REVOKE_COMMIT_ATTEMPTS: u32 = 3;

/// A consumer-group member. Not `Sync`: one task polls it.
pub struct GroupConsumer {
    consumer: Consumer,
    config: GroupConfig,
    coordinator: Arc<CoordinatorClient>,
    shared: Arc<Shared>,
    membership: watch::Receiver<Membership>,
    /// Set when `changed()` consumed a new membership value that `reconcile` has not applied yet
    /// (`changed()` marks the value seen, so `has_changed()` no longer reports it).
    membership_pending: bool,
    /// The membership last applied; commits carry this identity.
    incarnation: u64,
    member_id: String,
    member_epoch: i32,
    /// The assignment last seen; `held` converges to it.
    target: Arc<BTreeSet<TopicPartition>>,
    /// Partitions assigned to the underlying consumer.
    held: BTreeSet<TopicPartition>,
    /// Last committed (or fetched) offset per held partition.
    committed: HashMap<TopicPartition, u64>,
    /// When adding partitions failed retriably: not before this instant again.
    add_retry_at: Option<Instant>,
    next_auto_commit: Instant,
    listener: Option<Box<dyn RebalanceListener>>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group_id)
            .field("member_id", &self.member_id)
            .field("member_epoch", &self.member_epoch)
            .field("held", &self.held)
            .finish()
    }
}

fn validate(topics: &[&str], config: &GroupConfig) -> Result<()> {
    validate_group_id(&config.group_id)?;
    if topics.is_empty() {
        return Err(ClientError::InvalidArgument(
            "subscribe to at least one topic".into(),
        ));
    }
    if topics.len() > SUBSCRIBED_TOPICS_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "more than {SUBSCRIBED_TOPICS_MAX} topics"
        )));
    }
    for t in topics {
        validate_topic_name(t)?;
    }
    if !(SESSION_TIMEOUT_MIN..=SESSION_TIMEOUT_MAX).contains(&config.session_timeout) {
        return Err(ClientError::InvalidArgument(format!(
            "the session timeout must be within {SESSION_TIMEOUT_MIN:?}..={SESSION_TIMEOUT_MAX:?}"
        )));
    }
    if config.auto_commit_interval.is_zero() {
        return Err(ClientError::InvalidArgument(
            "the auto-commit interval must be positive".into(),
        ));
    }
    if let Some(id) = &config.instance_id {
        if id.is_empty() || id.len() > GROUP_ID_LEN_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "the instance id must be 1..={GROUP_ID_LEN_MAX} bytes"
            )));
        }
    }
    Ok(())
}

/// Partitions grouped by topic, in order.
fn by_topic(tps: &[TopicPartition]) -> BTreeMap<Arc<str>, Vec<u32>> {
    let mut m: BTreeMap<Arc<str>, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        m.entry(t.clone()).or_default().push(*p);
    }
    m
}

/// What must change to go from `held` to `target`: (revoked, added).
pub(crate) fn diff(
    held: &BTreeSet<TopicPartition>,
    target: &BTreeSet<TopicPartition>,
) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    (
        held.difference(target).cloned().collect(),
        target.difference(held).cloned().collect(),
    )
}

/// A clear error for a commit the coordinator refused because this member no longer owns the partitions.
fn refused(code: ErrorCode, member: &str, message: Option<String>) -> ClientError {
    let why = message.unwrap_or_else(|| code.message().to_string());
    match code {
        ErrorCode::UnknownMemberId => ClientError::broker(
            code,
            Some(format!(
                "commit refused: this member was removed from the group ({why}); its partitions may have moved \
                 to another member and their records will be delivered again"
            )),
        ),
        ErrorCode::FencedMemberEpoch => ClientError::broker(
            code,
            Some(format!(
                "commit refused: member {member} was fenced by a rebalance ({why})"
            )),
        ),
        _ => ClientError::broker(code, Some(why)),
    }
}

impl Consumer {
    /// Turns this consumer (which must have no partitions assigned) into a member of a consumer group that
    /// consumes `topics`; its fetch settings are kept (`config.consumer` is not used).
    pub async fn subscribe(self, topics: &[&str], config: GroupConfig) -> Result<GroupConsumer> {
        if !self.assignment().is_empty() {
            return Err(ClientError::InvalidArgument(
                "a consumer with assigned partitions cannot join a group".into(),
            ));
        }
        GroupConsumer::start(self, topics, config).await
    }
}

impl GroupConsumer {
    /// Joins `config.group_id` consuming `topics`. Returns at once; the membership is established in the
    /// background and the first partitions arrive through `poll`.
    pub async fn subscribe(
        cluster: Cluster,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<GroupConsumer> {
        let consumer = Consumer::new(cluster, config.consumer.clone());
        GroupConsumer::start(consumer, topics, config).await
    }

    async fn start(
        consumer: Consumer,
        topics: &[&str],
        config: GroupConfig,
    ) -> Result<GroupConsumer> {
        validate(topics, &config)?;
        let coordinator = Arc::new(CoordinatorClient::new(
            consumer.cluster().clone(),
            &config.group_id,
        ));
        // Fail fast on what cannot get better; a coordinator that is not up yet is the task's to wait for.
        if let Err(e) = coordinator.find().await {
            if !e.retriable() {
                return Err(e);
            }
        }
        let mut topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        topics.sort();
        topics.dedup();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = watch::channel(Membership::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Heartbeat {
                coordinator: coordinator.clone(),
                config: MemberConfig {
                    topics,
                    instance_id: config.instance_id.clone(),
                    session_timeout: config.session_timeout,
                    rebalance_timeout: config.rebalance_timeout,
                },
                shared: shared.clone(),
                tx,
                shutdown: shutdown.clone(),
            }
            .run(),
        );
        Ok(GroupConsumer {
            consumer,
            next_auto_commit: Instant::now() + config.auto_commit_interval,
            config,
            coordinator,
            shared,
            membership: rx,
            membership_pending: false,
            incarnation: 0,
            member_id: String::new(),
            member_epoch: 0,
            target: Arc::new(BTreeSet::new()),
            held: BTreeSet::new(),
            committed: HashMap::new(),
            add_retry_at: None,
            listener: None,
            shutdown,
            task: Some(task),
        })
    }

    /// Installs the rebalance hooks.
    pub fn set_listener(&mut self, listener: impl RebalanceListener + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// Changes the most records one `poll` returns (at least 1).
    pub fn set_max_poll_records(&mut self, n: usize) {
        self.consumer.set_max_poll_records(n);
    }

    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id of the applied membership ("" until the first assignment was applied).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn member_epoch(&self) -> i32 {
        self.member_epoch
    }

    /// The partitions this member consumes now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.held.iter().cloned().collect()
    }

    /// The next offset `poll` returns for a held partition, once known.
    pub fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.consumer.position(topic, partition)
    }

    /// Moves a held partition (takes effect at the next `poll`).
    pub fn seek(&mut self, topic: &str, partition: u32, offset: Offset) -> Result<()> {
        self.consumer.seek(topic, partition, offset)
    }

    /// Returns the records available now, or waits up to `timeout` for some (an empty vector: none came).
    /// Assignment changes, automatic commits and retries of failed partition starts all happen in here.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.reconcile().await?;
            self.auto_commit_if_due().await;
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut wake = deadline;
            if self.config.auto_commit {
                wake = wake.min(self.next_auto_commit);
            }
            if let Some(t) = self.add_retry_at {
                wake = wake.min(t);
            }
            if self.held.is_empty() {
                tokio::select! {
                    _ = self.membership.changed() => self.membership_pending = true,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            // Cancelling the consumer's poll loses nothing: fetched data is absorbed before it yields.
            let polled = tokio::select! {
                r = self.consumer.poll(wake.saturating_duration_since(now)) => Some(r),
                _ = self.membership.changed() => None,
            };
            if polled.is_none() {
                self.membership_pending = true;
            }
            if let Some(r) = polled {
                let records = r?;
                if !records.is_empty() {
                    return Ok(records);
                }
            }
        }
    }

    /// Commits the position of every held partition (what `poll` returned so far) and waits for it.
    /// Refused with `UNKNOWN_MEMBER_ID` / `FENCED_MEMBER_EPOCH` when this member no longer owns them.
    pub async fn commit(&mut self) -> Result<()> {
        let held: Vec<TopicPartition> = self.held.iter().cloned().collect();
        self.commit_partitions(&held, COORDINATOR_ATTEMPTS_MAX)
            .await
            .map(|_| ())
    }

    /// Commits explicit offsets (the next offset to read) of held partitions.
    pub async fn commit_offsets(&mut self, offsets: &[(&str, u32, u64)]) -> Result<()> {
        let mut list = Vec::with_capacity(offsets.len());
        for &(t, p, o) in offsets {
            let Some(tp) = self.held.iter().find(|(ht, hp)| **ht == *t && *hp == p) else {
                return Err(ClientError::InvalidArgument(format!(
                    "{t}/{p} is not assigned to this member"
                )));
            };
            list.push((tp.clone(), o));
        }
        self.send_commit(&list, COORDINATOR_ATTEMPTS_MAX).await?;
        for (tp, o) in list {
            self.committed.insert(tp, o);
        }
        Ok(())
    }

    /// Commits (with auto-commit) and leaves the group, so its partitions move at once. The leave happens
    /// even if the commit fails; the commit's error is returned.
    pub async fn close(mut self) -> Result<()> {
        // A loss the task already saw: those partitions cannot be committed any more.
        if self.membership.borrow().incarnation != self.incarnation {
            self.drop_lost();
        }
        let mut result = Ok(());
        if !self.held.is_empty() {
            let held: Vec<TopicPartition> = self.held.iter().cloned().collect();
            if let Some(l) = &mut self.listener {
                l.on_revoked(&held);
            }
            if self.config.auto_commit {
                result = self
                    .commit_partitions(&held, COORDINATOR_ATTEMPTS_MAX)
                    .await
                    .map(|_| ());
            }
        }
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(LEAVE_TIMEOUT + Duration::from_secs(1), task).await;
        }
        result
    }

    /// Applies the latest membership: lost, revoked, added partitions.
    async fn reconcile(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.membership_pending);
        let changed = match self.membership.has_changed() {
            Ok(c) => c || pending,
            Err(_) => {
                return Err(self
                    .membership
                    .borrow()
                    .error
                    .clone()
                    .unwrap_or(ClientError::Closed))
            }
        };
        if changed {
            let m = self.membership.borrow_and_update().clone();
            if let Some(e) = m.error {
                return Err(e);
            }
            if m.incarnation != self.incarnation {
                self.drop_lost();
                self.incarnation = m.incarnation;
            }
            self.member_id = m.member_id;
            self.member_epoch = m.member_epoch;
            self.target = m.assignment;
        }
        if self.held == *self.target {
            self.add_retry_at = None;
            return Ok(());
        }
        let (revoked, added) = diff(&self.held, &self.target);
        if !revoked.is_empty() {
            self.revoke(&revoked).await;
        }
        if !added.is_empty() && self.add_retry_at.is_none_or(|t| Instant::now() >= t) {
            match self.add(&added).await {
                Ok(()) => self.add_retry_at = None,
                Err(e) if e.retriable() => {
                    tracing::debug!(group = %self.config.group_id, error = %e, "starting assigned partitions failed; retrying");
                    self.add_retry_at = Some(Instant::now() + COORDINATOR_RETRY_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Drops every held partition without committing: the membership they came with is gone.
    fn drop_lost(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let lost: Vec<TopicPartition> = std::mem::take(&mut self.held).into_iter().collect();
        for (t, p) in &lost {
            self.consumer.unassign(t, *p);
        }
        self.committed.clear();
        self.shared.set_owned(self.incarnation, &self.held);
        if let Some(l) = &mut self.listener {
            l.on_lost(&lost);
        }
    }

    async fn revoke(&mut self, revoked: &[TopicPartition]) {
        if let Some(l) = &mut self.listener {
            l.on_revoked(revoked);
        }
        if self.config.auto_commit {
            if let Err(e) = self
                .commit_partitions(revoked, REVOKE_COMMIT_ATTEMPTS)
                .await
            {
                tracing::warn!(group = %self.config.group_id, error = %e,
                    "commit of revoked partitions failed; their new owner re-reads from the last commit");
            }
        }
        for tp in revoked {
            self.consumer.unassign(&tp.0, tp.1);
            self.held.remove(tp);
            self.committed.remove(tp);
        }
        self.shared.set_owned(self.incarnation, &self.held);
        self.shared.wake.notify_one();
    }

    async fn add(&mut self, added: &[TopicPartition]) -> Result<()> {
        // Report them owned from now on: a heartbeat sent while they are being started must not tell the
        // coordinator they are free (it may be revoking them already, and would hand them on).
        let mut claimed = self.held.clone();
        claimed.extend(added.iter().cloned());
        self.shared.set_owned(self.incarnation, &claimed);
        let r = self.start_partitions(added).await;
        if r.is_err() {
            self.shared.set_owned(self.incarnation, &self.held);
        }
        r
    }

    async fn start_partitions(&mut self, added: &[TopicPartition]) -> Result<()> {
        let committed = self.fetch_committed(added).await?;
        let mut assigned: Vec<TopicPartition> = Vec::new();
        let mut failure = None;
        for (topic, parts) in by_topic(added) {
            match self.consumer.assign(&topic, Some(&parts)).await {
                Ok(_) => assigned.extend(parts.into_iter().map(|p| (topic.clone(), p))),
                Err(e) => {
                    // A partition metadata does not know yet (just created or added): refresh first.
                    if e.code() == Some(ErrorCode::UnknownTopicOrPartition) {
                        let _ = self.consumer.cluster().refresh_metadata().await;
                    }
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for (t, p) in &assigned {
                self.consumer.unassign(t, *p);
            }
            return Err(e);
        }
        let reset = match self.config.offset_reset {
            OffsetReset::Earliest => Offset::Earliest,
            OffsetReset::Latest => Offset::Latest,
        };
        for tp in added {
            let start = match committed.get(tp) {
                Some(&o) => {
                    self.committed.insert(tp.clone(), o);
                    Offset::At(o)
                }
                None => reset,
            };
            self.consumer.seek(&tp.0, tp.1, start)?;
            self.held.insert(tp.clone());
        }
        self.shared.set_owned(self.incarnation, &self.held);
        if let Some(l) = &mut self.listener {
            l.on_assigned(added);
        }
        Ok(())
    }

    fn request_timeout(&self) -> Duration {
        heartbeat_timeout(self.config.session_timeout)
            .min(self.consumer.cluster().request_timeout())
    }

    /// The group's committed offsets of `tps` (absent: nothing committed). One attempt: `poll` retries.
    async fn fetch_committed(
        &mut self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, u64>> {
        let set: BTreeSet<TopicPartition> = tps.iter().cloned().collect();
        let req = Request::OffsetFetch(OffsetFetchRequest {
            group_id: self.config.group_id.clone(),
            topics: Some(to_wire(&set)),
        });
        let resp = self
            .coordinator
            .request(&req, self.request_timeout())
            .await
            .and_then(|r| match r {
                Response::OffsetFetch(f) => {
                    body_error(f.error_code, f.error_message.clone())?;
                    Ok(f)
                }
                _ => Err(ClientError::Protocol(
                    "OffsetFetch answered with another response".into(),
                )),
            })?;
        let mut out = HashMap::new();
        for t in resp.topics {
            for p in t.partitions {
                let Some(o) = p.committed_offset else {
                    continue;
                };
                if let Some(tp) = set
                    .iter()
                    .find(|(st, sp)| **st == *t.name && *sp == p.partition)
                {
                    out.insert(tp.clone(), o);
                }
            }
        }
        Ok(out)
    }

    async fn auto_commit_if_due(&mut self) {
        if !self.config.auto_commit || Instant::now() < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = Instant::now() + self.config.auto_commit_interval;
        let held: Vec<TopicPartition> = self.held.iter().cloned().collect();
        if let Err(e) = self.commit_partitions(&held, 1).await {
            tracing::warn!(group = %self.config.group_id, error = %e, "automatic commit failed");
        }
    }

    /// Commits the positions of `tps` that changed since their last commit; returns how many were sent.
    async fn commit_partitions(&mut self, tps: &[TopicPartition], attempts: u32) -> Result<usize> {
        let mut offsets = Vec::new();
        for tp in tps {
            if let Some(pos) = self.consumer.position(&tp.0, tp.1) {
                if self.committed.get(tp) != Some(&pos) {
                    offsets.push((tp.clone(), pos));
                }
            }
        }
        if offsets.is_empty() {
            return Ok(0);
        }
        self.send_commit(&offsets, attempts).await?;
        let n = offsets.len();
        for (tp, o) in offsets {
            self.committed.insert(tp, o);
        }
        Ok(n)
    }

    // `&mut self` although it only reads: a `&GroupConsumer` held across an await would make the future
    // require `GroupConsumer: Sync`, and the listener is only `Send`.
    async fn send_commit(
        &mut self,
        offsets: &[(TopicPartition, u64)],
        attempts: u32,
    ) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        if self.member_id.is_empty() {
            return Err(ClientError::broker(
                ErrorCode::UnknownMemberId,
                Some(format!(
                    "not a member of group {} yet: nothing to commit",
                    self.config.group_id
                )),
            ));
        }
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for ((t, p), o) in offsets {
            let part = OffsetCommitPartition {
                partition: *p,
                offset: *o,
                metadata: None,
            };
            match topics.iter_mut().find(|x| *x.name == **t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(OffsetCommitTopic {
                    name: t.to_string(),
                    partitions: vec![part],
                }),
            }
        }
        let req = Request::OffsetCommit(OffsetCommitRequest {
            group_id: self.config.group_id.clone(),
            member_id: self.member_id.clone(),
            member_epoch: self.member_epoch,
            topics,
        });
        let member = self.member_id.as_str();
        let timeout = self.request_timeout();
        let mut attempt = 1;
        let resp = loop {
            let r = self
                .coordinator
                .request(&req, timeout)
                .await
                .and_then(|r| match r {
                    Response::OffsetCommit(c) => match ErrorCode::from_u16(c.error_code) {
                        ErrorCode::None => Ok(c),
                        code => Err(refused(code, member, c.error_message)),
                    },
                    _ => Err(ClientError::Protocol(
                        "OffsetCommit answered with another response".into(),
                    )),
                });
            match r {
                Err(e) if e.retriable() && attempt < attempts => {
                    attempt += 1;
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                other => break other?,
            }
        };
        for t in resp.topics {
            for p in t.partitions {
                let code = ErrorCode::from_u16(p.error_code);
                if code != ErrorCode::None {
                    return Err(ClientError::broker(
                        code,
                        Some(format!(
                            "commit of {}/{} refused: {}",
                            t.name,
                            p.partition,
                            code.message()
                        )),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        // Not closed: behave like a crash (no leave); the session timeout frees the partitions.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: u32) -> TopicPartition {
        (Arc::from(t), p)
    }

    /// A member can be moved to (and polled on) a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(mut gc: GroupConsumer) {
        fn send<T: Send>(_: T) {}
        send(gc.poll(Duration::ZERO));
        send(gc.commit());
        send(gc.commit_offsets(&[]));
        send(gc.close());
    }

    #[test]
    fn diff_splits_revoked_and_added() {
        let held: BTreeSet<_> = [tp("a", 0), tp("a", 1), tp("b", 0)].into_iter().collect();
        let target: BTreeSet<_> = [tp("a", 1), tp("b", 0), tp("b", 1)].into_iter().collect();
        let (revoked, added) = diff(&held, &target);
        assert_eq!(revoked, vec![tp("a", 0)]);
        assert_eq!(added, vec![tp("b", 1)]);
        assert_eq!(diff(&held, &held), (vec![], vec![]));
    }

    #[test]
    fn configs_are_validated() {
        let ok = GroupConfig::new("g");
        assert!(validate(&["t"], &ok).is_ok());
        assert!(validate(&[], &ok).is_err());
        assert!(validate(&["bad name!"], &ok).is_err());
        assert!(validate(&["t"], &GroupConfig::new("")).is_err());
        let mut c = GroupConfig::new("g");
        c.session_timeout = Duration::from_millis(999);
        assert!(validate(&["t"], &c).is_err());
        c.session_timeout = SESSION_TIMEOUT_MIN;
        assert!(validate(&["t"], &c).is_ok());
        c.session_timeout = SESSION_TIMEOUT_MAX + Duration::from_millis(1);
        assert!(validate(&["t"], &c).is_err());
        let mut c = GroupConfig::new("g");
        c.instance_id = Some(String::new());
        assert!(validate(&["t"], &c).is_err());
        let many: Vec<String> = (0..=SUBSCRIBED_TOPICS_MAX)
            .map(|i| format!("t{i}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(validate(&refs, &ok).is_err());
        assert!(validate(&refs[..SUBSCRIBED_TOPICS_MAX], &ok).is_ok());
    }

    #[test]
    fn refusals_explain_themselves() {
        let e = refused(ErrorCode::UnknownMemberId, "m-1", Some("gone".into()));
        assert_eq!(e.code(), Some(ErrorCode::UnknownMemberId));
        assert!(
            e.to_string()
                .contains("commit refused: this member was removed"),
            "{e}"
        );
        let e = refused(ErrorCode::FencedMemberEpoch, "m-1", None);
        assert!(e.to_string().contains("fenced by a rebalance"), "{e}");
    }

    mod scripted {
        //! The client side of the cooperative protocol against a scripted coordinator.
        use super::super::*;
        use crate::cluster::ClientConfig;
        use crate::testing::{self, FakeBroker};
        use bytes::Bytes;
        use runnel_protocol::batch::{stamp, RecordBatchBuilder};
        use runnel_protocol::messages::*;
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Mutex;

        /// What the fake broker saw and what the listener was told, in order.
        #[derive(Debug, Clone, PartialEq)]
        enum Ev {
            Heartbeat {
                member: String,
                epoch: i32,
                owned: Option<Vec<u32>>,
                at: Instant,
            },
            Commit {
                member: String,
                partition: u32,
                offset: u64,
                at: Instant,
            },
            OffsetFetch,
            Assigned(Vec<u32>),
            Revoked(Vec<u32>),
            Lost(Vec<u32>),
        }

        type Log = Arc<Mutex<Vec<Ev>>>;

        struct Hooks(Log);
        fn parts(tps: &[TopicPartition]) -> Vec<u32> {
            tps.iter().map(|(_, p)| *p).collect()
        }
        impl RebalanceListener for Hooks {
            fn on_assigned(&mut self, tps: &[TopicPartition]) {
                self.0.lock().unwrap().push(Ev::Assigned(parts(tps)));
            }
            fn on_revoked(&mut self, tps: &[TopicPartition]) {
                self.0.lock().unwrap().push(Ev::Revoked(parts(tps)));
            }
            fn on_lost(&mut self, tps: &[TopicPartition]) {
                self.0.lock().unwrap().push(Ev::Lost(parts(tps)));
            }
        }

        fn batch(base: u64, values: &[&str]) -> Bytes {
            let mut b = RecordBatchBuilder::new(256);
            for v in values {
                b.push(1, None, v.as_bytes(), &[]);
            }
            let mut v = b.finish().to_vec();
            stamp(&mut v, base, 1);
            Bytes::from(v)
        }

        fn assignment(ps: &[u32]) -> Option<Vec<TopicPartitions>> {
            Some(vec![TopicPartitions {
                topic: "t".into(),
                partitions: ps.to_vec(),
            }])
        }

        /// Serves the group and data APIs. Phase 0: member m1 owns t/0 and t/1. Phase 1: t/0 is revoked.
        /// Phase 2: m1 is unknown (its session expired); the rejoin becomes m2 with t/1.
        fn serve(mut fb: FakeBroker, phase: Arc<AtomicU32>, log: Log) {
            let port: u16 = fb.addr.rsplit(':').next().unwrap().parse().unwrap();
            tokio::spawn(async move {
                let mut served_records = false;
                while let Some(inc) = fb.requests.recv().await {
                    let resp = match &inc.request {
                        Request::FindCoordinator(_) => {
                            Response::FindCoordinator(FindCoordinatorResponse {
                                node_id: 1,
                                host: "127.0.0.1".into(),
                                port,
                                ..Default::default()
                            })
                        }
                        Request::GroupHeartbeat(h) => {
                            log.lock().unwrap().push(Ev::Heartbeat {
                                member: h.member_id.clone(),
                                epoch: h.member_epoch,
                                owned: h
                                    .owned
                                    .as_ref()
                                    .map(|o| o.iter().flat_map(|t| t.partitions.clone()).collect()),
                                at: Instant::now(),
                            });
                            let ph = phase.load(Ordering::SeqCst);
                            let mut r = GroupHeartbeatResponse {
                                member_id: "m1".into(),
                                member_epoch: 1 + ph as i32,
                                heartbeat_interval_ms: 1_500,
                                ..Default::default()
                            };
                            match (ph, h.member_epoch) {
                                (_, -1) => r.member_epoch = -1,
                                (0, _) => r.assignment = assignment(&[0, 1]),
                                (1, _) => r.assignment = assignment(&[1]),
                                (_, 0) => {
                                    r.member_id = "m2".into();
                                    r.assignment = assignment(&[1]);
                                }
                                _ if h.member_id == "m1" => {
                                    r.error_code = ErrorCode::UnknownMemberId.as_u16();
                                }
                                _ => {
                                    r.member_id = "m2".into();
                                    r.assignment = assignment(&[1]);
                                }
                            }
                            Response::GroupHeartbeat(r)
                        }
                        Request::OffsetFetch(_) => {
                            log.lock().unwrap().push(Ev::OffsetFetch);
                            Response::OffsetFetch(OffsetFetchResponse {
                                topics: vec![CommittedTopic {
                                    name: "t".into(),
                                    partitions: vec![CommittedPartition {
                                        partition: 0,
                                        committed_offset: Some(5),
                                        metadata: None,
                                    }],
                                }],
                                ..Default::default()
                            })
                        }
                        Request::OffsetCommit(c) => {
                            for t in &c.topics {
                                for p in &t.partitions {
                                    log.lock().unwrap().push(Ev::Commit {
                                        member: c.member_id.clone(),
                                        partition: p.partition,
                                        offset: p.offset,
                                        at: Instant::now(),
                                    });
                                }
                            }
                            Response::OffsetCommit(OffsetCommitResponse::default())
                        }
                        Request::ListOffsets(l) => Response::ListOffsets(ListOffsetsResponse {
                            topics: l
                                .topics
                                .iter()
                                .map(|t| ListOffsetsTopicResponse {
                                    name: t.name.clone(),
                                    partitions: t
                                        .partitions
                                        .iter()
                                        .map(|p| ListOffsetsPartitionResponse {
                                            partition: p.partition,
                                            offset: 10,
                                            ..Default::default()
                                        })
                                        .collect(),
                                })
                                .collect(),
                        }),
                        Request::Fetch(f) => {
                            let mut topics = Vec::new();
                            let mut any = false;
                            for t in &f.topics {
                                let mut ps = Vec::new();
                                for p in &t.partitions {
                                    let mut records = Records(vec![]);
                                    if p.partition == 0 && p.fetch_offset == 5 && !served_records {
                                        served_records = true;
                                        any = true;
                                        records = Records(vec![batch(5, &["a", "b"])]);
                                    }
                                    ps.push(FetchPartitionResponse {
                                        partition: p.partition,
                                        records,
                                        ..Default::default()
                                    });
                                }
                                topics.push(FetchTopicResponse {
                                    name: t.name.clone(),
                                    partitions: ps,
                                });
                            }
                            let r = Response::Fetch(FetchResponse { topics });
                            if !any {
                                // A long poll with nothing new.
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    let _ = inc.reply.send(r);
                                });
                                continue;
                            }
                            r
                        }
                        other => panic!("unexpected {other:?}"),
                    };
                    let _ = inc.reply.send(resp);
                }
            });
        }

        fn events(log: &Log) -> Vec<Ev> {
            log.lock().unwrap().clone()
        }

        async fn poll_until(
            gc: &mut GroupConsumer,
            what: &str,
            done: impl Fn(&GroupConsumer) -> bool,
        ) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(gc) {
                assert!(Instant::now() < deadline, "{what}: not within 10 s: {gc:?}");
                gc.poll(Duration::from_millis(50)).await.unwrap();
            }
        }

        #[tokio::test]
        async fn revoke_commits_then_releases_at_once_and_a_lost_membership_commits_nothing() {
            let fb = testing::start(&[("t", 2)]).await;
            let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
                .await
                .unwrap();
            let phase = Arc::new(AtomicU32::new(0));
            let log: Log = Arc::default();
            serve(fb, phase.clone(), log.clone());
            // Automatic commits only on revocation and close (not on the interval) in this test.
            let mut config = GroupConfig::new("g");
            config.auto_commit_interval = Duration::from_secs(3600);
            let mut gc = GroupConsumer::subscribe(cluster, &["t"], config)
                .await
                .unwrap();
            gc.set_listener(Hooks(log.clone()));

            // Join: both partitions; t/0 resumes at its committed 5, t/1 (nothing committed) at latest (10).
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while got.len() < 2 {
                assert!(Instant::now() < deadline, "records: {got:?}");
                for r in gc.poll(Duration::from_millis(100)).await.unwrap() {
                    got.push((r.partition, r.offset));
                }
            }
            assert_eq!(got, vec![(0, 5), (0, 6)]);
            assert_eq!(gc.member_id(), "m1");
            assert_eq!(gc.position("t", 1), Some(10));
            assert!(events(&log).contains(&Ev::Assigned(vec![0, 1])));

            // Revoke t/0: hook, commit of what poll returned (7), release reported at once (not after the
            // 1.5 s heartbeat interval).
            phase.store(1, Ordering::SeqCst);
            poll_until(&mut gc, "revocation", |gc| gc.assignment().len() == 1).await;
            let released_by = Instant::now() + Duration::from_secs(2);
            while !events(&log).iter().any(
                |e| matches!(e, Ev::Heartbeat { owned: Some(o), epoch, .. } if *o == vec![1] && *epoch > 0),
            ) {
                assert!(Instant::now() < released_by, "release not reported: {:?}", events(&log));
                gc.poll(Duration::from_millis(20)).await.unwrap();
            }
            let ev = events(&log);
            let revoked = ev.iter().position(|e| *e == Ev::Revoked(vec![0])).unwrap();
            let commit = ev
                .iter()
                .position(|e| matches!(e, Ev::Commit { partition: 0, offset: 7, member, .. } if member == "m1"))
                .expect("revoked partition committed");
            let release = ev
                .iter()
                .position(|e| matches!(e, Ev::Heartbeat { owned: Some(o), epoch, .. } if *o == vec![1] && *epoch > 0))
                .unwrap();
            assert!(revoked < commit && commit < release, "{ev:?}");
            let (Ev::Commit { at: c_at, .. }, Ev::Heartbeat { at: h_at, .. }) =
                (&ev[commit], &ev[release])
            else {
                unreachable!()
            };
            assert!(
                h_at.duration_since(*c_at) < Duration::from_millis(500),
                "the release waited for the heartbeat interval"
            );

            // The session expires: the coordinator no longer knows m1. Its partitions are lost without a
            // commit; the member rejoins as m2 and starts t/1 from the committed offsets again.
            let before = events(&log).len();
            phase.store(2, Ordering::SeqCst);
            poll_until(&mut gc, "rejoin", |gc| {
                gc.member_id() == "m2"
                    && gc.assignment().len() == 1
                    && gc.position("t", 1).is_some()
            })
            .await;
            let ev = events(&log)[before..].to_vec();
            let lost = ev
                .iter()
                .position(|e| *e == Ev::Lost(vec![1]))
                .expect("on_lost");
            let assigned = ev.iter().position(|e| *e == Ev::Assigned(vec![1])).unwrap();
            assert!(lost < assigned, "{ev:?}");
            assert!(
                !ev.iter().any(|e| matches!(e, Ev::Commit { .. })),
                "a lost partition was committed: {ev:?}"
            );
            assert!(ev[lost..assigned].contains(&Ev::OffsetFetch));

            // Close: commit t/1 (its position, 10) as m2, then leave.
            let before = events(&log).len();
            gc.close().await.unwrap();
            let ev = events(&log)[before..].to_vec();
            let commit = ev
                .iter()
                .position(|e| matches!(e, Ev::Commit { partition: 1, offset: 10, member, .. } if member == "m2"))
                .expect("close commits");
            let leave = ev
                .iter()
                .position(
                    |e| matches!(e, Ev::Heartbeat { epoch: -1, member, .. } if member == "m2"),
                )
                .expect("close leaves");
            assert!(commit < leave, "{ev:?}");
        }
    }
}
