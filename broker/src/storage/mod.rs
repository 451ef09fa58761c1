//! The storage engine: a memory-mapped segment log that is at once the partition's Kafka log and its Raft
//! log. See `DESIGN.md` §3 and `notes/openraft-design.md` §3.
//!
//! Layout: [`frame`] (on-disk entry format), [`segment`] (one `.log` + `.index` + `.timeindex`),
//! [`log`] ([`PartitionLog`]: append/read/truncate/purge/recovery/retention), [`meta`] (vote, committed,
//! purge point, snapshot in two CRC'd slots), [`flusher`] (group-commit fdatasync thread and
//! [`StorageContext`]), [`io`] (the file-I/O seam with a fault-injecting implementation), [`mmap`] (the only
//! `unsafe`).
//!
//! Invariant: record bytes are written once, into a segment file, and read back as zero-copy slices.

pub mod error;
pub mod flusher;
pub mod frame;
pub mod io;
pub mod log;
pub mod meta;
mod mmap;
mod segment;
#[cfg(test)]
mod tests;

pub use error::StorageError;
pub use flusher::{FlushObserver, StorageContext};
pub use log::{
    DurableCallback, EntryKind, LogBounds, LogConfig, LogStats, NewEntry, PartitionLog, StoredEntry,
};
pub use meta::LogPos;
