//! InitProducerId (key 15): a producer id for an idempotent producer, unique in the cluster.
//!
//! ```text
//! request:  transactional_id option<string>
//! response: error_code u16 | error_message option<string> | producer_id i64 | producer_epoch i16
//! ```
//! Any broker answers. It hands ids out of a block of consecutive ids that it reserved from the controller
//! (the cluster metadata's `next_producer_id`; on a single node, the metadata file), so two answers never
//! carry the same id, across brokers and restarts. `transactional_id` is reserved for transactions and
//! must be absent (INVALID_REQUEST otherwise). On error `producer_id` is -1.
use crate::wire_struct;

wire_struct! {
    pub struct InitProducerIdRequest {
        /// Reserved for transactional producers; must be `None`.
        pub transactional_id: Option<String>,
    }
}

wire_struct! {
    pub struct InitProducerIdResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        /// The new producer id (≥ 0), or -1 on error.
        pub producer_id: i64,
        /// The epoch to write with (0 for a new id).
        pub producer_epoch: i16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use crate::wire::{from_bytes, to_bytes};
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<InitProducerIdRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<InitProducerIdResponse>()) { check_round_trip(&v)?; }
    }

    /// The byte layout of the doc comment, pinned.
    #[test]
    fn layout() {
        let req = to_bytes(&InitProducerIdRequest::default());
        assert_eq!(&req[..], &[0u8], "an absent option is one zero byte");
        let resp = InitProducerIdResponse {
            error_code: 0,
            error_message: None,
            producer_id: 0x0102_0304_0506_0708,
            producer_epoch: 3,
        };
        let b = to_bytes(&resp);
        assert_eq!(
            &b[..],
            &[0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3],
            "u16 code, none, i64 id, i16 epoch (big-endian)"
        );
        assert_eq!(from_bytes::<InitProducerIdResponse>(b).unwrap(), resp);
    }
}
