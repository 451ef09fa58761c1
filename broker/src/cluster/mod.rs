//! The cluster layer of a multi-node broker: the metadata group (the controller) and leader gossip.
//!
//! - [`controller::Controller`]: the replicated metadata log. Like Kafka's KRaft `__cluster_metadata`, it is
//!   a partition replicated by Raft over every broker of `--peers`; each entry holds one whole
//!   [`crate::metadata::MetadataSnapshot`] (topics, replica assignment, configs) with an `epoch`. An entry
//!   is applied only if its epoch is exactly the applied epoch + 1 (compare-and-set), so every broker folds
//!   the same committed entries into the same state, and a proposal built on a stale view loses cleanly.
//!   The controller is the metadata group's Raft leader; any broker may propose (forwarded to it).
//! - [`gossip`]: each broker asks its peers, every [`gossip::GOSSIP_INTERVAL`], which partitions they lead,
//!   so Metadata can name leaders of partitions this broker does not host.
//! - [`view`]: one partition as this broker knows it (local replica or gossip), for every reader.
//!
//! Invariants:
//! - The metadata state of a broker is a pure fold of the committed metadata entries, applied in log order
//!   (never above the metadata group's high watermark).
//! - Only `Registry::apply_snapshot` opens or removes partition replicas in cluster mode; admin requests
//!   only propose.

pub mod controller;
pub mod gossip;
pub mod view;

pub use controller::{Controller, METADATA_GROUP_TOPIC};
pub use view::{partition_view, topic_views, PartitionView};
