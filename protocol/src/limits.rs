//! Named limits of the wire protocol. Every length read from the network is checked against one of these
//! *before* anything is allocated for it.

/// Largest frame (length prefix excluded) a peer may send. Larger prefixes close the connection.
pub const FRAME_SIZE_MAX: usize = 64 * 1024 * 1024;
/// Largest single record batch accepted by a produce request.
pub const BATCH_SIZE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most records one batch may claim to hold.
pub const RECORDS_PER_BATCH_MAX: u32 = 1_000_000;
/// Longest topic name (bytes), as in Kafka.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Longest client id, group id, member id, config key or value (bytes).
pub const SHORT_STRING_LEN_MAX: usize = 32 * 1024;
/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;
/// Replication factor upper bound.
pub const REPLICATION_FACTOR_MAX: u16 = 7;
/// Requests a connection may have in flight before the broker stops reading from it.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 256;
/// Elements of any array in a message.
pub const ARRAY_LEN_MAX: usize = 100_000;
/// Longest time a fetch may wait for data.
pub const FETCH_MAX_WAIT_MS_MAX: u32 = 60_000;
/// Largest fetch response the broker builds, whatever the request asks.
pub const FETCH_MAX_BYTES_MAX: u32 = 64 * 1024 * 1024;
