//! Consumer groups: a [`GroupConsumer`] that joins a group and consumes the partitions the broker assigns it,
//! and [`GroupAdmin`] for listing, describing and resetting groups.
//!
//! # Layout
//! - [`coordinator`]: finding the group's coordinator and sending it requests, with bounded retries.
//! - `member`: the background heartbeat task (join, heartbeat, rejoin, leave) that publishes the assignment.
//! - [`consumer`]: [`GroupConsumer`], which applies assignment changes inside `poll` (Kafka's model) and
//!   commits offsets.
//! - [`admin`]: [`GroupAdmin`] (`runnel group list | describe | reset-offsets`).
//!
//! The broker assigns (KIP-848 style) and hands partitions over cooperatively: a partition moving from A to B
//! is first revoked from A, which commits and reports it released; only then does B get it. So no partition is
//! ever held by two live members of one group, and delivery is at-least-once.

pub mod admin;
pub mod consumer;
pub mod coordinator;
mod member;

use std::sync::Arc;
use std::time::Duration;

pub use admin::{
    GroupAdmin, GroupDescription, GroupMemberInfo, GroupSummary, PartitionLag, ResetPlan, ResetTo,
};
pub use consumer::GroupConsumer;
pub use coordinator::{validate_group_id, GROUP_ID_LEN_MAX};
pub use member::{
    ASSIGNED_PARTITIONS_MAX, HEARTBEAT_INTERVAL_MAX, HEARTBEAT_INTERVAL_MIN, LEAVE_TIMEOUT,
};

use crate::consumer::ConsumerConfig;

/// A (topic, partition) pair.
pub type TopicPartition = (Arc<str>, u32);

/// Default session timeout: a member silent this long is removed and its partitions move.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// The session timeout the broker accepts (it clamps to this range; the client refuses values outside it).
pub const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const SESSION_TIMEOUT_MAX: Duration = Duration::from_secs(300);
/// Default rebalance timeout sent to the coordinator.
pub const REBALANCE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default interval between automatic commits.
pub const AUTO_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 1_000;

/// Where a partition with no committed offset starts (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The log start.
    Earliest,
    /// The high watermark: only records written from now on.
    #[default]
    Latest,
}

/// Group consumer settings.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group_id: String,
    /// Static membership: a stable id; a member rejoining with it gets its partitions back without a
    /// rebalance (within the session timeout).
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// Commit automatically: every `auto_commit_interval` (inside `poll`), when partitions are revoked, and
    /// on `close`. Off: only [`GroupConsumer::commit`] commits.
    pub auto_commit: bool,
    pub auto_commit_interval: Duration,
    pub offset_reset: OffsetReset,
    /// Fetch settings of the underlying consumer (its `initial_offset` is not used: see `offset_reset`).
    pub consumer: ConsumerConfig,
}

impl GroupConfig {
    pub fn new(group_id: &str) -> GroupConfig {
        GroupConfig {
            group_id: group_id.to_string(),
            instance_id: None,
            session_timeout: SESSION_TIMEOUT_DEFAULT,
            rebalance_timeout: REBALANCE_TIMEOUT_DEFAULT,
            auto_commit: true,
            auto_commit_interval: AUTO_COMMIT_INTERVAL_DEFAULT,
            offset_reset: OffsetReset::Latest,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// Called from inside [`GroupConsumer::poll`] (and `close`) when the assignment changes.
pub trait RebalanceListener: Send {
    /// Partitions newly assigned, after their start positions are set.
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions about to be given up, before their positions are committed (with auto-commit) and
    /// released: finish work on them here.
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// Partitions lost with the membership (session expired, fenced): they may already belong to another
    /// member, so nothing was committed. Defaults to `on_revoked`.
    fn on_lost(&mut self, partitions: &[TopicPartition]) {
        self.on_revoked(partitions)
    }
}
