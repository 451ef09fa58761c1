//! `runnel-broker dump --data-dir DIR [--topic T] [--partition P]` (DESIGN.md §7): reads a stopped node's
//! partition logs offline and prints one JSON object per record, like kafka-dump-log.
//!
//! Output, one line per record, partitions in (topic, partition) order, records in offset order:
//! `{"topic":..,"partition":..,"offset":..,"term":..,"timestamp":..,"key":..,"value":..}`. `term` is the Raft
//! term in the header of the frame that holds the record's batch. A key or value that is valid UTF-8 is
//! printed as text under `key` / `value` (`null` when the record has none); one that is not is printed as
//! standard base64 (with padding) under `key_b64` / `value_b64` instead, and `key` / `value` are then absent.
//! Exactly one of `key` / `key_b64` (and of `value` / `value_b64`) appears in every line.
//!
//! Invariants:
//! - The data dir is never written. [`PartitionLog::open`] runs crash recovery, which may write (a zero
//!   header over a torn tail, rebuilt index files, redone purges, a fresh `raft_meta`, fdatasyncs), so each
//!   partition directory is first copied into a private temporary directory and the copy is opened; the copy
//!   is deleted when the partition is done. Recovery thus sees exactly what a restarting broker would, and
//!   the dump shows the log a restart would serve, without touching the original.
//! - A running broker is never read: the dump holds a shared `flock` on `DIR/.lock` for its whole run, and
//!   refuses to start while a broker holds it exclusively (and a broker cannot start meanwhile).
//! - Every loop is bounded: by the directory listing, and per partition by the Raft index range of its log
//!   (each read returns at least one entry or ends the loop).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::metadata::PARTITIONS_DIR;
use crate::server::LOCK_FILE;
use crate::storage::{EntryKind, LogConfig, PartitionLog, StorageContext, StorageError};

/// Most payload bytes read from a log per `entries` call (at least one entry is always returned).
pub const DUMP_READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Which partitions to dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpOptions {
    pub data_dir: PathBuf,
    pub topic: Option<String>,
    pub partition: Option<u32>,
}

/// Why the dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(
        "{0} is locked by a running broker (its .lock is held); stop the broker before dumping"
    )]
    Locked(PathBuf),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0} is not a Runnel data dir (no {PARTITIONS_DIR}/ directory in it)")]
    NotADataDir(PathBuf),
    #[error("no partition matches{0} in {1}")]
    NoMatch(String, PathBuf),
    #[error("partition {topic}-{partition}: {error}")]
    Storage {
        topic: String,
        partition: u32,
        error: StorageError,
    },
    #[error("partition {topic}-{partition}: bad record batch at offset {offset}: {error}")]
    Batch {
        topic: String,
        partition: u32,
        offset: u64,
        error: runnel_protocol::batch::BatchError,
    },
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DumpError + '_ {
    move |error| DumpError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A shared advisory lock on `DIR/.lock`, held while the dump runs. `None` file: the dir has no lock file
/// (no broker ever ran in it), so there is nothing to exclude.
struct SharedLock {
    _file: Option<std::fs::File>,
}

impl SharedLock {
    fn acquire(dir: &Path) -> Result<SharedLock, DumpError> {
        let path = dir.join(LOCK_FILE);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SharedLock { _file: None })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if let Err(errno) =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared)
        {
            let error = std::io::Error::from(errno);
            if error.kind() == std::io::ErrorKind::WouldBlock {
                return Err(DumpError::Locked(dir.to_path_buf()));
            }
            return Err(io_err(&path)(error));
        }
        Ok(SharedLock { _file: Some(file) })
    }
}

/// Splits a partition directory name `<topic>-<partition>` (topics may contain `-`; the last one splits).
pub fn parse_partition_dir(name: &str) -> Option<(String, u32)> {
    let (topic, p) = name.rsplit_once('-')?;
    if topic.is_empty() || p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((topic.to_string(), p.parse().ok()?))
}

/// The partitions under `DIR/partitions/` matching `opts`, sorted by (topic, partition).
fn list_partitions(opts: &DumpOptions) -> Result<Vec<(String, u32, PathBuf)>, DumpError> {
    let root = opts.data_dir.join(PARTITIONS_DIR);
    if !root.is_dir() {
        return Err(DumpError::NotADataDir(opts.data_dir.clone()));
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io_err(&root))? {
        let entry = entry.map_err(io_err(&root))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some((topic, partition)) = parse_partition_dir(&name) else {
            continue;
        };
        if !entry.path().is_dir()
            || opts.topic.as_ref().is_some_and(|t| *t != topic)
            || opts.partition.is_some_and(|p| p != partition)
        {
            continue;
        }
        out.push((topic, partition, entry.path()));
    }
    out.sort();
    if out.is_empty() && (opts.topic.is_some() || opts.partition.is_some()) {
        let mut what = String::new();
        if let Some(t) = &opts.topic {
            what.push_str(&format!(" topic {t:?}"));
        }
        if let Some(p) = opts.partition {
            what.push_str(&format!(" partition {p}"));
        }
        return Err(DumpError::NoMatch(what, root));
    }
    Ok(out)
}

/// Copies the regular files of `from` into `to` (partition directories are flat).
fn copy_dir(from: &Path, to: &Path) -> Result<(), DumpError> {
    for entry in std::fs::read_dir(from).map_err(io_err(from))? {
        let entry = entry.map_err(io_err(from))?;
        let path = entry.path();
        if entry.file_type().map_err(io_err(&path))?.is_file() {
            std::fs::copy(&path, to.join(entry.file_name())).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Appends `,"field":..` to a JSON object being written: the text when UTF-8 (`null` when absent), else
/// `,"field_b64":"<base64>"`.
fn push_bytes(line: &mut String, field: &str, bytes: Option<&[u8]>) {
    match bytes.map(|b| (b, std::str::from_utf8(b))) {
        None => line.push_str(&format!(",\"{field}\":null")),
        Some((_, Ok(s))) => line.push_str(&format!(",\"{field}\":{}", Value::from(s))),
        Some((b, Err(_))) => line.push_str(&format!(
            ",\"{field}_b64\":\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(b)
        )),
    }
}

/// One output line for one record (no newline), fields in the documented order.
pub fn record_line(
    topic: &str,
    partition: u32,
    term: u64,
    r: &runnel_protocol::batch::Record,
) -> String {
    let mut line = format!(
        "{{\"topic\":{},\"partition\":{partition},\"offset\":{},\"term\":{term},\"timestamp\":{}",
        Value::from(topic),
        r.offset,
        r.timestamp
    );
    push_bytes(&mut line, "key", r.key.as_deref());
    push_bytes(&mut line, "value", r.value.as_deref());
    line.push('}');
    line
}

/// Dumps one partition (its directory copied to a private temp dir first); returns the records printed.
fn dump_partition(
    topic: &str,
    partition: u32,
    dir: &Path,
    ctx: &StorageContext,
    out: &mut dyn Write,
) -> Result<u64, DumpError> {
    let copy = tempfile::Builder::new()
        .prefix("runnel-dump-")
        .tempdir()
        .map_err(io_err(&std::env::temp_dir()))?;
    copy_dir(dir, copy.path())?;
    let storage = |error| DumpError::Storage {
        topic: topic.to_string(),
        partition,
        error,
    };
    let log =
        PartitionLog::open(copy.path(), LogConfig::default(), ctx.clone()).map_err(storage)?;
    let bounds = log.bounds();
    let mut printed = 0u64;
    let Some(last) = bounds.last else {
        return Ok(0);
    };
    let end = last.index + 1;
    let mut next = bounds.last_purged.map_or(0, |p| p.index + 1);
    while next < end {
        let entries = log
            .entries(next, end, DUMP_READ_CHUNK_BYTES)
            .map_err(storage)?;
        let Some(tail) = entries.last() else {
            break;
        };
        next = tail.index + 1;
        for e in entries.iter().filter(|e| e.kind == EntryKind::Data) {
            let records =
                runnel_protocol::batch::records(&e.payload).map_err(|error| DumpError::Batch {
                    topic: topic.to_string(),
                    partition,
                    offset: e.base_offset,
                    error,
                })?;
            for r in records
                .iter()
                .filter(|r| r.offset >= bounds.log_start_offset)
            {
                let line = record_line(topic, partition, e.term, r);
                writeln!(out, "{line}").map_err(DumpError::Output)?;
                printed += 1;
            }
        }
    }
    // Not closed: closing syncs and writes index files, which only the copy would get; dropping suffices.
    drop(log);
    Ok(printed)
}

/// Dumps every matching partition of a stopped node to `out`; returns the number of records printed.
pub fn dump(opts: &DumpOptions, out: &mut dyn Write) -> Result<u64, DumpError> {
    if !opts.data_dir.is_dir() {
        return Err(DumpError::Io {
            path: opts.data_dir.clone(),
            error: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let _lock = SharedLock::acquire(&opts.data_dir)?;
    let partitions = list_partitions(opts)?;
    let ctx = StorageContext::new();
    let mut total = 0;
    for (topic, partition, dir) in &partitions {
        total += dump_partition(topic, *partition, dir, &ctx, out)?;
    }
    out.flush().map_err(DumpError::Output)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use runnel_protocol::batch::Record;

    #[test]
    fn partition_dir_names_split_at_the_last_dash() {
        assert_eq!(parse_partition_dir("t-0"), Some(("t".into(), 0)));
        assert_eq!(parse_partition_dir("a-b-12"), Some(("a-b".into(), 12)));
        assert_eq!(parse_partition_dir("t-"), None);
        assert_eq!(parse_partition_dir("-3"), None);
        assert_eq!(parse_partition_dir("t-+3"), None);
        assert_eq!(parse_partition_dir("nodash"), None);
    }

    #[test]
    fn keys_and_values_are_text_or_base64() {
        let r = Record {
            offset: 7,
            timestamp: 99,
            key: None,
            value: Some(Bytes::from_static(&[0xff, 0x00])),
            headers: vec![],
        };
        assert_eq!(
            record_line("t", 2, 3, &r),
            r#"{"topic":"t","partition":2,"offset":7,"term":3,"timestamp":99,"key":null,"value_b64":"/wA="}"#
        );
        let r = Record {
            key: Some(Bytes::from_static(b"k\"\n")),
            value: Some(Bytes::from_static("vé".as_bytes())),
            ..r
        };
        let line = record_line("a\"b", 2, 3, &r);
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap(),
            serde_json::json!({"topic":"a\"b","partition":2,"offset":7,"term":3,"timestamp":99,"key":"k\"\n","value":"vé"})
        );
    }
}
