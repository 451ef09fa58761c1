//! ApiVersions (key 0): the first request on a connection; tells the client which API versions the broker speaks.
//!
//! ```text
//! request:  (empty)
//! response: apis: u32 count × { api_key u16 | min_version u16 | max_version u16 } | broker_version string
//! ```
use crate::wire_struct;

wire_struct! {
    pub struct ApiVersionsRequest {}
}

wire_struct! {
    pub struct ApiVersionRange {
        pub api_key: u16,
        pub min_version: u16,
        pub max_version: u16,
    }
}

wire_struct! {
    pub struct ApiVersionsResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub apis: Vec<ApiVersionRange>,
        pub broker_version: String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<ApiVersionsRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<ApiVersionsResponse>()) { check_round_trip(&v)?; }
    }
}
