//! OffsetFetch (key 11): a group's committed offsets.
//!
//! ```text
//! request:  group_id string | topics option<array<TopicPartitions>>   (none = everything committed)
//! response: error_code u16 | error_message option<string> |
//!           topics array<{ name string | partitions array<{ partition u32 | committed_offset option<u64> |
//!                                                            metadata option<string> }> }>
//! ```
use super::group_heartbeat::TopicPartitions;
use crate::wire_struct;

wire_struct! {
    pub struct OffsetFetchRequest {
        pub group_id: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_opt_vec()"))]
        pub topics: Option<Vec<TopicPartitions>>,
    }
}

wire_struct! {
    pub struct CommittedPartition {
        pub partition: u32,
        pub committed_offset: Option<u64>,
        pub metadata: Option<String>,
    }
}

wire_struct! {
    pub struct CommittedTopic {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<CommittedPartition>,
    }
}

wire_struct! {
    pub struct OffsetFetchResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<CommittedTopic>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<OffsetFetchRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<OffsetFetchResponse>()) { check_round_trip(&v)?; }
    }
}
