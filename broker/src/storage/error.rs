//! The storage error type. Errors are cheap to clone (they travel to every waiter of a failed flush) and
//! always name what failed and where.

use std::io;
use std::path::Path;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// A system call failed. `kind` keeps the class (e.g. `StorageFull` for ENOSPC).
    #[error("{op} {path}: {message}")]
    Io {
        op: &'static str,
        path: String,
        kind: io::ErrorKind,
        message: String,
    },
    /// Bytes on disk that were durable are not what was written (CRC mismatch, broken chain).
    #[error("corrupt log {path} at byte {pos}: {reason}")]
    Corrupt {
        path: String,
        pos: u64,
        reason: String,
    },
    /// An earlier fsync/write failure stopped this log; it takes no more writes (never retried).
    #[error("log stopped after a storage failure: {0}")]
    Stopped(String),
    /// The caller broke the log's contract (non-contiguous append, out-of-range purge, ...).
    #[error("invalid log operation: {0}")]
    Invalid(String),
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: &Path, e: &io::Error) -> StorageError {
        StorageError::Io {
            op,
            path: path.display().to_string(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    pub(crate) fn corrupt(path: &Path, pos: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.display().to_string(),
            pos,
            reason: reason.into(),
        }
    }

    /// The `io::ErrorKind` closest to this error (for layers that speak `io::Error`).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StorageError::Io { kind, .. } => *kind,
            StorageError::Corrupt { .. } => io::ErrorKind::InvalidData,
            StorageError::Stopped(_) => io::ErrorKind::Other,
            StorageError::Invalid(_) => io::ErrorKind::InvalidInput,
        }
    }
}

impl From<StorageError> for io::Error {
    fn from(e: StorageError) -> io::Error {
        io::Error::new(e.kind(), e.to_string())
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
