//! The Runnel broker library: everything the `runnel-broker` binary runs, usable in-process by tests.
//!
//! # Layout
//! - [`config`]: flags, `RUNNEL_*` environment, TOML file and defaults, merged and validated.
//! - [`server`]: [`server::Server::start`] / [`server::ServerHandle`], the TCP listener, connections
//!   (framing, pipelining, back-pressure) and metrics.
//! - [`handlers`]: one module per API, from decoded request to response body.
//! - [`metadata`]: the topic registry (a crash-safe file on one node; the metadata group's committed
//!   snapshots in a cluster) and the open partitions.
//! - [`cluster`]: the metadata group (controller) and leader gossip of a multi-node cluster.
//! - [`partition`]: the seam to storage and Raft that handlers program against.
//! - [`storage`]: the memory-mapped segment log that is also the Raft log.
//! - [`raft`]: the openraft glue; the only module that names openraft types.
//! - [`admin_http`]: `/health/live`, `/health/ready`, `/metrics`, `/v1/cluster`, `/v1/partitions`.
//! - [`groups`]: consumer-group membership, assignment and committed offsets.
//! - [`dump`]: `runnel-broker dump`, the offline, read-only record dump of a stopped node's data dir.

pub mod admin_http;
pub mod cluster;
pub mod config;
pub mod dump;
pub mod groups;
pub mod handlers;
pub mod metadata;
pub mod partition;
pub mod raft;
pub mod server;
pub mod storage;

pub use config::BrokerConfig;
pub use server::{Server, ServerHandle, StartError};
