//! `runnel bench produce | consume | e2e` (DESIGN §6, issue 6): live progress on stderr, the summary on
//! stdout (text, or with `--output json` exactly one object with `records, seconds, records_per_s, mb_per_s,
//! p50_ms, p90_ms, p99_ms, p999_ms, max_ms` plus the settings). Exit 1 if any record failed.

use std::process::ExitCode;
use std::time::Duration;

use super::output::Out;
use super::{CliError, CliResult};
use crate::bench::{self, BenchConfig, BenchMode, IN_FLIGHT_DEFAULT};
use crate::cluster::ClientConfig;
use crate::producer::{
    Acks, BATCH_SIZE_BYTES_DEFAULT, LINGER_MS_DEFAULT, MAX_IN_FLIGHT_PER_PARTITION_DEFAULT,
};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Produce throughput and send-to-ack latency.
    Produce(BenchArgs),
    /// Consume throughput from the beginning of the topic.
    Consume(BenchArgs),
    /// Produce-to-consume latency.
    E2e(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[arg(long)]
    pub topic: String,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records to send (default 100000 when no --duration-s).
    #[arg(long, conflicts_with = "duration_s")]
    pub records: Option<u64>,
    /// Run for this many seconds instead of a record count.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Partitions, when the topic has to be created.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Replication factor, when the topic has to be created.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u16,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    #[arg(long, default_value_t = BATCH_SIZE_BYTES_DEFAULT)]
    pub batch_size_bytes: usize,
    #[arg(long, default_value_t = LINGER_MS_DEFAULT)]
    pub linger_ms: u64,
    /// Total records per second over all producers (fixed-load latency runs).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Unacknowledged records per producer (1 = no pipelining).
    #[arg(long, default_value_t = IN_FLIGHT_DEFAULT)]
    pub in_flight: usize,
    /// Batches of one partition in flight per producer (1 = one request at a time per partition).
    #[arg(long, default_value_t = MAX_IN_FLIGHT_PER_PARTITION_DEFAULT)]
    pub batches_in_flight: usize,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn run(brokers: &str, out: Out, cmd: BenchCmd) -> CliResult {
    let (mode, a) = match cmd {
        BenchCmd::Produce(a) => (BenchMode::Produce, a),
        BenchCmd::Consume(a) => (BenchMode::Consume, a),
        BenchCmd::E2e(a) => (BenchMode::E2e, a),
    };
    let duration = match a.duration_s {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => return Err(CliError("--duration-s must be positive".into())),
        None => None,
    };
    let cfg = BenchConfig {
        mode,
        topic: a.topic,
        partitions: a.partitions,
        replication_factor: a.replication_factor,
        record_size: a.record_size,
        records: a.records,
        duration,
        producers: a.producers,
        acks: a.acks,
        batch_size_bytes: a.batch_size_bytes,
        linger: Duration::from_millis(a.linger_ms),
        rate: a.rate,
        in_flight: a.in_flight,
        batches_in_flight: a.batches_in_flight,
        progress: !a.quiet,
    };
    let s = bench::run(ClientConfig::new(brokers)?, cfg).await?;
    if out.json() {
        out.value(&s.to_json())?;
    } else {
        for l in s.to_text() {
            out.line(&l)?;
        }
    }
    Ok(if s.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
