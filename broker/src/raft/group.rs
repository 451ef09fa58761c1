//! [`RaftGroup`]: one partition replica's Raft group, wrapped so that callers never see an openraft type.
//! It owns the `Raft` instance over the segment log store and the high-watermark state machine, starts a
//! single-member group by itself, and turns the retention boundary into snapshot + purge (trap T6).
//!
//! Invariant: writes resolve per the caller's choice, either once handed to Raft or once committed and
//! applied (the high watermark has passed them); errors come back as [`GroupError`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError, LinearizableReadError, RaftError};
use openraft::{BasicNode, Config, Instant as _, Raft, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use super::log_store::SegLogStore;
use super::network::{GroupNetwork, NoNetwork, RaftNet};
use super::quiesce::GroupQuiet;
use super::state_machine::{HwmStateMachine, PartitionShared};
use super::types::{PartitionRaft, RecordBatch};
use crate::storage::PartitionLog;

/// Timing of a partition's Raft group. Defaults suit a single-member group that must elect itself fast;
/// replication will tune them (longer heartbeats and elections for many groups per node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long `open` waits for a single-member group to lead and apply its recovered log.
    pub recovery_timeout: Duration,
    /// Persist the commit point at every commit instead of at most every
    /// [`crate::storage::log::COMMITTED_PERSIST_INTERVAL`]: for the metadata group, whose commits are rare and
    /// whose last ones a broker restarted alone must still serve (a lazily persisted commit point dropped
    /// the topics created in the last second before a kill -9).
    pub persist_every_commit: bool,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            recovery_timeout: Duration::from_secs(10),
            persist_every_commit: false,
        }
    }
}

impl GroupConfig {
    /// How long a multi-voter leader may go without a quorum acknowledging it before it stops counting as
    /// leader: twice the longest election timeout, so the majority side has elected another leader by
    /// then, and a follower slow to answer (an fsync stall on a loaded machine) does not depose a healthy
    /// leader in clients' eyes.
    pub fn quorum_stale_after(&self) -> Duration {
        Duration::from_millis(2 * self.election_timeout_max_ms)
    }

    /// Timing for multi-voter data groups: many groups share a node and a connection, so heartbeats are
    /// spaced (150 ms) and elections slower (0.6–1.2 s) than a single-member group's. A dead leader is
    /// replaced in about two election timeouts (openraft also waits out the leader lease).
    pub fn replicated() -> GroupConfig {
        GroupConfig::replicated_with(150)
    }

    /// The replicated profile around another heartbeat interval: elections start after 4 to 8 silent
    /// intervals (`--raft-heartbeat-ms`).
    pub fn replicated_with(heartbeat_interval_ms: u64) -> GroupConfig {
        GroupConfig {
            heartbeat_interval_ms,
            election_timeout_min_ms: heartbeat_interval_ms * 4,
            election_timeout_max_ms: heartbeat_interval_ms * 8,
            recovery_timeout: Duration::from_secs(10),
            persist_every_commit: false,
        }
    }
}

/// A follower silent for longer than this is not counted as caught up.
pub const CAUGHT_UP_ACK_MAX: Duration = Duration::from_secs(3);

/// Who leads the group, in which term: what [`RaftGroup::watch_leadership`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub leader: Option<u64>,
    pub term: u64,
}

impl Leadership {
    /// True when `next` names a leader that `self` did not have: another node, or the same one in a new
    /// term (a new election). Losing the leader is a change but not a new leadership.
    pub fn is_new_leadership(&self, next: &Leadership) -> bool {
        next.leader.is_some() && (next.leader != self.leader || next.term != self.term)
    }
}

/// Why a group operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GroupError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("storage failed: {0}")]
    Storage(String),
    #[error("the raft group is shut down")]
    ShuttingDown,
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The leader openraft's metrics name, except this node itself when it does not lead: right after a
/// restart a replica's committed vote from before the crash still names it (no leader restore), until the
/// current term's leader reaches it; advertising itself then would send clients to a follower.
fn known_leader(m: &openraft::RaftMetrics<PartitionRaft>) -> Option<u64> {
    match m.current_leader {
        Some(l) if l == m.id && m.state != openraft::ServerState::Leader => None,
        l => l,
    }
}

/// Republishes leader and term from openraft's metrics as a [`Leadership`] watch. The task ends when the
/// group stops (openraft drops its metrics sender) or every receiver is gone.
fn spawn_leadership_watch(
    raft: &Raft<PartitionRaft, HwmStateMachine>,
) -> watch::Receiver<Leadership> {
    let mut metrics = raft.metrics();
    let now = {
        let m = metrics.borrow_watched();
        Leadership {
            leader: known_leader(&m),
            term: m.current_term,
        }
    };
    let (tx, rx) = watch::channel(now);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = metrics.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
            let next = {
                let m = metrics.borrow_watched();
                Leadership {
                    leader: known_leader(&m),
                    term: m.current_term,
                }
            };
            tx.send_if_modified(|cur| {
                let changed = *cur != next;
                *cur = next;
                changed
            });
        }
    });
    rx
}

/// One partition replica's Raft group.
pub struct RaftGroup {
    raft: Raft<PartitionRaft, HwmStateMachine>,
    shared: Arc<PartitionShared>,
    node_id: u64,
    /// Leader and term, republished from openraft's metrics by a task that ends with the group.
    leadership: watch::Receiver<Leadership>,
    /// Set for multi-voter groups: where the group is registered for incoming RPCs.
    registered: Option<Replication>,
    /// The last term in which [`RaftGroup::catch_up_applied`] completed.
    caught_up_term: std::sync::atomic::AtomicU64,
    /// Multi-voter groups: a leader whose last quorum acknowledgement is older than this no longer counts
    /// as leader (see [`RaftGroup::is_leader`]). `None` for a single-member group.
    quorum_stale_after: Option<Duration>,
    /// Set for groups that may quiesce when idle ([`super::quiesce`]).
    quiet: Option<Arc<GroupQuiet>>,
}

/// How a multi-voter group reaches its peers: the broker's [`RaftNet`] and the group's name there
/// (a partition's is `"<topic>-<partition>"`).
#[derive(Clone, Debug)]
pub struct Replication {
    pub net: Arc<RaftNet>,
    pub group: String,
    /// Whether the group may stop ticking while idle ([`super::quiesce`]; data partitions do, the
    /// metadata group does not).
    pub quiesce: bool,
}

impl std::fmt::Debug for RaftGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroup")
            .field("node_id", &self.node_id)
            .field("dir", &self.shared.log.dir())
            .finish()
    }
}

/// The commit of a proposed batch: its base offset, or why it was not (or may not have been) written.
pub type Committed =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, GroupError>> + Send + 'static>>;

/// A batch handed to Raft ([`RaftGroup::propose`]): two views of its fate, both ending in its base offset
/// or in the same error.
pub struct Proposal {
    /// Resolves once a quorum has the batch on disk (the leader's high watermark is then past it): when
    /// a producer with `acks=all` is answered. Apply's hand-off to the state machine is not waited for.
    pub committed: Committed,
    /// Resolves once this replica has applied the batch (its state — the producer table — includes it).
    pub applied: Committed,
}

fn fatal_to_error<E: std::fmt::Display>(log: &PartitionLog, e: E) -> GroupError {
    match log.stopped() {
        Some(why) => GroupError::Storage(why),
        None => {
            let s = e.to_string();
            if s.contains("shut") || s.contains("Stopped") {
                GroupError::ShuttingDown
            } else {
                GroupError::Storage(s)
            }
        }
    }
}

impl RaftGroup {
    /// Starts the group of `node_id` over `log`. With `voters == [node_id]` a new group is initialized with
    /// that membership and leads by itself; `open` returns once it leads and has applied its recovered log.
    /// With several voters `replication` is required: the group registers with the broker's [`RaftNet`]
    /// under its name, a new group is initialized with the same membership on every replica (trap T10), and
    /// `open` returns at once: the leader is elected over the network.
    pub async fn open(
        node_id: u64,
        voters: &[u64],
        log: PartitionLog,
        cfg: GroupConfig,
        replication: Option<Replication>,
    ) -> Result<RaftGroup, GroupError> {
        let single = voters == [node_id];
        if !single && !voters.contains(&node_id) {
            return Err(GroupError::Unsupported(format!(
                "node {node_id} is not one of the voters {voters:?}"
            )));
        }
        if !single && replication.is_none() {
            return Err(GroupError::Unsupported(format!(
                "a multi-voter group (voters {voters:?}) needs the broker's raft network"
            )));
        }
        let config = Config {
            cluster_name: format!("partition:{}", log.dir().display()),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            // Trap T6: snapshots happen only at the retention boundary, when the retention task asks.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            purge_batch_size: 1,
            max_payload_entries: super::network::ENTRIES_PER_APPEND_MAX,
            // A restarted leader must not resume its old term: openraft's restored leader keeps its old
            // noop entry as the read index and its restored commit index, so a "linearizable" read right
            // after the restart could miss entries committed before the crash (the group coordinator
            // replayed stale offsets, the idempotence table could miss a committed batch). An election
            // after a restart commits a fresh noop entry first.
            enable_leader_restore: Some(false),
            // Pre-Vote: a replica that cannot win (cut off, restarted, behind) asks before it bumps its
            // term, so it does not depose a healthy leader when it comes back.
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| GroupError::Unsupported(e.to_string()))?,
        );
        let shared = PartitionShared::new(log.clone());
        let sm = HwmStateMachine::new(shared.clone());
        let store = SegLogStore::new(log.clone(), cfg.persist_every_commit);
        let registered = if single { None } else { replication };
        let raft = match &registered {
            None => Raft::new(node_id, config, NoNetwork, store, sm).await,
            Some(r) => {
                let net = GroupNetwork {
                    net: r.net.clone(),
                    group: Arc::from(r.group.as_str()),
                };
                Raft::new(node_id, config, net, store, sm).await
            }
        }
        .map_err(|e| fatal_to_error(&log, e))?;
        let mut quiet = None;
        if let Some(r) = &registered {
            match r.net.register(&r.group, raft.clone(), r.quiesce) {
                Ok(q) => quiet = q,
                Err(e) => {
                    let _ = raft.shutdown().await;
                    let _ = log.close();
                    return Err(GroupError::Unsupported(e));
                }
            }
        }
        let leadership = spawn_leadership_watch(&raft);
        let group = RaftGroup {
            raft,
            shared,
            node_id,
            registered,
            leadership,
            caught_up_term: std::sync::atomic::AtomicU64::new(u64::MAX),
            quorum_stale_after: (!single).then(|| cfg.quorum_stale_after()),
            quiet,
        };
        if let Err(e) = group.start(voters, &cfg, &log).await {
            let _ = group.shutdown().await;
            return Err(e);
        }
        Ok(group)
    }

    async fn start(
        &self,
        voters: &[u64],
        cfg: &GroupConfig,
        log: &PartitionLog,
    ) -> Result<(), GroupError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| fatal_to_error(log, e))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> =
                voters.iter().map(|v| (*v, BasicNode::default())).collect();
            match self.raft.initialize(members).await {
                Ok(()) => {}
                // Another replica's leader reached us first: we are already part of the group.
                Err(RaftError::APIError(InitializeError::NotAllowed(_)))
                    if self.registered.is_some() => {}
                Err(e) => return Err(GroupError::Storage(e.to_string())),
            }
        }
        if self.registered.is_some() {
            return Ok(());
        }
        // A single member leads by itself; wait until it does and has applied everything it recovered,
        // so the high watermark never appears to move backwards after a restart.
        let target = log.bounds().last.map(|l| l.index);
        let wait = self.raft.wait(Some(cfg.recovery_timeout));
        // Leader with its vote committed (openraft reports the state a moment before the vote is
        // persisted, and refuses writes until then).
        wait.metrics(
            |m| m.state == ServerState::Leader && m.vote.committed,
            "lead",
        )
        .await
        .map_err(|e| GroupError::Timeout(e.to_string()))?;
        if let Some(t) = target {
            wait.applied_index_at_least(Some(t), "apply the recovered log")
                .await
                .map_err(|e| GroupError::Timeout(e.to_string()))?;
        }
        Ok(())
    }

    /// Writes one batch: `wait_commit` resolves once it is committed and applied (its base offset),
    /// otherwise once it is handed to Raft (`None`).
    pub async fn write(
        &self,
        payload: bytes::Bytes,
        record_count: u32,
        max_timestamp: i64,
        wait_commit: bool,
    ) -> Result<Option<u64>, GroupError> {
        if !wait_commit {
            let batch = self.leader_batch(payload, record_count, max_timestamp)?;
            self.raft
                .client_write_ff(batch, None)
                .await
                .map_err(|e| fatal_to_error(&self.shared.log, e))?;
            return Ok(None);
        }
        let proposal = self.propose(payload, record_count, max_timestamp).await?;
        proposal.committed.await.map(Some)
    }

    /// The batch to propose, if this replica leads (else NOT_LEADER with the leader it knows).
    fn leader_batch(
        &self,
        payload: bytes::Bytes,
        record_count: u32,
        max_timestamp: i64,
    ) -> Result<RecordBatch, GroupError> {
        if !self.is_leader() {
            return Err(GroupError::NotLeader {
                leader: self.leader(),
            });
        }
        self.wake();
        Ok(RecordBatch {
            payload,
            record_count,
            max_timestamp,
            base_offset: 0,
        })
    }

    /// Hands one batch to Raft and returns the futures of its commit and of its apply here (both its base
    /// offset). Batches proposed by calls that return one after another enter the log in that order
    /// (openraft's API queue is FIFO); that is what lets an idempotent producer keep several batches of a
    /// partition in flight.
    pub async fn propose(
        &self,
        payload: bytes::Bytes,
        record_count: u32,
        max_timestamp: i64,
    ) -> Result<Proposal, GroupError> {
        use futures::FutureExt;
        let batch = self.leader_batch(payload, record_count, max_timestamp)?;
        let (responder, commit_rx, rx) = openraft::raft::responder::ProgressResponder::new();
        self.raft
            .client_write_ff(batch, Some(responder))
            .await
            .map_err(|e| fatal_to_error(&self.shared.log, e))?;
        let log = self.shared.log.clone();
        let applied = async move {
            match rx.await {
                Ok(Ok(r)) => Ok(r.data.base_offset),
                // openraft refuses with ForwardToLeader only before the entry enters the log: not written.
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(GroupError::NotLeader {
                    leader: f.leader_id,
                }),
                // The entry was in this replica's log but was superseded (truncated or purged under a
                // snapshot): another leader may have committed it, so the outcome is unknown.
                Ok(Err(ClientWriteError::LogEntryDiscarded(f))) => Err(GroupError::Timeout(format!(
                    "leadership moved (to {:?}) while the batch was being replicated; it may still be committed",
                    f.leader_id
                ))),
                Ok(Err(e)) => Err(GroupError::Unsupported(e.to_string())),
                // The group stopped before answering.
                Err(_) => Err(fatal_to_error(&log, "shut down before answering")),
            }
        }
        .boxed()
        .shared();
        let shared = self.shared.clone();
        let on_apply = applied.clone();
        // openraft reports the commit (in its core, before handing the entry to the state machine) only
        // for an entry that commits; anything else ends in apply's answer, which then tells why.
        let committed = async move {
            match commit_rx.await {
                Ok(id) => match shared.commit_data(id.leader_id.term, id.index) {
                    Some(base) => Ok(base),
                    None => on_apply.await,
                },
                Err(_) => on_apply.await,
            }
        };
        Ok(Proposal {
            committed: Box::pin(committed),
            applied: Box::pin(applied),
        })
    }

    /// The high watermark (first offset not yet committed) and its change notifications.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.shared.hwm.subscribe()
    }

    pub fn high_watermark(&self) -> u64 {
        *self.shared.hwm.borrow()
    }

    pub fn log(&self) -> &PartitionLog {
        &self.shared.log
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn leader(&self) -> Option<u64> {
        let l = known_leader(&self.raft.metrics().borrow_watched());
        // Never this node while it does not count as leader (a leader without a quorum).
        l.filter(|l| *l != self.node_id || self.is_leader())
    }

    /// Whether this replica takes writes now: openraft's server state is Leader and its committed vote names
    /// it (what `write` checks too). `as_leader` alone is not enough: it reads the vote from the metrics,
    /// which right after a restart still hold the committed vote from before the crash although the replica
    /// starts as a follower (no leader restore) — such a replica served reads from its stale log.
    ///
    /// A leader of a multi-voter group also needs a quorum to have acknowledged it within
    /// [`GroupConfig::quorum_stale_after`] (Raft's CheckQuorum): a leader cut off from its followers keeps
    /// openraft's Leader state until it hears of the newer term, and meanwhile accepted writes that could
    /// never commit and answered Metadata naming itself, so clients waited out their timeouts on it (12–14 s
    /// of unavailability in the docker isolate-leader scenario) instead of finding the new leader.
    ///
    /// The metrics guard is dropped before `as_leader` reads the metrics again: two read locks of one
    /// watch on one thread deadlock as soon as openraft queues a write between them.
    ///
    /// A quiet leader sends no heartbeats: its followers' consent in the last quiescence round counts
    /// as their acknowledgement.
    pub fn is_leader(&self) -> bool {
        let (state, term, quorum_acked) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (
                m.state,
                m.current_term,
                m.last_quorum_acked.as_ref().map(|t| t.elapsed()),
            )
        };
        if state != openraft::ServerState::Leader || self.raft.as_leader().is_err() {
            return false;
        }
        match (self.quorum_stale_after, quorum_acked) {
            (Some(limit), Some(since)) => {
                since <= limit
                    || self
                        .quiet
                        .as_ref()
                        .is_some_and(|q| q.confirmed_within(term, limit))
            }
            // Single member, or a leader not acknowledged yet (just elected): nothing says it is cut off.
            _ => true,
        }
    }

    /// Ends a quiescent rest: the group ticks again (heartbeats, election timer).
    fn wake(&self) {
        if let Some(q) = &self.quiet {
            q.wake();
        }
    }

    /// Whether the group's tick is off (it is quiescent).
    pub fn is_quiet(&self) -> bool {
        self.quiet.as_ref().is_some_and(|q| q.is_quiet())
    }

    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The current leader and term, changing whenever either changes.
    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Waits, once per term, until this leader has applied everything committed before its term (a read
    /// index round), so state folded from the log (the producer table) is complete.
    pub async fn catch_up_applied(&self) -> Result<(), GroupError> {
        let term = self.term();
        if self
            .caught_up_term
            .load(std::sync::atomic::Ordering::Acquire)
            == term
        {
            return Ok(());
        }
        self.wake();
        match self
            .raft
            .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
            .await
        {
            Ok(_) => {
                self.caught_up_term
                    .store(term, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(GroupError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(RaftError::APIError(e)) => Err(GroupError::Timeout(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal_to_error(&self.shared.log, e)),
        }
    }

    /// Checks an idempotent batch against the committed producer table.
    pub fn check_sequence(
        &self,
        pid: i64,
        epoch: i16,
        first_seq: i32,
        count: u32,
    ) -> super::producers::SequenceCheck {
        match self.shared.producers.lock() {
            Ok(t) => t.check(pid, epoch, first_seq, count),
            Err(p) => p.into_inner().check(pid, epoch, first_seq, count),
        }
    }

    /// Starts an election at once (used by a partition's preferred replica so leaders spread evenly).
    pub async fn campaign(&self) -> Result<(), GroupError> {
        self.wake();
        self.raft
            .trigger()
            .elect(false)
            .await
            .map_err(|e| fatal_to_error(&self.shared.log, e))
    }

    /// Asks Raft to hand leadership to `to` (ignored unless this replica leads).
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), GroupError> {
        self.wake();
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| fatal_to_error(&self.shared.log, e))
    }

    /// On the leader: each voter's replication state as (node, entries behind the leader's last log
    /// entry), the leader itself at 0. A follower that has not acknowledged anything for
    /// [`CAUGHT_UP_ACK_MAX`] counts as behind by at least one entry, however complete its log. `None` on a
    /// follower (only the leader knows).
    pub fn replica_lag(&self) -> Option<Vec<(u64, u64)>> {
        let m = self.raft.metrics().borrow_watched().clone();
        let repl = m.replication.as_ref()?;
        let last = m.last_log_index.unwrap_or(0);
        // A quiet group's followers answer quiescence pings instead of heartbeats.
        let confirmed = self
            .quiet
            .as_ref()
            .is_some_and(|q| q.confirmed_within(m.current_term, CAUGHT_UP_ACK_MAX));
        let silent = |v: &u64| {
            !confirmed
                && m.heartbeat
                    .as_ref()
                    .and_then(|h| h.get(v).cloned().flatten())
                    .is_none_or(|t| t.elapsed() > CAUGHT_UP_ACK_MAX)
        };
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        Some(
            voters
                .into_iter()
                .map(|v| {
                    if v == self.node_id {
                        return (v, 0);
                    }
                    let matched = repl
                        .get(&v)
                        .and_then(|l| l.as_ref())
                        .map(|l| l.index + 1)
                        .unwrap_or(0);
                    let lag = (last + 1).saturating_sub(matched);
                    (v, if silent(&v) { lag.max(1) } else { lag })
                })
                .collect(),
        )
    }

    /// If retention has moved the boundary past the current snapshot, asks Raft for a snapshot there
    /// (openraft then purges up to it, deleting whole segments). Returns whether one was requested.
    pub async fn enforce_retention(&self) -> Result<bool, GroupError> {
        let log = &self.shared.log;
        let Some(b) = log.retention_boundary(crate::storage::log::now_ms()) else {
            return Ok(false);
        };
        let purged = log.bounds().last_purged.map(|p| p.index);
        if purged.is_some_and(|p| p >= b.index) {
            return Ok(false);
        }
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| fatal_to_error(log, e))?;
        Ok(true)
    }

    /// Stops the group and closes the log (sync, indexes, metadata). Idempotent.
    pub async fn shutdown(&self) -> Result<(), GroupError> {
        if let Some(r) = &self.registered {
            r.net.deregister(&r.group);
        }
        let _ = self.raft.shutdown().await;
        self.shared
            .log
            .close()
            .map_err(|e| GroupError::Storage(e.to_string()))
    }
}
