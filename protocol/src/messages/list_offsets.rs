//! ListOffsets (key 6): earliest, latest, or the first offset whose batch max timestamp is ≥ a time.
//!
//! ```text
//! request:  topics array<{ name string | partitions array<{ partition u32 | timestamp i64 }> }>
//!           timestamp: -2 = earliest (log start), -1 = latest (high watermark), else ms since the epoch
//! response: topics array<{ name string |
//!                          partitions array<{ partition u32 | error_code u16 | error_message option<string> |
//!                                             offset u64 | timestamp i64 | leader_hint option<u32> }> }>
//! ```
//! For a timestamp later than every record the answer is the high watermark (Kafka answers -1; an offset a
//! consumer can seek to is more useful).
use crate::wire_struct;

pub const LATEST: i64 = -1;
pub const EARLIEST: i64 = -2;

wire_struct! {
    pub struct ListOffsetsPartition {
        pub partition: u32,
        pub timestamp: i64,
    }
}

wire_struct! {
    pub struct ListOffsetsTopic {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<ListOffsetsPartition>,
    }
}

wire_struct! {
    pub struct ListOffsetsRequest {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<ListOffsetsTopic>,
    }
}

wire_struct! {
    pub struct ListOffsetsPartitionResponse {
        pub partition: u32,
        pub error_code: u16,
        pub error_message: Option<String>,
        pub offset: u64,
        pub timestamp: i64,
        pub leader_hint: Option<u32>,
    }
}

wire_struct! {
    pub struct ListOffsetsTopicResponse {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<ListOffsetsPartitionResponse>,
    }
}

wire_struct! {
    pub struct ListOffsetsResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<ListOffsetsTopicResponse>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<ListOffsetsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<ListOffsetsResponse>()) { check_round_trip(&v)?; }
    }
}
