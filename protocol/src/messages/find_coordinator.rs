//! FindCoordinator (key 8): which broker coordinates a consumer group.
//!
//! ```text
//! request:  group_id string
//! response: error_code u16 | error_message option<string> | node_id u32 | host string | port u16
//! ```
use crate::wire_struct;

wire_struct! {
    pub struct FindCoordinatorRequest {
        pub group_id: String,
    }
}

wire_struct! {
    pub struct FindCoordinatorResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        pub node_id: u32,
        pub host: String,
        pub port: u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<FindCoordinatorRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<FindCoordinatorResponse>()) { check_round_trip(&v)?; }
    }
}
