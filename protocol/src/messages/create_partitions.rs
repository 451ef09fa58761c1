//! CreatePartitions (key 7): grows a topic to a new total partition count (`runnel topic add-partitions`).
//!
//! ```text
//! request:  topic string | new_total u32 | timeout_ms u32
//! response: result TopicResult                      (see create_topics)
//! ```
use super::create_topics::TopicResult;
use crate::wire_struct;

wire_struct! {
    pub struct CreatePartitionsRequest {
        pub topic: String,
        pub new_total: u32,
        pub timeout_ms: u32,
    }
}

wire_struct! {
    pub struct CreatePartitionsResponse {
        pub result: TopicResult,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<CreatePartitionsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<CreatePartitionsResponse>()) { check_round_trip(&v)?; }
    }
}
