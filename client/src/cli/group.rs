//! `runnel group list | describe G | reset-offsets G`, and `runnel consume TOPIC --group G` (DESIGN §6).
//!
//! json shapes (one object per line):
//! - list: `{"group","state","members"}`
//! - describe: `{"group","topic","partition","committed_offset","log_end_offset","lag","member"}` per partition
//!   of every topic the group is assigned or has committed offsets for (`committed_offset`/`lag` null where
//!   nothing is committed, `member` null where no member owns the partition)
//! - reset-offsets: `{"group","topic","partition","current_offset","new_offset","executed"}` per partition
//!
//! Text output is an aligned table with a header line. `reset-offsets` without `--execute` is a dry run that
//! changes nothing; with it, the coordinator refuses while the group has live members (`GROUP_NOT_EMPTY`).
//!
//! `consume --group`: partitions without a committed offset start at the latest offset, or the earliest with
//! `--from-beginning`. The `--timeout-ms` clock starts once the member has partitions (or, if it gets none,
//! [`ASSIGNMENT_SETTLE`] after joining) and restarts at every record. On exit — after `--max-messages`, the
//! timeout, SIGINT or SIGTERM — it commits what it printed (unless `--no-commit`) and leaves the group.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::consume::{print_record, ConsumeArgs};
use super::output::Out;
use super::{connect, CliError, CliResult};
use crate::consumer::MAX_POLL_RECORDS_DEFAULT;
use crate::group::admin::parse_time;
use crate::group::{
    GroupAdmin, GroupConfig, GroupConsumer, OffsetReset, PartitionLag, ResetPlan, ResetTo,
    SESSION_TIMEOUT_DEFAULT,
};

/// A member that joined but got no partitions starts its `--timeout-ms` clock after this long (a
/// cooperative hand-over takes a few heartbeat intervals).
pub const ASSIGNMENT_SETTLE: Duration = Duration::from_secs(5);
/// Longest single wait of the consume loop before the timeout clock runs.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Longest single wait of the consume loop without `--timeout-ms`.
const POLL_SLICE_LONG: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Subcommand)]
pub enum GroupCmd {
    /// List consumer groups.
    List,
    /// Per partition: committed offset, log end offset, lag and owning member.
    Describe { group: String },
    /// Move a group's committed offsets on one topic (a dry run unless --execute).
    ResetOffsets(ResetArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_time"])
))]
pub struct ResetArgs {
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// To the log start of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the high watermark of each partition.
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (clamped into each partition's range).
    #[arg(long)]
    pub to_offset: Option<u64>,
    /// To the first record at or after this time: ms since the epoch or YYYY-MM-DDTHH:MM:SS[.fff]Z.
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<i64>,
    /// Apply the plan (refused while the group has live members).
    #[arg(long)]
    pub execute: bool,
}

pub async fn run(brokers: &str, out: Out, cmd: GroupCmd) -> CliResult {
    let admin = GroupAdmin::new(connect(brokers).await?);
    match cmd {
        GroupCmd::List => {
            let groups = admin.list_groups().await?;
            if out.json() {
                for g in &groups {
                    out.value(
                        &json!({"group": g.group_id, "state": g.state, "members": g.members}),
                    )?;
                }
            } else {
                let rows: Vec<Vec<String>> = groups
                    .iter()
                    .map(|g| vec![g.group_id.clone(), g.state.clone(), g.members.to_string()])
                    .collect();
                for l in table(&["GROUP", "STATE", "MEMBERS"], &rows) {
                    out.line(&l)?;
                }
            }
        }
        GroupCmd::Describe { group } => {
            let rows = admin.lag(&group).await?;
            if out.json() {
                for r in &rows {
                    out.value(&lag_json(r))?;
                }
            } else {
                for l in lag_text(&rows) {
                    out.line(&l)?;
                }
            }
        }
        GroupCmd::ResetOffsets(a) => {
            let to = match (a.to_earliest, a.to_latest, a.to_offset, a.to_time) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (_, _, Some(n), _) => ResetTo::Offset(n),
                (_, _, _, Some(t)) => ResetTo::Time(t),
                _ => {
                    return Err(CliError(
                        "choose one of --to-earliest, --to-latest, --to-offset, --to-time".into(),
                    ))
                }
            };
            let plan = admin.plan_reset(&a.group, &a.topic, to).await?;
            if a.execute {
                admin.execute_reset(&a.group, &plan).await?;
            }
            if out.json() {
                for r in &plan {
                    out.value(&reset_json(&a.group, r, a.execute))?;
                }
            } else {
                for l in reset_text(&a.group, &plan, a.execute) {
                    out.line(&l)?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An aligned table: every column but the last padded to its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, (c, w)) in cells.into_iter().zip(&widths).enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
            }
        }
        s
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn lag_json(r: &PartitionLag) -> Value {
    json!({
        "group": r.group,
        "topic": r.topic,
        "partition": r.partition,
        "committed_offset": r.committed_offset,
        "log_end_offset": r.log_end_offset,
        "lag": r.lag,
        "member": r.member,
    })
}

pub fn lag_text(rows: &[PartitionLag]) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.committed_offset),
                opt(r.log_end_offset),
                opt(r.lag),
                r.member.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "COMMITTED-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "MEMBER",
        ],
        &cells,
    )
}

pub fn reset_json(group: &str, r: &ResetPlan, executed: bool) -> Value {
    json!({
        "group": group,
        "topic": r.topic,
        "partition": r.partition,
        "current_offset": r.current_offset,
        "new_offset": r.new_offset,
        "executed": executed,
    })
}

pub fn reset_text(group: &str, plan: &[ResetPlan], executed: bool) -> Vec<String> {
    let cells: Vec<Vec<String>> = plan
        .iter()
        .map(|r| {
            vec![
                group.to_string(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.current_offset),
                r.new_offset.to_string(),
            ]
        })
        .collect();
    let mut v = table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "NEW-OFFSET",
        ],
        &cells,
    );
    v.push(if executed {
        "offsets reset".to_string()
    } else {
        "dry run: nothing changed (add --execute to apply)".to_string()
    });
    v
}

/// `runnel consume TOPIC --group G`.
pub async fn consume(brokers: &str, out: Out, args: ConsumeArgs, group: &str) -> CliResult {
    if args.offset.is_some() {
        return Err(CliError("--offset cannot be used with --group".into()));
    }
    if args.partition.is_some() {
        return Err(CliError(
            "--partition cannot be used with --group (the group assigns partitions)".into(),
        ));
    }
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let cluster = connect(brokers).await?;
    // Like the consumer without a group: an unknown topic is an error, not a silent wait.
    cluster.topic(&args.topic).await?;
    let mut config = GroupConfig::new(group);
    config.auto_commit = !args.no_commit;
    config.offset_reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    config.session_timeout = args
        .session_timeout_ms
        .map_or(SESSION_TIMEOUT_DEFAULT, Duration::from_millis);
    let mut gc = GroupConsumer::subscribe(cluster, &[args.topic.as_str()], config).await?;
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let started = Instant::now();
    // When the --timeout-ms clock (re)started; None until the member has its partitions.
    let mut clock: Option<Instant> = None;
    let mut joined_at: Option<Instant> = None;
    let mut printed: u64 = 0;
    let result: Result<(), CliError> = async {
        loop {
            let now = Instant::now();
            if joined_at.is_none() && !gc.member_id().is_empty() {
                joined_at = Some(now);
            }
            if clock.is_none()
                && (!gc.assignment().is_empty()
                    || joined_at.is_some_and(|j| now >= j + ASSIGNMENT_SETTLE))
            {
                clock = Some(now);
            }
            let wait = match (timeout, clock) {
                (Some(t), Some(c)) => {
                    if now >= c + t {
                        return Ok(());
                    }
                    (c + t) - now
                }
                (Some(_), None) => POLL_SLICE,
                (None, _) => POLL_SLICE_LONG,
            };
            if let Some(max) = args.max_messages {
                let left = (max - printed).min(MAX_POLL_RECORDS_DEFAULT as u64) as usize;
                gc.set_max_poll_records(left);
            }
            let records = tokio::select! {
                r = gc.poll(wait) => r?,
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
            };
            for r in &records {
                print_record(&out, args.value_encoding, r)?;
                printed += 1;
            }
            if args.max_messages.is_some_and(|m| printed >= m) {
                return Ok(());
            }
            if !records.is_empty() {
                clock = Some(Instant::now());
            }
        }
    }
    .await;
    tracing::debug!(printed, elapsed = ?started.elapsed(), "group consume done");
    let closed = gc.close().await;
    result?;
    closed?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_every_column_but_the_last() {
        let t = table(
            &["A", "LONG-HEADER", "C"],
            &[
                vec!["xyz".into(), "1".into(), "last".into()],
                vec!["x".into(), "22".into(), "-".into()],
            ],
        );
        assert_eq!(
            t,
            vec![
                "A    LONG-HEADER  C",
                "xyz  1            last",
                "x    22           -"
            ]
        );
    }

    #[test]
    fn json_shapes() {
        let r = PartitionLag {
            group: "g".into(),
            topic: "t".into(),
            partition: 2,
            committed_offset: None,
            log_end_offset: Some(7),
            lag: None,
            member: None,
        };
        assert_eq!(
            lag_json(&r),
            json!({"group":"g","topic":"t","partition":2,"committed_offset":null,"log_end_offset":7,
                   "lag":null,"member":null})
        );
        let p = ResetPlan {
            topic: "t".into(),
            partition: 0,
            current_offset: Some(5),
            new_offset: 0,
        };
        assert_eq!(
            reset_json("g", &p, false),
            json!({"group":"g","topic":"t","partition":0,"current_offset":5,"new_offset":0,
                   "executed":false})
        );
        let text = reset_text("g", &[p], false);
        assert_eq!(text.len(), 3);
        assert!(text[2].starts_with("dry run"));
        assert_eq!(
            lag_text(&[r])[1],
            "g      t      2          -                 7               -    -"
        );
    }
}
