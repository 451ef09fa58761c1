//! `runnel-verify`: records a history of a workload against a Runnel cluster, then reads every partition
//! through each broker and checks the history (see `runnel_cluster_tests::checker` for the rules).
//!
//! ```text
//! runnel-verify run --brokers LIST --topic T --duration-s S --history FILE [options]
//! runnel-verify check --brokers LIST --topic T --history FILE
//! runnel-verify check-only --history FILE
//! ```
//!
//! Exit codes: 0 — done, no violation; 1 — the checker found a violation; 2 — usage, connection or
//! history I/O error (including a broker of the list that could not be read).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use runnel_cluster_tests::checker::{check, Report};
use runnel_cluster_tests::history::{read_history, HistoryWriter};
use runnel_cluster_tests::verify::final_read::{self, ReadConfig};
use runnel_cluster_tests::verify::workload::{self, RunConfig};

/// Exit code when the checker finds a violation.
const EXIT_VIOLATION: u8 = 1;
/// Exit code for usage, connection and I/O errors.
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "runnel-verify",
    version,
    about = "Record a history against a Runnel cluster and check it"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the workload and record every operation in a new history file.
    Run(RunArgs),
    /// Read every partition through each broker, append the reads to the history, and check it.
    Check(CheckArgs),
    /// Check a history as it is, without a cluster.
    CheckOnly {
        #[arg(long)]
        history: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Partitions, if the topic has to be created.
    #[arg(long, default_value_t = 3)]
    partitions: u32,
    /// Replication factor, if the topic has to be created.
    #[arg(long, default_value_t = 1)]
    replication_factor: u16,
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// How long the producers send.
    #[arg(long)]
    duration_s: u64,
    /// Records per second per producer (0: as fast as acknowledgements come).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Cap on records sent over all producers.
    #[arg(long, default_value_t = 1_000_000)]
    max_records: u64,
    /// The history file to create (must not exist yet, or be empty).
    #[arg(long)]
    history: PathBuf,
    #[arg(long, default_value = "runnel-verify")]
    group: String,
    /// Members of the consumer group (0: none; the reader by assignment always runs).
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// A send or commit unanswered after this many ms is recorded as indeterminate.
    #[arg(long, default_value_t = 10_000)]
    op_timeout_ms: u64,
    /// The client's per-request timeout in ms.
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// After the producers stop, consumers poll at most this long.
    #[arg(long, default_value_t = 15)]
    drain_s: u64,
    /// Batches of one partition each producer keeps in flight (1..=5).
    #[arg(long, default_value_t = runnel_client::producer::MAX_IN_FLIGHT_PER_PARTITION_DEFAULT)]
    batches_in_flight: usize,
    /// Let the producer re-send a batch after an ambiguous failure (may duplicate without idempotence).
    #[arg(long)]
    retry_ambiguous: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Every broker to read through, comma-separated host:port.
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    #[arg(long)]
    history: PathBuf,
    /// Longest wait for the brokers' high watermarks to agree before reading.
    #[arg(long, default_value_t = 30)]
    converge_timeout_s: u64,
    /// The client's per-request timeout in ms.
    #[arg(long, default_value_t = 5_000)]
    request_timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runnel-verify: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match cli.cmd {
        Cmd::Run(a) => rt.block_on(run(a)),
        Cmd::Check(a) => rt.block_on(check_cluster(a)),
        Cmd::CheckOnly { history } => check_file(&history, true),
    };
    // Client tasks may still hold connections: do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}

async fn run(a: RunArgs) -> u8 {
    let cfg = RunConfig {
        brokers: a.brokers,
        topic: a.topic,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        producers: a.producers,
        duration: Duration::from_secs(a.duration_s),
        rate: a.rate,
        max_records: a.max_records,
        group: a.group,
        consumers: a.consumers,
        op_timeout: Duration::from_millis(a.op_timeout_ms),
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        drain: Duration::from_secs(a.drain_s),
        retry_ambiguous: a.retry_ambiguous,
        batches_in_flight: a.batches_in_flight,
    };
    if let Err(e) = cfg.validate() {
        eprintln!("runnel-verify: {e}");
        return EXIT_ERROR;
    }
    if std::fs::metadata(&a.history).is_ok_and(|m| m.len() > 0) {
        eprintln!(
            "runnel-verify: {} already exists: a run records a new history",
            a.history.display()
        );
        return EXIT_ERROR;
    }
    let history = match HistoryWriter::append_to(&a.history) {
        Ok(h) => Arc::new(h),
        Err(e) => {
            eprintln!("runnel-verify: {e}");
            return EXIT_ERROR;
        }
    };
    match workload::run(&cfg, history).await {
        Ok(sum) => {
            println!("run: {sum}");
            println!("history: {}", a.history.display());
            0
        }
        Err(e) => {
            eprintln!("runnel-verify: run: {e:#}");
            EXIT_ERROR
        }
    }
}

async fn check_cluster(a: CheckArgs) -> u8 {
    let brokers: Vec<String> = a
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if brokers.is_empty() {
        eprintln!("runnel-verify: --brokers is empty");
        return EXIT_ERROR;
    }
    if !a.history.exists() {
        eprintln!("runnel-verify: {} does not exist", a.history.display());
        return EXIT_ERROR;
    }
    let cfg = ReadConfig {
        brokers,
        topic: a.topic,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        converge_timeout: Duration::from_secs(a.converge_timeout_s),
    };
    let (converged, probe) = final_read::converge(&cfg, cfg.converge_timeout).await;
    if !converged {
        let lines: Vec<String> = probe
            .iter()
            .map(|(p, l)| {
                let hs: Vec<String> = l.iter().map(|(b, h)| format!("{b}={h}")).collect();
                format!("partition {p}: {}", hs.join(" "))
            })
            .collect();
        println!(
            "warning: high watermarks did not converge within {:?}; reading anyway ({})",
            cfg.converge_timeout,
            lines.join("; ")
        );
    }
    let history = match HistoryWriter::append_to(&a.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("runnel-verify: {e}");
            return EXIT_ERROR;
        }
    };
    let reads = final_read::read_all(&cfg, &history).await;
    if let Err(e) = history.finish() {
        eprintln!("runnel-verify: {e}");
        return EXIT_ERROR;
    }
    let mut read_errors = false;
    for r in &reads {
        println!(
            "final read via {}: {} partitions, {} records, {} not served (not hosted there)",
            r.broker, r.partitions_read, r.records, r.skipped
        );
        for e in &r.errors {
            println!("  error: {e}");
            read_errors = true;
        }
    }
    // Every partition must have been read through at least one broker (each replica serves its own copy).
    let every: BTreeSet<u32> = reads
        .iter()
        .flat_map(|r| r.partitions.iter().copied())
        .collect();
    let read: BTreeSet<u32> = reads.iter().flat_map(|r| r.read.iter().copied()).collect();
    for p in every.difference(&read) {
        println!("  error: partition {p} was read through no broker");
        read_errors = true;
    }
    println!();
    match check_file(&a.history, false) {
        0 if read_errors => {
            println!("a broker could not be read: the check is incomplete");
            EXIT_ERROR
        }
        code => code,
    }
}

/// Loads and checks a history; prints the report. Returns the exit code.
fn check_file(path: &Path, standalone: bool) -> u8 {
    let h = match read_history(path) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("runnel-verify: {e}");
            return EXIT_ERROR;
        }
    };
    if h.torn_tail {
        println!(
            "note: the last line of {} was cut short and is ignored",
            path.display()
        );
    }
    let report: Report = check(&h.events);
    if standalone {
        println!("checking {}", path.display());
    }
    print!("{report}");
    if report.ok() {
        0
    } else {
        EXIT_VIOLATION
    }
}
