//! The history checker: [`check`] turns a history (see [`crate::history`]) into a [`Report`] of violations.
//!
//! A pure function of the events (no I/O, no clock), so it is tested on hand-written histories.
//!
//! # What it checks
//! Positions are `(partition, offset)` of the one topic a history is about. "Final reads" are the
//! `final_read` records, read from the log start through each broker after the faults healed.
//! - **lost**: an acknowledged (`ok`) value in no final read; an acknowledged value missing from a broker
//!   whose final read covered its ack offset; a value a consumer polled (so it was visible) in no final read.
//! - **unexpected**: a value read (finally or by a poll) that no send attempted, or whose send definitely
//!   failed (`fail`).
//! - **duplicate**: a value at two or more positions in the final reads.
//! - **inconsistent_offset**: one position holding two values across the observations (the final read of
//!   each broker, polls, acks); a value acknowledged or polled at a position other than the one(s) the final
//!   read has it at.
//! - **producer_order**: within one partition, a producer's acknowledged values not in its send order (`seq`)
//!   in the final read (adjacent pairs, first occurrence of each value).
//! - **poll_monotonicity**: within one assignment epoch (`assign` … `revoke` of a partition in one consumer),
//!   polled offsets must strictly increase; a new epoch of a group consumer may start lower, but never below
//!   the group's committed offset at the time of the `assign`.
//! - **commit_regression**: per group and partition, an `ok` commit lower than an earlier `ok` commit (a
//!   `reset` event is the explicit exception: it sets the baseline).
//!
//! # Indeterminate operations
//! `info` sends may be read once or not at all; they are never lost. A send recorded as `fail` must never be
//! read. `run` records a send as `fail` only when the producer refused it before it joined a batch (it never
//! reached a broker); every error after that is `info`, because the producer retries, and an earlier attempt
//! of the same batch may have been written (a timeout, a lost connection, or `NOT_LEADER` from a leader that
//! appended the batch and then lost its leadership — Raft may still commit that entry). Only `ok` commits
//! count for the commit checks.
//!
//! # Unavailability
//! [`Stats::max_unavailability_ms`] is a figure, not a verdict: the longest stretch of the sending window
//! (from the first to the last completed send event, any status) without an acknowledgement — the largest gap
//! between consecutive `ok` send events, counting the window's start and end as bounds (so a window with no
//! `ok` at all is unavailable throughout). Send events carry their completion time, so a stretch is measured
//! between completions.
//!
//! Invariants: every class keeps its full count and at most [`EXAMPLES_MAX`] examples, in history order
//! where the check is sequential and in (partition, offset) or value order otherwise; notes (facts that
//! are not violations) are bounded by [`NOTES_MAX`]; [`Report::ok`] is true exactly when every count is 0.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use crate::history::{Event, FinalReadEnd, Status};

/// Examples kept per violation class.
pub const EXAMPLES_MAX: usize = 5;
/// Notes kept in a report.
pub const NOTES_MAX: usize = 20;

/// The classes of violation, in the order the report prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Violation {
    Lost,
    Unexpected,
    Duplicate,
    InconsistentOffset,
    ProducerOrder,
    PollMonotonicity,
    CommitRegression,
}

impl Violation {
    pub const ALL: [Violation; 7] = [
        Violation::Lost,
        Violation::Unexpected,
        Violation::Duplicate,
        Violation::InconsistentOffset,
        Violation::ProducerOrder,
        Violation::PollMonotonicity,
        Violation::CommitRegression,
    ];

    /// The name printed in the report.
    pub fn name(self) -> &'static str {
        match self {
            Violation::Lost => "lost",
            Violation::Unexpected => "unexpected",
            Violation::Duplicate => "duplicate",
            Violation::InconsistentOffset => "inconsistent_offset",
            Violation::ProducerOrder => "producer_order",
            Violation::PollMonotonicity => "poll_monotonicity",
            Violation::CommitRegression => "commit_regression",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The count and first examples of one class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Class {
    pub count: u64,
    pub examples: Vec<String>,
}

/// Figures about the history (not verdicts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: usize,
    /// Distinct values with a `send` event, and their outcome.
    pub sends: u64,
    pub sends_ok: u64,
    pub sends_fail: u64,
    pub sends_info: u64,
    /// Indeterminate sends found in / absent from the final reads.
    pub info_read: u64,
    pub info_absent: u64,
    pub polls: u64,
    pub polled_records: u64,
    pub commits_ok: u64,
    pub commits_not_ok: u64,
    /// Brokers with at least one final read (`final_read_end`), partitions they read without error.
    pub final_brokers: usize,
    pub final_partition_reads: u64,
    /// Distinct values in the final reads.
    pub final_values: u64,
    /// The longest gap without an acknowledged send while sends were completing (see the module doc).
    pub max_unavailability_ms: u64,
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub stats: Stats,
    classes: [Class; 7],
    pub notes: Vec<String>,
    notes_dropped: usize,
}

impl Report {
    /// True when no violation of any class was found.
    pub fn ok(&self) -> bool {
        self.classes.iter().all(|c| c.count == 0)
    }

    pub fn class(&self, v: Violation) -> &Class {
        &self.classes[v.index()]
    }

    pub fn count(&self, v: Violation) -> u64 {
        self.class(v).count
    }

    /// One machine-readable line of the headline figures (`key=value` pairs, space-separated), which the
    /// chaos scripts print: `figures: attempted=.. acked=.. lost=.. duplicates=.. inconsistent=..
    /// max_unavailability_s=..`.
    pub fn figures(&self) -> String {
        format!(
            "figures: attempted={} acked={} lost={} duplicates={} inconsistent={} max_unavailability_s={:.1}",
            self.stats.sends,
            self.stats.sends_ok,
            self.count(Violation::Lost),
            self.count(Violation::Duplicate),
            self.count(Violation::InconsistentOffset),
            self.stats.max_unavailability_ms as f64 / 1000.0
        )
    }

    /// The number of violations over every class.
    pub fn total(&self) -> u64 {
        self.classes.iter().map(|c| c.count).sum()
    }

    fn add(&mut self, v: Violation, example: impl FnOnce() -> String) {
        let c = &mut self.classes[v.index()];
        c.count += 1;
        if c.examples.len() < EXAMPLES_MAX {
            c.examples.push(example());
        }
    }

    fn note(&mut self, n: String) {
        if self.notes.len() < NOTES_MAX {
            self.notes.push(n);
        } else {
            self.notes_dropped += 1;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "history      {} events", s.events)?;
        writeln!(
            f,
            "sends        {} attempted: {} ok, {} fail, {} indeterminate ({} read, {} absent)",
            s.sends, s.sends_ok, s.sends_fail, s.sends_info, s.info_read, s.info_absent
        )?;
        writeln!(
            f,
            "consumers    {} polls, {} records; commits {} ok, {} not ok",
            s.polls, s.polled_records, s.commits_ok, s.commits_not_ok
        )?;
        writeln!(
            f,
            "final read   {} brokers, {} partition reads, {} distinct values",
            s.final_brokers, s.final_partition_reads, s.final_values
        )?;
        writeln!(
            f,
            "unavailable  {:.1} s at most without an acknowledgement",
            s.max_unavailability_ms as f64 / 1000.0
        )?;
        writeln!(f)?;
        writeln!(f, "{:<20} {:>8}  first examples", "check", "count")?;
        for v in Violation::ALL {
            let c = self.class(v);
            let first = c.examples.first().map_or("-", String::as_str);
            writeln!(f, "{:<20} {:>8}  {first}", v.name(), c.count)?;
            for e in c.examples.iter().skip(1) {
                writeln!(f, "{:<20} {:>8}  {e}", "", "")?;
            }
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "notes:")?;
            for n in &self.notes {
                writeln!(f, "  {n}")?;
            }
            if self.notes_dropped > 0 {
                writeln!(f, "  ... and {} more", self.notes_dropped)?;
            }
        }
        writeln!(f)?;
        writeln!(f, "{}", self.figures())?;
        if self.ok() {
            writeln!(f, "verdict: OK")
        } else {
            writeln!(f, "verdict: {} VIOLATIONS", self.total())
        }
    }
}

/// Who observed a value at a position.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Ack(&'a str),
    Final(&'a str),
    Poll(&'a str),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ack(p) => write!(f, "acked to {p}"),
            Source::Final(b) => write!(f, "read via {b}"),
            Source::Poll(c) => write!(f, "polled by {c}"),
        }
    }
}

/// The merged outcome of a value's send events.
struct Attempt<'a> {
    proc: &'a str,
    seq: u64,
    status: Status,
    at: Option<(u32, u64)>,
    err: Option<&'a str>,
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Fail => 0,
        Status::Info => 1,
        Status::Ok => 2,
    }
}

/// One consumer's current assignment epoch of one partition.
struct Epoch {
    last: Option<u64>,
    /// The group's committed offset when the epoch began: its first offset may not be lower.
    floor: Option<u64>,
}

type Pos = (u32, u64);

/// Checks a history. See the module documentation for what each class means.
pub fn check(events: &[Event]) -> Report {
    let mut r = Report::default();
    r.stats.events = events.len();

    let mut attempts: HashMap<&str, Attempt> = HashMap::new();
    // Per broker: what its final read found at each position.
    let mut by_broker: BTreeMap<&str, HashMap<Pos, &str>> = BTreeMap::new();
    let mut ends: BTreeMap<(&str, u32), &FinalReadEnd> = BTreeMap::new();
    // Every observation of every position, by distinct value (first source kept).
    let mut observed: BTreeMap<Pos, BTreeMap<&str, Source>> = BTreeMap::new();
    // Positions at which polls returned each value (first poller kept).
    let mut polled_at: HashMap<&str, BTreeMap<Pos, &str>> = HashMap::new();
    // The sequential checks run in history order.
    let mut epochs: HashMap<(&str, u32), Epoch> = HashMap::new();
    let mut committed: HashMap<(&str, u32), u64> = HashMap::new();
    // Completion times of every send event and of the acknowledged ones.
    let mut send_times: Vec<i64> = Vec::new();
    let mut ok_times: Vec<i64> = Vec::new();

    for e in events {
        match e {
            Event::Send(s) => {
                send_times.push(s.t);
                if s.status == Status::Ok {
                    ok_times.push(s.t);
                }
                let new = Attempt {
                    proc: &s.proc,
                    seq: s.seq,
                    status: s.status,
                    at: match (s.status, s.partition, s.offset) {
                        (Status::Ok, Some(p), Some(o)) => Some((p, o)),
                        _ => None,
                    },
                    err: s.err.as_deref(),
                };
                match attempts.get(s.value.as_str()) {
                    Some(old) if rank(old.status) >= rank(new.status) => {}
                    _ => {
                        attempts.insert(&s.value, new);
                    }
                }
            }
            Event::FinalRead(fr) => {
                let pos = (fr.partition, fr.offset);
                by_broker
                    .entry(&fr.broker)
                    .or_default()
                    .insert(pos, &fr.value);
                // A final read is the most telling source to show for a value at a position.
                observed
                    .entry(pos)
                    .or_default()
                    .entry(&fr.value)
                    .and_modify(|s| {
                        if !matches!(s, Source::Final(_)) {
                            *s = Source::Final(&fr.broker);
                        }
                    })
                    .or_insert(Source::Final(&fr.broker));
            }
            Event::FinalReadEnd(end) => {
                ends.insert((&end.broker, end.partition), end);
            }
            Event::Assign(a) => {
                for &p in &a.partitions {
                    let floor = a
                        .group
                        .as_deref()
                        .and_then(|g| committed.get(&(g, p)).copied());
                    epochs.insert((&a.proc, p), Epoch { last: None, floor });
                }
            }
            Event::Revoke(a) => {
                for &p in &a.partitions {
                    epochs.remove(&(a.proc.as_str(), p));
                }
            }
            Event::Poll(pl) => {
                r.stats.polls += 1;
                if pl.offsets.len() != pl.values.len() {
                    r.note(format!(
                        "malformed poll by {} of partition {}: {} offsets, {} values",
                        pl.proc,
                        pl.partition,
                        pl.offsets.len(),
                        pl.values.len()
                    ));
                }
                let epoch = epochs.entry((&pl.proc, pl.partition)).or_insert(Epoch {
                    last: None,
                    floor: None,
                });
                for (&o, v) in pl.offsets.iter().zip(&pl.values) {
                    r.stats.polled_records += 1;
                    let pos = (pl.partition, o);
                    match (epoch.last, epoch.floor) {
                        (Some(last), _) if o <= last => r.add(Violation::PollMonotonicity, || {
                            format!(
                                "{} partition {}: offset {o} after {last} in one assignment",
                                pl.proc, pl.partition
                            )
                        }),
                        (None, Some(floor)) if o < floor => {
                            r.add(Violation::PollMonotonicity, || {
                                format!(
                                    "{} partition {}: started at {o}, below the committed offset {floor}",
                                    pl.proc, pl.partition
                                )
                            })
                        }
                        _ => {}
                    }
                    epoch.last = Some(epoch.last.map_or(o, |l| l.max(o)));
                    observed
                        .entry(pos)
                        .or_default()
                        .entry(v)
                        .or_insert(Source::Poll(&pl.proc));
                    polled_at
                        .entry(v)
                        .or_default()
                        .entry(pos)
                        .or_insert(&pl.proc);
                }
            }
            Event::Commit(c) => {
                if c.status != Status::Ok {
                    r.stats.commits_not_ok += 1;
                    continue;
                }
                r.stats.commits_ok += 1;
                let cur = committed.entry((&c.group, c.partition)).or_insert(c.offset);
                if c.offset < *cur {
                    let prev = *cur;
                    r.add(Violation::CommitRegression, || {
                        format!(
                            "group {} partition {}: {} committed {} after {prev}",
                            c.group, c.partition, c.proc, c.offset
                        )
                    });
                }
                *cur = (*cur).max(c.offset);
            }
            Event::Reset(x) => {
                committed.insert((&x.group, x.partition), x.offset);
            }
        }
    }

    // Acknowledged positions are observations too.
    for (v, a) in &attempts {
        if let Some(pos) = a.at {
            observed
                .entry(pos)
                .or_default()
                .entry(v)
                .or_insert(Source::Ack(a.proc));
        }
    }

    // The union of the final reads: value -> positions, position -> value (first broker's).
    let mut final_at: HashMap<&str, BTreeSet<Pos>> = HashMap::new();
    let mut final_log: BTreeMap<Pos, &str> = BTreeMap::new();
    for m in by_broker.values() {
        for (&pos, &v) in m {
            final_at.entry(v).or_default().insert(pos);
            final_log.entry(pos).or_insert(v);
        }
    }

    send_stats(&mut r, &attempts, &final_at);
    r.stats.max_unavailability_ms = max_unavailability_ms(&send_times, ok_times);
    final_read_notes(&mut r, &ends, &by_broker, &final_at);
    check_lost(&mut r, &attempts, &final_at, &by_broker, &ends, &polled_at);
    check_unexpected(&mut r, &attempts, &final_at, &polled_at);
    check_duplicates(&mut r, &final_at);
    check_inconsistent(&mut r, &observed, &attempts, &final_at, &polled_at);
    check_producer_order(&mut r, &attempts, &final_log);
    r
}

/// The longest gap without an `ok` completion inside the window of send completions (see the module doc).
fn max_unavailability_ms(send_times: &[i64], mut ok_times: Vec<i64>) -> u64 {
    let (Some(&start), Some(&end)) = (send_times.iter().min(), send_times.iter().max()) else {
        return 0;
    };
    ok_times.sort_unstable();
    let mut prev = start;
    let mut max = 0i64;
    for &t in ok_times.iter().chain(std::iter::once(&end)) {
        max = max.max(t - prev);
        prev = prev.max(t);
    }
    u64::try_from(max).unwrap_or(0)
}

fn send_stats(
    r: &mut Report,
    attempts: &HashMap<&str, Attempt>,
    final_at: &HashMap<&str, BTreeSet<Pos>>,
) {
    for (v, a) in attempts {
        r.stats.sends += 1;
        match a.status {
            Status::Ok => r.stats.sends_ok += 1,
            Status::Fail => r.stats.sends_fail += 1,
            Status::Info => {
                r.stats.sends_info += 1;
                if final_at.contains_key(v) {
                    r.stats.info_read += 1;
                } else {
                    r.stats.info_absent += 1;
                }
            }
        }
    }
    r.stats.final_values = final_at.len() as u64;
}

fn final_read_notes(
    r: &mut Report,
    ends: &BTreeMap<(&str, u32), &FinalReadEnd>,
    by_broker: &BTreeMap<&str, HashMap<Pos, &str>>,
    final_at: &HashMap<&str, BTreeSet<Pos>>,
) {
    let brokers: BTreeSet<&str> = ends
        .keys()
        .map(|(b, _)| *b)
        .chain(by_broker.keys().copied())
        .collect();
    r.stats.final_brokers = brokers.len();
    if brokers.is_empty() && final_at.is_empty() {
        r.note("the history has no final read: every acknowledged value counts as lost".into());
    }
    let mut hwms: BTreeMap<u32, Vec<(&str, u64)>> = BTreeMap::new();
    for (&(b, p), end) in ends {
        match &end.err {
            Some(e) => r.note(format!("broker {b} partition {p}: not read ({e})")),
            None => {
                r.stats.final_partition_reads += 1;
                hwms.entry(p).or_default().push((b, end.high_watermark));
            }
        }
    }
    for (p, list) in hwms {
        if list.iter().any(|&(_, h)| h != list[0].1) {
            let all: Vec<String> = list.iter().map(|(b, h)| format!("{b}={h}")).collect();
            r.note(format!(
                "partition {p}: brokers disagree on the high watermark ({})",
                all.join(", ")
            ));
        }
    }
}

fn check_lost(
    r: &mut Report,
    attempts: &HashMap<&str, Attempt>,
    final_at: &HashMap<&str, BTreeSet<Pos>>,
    by_broker: &BTreeMap<&str, HashMap<Pos, &str>>,
    ends: &BTreeMap<(&str, u32), &FinalReadEnd>,
    polled_at: &HashMap<&str, BTreeMap<Pos, &str>>,
) {
    let mut lost: BTreeMap<&str, String> = BTreeMap::new();
    for (&v, a) in attempts {
        if a.status != Status::Ok {
            continue;
        }
        let at =
            a.at.map_or_else(|| "acked".to_string(), |(p, o)| format!("acked at {p}/{o}"));
        if !final_at.contains_key(v) {
            lost.insert(v, format!("{v} ({at} to {}) is in no final read", a.proc));
            continue;
        }
        let Some((p, o)) = a.at else { continue };
        for (&b, m) in by_broker {
            let Some(end) = ends.get(&(b, p)) else {
                continue;
            };
            let covered = end.err.is_none() && end.log_start <= o && o < end.high_watermark;
            if covered && !m.contains_key(&(p, o)) {
                lost.insert(
                    v,
                    format!(
                        "{v} ({at}) is missing from broker {b}, which read {p}/{}..{}",
                        end.log_start, end.high_watermark
                    ),
                );
                break;
            }
        }
    }
    for (&v, positions) in polled_at {
        if final_at.contains_key(v) || lost.contains_key(v) {
            continue;
        }
        if let Some((&(p, o), c)) = positions.iter().next() {
            lost.insert(
                v,
                format!("{v} (polled at {p}/{o} by {c}) is in no final read"),
            );
        }
    }
    for (_, why) in lost {
        r.add(Violation::Lost, || why);
    }
}

fn check_unexpected(
    r: &mut Report,
    attempts: &HashMap<&str, Attempt>,
    final_at: &HashMap<&str, BTreeSet<Pos>>,
    polled_at: &HashMap<&str, BTreeMap<Pos, &str>>,
) {
    let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
    for (&v, positions) in final_at {
        if let Some(&pos) = positions.iter().next() {
            seen.insert(v, pos);
        }
    }
    for (&v, positions) in polled_at {
        if let Some((&pos, _)) = positions.iter().next() {
            seen.entry(v).or_insert(pos);
        }
    }
    for (v, (p, o)) in seen {
        match attempts.get(v) {
            None => r.add(Violation::Unexpected, || {
                format!("{v} at {p}/{o} was never sent")
            }),
            Some(a) if a.status == Status::Fail => r.add(Violation::Unexpected, || {
                format!(
                    "{v} at {p}/{o}: its send definitely failed ({})",
                    a.err.unwrap_or("no error recorded")
                )
            }),
            Some(_) => {}
        }
    }
}

fn fmt_positions<'a>(ps: impl IntoIterator<Item = &'a Pos>) -> String {
    ps.into_iter()
        .map(|(p, o)| format!("{p}/{o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_duplicates(r: &mut Report, final_at: &HashMap<&str, BTreeSet<Pos>>) {
    let dups: BTreeMap<&str, &BTreeSet<Pos>> = final_at
        .iter()
        .filter(|(_, ps)| ps.len() > 1)
        .map(|(&v, ps)| (v, ps))
        .collect();
    for (v, ps) in dups {
        r.add(Violation::Duplicate, || {
            format!("{v} at {}", fmt_positions(ps))
        });
    }
}

fn check_inconsistent(
    r: &mut Report,
    observed: &BTreeMap<Pos, BTreeMap<&str, Source>>,
    attempts: &HashMap<&str, Attempt>,
    final_at: &HashMap<&str, BTreeSet<Pos>>,
    polled_at: &HashMap<&str, BTreeMap<Pos, &str>>,
) {
    for (&(p, o), values) in observed {
        if values.len() > 1 {
            r.add(Violation::InconsistentOffset, || {
                let all: Vec<String> = values.iter().map(|(v, s)| format!("{v} ({s})")).collect();
                format!("{p}/{o} holds {}", all.join(" and "))
            });
        }
    }
    // Values whose ack or poll position is not where the final read has them.
    let mut moved: BTreeMap<&str, String> = BTreeMap::new();
    for (&v, read) in final_at {
        if let Some(a) = attempts.get(v) {
            if let Some(pos) = a.at.filter(|pos| !read.contains(pos)) {
                moved.insert(
                    v,
                    format!(
                        "{v} acked at {}/{} but read at {}",
                        pos.0,
                        pos.1,
                        fmt_positions(read)
                    ),
                );
                continue;
            }
        }
        if let Some(polls) = polled_at.get(v) {
            if let Some((pos, c)) = polls.iter().find(|(pos, _)| !read.contains(pos)) {
                moved.insert(
                    v,
                    format!(
                        "{v} polled at {}/{} by {c} but read at {}",
                        pos.0,
                        pos.1,
                        fmt_positions(read)
                    ),
                );
            }
        }
    }
    for (_, why) in moved {
        r.add(Violation::InconsistentOffset, || why);
    }
}

fn check_producer_order(
    r: &mut Report,
    attempts: &HashMap<&str, Attempt>,
    final_log: &BTreeMap<Pos, &str>,
) {
    let mut seen: HashSet<&str> = HashSet::new();
    // (partition, producer) -> (seq, offset, value) of the previous acknowledged value.
    let mut prev: HashMap<(u32, &str), (u64, u64, &str)> = HashMap::new();
    for (&(p, o), &v) in final_log {
        if !seen.insert(v) {
            continue; // a duplicate: the first occurrence decides the order
        }
        let Some(a) = attempts.get(v).filter(|a| a.status == Status::Ok) else {
            continue;
        };
        if let Some(&(seq, off, pv)) = prev.get(&(p, a.proc)) {
            if a.seq < seq {
                r.add(Violation::ProducerOrder, || {
                    format!(
                        "partition {p}: {v} (seq {}) at offset {o} after {pv} (seq {seq}) at offset {off}",
                        a.seq
                    )
                });
            }
        }
        prev.insert((p, a.proc), (a.seq, o, v));
    }
}

#[cfg(test)]
mod tests;
