//! `runnel-broker`: parses the configuration, sets up logging, starts the server and drains it on SIGTERM
//! or SIGINT, exiting 0 after a clean drain (a second signal during the drain exits 1 at once).
//! Configuration errors exit 2, start failures exit 1.
//! `runnel-broker dump ...` runs the offline record dump ([`runnel_broker::dump`]) instead: exit 0 after
//! printing every record, 1 on any error (one line on stderr), 2 on bad arguments.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use runnel_broker::config::{BrokerConfig, Cli, Command, DumpArgs, LogFormat};
use runnel_broker::dump::{dump, DumpError, DumpOptions};
use runnel_broker::Server;
use tracing_subscriber::EnvFilter;

/// The log filter when `RUST_LOG` is not set: our own events at info (one line per leadership change),
/// openraft's only from error (at info it logs every election step, at warn every failed heartbeat of every
/// partition to a down peer, several lines per second per partition).
const DEFAULT_LOG_FILTER: &str = "info,openraft=error";

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGTERM and SIGINT streams, installed before the server starts so an early signal still drains.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn run(config: BrokerConfig) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("runnel-broker: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            eprintln!("runnel-broker: {e}");
            return ExitCode::from(1);
        }
    };
    let name = signals.recv().await;
    tracing::info!(signal = name, "shutting down");
    tokio::select! {
        _ = server.shutdown() => ExitCode::SUCCESS,
        again = signals.recv() => {
            tracing::warn!(signal = again, "second signal during the drain; exiting at once");
            ExitCode::from(1)
        }
    }
}

/// `runnel-broker dump`: records to stdout, one JSON line each; a closed stdout (`| head`) ends it quietly.
fn run_dump(args: DumpArgs) -> ExitCode {
    let opts = DumpOptions {
        data_dir: args.data_dir,
        topic: args.topic,
        partition: args.partition,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match dump(&opts, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(DumpError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runnel-broker dump: {e}");
            ExitCode::from(1)
        }
    }
}

/// Keeps batch-sized buffers in glibc's heap. By default glibc maps each buffer above its (dynamic) mmap
/// threshold afresh and hands freed heap tops of more than twice that back to the kernel, so every 1 MiB
/// request buffer costs page faults and zeroing (the broker's CPU for 600 MB of RF=1 1 MiB batches:
/// 0.62-0.84 s, 0.55-0.70 s with these values set through `GLIBC_TUNABLES` on the same binary). Freed
/// memory is kept for reuse instead (the peak heap stays mapped).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_buffers_in_heap() {
    // 32 MiB is glibc's largest mmap threshold (twice the largest batch); trim only above 1 GiB free.
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_buffers_in_heap() {}

fn main() -> ExitCode {
    keep_large_buffers_in_heap();
    let mut cli = Cli::parse();
    if let Some(Command::Dump(args)) = cli.command.take() {
        return run_dump(args);
    }
    let print = cli.print_config;
    let config = match BrokerConfig::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel-broker: {e}");
            return ExitCode::from(2);
        }
    };
    if print {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runnel")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runnel-broker: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(run(config))
}
