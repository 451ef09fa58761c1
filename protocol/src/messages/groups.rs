//! ListGroups (key 12) and DescribeGroup (key 13): what groups exist and who owns what.
//!
//! ```text
//! ListGroups request:     (empty)
//! ListGroups response:    groups array<{ group_id string | state string | members u32 }>
//! DescribeGroup request:  group_id string
//! DescribeGroup response: error_code u16 | error_message option<string> | group_id string | state string |
//!                         group_epoch i32 |
//!                         members array<{ member_id string | instance_id option<string> | member_epoch i32 |
//!                                         assignment array<TopicPartitions> }>
//! ```
//! `state` is one of `empty`, `stable`, `reconciling`, `dead`.
use super::group_heartbeat::TopicPartitions;
use crate::wire_struct;

wire_struct! {
    pub struct ListGroupsRequest {}
}

wire_struct! {
    pub struct GroupListing {
        pub group_id: String,
        pub state: String,
        pub members: u32,
    }
}

wire_struct! {
    pub struct ListGroupsResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub groups: Vec<GroupListing>,
    }
}

wire_struct! {
    pub struct DescribeGroupRequest {
        pub group_id: String,
    }
}

wire_struct! {
    pub struct GroupMember {
        pub member_id: String,
        pub instance_id: Option<String>,
        pub member_epoch: i32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub assignment: Vec<TopicPartitions>,
    }
}

wire_struct! {
    pub struct DescribeGroupResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        pub group_id: String,
        pub state: String,
        pub group_epoch: i32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub members: Vec<GroupMember>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn list_request(v in any::<ListGroupsRequest>()) { check_round_trip(&v)?; }
        #[test] fn list_response(v in any::<ListGroupsResponse>()) { check_round_trip(&v)?; }
        #[test] fn describe_request(v in any::<DescribeGroupRequest>()) { check_round_trip(&v)?; }
        #[test] fn describe_response(v in any::<DescribeGroupResponse>()) { check_round_trip(&v)?; }
    }
}
