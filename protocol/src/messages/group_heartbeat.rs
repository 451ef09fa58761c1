//! ConsumerGroupHeartbeat (key 9): join, stay in, and leave a consumer group; the coordinator computes the
//! assignment (KIP-848 style: the broker assigns, members only report what they own).
//!
//! ```text
//! request:  group_id string | member_id string ("" to join) | member_epoch i32 (0 = join, -1 = leave) |
//!           instance_id option<string> (static membership) | rebalance_timeout_ms u32 |
//!           session_timeout_ms u32 |
//!           subscribed_topics option<array<string>> (none = unchanged since the last heartbeat) |
//!           owned: option<array<TopicPartitions>> (none = unchanged)
//! response: error_code u16 | error_message option<string> | member_id string | member_epoch i32 |
//!           heartbeat_interval_ms u32 | assignment option<array<TopicPartitions>> (none = unchanged)
//! TopicPartitions: topic string | partitions array<u32>
//! ```
//! Cooperative protocol: a partition moving between members is first removed from its old owner's
//! assignment; only after the old owner reports (in `owned`) that it released it does the new owner get it.
use crate::wire_struct;

pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;

wire_struct! {
    pub struct TopicPartitions {
        pub topic: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<u32>,
    }
}

wire_struct! {
    pub struct GroupHeartbeatRequest {
        pub group_id: String,
        pub member_id: String,
        pub member_epoch: i32,
        pub instance_id: Option<String>,
        pub rebalance_timeout_ms: u32,
        pub session_timeout_ms: u32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_opt_vec()"))]
        pub subscribed_topics: Option<Vec<String>>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_opt_vec()"))]
        pub owned: Option<Vec<TopicPartitions>>,
    }
}

wire_struct! {
    pub struct GroupHeartbeatResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        pub member_id: String,
        pub member_epoch: i32,
        pub heartbeat_interval_ms: u32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_opt_vec()"))]
        pub assignment: Option<Vec<TopicPartitions>>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<GroupHeartbeatRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<GroupHeartbeatResponse>()) { check_round_trip(&v)?; }
    }
}
