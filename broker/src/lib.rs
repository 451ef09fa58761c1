//! The Runnel broker library: `storage` (the segment log that is also the Raft log), `raft` (openraft
//! glue; the only module that names openraft types) and `partition` (the facade the server uses).

pub mod partition;
pub mod raft;
pub mod storage;
