//! The `runnel` command line, exactly as DESIGN.md §6 specifies it: global `--brokers` (env `RUNNEL_BROKERS`,
//! default `127.0.0.1:9292`) and `--output text|json`; `cluster`, `topic`, `produce`, `consume`, `group` and
//! `bench` and `dev`.
//! One module per command family; each returns an [`ExitCode`] or a [`CliError`] that becomes one line on
//! stderr and exit code 1. New families slot in as further [`Command`] variants.
//!
//! Invariants: stdout carries only results, one per line, flushed per line; nothing else goes there.

pub mod bench;
pub mod cluster;
pub mod consume;
pub mod dev;
pub mod group;
pub mod output;
pub mod produce;
pub mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::{ClientConfig, Cluster, DEFAULT_BROKERS};
use crate::error::ClientError;
use output::{Format, Out};

/// The Runnel command line.
#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: a replicated, partitioned log broker — the CLI"
)]
pub struct Cli {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...]; tried in turn, then leaders are followed.
    #[arg(long, global = true, env = "RUNNEL_BROKERS", default_value = DEFAULT_BROKERS)]
    pub brokers: String,
    /// Output format: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub output: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster state.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Create, list, describe, delete topics; add partitions.
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Produce one record per stdin line; prints one ack per record, in input order.
    Produce(produce::ProduceArgs),
    /// Consume records and print one per line.
    Consume(consume::ConsumeArgs),
    /// Consumer groups: list, describe (lag), reset offsets.
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Load generator: throughput and latency percentiles.
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// A local multi-node cluster on loopback, for trying things; runs until Ctrl-C.
    Dev(dev::DevArgs),
}

/// A failure that ends the command: printed as one line on stderr, exit code 1.
#[derive(Debug)]
pub struct CliError(pub String);

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        CliError(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError(format!("I/O error: {e}"))
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// Connects to the cluster named by `--brokers`.
pub async fn connect(brokers: &str) -> Result<Cluster, CliError> {
    let config = ClientConfig::new(brokers)?;
    Ok(Cluster::connect(config).await?)
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    let out = Out { format: cli.output };
    match cli.command {
        Command::Cluster(c) => cluster::run(&cli.brokers, out, c).await,
        Command::Topic(c) => topic::run(&cli.brokers, out, c).await,
        Command::Produce(a) => produce::run(&cli.brokers, out, a).await,
        Command::Consume(a) => consume::run(&cli.brokers, out, a).await,
        Command::Group(c) => group::run(&cli.brokers, out, c).await,
        Command::Bench(c) => bench::run(&cli.brokers, out, c).await,
        Command::Dev(a) => dev::run(out, a).await,
    }
}

/// The binary's entry point: parse, run on a tokio runtime, map errors to one stderr line.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // One line: clap's message up to the usage block, joined.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("{}", msg.join(" "));
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Do not wait for background tasks (a sender draining to a dead broker) at exit.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(CliError(m)) if m.contains("Broken pipe") => ExitCode::SUCCESS,
        Err(CliError(m)) => {
            eprintln!("error: {}", m.replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Parses `key=value`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("runnel").chain(args.iter().copied()))
    }

    #[test]
    fn the_contract_command_lines_parse() {
        let ok = [
            &["cluster", "info"][..],
            &["cluster", "health"],
            &[
                "--brokers",
                "a:1,b:2",
                "--output",
                "json",
                "topic",
                "create",
                "t",
                "--partitions",
                "3",
                "--replication-factor",
                "3",
                "--config",
                "retention.ms=1000",
                "--config",
                "x=y",
            ],
            &["topic", "list"],
            &["topic", "describe", "t"],
            &["topic", "delete", "t"],
            &["topic", "add-partitions", "t", "--count", "2"],
            &[
                "topic",
                "alter-config",
                "t",
                "--config",
                "retention.ms=1000",
                "--config",
                "segment.ms=",
            ],
            &["produce", "t", "--key", "k", "--acks", "all"],
            &[
                "produce",
                "t",
                "--key-separator",
                ":",
                "--partition",
                "1",
                "--acks",
                "none",
                "--value-encoding",
                "base64",
            ],
            &["produce", "t", "--acks", "leader"],
            &[
                "consume",
                "t",
                "--from-beginning",
                "--max-messages",
                "3",
                "--timeout-ms",
                "100",
            ],
            &["consume", "t", "--offset", "5", "--partition", "0"],
            &[
                "consume",
                "t",
                "--group",
                "g",
                "--no-commit",
                "--from-beginning",
            ],
            &[
                "consume",
                "t",
                "--group",
                "g",
                "--max-messages",
                "5",
                "--timeout-ms",
                "100",
                "--session-timeout-ms",
                "3000",
            ],
            &["group", "list"],
            &["group", "describe", "g"],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
            ],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-latest",
                "--execute",
            ],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-offset",
                "3",
            ],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-time",
                "2024-01-01T00:00:00Z",
            ],
            &[
                "bench",
                "produce",
                "--topic",
                "b",
                "--record-size",
                "1024",
                "--records",
                "10",
                "--producers",
                "2",
                "--acks",
                "all",
                "--batch-size-bytes",
                "1000",
                "--linger-ms",
                "1",
                "--rate",
                "100",
            ],
            &["bench", "consume", "--topic", "b", "--duration-s", "1"],
            &["bench", "e2e", "--topic", "b"],
            &["topic", "list", "--output", "json"],
            &["dev"],
            &["dev", "--nodes", "3"],
            &[
                "dev",
                "--nodes",
                "7",
                "--data-dir",
                "/tmp/x",
                "--base-port",
                "20000",
            ],
        ];
        for a in ok {
            parse(a).unwrap_or_else(|e| panic!("{a:?}: {e}"));
        }
        let bad = [
            &["consume", "t", "--from-beginning", "--offset", "1"][..],
            &["produce", "t", "--acks", "most"],
            &["topic", "create", "t", "--config", "novalue"],
            &["topic", "alter-config", "t"],
            &[
                "bench",
                "produce",
                "--topic",
                "b",
                "--records",
                "1",
                "--duration-s",
                "1",
            ],
            &["--output", "yaml", "topic", "list"],
            &["dev", "--nodes", "0"],
            &["dev", "--nodes", "8"],
            &["consume", "t", "--no-commit"],
            &["group", "reset-offsets", "g", "--topic", "t"],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-latest",
            ],
            &["group", "reset-offsets", "g", "--to-earliest"],
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-time",
                "soon",
            ],
        ];
        for a in bad {
            assert!(parse(a).is_err(), "{a:?} parsed");
        }
    }

    #[test]
    fn brokers_default_and_key_values() {
        std::env::remove_var("RUNNEL_BROKERS");
        assert_eq!(parse(&["topic", "list"]).unwrap().brokers, DEFAULT_BROKERS);
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("=x").is_err());
    }
}
