//! RaftRpc (key 100): an internal, broker-to-broker API carrying one Raft RPC of one Raft group. Clients
//! never send it; a broker answers it only for groups it hosts.
//!
//! ```text
//! request:  group string | kind u8 (0 append, 1 vote, 2 snapshot, 3 pre-vote, 4 transfer leader,
//!           5 pipelined append, 6 quiescence ping, 10 metadata propose, 11 leaders) |
//!           payload bytes
//! response: error_code u16 | error_message option<string> | payload bytes
//! ```
//! `group` names the Raft group (a partition's is `"<topic>-<partition>"`). `payload` is opaque to the
//! protocol crate: the broker puts the serialized Raft request/response there (bincode 2 today). A non-zero
//! `error_code` (e.g. UNKNOWN_TOPIC_OR_PARTITION for a group this broker does not host) comes with an empty
//! payload. Byte strings decode as zero-copy slices of the received frame.
use bytes::Bytes;

use crate::wire_struct;

/// `kind` of an AppendEntries RPC (heartbeats included).
pub const RAFT_RPC_APPEND: u8 = 0;
/// `kind` of a RequestVote RPC.
pub const RAFT_RPC_VOTE: u8 = 1;
/// `kind` of a full-snapshot install.
pub const RAFT_RPC_SNAPSHOT: u8 = 2;
/// `kind` of a Pre-Vote RPC (a RequestVote that changes nothing: "would you vote for me?").
pub const RAFT_RPC_PRE_VOTE: u8 = 3;
/// `kind` of a leadership transfer: the leader tells the voters whom it hands over to, and the named one
/// campaigns at once (without it the others would wait out the old leader's lease: ~2 s).
pub const RAFT_RPC_TRANSFER_LEADER: u8 = 4;
/// `kind` of an AppendEntries of a pipelined replication stream: the receiver hands the requests of one
/// connection and group to Raft in arrival order and answers each with a `StreamAppendResult`.
pub const RAFT_RPC_STREAM_APPEND: u8 = 5;
/// `kind` of a quiescence ping (empty `group`): the sending broker lists the idle groups it leads that the
/// receiver should stop ticking for; the answer says which it accepted. Sent once per peer per heartbeat
/// interval, it is also what keeps the receiver's quiet followers from campaigning.
pub const RAFT_RPC_QUIESCE: u8 = 6;
/// `kind` of a metadata change forwarded to the controller: `payload` is the record batch to append to the
/// metadata log; the response payload is its base offset (u64 big-endian).
pub const RAFT_RPC_METADATA_PROPOSE: u8 = 10;
/// `kind` of a leader-gossip ask: empty `payload` and `group`; the response lists the partitions the
/// answering broker leads.
pub const RAFT_RPC_LEADERS: u8 = 11;

wire_struct! {
    pub struct RaftRpcRequest {
        pub group: String,
        pub kind: u8,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::arb_bytes()"))]
        pub payload: Bytes,
    }
}

wire_struct! {
    pub struct RaftRpcResponse {
        pub error_code: u16,
        pub error_message: Option<String>,
        #[cfg_attr(test, proptest(strategy = "crate::wire::testing::arb_bytes()"))]
        pub payload: Bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::check_round_trip;
    use proptest::prelude::*;
    proptest! {
        #[test] fn request(v in any::<RaftRpcRequest>()) { check_round_trip(&v)?; }
        #[test] fn response(v in any::<RaftRpcResponse>()) { check_round_trip(&v)?; }
    }

    #[test]
    fn payload_is_a_zero_copy_slice_of_the_frame() {
        let req = RaftRpcRequest {
            group: "t-0".into(),
            kind: RAFT_RPC_APPEND,
            payload: Bytes::from_static(b"entries"),
        };
        let b = crate::wire::to_bytes(&req);
        let back: RaftRpcRequest = crate::wire::from_bytes(b.clone()).unwrap();
        assert_eq!(back, req);
        let start = b.as_ptr() as usize;
        let p = back.payload.as_ptr() as usize;
        assert!(p >= start && p + back.payload.len() <= start + b.len());
    }
}
