//! CreateTopics (key 2).
//!
//! ```text
//! request:  topics: array<{ name string | partitions u32 | replication_factor u16 |
//!                           configs array<(string, string)> }> | timeout_ms u32 | validate_only bool
//! response: topics: array<TopicResult>
//! TopicResult: name string | error_code u16 | error_message option<string>
//! ```
use crate::wire_struct;

wire_struct! {
    pub struct CreatableTopic {
        pub name: String,
        pub partitions: u32,
        pub replication_factor: u16,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub configs: Vec<(String, String)>,
    }
}

wire_struct! {
    pub struct CreateTopicsRequest {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<CreatableTopic>,
        pub timeout_ms: u32,
        pub validate_only: bool,
    }
}

wire_struct! {
    /// The outcome for one topic of a topic-level admin request.
    pub struct TopicResult {
        pub name: String,
        pub error_code: u16,
        pub error_message: Option<String>,
    }
}

wire_struct! {
    pub struct CreateTopicsResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<TopicResult>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<CreateTopicsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<CreateTopicsResponse>()) { check_round_trip(&v)?; }
    }
}
