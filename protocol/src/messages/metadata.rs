//! Metadata (key 1): brokers, controller, and for each topic its partitions with leader, term, replicas,
//! caught-up replicas, high watermark and log start.
//!
//! ```text
//! request:  topics: option<array<string>>          (none = every topic)
//! response: cluster_id string | controller_id option<u32> |
//!           brokers: array<{ node_id u32 | host string | port u16 }> |
//!           topics: array<{ error_code u16 | name string | internal bool |
//!                           partitions: array<{ partition u32 | error_code u16 | leader option<u32> |
//!                                               leader_term u64 | replicas array<u32> | in_sync array<u32> |
//!                                               high_watermark u64 | log_start_offset u64 | log_end_offset u64 }> |
//!                           configs: array<(string, string)> }> |
//!           metadata_epoch u64                     (0 on a single node; only grows)
//! ```
use crate::wire_struct;

wire_struct! {
    pub struct MetadataRequest {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_opt_vec()"))]
        pub topics: Option<Vec<String>>,
    }
}

wire_struct! {
    pub struct BrokerMeta {
        pub node_id: u32,
        pub host: String,
        pub port: u16,
    }
}

wire_struct! {
    pub struct PartitionMeta {
        pub partition: u32,
        pub error_code: u16,
        pub leader: Option<u32>,
        pub leader_term: u64,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub replicas: Vec<u32>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub in_sync: Vec<u32>,
        pub high_watermark: u64,
        pub log_start_offset: u64,
        pub log_end_offset: u64,
    }
}

wire_struct! {
    pub struct TopicMeta {
        pub error_code: u16,
        pub name: String,
        pub internal: bool,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<PartitionMeta>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub configs: Vec<(String, String)>,
    }
}

wire_struct! {
    pub struct MetadataResponse {
        pub cluster_id: String,
        pub controller_id: Option<u32>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub brokers: Vec<BrokerMeta>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<TopicMeta>,
        /// The cluster metadata epoch this answer was built from (0 on a single node). It only grows, so a
        /// client that saw a higher one knows this broker's view is stale (it has just restarted, or is cut
        /// off from the controller) and asks another broker.
        pub metadata_epoch: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<MetadataRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<MetadataResponse>()) { check_round_trip(&v)?; }
    }
}
