//! Raft glue: the only module that names openraft types (pinned to `=0.10.0-alpha.37`).
//!
//! - [`types`]: the `PartitionRaft` type config (D = a record batch entry, R = its base offset).
//! - [`log_store`]: openraft's `RaftLogStorage` + `RaftLogReader` over the segment log.
//! - [`state_machine`]: the high-watermark state machine whose snapshot is the retention boundary (trap T6).
//! - [`producers`]: the idempotent producers' last sequences, folded from applied batches.
//! - [`network`]: Raft RPCs between brokers: one pipelined connection per peer, a registry of local groups.
//! - [`quiesce`]: idle groups stop ticking (no timers, no heartbeats) with their followers' consent.
//! - [`group`]: [`group::RaftGroup`], the handle `partition.rs` uses; it exposes no openraft type.

pub mod group;
pub mod log_store;
pub mod network;
pub mod producers;
pub mod quiesce;
pub mod state_machine;
pub mod types;

pub use group::{GroupConfig, GroupError, Leadership, Proposal, RaftGroup, Replication};
pub use network::RaftNet;

#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;
