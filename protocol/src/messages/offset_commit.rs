//! OffsetCommit (key 10): store a group's committed offsets (the next offset to read) per partition.
//!
//! ```text
//! request:  group_id string | member_id string | member_epoch i32 |
//!           topics array<{ name string | partitions array<{ partition u32 | offset u64 |
//!                                                            metadata option<string> }> }>
//! response: error_code u16 | error_message option<string> |
//!           topics array<{ name string | partitions array<{ partition u32 | error_code u16 }> }>
//! ```
//! A member commits with its current `member_epoch`; a stale epoch is FENCED_MEMBER_EPOCH. An admin commit
//! (`member_id` "", `member_epoch` -1, e.g. `runnel group reset-offsets --execute`) is refused with
//! GROUP_NOT_EMPTY while the group has live members. Offsets above the high watermark are rejected.
use crate::wire_struct;

wire_struct! {
    pub struct OffsetCommitPartition {
        pub partition: u32,
        pub offset: u64,
        pub metadata: Option<String>,
    }
}

wire_struct! {
    pub struct OffsetCommitTopic {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<OffsetCommitPartition>,
    }
}

wire_struct! {
    pub struct OffsetCommitRequest {
        pub group_id: String,
        pub member_id: String,
        pub member_epoch: i32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<OffsetCommitTopic>,
    }
}

wire_struct! {
    pub struct PartitionError {
        pub partition: u32,
        pub error_code: u16,
    }
}

wire_struct! {
    pub struct OffsetCommitTopicResponse {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<PartitionError>,
    }
}

wire_struct! {
    pub struct OffsetCommitResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<OffsetCommitTopicResponse>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<OffsetCommitRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<OffsetCommitResponse>()) { check_round_trip(&v)?; }
    }
}
