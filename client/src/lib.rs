//! The Runnel client library and the `runnel` CLI.
//!
//! # Layout
//! - [`connection`]: one pipelined TCP connection (correlation ids, bounded in-flight, timeouts).
//! - [`cluster`]: bootstrap, the metadata cache, one connection per broker, leader lookup.
//! - [`producer`]: batching, partitioning, back-pressure and bounded retries; [`partitioner`] holds the hash.
//! - [`consumer`]: assignment-based consumption with seek and prefetch.
//! - [`group`]: consumer groups ([`GroupConsumer`], [`GroupAdmin`]) on top of the consumer.
//! - [`admin`]: topics and cluster state.
//! - [`bench`]: the `runnel bench` load generator.
//! - [`cli`]: the `runnel` binary's subcommands (DESIGN.md §6).
//!
//! Every fallible call returns [`ClientError`], which keeps the broker's error code.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod partitioner;
pub mod producer;

#[cfg(test)]
pub(crate) mod testing;

pub use admin::{Admin, NewTopic};
pub use cluster::{ClientConfig, Cluster};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Offset};
pub use error::ClientError;
pub use group::{
    GroupAdmin, GroupConfig, GroupConsumer, OffsetReset, RebalanceListener, TopicPartition,
};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
