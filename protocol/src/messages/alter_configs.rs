//! AlterConfigs (key 14): changes a topic's config overrides (`runnel topic alter-config`).
//!
//! ```text
//! request:  topic string | configs array<(string, string)> | validate_only bool
//! response: result TopicResult                      (see create_topics)
//! ```
//! Incremental: each pair sets one key; keys not named keep their value. An empty value removes the
//! override, so the key falls back to the broker default. The broker validates the resulting set as a whole
//! (INVALID_CONFIG naming the key otherwise) and, unless `validate_only`, persists it and applies it to the
//! topic's live partitions before answering.
use super::create_topics::TopicResult;
use crate::wire_struct;

wire_struct! {
    pub struct AlterConfigsRequest {
        pub topic: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub configs: Vec<(String, String)>,
        pub validate_only: bool,
    }
}

wire_struct! {
    pub struct AlterConfigsResponse {
        pub result: TopicResult,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<AlterConfigsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<AlterConfigsResponse>()) { check_round_trip(&v)?; }
    }
}
