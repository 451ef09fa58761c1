//! Produce (key 4): one record batch per partition, stored verbatim by the partition leader.
//!
//! ```text
//! request:  acks i8 (-1 all, 0 none, 1 leader) | timeout_ms u32 |
//!           topics array<{ name string | partitions array<{ partition u32 | batch bytes }> }>
//! response: topics array<{ name string |
//!                          partitions array<{ partition u32 | error_code u16 | error_message option<string> |
//!                                             base_offset u64 | log_append_time_ms i64 |
//!                                             log_start_offset u64 | leader_hint option<u32> }> }>
//! ```
//! `batch` is a [`crate::batch`] record batch; on decode it is a zero-copy slice of the request frame.
//! With `acks = 0` the broker answers as soon as the batch is handed to the partition, without waiting.
use bytes::Bytes;

use crate::wire_struct;

pub const ACKS_ALL: i8 = -1;
pub const ACKS_NONE: i8 = 0;
pub const ACKS_LEADER: i8 = 1;

wire_struct! {
    pub struct ProducePartitionData {
        pub partition: u32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::arb_bytes()"))]
        pub batch: Bytes,
    }
}

wire_struct! {
    pub struct ProduceTopicData {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<ProducePartitionData>,
    }
}

wire_struct! {
    pub struct ProduceRequest {
        pub acks: i8,
        pub timeout_ms: u32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<ProduceTopicData>,
    }
}

wire_struct! {
    pub struct ProducePartitionResponse {
        pub partition: u32,
        pub error_code: u16,
        pub error_message: Option<String>,
        pub base_offset: u64,
        pub log_append_time_ms: i64,
        pub log_start_offset: u64,
        pub leader_hint: Option<u32>,
    }
}

wire_struct! {
    pub struct ProduceTopicResponse {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<ProducePartitionResponse>,
    }
}

wire_struct! {
    pub struct ProduceResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<ProduceTopicResponse>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<ProduceRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<ProduceResponse>()) { check_round_trip(&v)?; }
    }
}
