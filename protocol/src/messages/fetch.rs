//! Fetch (key 5): read committed batches from `fetch_offset`, long-polling until `min_bytes` are available or
//! `max_wait_ms` passes.
//!
//! ```text
//! request:  max_wait_ms u32 | min_bytes u32 | max_bytes u32 |
//!           topics array<{ name string | partitions array<{ partition u32 | fetch_offset u64 |
//!                                                            partition_max_bytes u32 }> }> |
//!           read_replica bool
//! response: topics array<{ name string |
//!                          partitions array<{ partition u32 | error_code u16 | error_message option<string> |
//!                                             high_watermark u64 | log_start_offset u64 |
//!                                             leader_hint option<u32> | records Records }> }>
//! Records: u32 total length | concatenated record batches
//! ```
//! The first batch returned may start before `fetch_offset` (it contains it); clients skip earlier records.
//!
//! `read_replica = false` (every consumer): only a partition's leader answers; any other broker answers
//! `NOT_LEADER` with a leader hint. `read_replica = true` (audits, the `runnel-verify` checker): the broker
//! answers from its own replica, leader or follower, up to its own high watermark: the entries it has
//! applied as committed, so never data that could still be rolled back. A broker with no replica of the
//! partition answers `NOT_LEADER` as usual.
//! On encode `Records` are the broker's mmap slices, sent without copying; on decode one slice of the frame.
use bytes::{Bytes, BytesMut};

use crate::wire::{DecodeError, Reader, Wire, Writer};
use crate::wire_struct;

/// Concatenated record batches, held as a list of chunks.
#[derive(Debug, Clone, Default)]
pub struct Records(pub Vec<Bytes>);

impl Records {
    pub fn len(&self) -> usize {
        self.0.iter().map(|b| b.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The records as one buffer (free when there is a single chunk, as after decoding).
    pub fn to_contiguous(&self) -> Bytes {
        match self.0.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut b = BytesMut::with_capacity(self.len());
                for c in many {
                    b.extend_from_slice(c);
                }
                b.freeze()
            }
        }
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.to_contiguous() == other.to_contiguous()
    }
}
impl Eq for Records {}

impl Wire for Records {
    fn encode(&self, w: &mut Writer) {
        w.put_u32(self.len() as u32);
        for c in &self.0 {
            w.put_shared(c);
        }
    }
    fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let b = <Bytes as Wire>::decode(r)?;
        Ok(Records(if b.is_empty() { vec![] } else { vec![b] }))
    }
}

#[cfg(test)]
impl proptest::arbitrary::Arbitrary for Records {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Records>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::prelude::*;
        proptest::collection::vec(crate::wire::testing::arb_bytes(), 0..4)
            .prop_map(Records)
            .boxed()
    }
}

wire_struct! {
    pub struct FetchPartition {
        pub partition: u32,
        pub fetch_offset: u64,
        pub partition_max_bytes: u32,
    }
}

wire_struct! {
    pub struct FetchTopic {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<FetchPartition>,
    }
}

wire_struct! {
    pub struct FetchRequest {
        pub max_wait_ms: u32,
        pub min_bytes: u32,
        pub max_bytes: u32,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<FetchTopic>,
        /// Read this broker's own replica, leader or follower (see the module doc).
        pub read_replica: bool,
    }
}

wire_struct! {
    pub struct FetchPartitionResponse {
        pub partition: u32,
        pub error_code: u16,
        pub error_message: Option<String>,
        pub high_watermark: u64,
        pub log_start_offset: u64,
        pub leader_hint: Option<u32>,
        pub records: Records,
    }
}

wire_struct! {
    pub struct FetchTopicResponse {
        pub name: String,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub partitions: Vec<FetchPartitionResponse>,
    }
}

wire_struct! {
    pub struct FetchResponse {
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::small_vec()"))]
        pub topics: Vec<FetchTopicResponse>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<FetchRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<FetchResponse>()) { check_round_trip(&v)?; }
    }
}
