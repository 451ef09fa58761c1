//! The history `runnel-verify` records: one JSON object per line (JSONL), one line per completed operation.
//!
//! Every event names its kind in `"op"` and carries `"t"`, milliseconds since the Unix epoch when it was
//! recorded (the run and the final read are separate processes, so wall-clock time is what they share):
//!
//! ```text
//! {"op":"send","t":..,"proc":"p3","seq":17,"value":"p3-000017","status":"ok","partition":1,"offset":42}
//! {"op":"send","t":..,"proc":"p3","seq":18,"value":"p3-000018","status":"info","err":"timeout"}
//! {"op":"assign","t":..,"proc":"c0","group":"g","partitions":[0,2]}
//! {"op":"poll","t":..,"proc":"c0","group":"g","partition":0,"offsets":[7,8],"values":["p0-000003","p1-000002"]}
//! {"op":"commit","t":..,"proc":"c0","group":"g","partition":0,"offset":9,"status":"ok"}
//! {"op":"revoke","t":..,"proc":"c0","group":"g","partitions":[2]}
//! {"op":"reset","t":..,"proc":"admin","group":"g","partition":0,"offset":0}
//! {"op":"final_read","t":..,"broker":"127.0.0.1:9292","partition":0,"offset":7,"value":"p0-000003"}
//! {"op":"final_read_end","t":..,"broker":"127.0.0.1:9292","partition":0,"log_start":0,"high_watermark":9,"records":9}
//! ```
//!
//! Status: `ok` (acknowledged), `fail` (definitely not applied), `info` (indeterminate: it may or may not have
//! taken effect — every timeout is `info`, never `fail`).
//!
//! Invariants: the writer appends whole lines only (one `write` of the serialised line plus its newline into a
//! buffer that is flushed every [`FLUSH_EVERY_EVENTS`] events and by [`HistoryWriter::finish`]); a history
//! is only ever appended to, so `check` can add its `final_read` events to the file `run` wrote. The reader
//! holds at most [`HISTORY_EVENTS_MAX`] events and tolerates one torn last line (a writer killed mid-line).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The writer flushes its buffer to the file after this many events (and at the end).
pub const FLUSH_EVERY_EVENTS: usize = 256;
/// Most events the reader loads (a memory bound: about 200 bytes each in memory).
pub const HISTORY_EVENTS_MAX: usize = 20_000_000;
/// Longest line the reader accepts (a poll event lists at most one fetch's worth of values).
pub const HISTORY_LINE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The outcome of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Acknowledged: it took effect.
    Ok,
    /// Definitely did not take effect.
    Fail,
    /// Indeterminate: it may or may not have taken effect (timeouts, lost connections, retried failures).
    Info,
}

/// One produce attempt, recorded when it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendEvent {
    pub t: i64,
    pub proc: String,
    /// The producer's send order (0, 1, 2, ...): a producer enqueues its values in this order.
    pub seq: u64,
    /// Globally unique value, `p<i>-<seq>`.
    pub value: String,
    pub status: Status,
    /// Where the broker acknowledged it (`ok` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// What one `poll` returned for one partition (records in the order `poll` returned them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollEvent {
    pub t: i64,
    pub proc: String,
    /// The consumer group, `None` for a reader by assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub partition: u32,
    pub offsets: Vec<u64>,
    pub values: Vec<String>,
}

/// A committed offset (the next offset to read) of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitEvent {
    pub t: i64,
    pub proc: String,
    pub group: String,
    pub partition: u32,
    pub offset: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// Partitions a consumer starts (`assign`) or gives up (`revoke`, also a lost membership). Each `assign`
/// opens a new assignment epoch for those partitions in that consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignEvent {
    pub t: i64,
    pub proc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub partitions: Vec<u32>,
}

/// An explicit reset of a group's committed offset (`runnel group reset-offsets`): the one sanctioned way for
/// committed offsets to go back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetEvent {
    pub t: i64,
    pub proc: String,
    pub group: String,
    pub partition: u32,
    pub offset: u64,
}

/// One record of the final read, through one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReadEvent {
    pub t: i64,
    pub broker: String,
    pub partition: u32,
    pub offset: u64,
    pub value: String,
}

/// The end of the final read of one partition through one broker: which offsets it covered, or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalReadEnd {
    pub t: i64,
    pub broker: String,
    pub partition: u32,
    pub log_start: u64,
    /// The broker's high watermark: the read covered `log_start..high_watermark`.
    pub high_watermark: u64,
    pub records: u64,
    /// Set when this broker could not be read for this partition; the offsets above then mean nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Event {
    Send(SendEvent),
    Poll(PollEvent),
    Commit(CommitEvent),
    Assign(AssignEvent),
    Revoke(AssignEvent),
    Reset(ResetEvent),
    FinalRead(FinalReadEvent),
    FinalReadEnd(FinalReadEnd),
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Errors reading or writing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a history event: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: more than {max} events")]
    TooLarge { path: PathBuf, max: usize },
}

struct WriterState {
    out: BufWriter<File>,
    unflushed: usize,
    /// The first write error; later appends are refused with it.
    failed: Option<String>,
}

/// Appends events to a history file; shared by every task of a run (`&self` methods, internally locked).
pub struct HistoryWriter {
    path: PathBuf,
    state: Mutex<WriterState>,
}

impl HistoryWriter {
    /// Opens `path` for appending, creating it if needed.
    pub fn append_to(path: &Path) -> Result<HistoryWriter, HistoryError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| HistoryError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(HistoryWriter {
            path: path.to_path_buf(),
            state: Mutex::new(WriterState {
                out: BufWriter::new(file),
                unflushed: 0,
                failed: None,
            }),
        })
    }

    fn io_err(&self, message: String) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(message),
        }
    }

    /// Appends one event (flushing every [`FLUSH_EVERY_EVENTS`]).
    pub fn append(&self, e: &Event) -> Result<(), HistoryError> {
        let mut line = serde_json::to_vec(e).map_err(|e| self.io_err(e.to_string()))?;
        line.push(b'\n');
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &st.failed {
            return Err(self.io_err(m.clone()));
        }
        let mut r = st.out.write_all(&line);
        st.unflushed += 1;
        if r.is_ok() && st.unflushed >= FLUSH_EVERY_EVENTS {
            r = st.out.flush();
            st.unflushed = 0;
        }
        if let Err(e) = r {
            st.failed = Some(e.to_string());
            return Err(self.io_err(e.to_string()));
        }
        Ok(())
    }

    /// Flushes the buffer and syncs the file.
    pub fn finish(&self) -> Result<(), HistoryError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = &st.failed {
            return Err(self.io_err(m.clone()));
        }
        st.unflushed = 0;
        st.out
            .flush()
            .and_then(|_| st.out.get_ref().sync_data())
            .map_err(|source| HistoryError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

/// A loaded history: its events in file order, and whether a torn last line was skipped.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    pub torn_tail: bool,
}

/// Reads a whole history. A last line without its newline that does not parse is a write cut short and is
/// skipped (`torn_tail`); any other bad line is an error.
pub fn read_history(path: &Path) -> Result<History, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut reader = BufReader::new(file);
    let mut out = History::default();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = (&mut reader)
            .take(HISTORY_LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.last() == Some(&b'\n');
        if !complete && buf.len() > HISTORY_LINE_BYTES_MAX {
            return Err(HistoryError::Parse {
                path: path.to_path_buf(),
                line: line_no,
                message: format!("line longer than {HISTORY_LINE_BYTES_MAX} bytes"),
            });
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(text) {
            Ok(e) => {
                if out.events.len() >= HISTORY_EVENTS_MAX {
                    return Err(HistoryError::TooLarge {
                        path: path.to_path_buf(),
                        max: HISTORY_EVENTS_MAX,
                    });
                }
                out.events.push(e);
            }
            Err(_) if !complete => {
                out.torn_tail = true;
                break;
            }
            Err(e) => {
                return Err(HistoryError::Parse {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(seq: u64, status: Status) -> Event {
        Event::Send(SendEvent {
            t: 1,
            proc: "p0".into(),
            seq,
            value: format!("p0-{seq:06}"),
            status,
            partition: (status == Status::Ok).then_some(0),
            offset: (status == Status::Ok).then_some(seq),
            err: (status != Status::Ok).then(|| "timeout".to_string()),
        })
    }

    #[test]
    fn events_round_trip_through_a_file_and_appends_keep_earlier_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let first: Vec<Event> = (0..FLUSH_EVERY_EVENTS as u64 + 3)
            .map(|i| send(i, if i % 2 == 0 { Status::Ok } else { Status::Info }))
            .collect();
        let w = HistoryWriter::append_to(&path).unwrap();
        for e in &first {
            w.append(e).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        let more = vec![
            Event::FinalRead(FinalReadEvent {
                t: 2,
                broker: "b".into(),
                partition: 0,
                offset: 0,
                value: "p0-000000".into(),
            }),
            Event::FinalReadEnd(FinalReadEnd {
                t: 2,
                broker: "b".into(),
                partition: 0,
                log_start: 0,
                high_watermark: 1,
                records: 1,
                err: None,
            }),
        ];
        let w = HistoryWriter::append_to(&path).unwrap();
        for e in &more {
            w.append(e).unwrap();
        }
        w.finish().unwrap();
        let h = read_history(&path).unwrap();
        assert!(!h.torn_tail);
        let want: Vec<Event> = first.into_iter().chain(more).collect();
        assert_eq!(h.events, want);
    }

    #[test]
    fn the_wire_form_names_the_op_and_omits_absent_fields() {
        let line = serde_json::to_string(&send(3, Status::Info)).unwrap();
        assert_eq!(
            line,
            r#"{"op":"send","t":1,"proc":"p0","seq":3,"value":"p0-000003","status":"info","err":"timeout"}"#
        );
        let e: Event = serde_json::from_str(
            r#"{"op":"revoke","t":5,"proc":"c1","group":"g","partitions":[1,2]}"#,
        )
        .unwrap();
        assert!(matches!(e, Event::Revoke(a) if a.partitions == vec![1, 2]));
    }

    #[test]
    fn a_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let good = serde_json::to_string(&send(0, Status::Ok)).unwrap();
        std::fs::write(&path, format!("{good}\n{{\"op\":\"se")).unwrap();
        let h = read_history(&path).unwrap();
        assert!(h.torn_tail);
        assert_eq!(h.events.len(), 1);
        std::fs::write(&path, format!("{{\"op\":\"nope\"}}\n{good}\n")).unwrap();
        match read_history(&path) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 1),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
