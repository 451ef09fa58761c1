//! DeleteTopics (key 3).
//!
//! ```text
//! request:  names array<string> | timeout_ms u32
//! response: topics array<TopicResult>            (see create_topics)
//! ```
use super::create_topics::TopicResult;
use crate::wire_struct;

wire_struct! {
    pub struct DeleteTopicsRequest {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub names: Vec<String>,
        pub timeout_ms: u32,
    }
}

wire_struct! {
    pub struct DeleteTopicsResponse {
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
        #[test] fn request(v in any::<DeleteTopicsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<DeleteTopicsResponse>()) { check_round_trip(&v)?; }
    }
}
