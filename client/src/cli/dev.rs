//! `runnel dev [--nodes 3] [--data-dir DIR] [--base-port 19292]`: a local multi-node cluster on loopback, for
//! trying things (DESIGN.md §6).
//!
//! It starts `--nodes` `runnel-broker` processes (the executable next to this one, else on `PATH`, or
//! `--broker-bin`), node `i` with data dir `DIR/node-i`, log `DIR/node-i/broker.log`, client port
//! `base + i - 1` (a free port when that one is taken; `--base-port 0`: free ports throughout) and a free admin
//! port, all voters of one cluster (`--peers`). It prints the data dir, one line per node, the ready-to-paste
//! `--brokers` list, then `ready` once every node reports a controller in its metadata. It runs until Ctrl-C
//! (SIGINT) or SIGTERM, then sends SIGTERM to every broker, waits for them ([`STOP_TIMEOUT`], then SIGKILL)
//! and exits 0. Without `--data-dir` the data lives in a new temporary directory, removed at exit; a given
//! `--data-dir` is kept.
//!
//! Text output: `data dir: DIR (temporary, removed at exit | kept)`, `node ID ADDR pid PID data DIR log FILE`,
//! `--brokers LIST`, `ready`, `stopped`. JSON: `{"data_dir","temporary"}`, `{"node_id","addr","pid",
//! "data_dir","log"}` per node, `{"brokers"}`, `{"ready":true,"controller_id"}`, `{"stopped":true}`.
//!
//! Invariants:
//! - No broker outlives the command on any path that returns: every error after the first spawn stops the
//!   brokers started so far, and each child is killed on drop. Brokers run in their own process group, so a
//!   terminal's Ctrl-C reaches only this process, which then drains them with one SIGTERM each.
//! - Every wait is bounded ([`READY_TIMEOUT`], [`STOP_TIMEOUT`]) except the wait for the operator's signal;
//!   a broker that exits on its own during any wait ends the command with exit 1 after stopping the rest.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Instant;

use super::output::Out;
use super::{CliError, CliResult};
use crate::cluster::{ClientConfig, Cluster};

/// Most brokers `runnel dev` starts (the broker's `--peers` limit).
pub const DEV_NODES_MAX: u32 = 7;
/// Client port of node 1 unless `--base-port` says otherwise.
pub const DEFAULT_BASE_PORT: u16 = 19292;
/// The broker executable's file name.
pub const BROKER_BIN: &str = "runnel-broker";
/// How long the cluster may take to elect a controller on every node.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes, and between checks that the brokers still run.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Connect and request timeout of one readiness probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the brokers may take to drain after SIGTERM before they are killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Brokers to start, 1 to 7.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=DEV_NODES_MAX as i64))]
    pub nodes: u32,
    /// Parent of the node data dirs (DIR/node-1, ...), kept at exit. [default: a new temporary directory,
    /// removed at exit]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client port of node 1; node i gets base+i-1, or a free port when that one is taken (0: free ports).
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_BASE_PORT)]
    pub base_port: u16,
    /// The runnel-broker executable. [default: next to this executable, else on PATH]
    #[arg(long, env = "RUNNEL_BROKER_BIN", value_name = "PATH")]
    pub broker_bin: Option<PathBuf>,
}

/// Where the node data dirs live: a temporary directory (removed when dropped) or the operator's.
enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

/// One running broker.
struct Node {
    id: u32,
    addr: String,
    child: Child,
    log: PathBuf,
}

/// Finds `runnel-broker`: `explicit`, else next to the running executable, else on `PATH`.
pub fn find_broker(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(CliError(format!(
                "--broker-bin {}: no such file",
                p.display()
            )))
        };
    }
    let exe = std::env::current_exe().ok();
    let beside = exe
        .as_deref()
        .and_then(Path::parent)
        .map(|d| d.join(BROKER_BIN));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    if let Some(path) = std::env::var_os("PATH") {
        if let Some(p) = std::env::split_paths(&path)
            .map(|d| d.join(BROKER_BIN))
            .find(|p| p.is_file())
        {
            return Ok(p);
        }
    }
    Err(CliError(format!(
        "cannot find the {BROKER_BIN} executable{} or on PATH; build it (cargo build --bin {BROKER_BIN}) or \
         pass --broker-bin",
        beside.map_or_else(String::new, |p| format!(" at {}", p.display()))
    )))
}

/// Picks `n` distinct loopback client ports: `base + i` when free, else a free one.
fn pick_ports(base: u16, n: u32) -> Result<Vec<u16>, CliError> {
    // Held until every port is chosen, so a fallback never picks a port chosen before it.
    let mut held = Vec::with_capacity(n as usize);
    for i in 0..n {
        let wanted = if base == 0 {
            None
        } else {
            base.checked_add(i as u16)
        };
        let listener = match wanted.and_then(|p| TcpListener::bind(("127.0.0.1", p)).ok()) {
            Some(l) => l,
            None => TcpListener::bind(("127.0.0.1", 0))
                .map_err(|e| CliError(format!("cannot find a free loopback port: {e}")))?,
        };
        held.push(listener);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| CliError(format!("cannot read a bound port: {e}")))
        })
        .collect()
}

/// SIGINT (Ctrl-C) and SIGTERM, installed before any broker starts.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        let err = |e: std::io::Error| CliError(format!("cannot install signal handlers: {e}"));
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(err)?,
            int: signal(SignalKind::interrupt()).map_err(err)?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// What ended a wait.
enum Event {
    Signal,
    /// A broker exited on its own: its node id, status and log.
    Exited(u32, ExitStatus, PathBuf),
}

/// The first broker that has exited, if any.
fn exited(nodes: &mut [Node]) -> Option<Event> {
    nodes.iter_mut().find_map(|n| match n.child.try_wait() {
        Ok(Some(status)) => Some(Event::Exited(n.id, status, n.log.clone())),
        _ => None,
    })
}

/// The controller, once every node answers Metadata naming one; `None` while any does not.
async fn all_have_controller(nodes: &[Node]) -> Option<u32> {
    let mut controller = None;
    for n in nodes {
        let config = ClientConfig {
            connect_timeout: PROBE_TIMEOUT,
            request_timeout: PROBE_TIMEOUT,
            ..ClientConfig::new(&n.addr).ok()?
        };
        let cluster = Cluster::connect(config).await.ok()?;
        let m = cluster.refresh_metadata().await.ok()?;
        controller = Some(m.controller_id?);
    }
    controller
}

/// Waits until every node reports a controller (`Ok(Ok(controller))`); `Ok(Err(event))` when a signal or a
/// broker's exit comes first; `Err` past [`READY_TIMEOUT`].
async fn wait_ready(
    nodes: &mut [Node],
    signals: &mut Signals,
) -> Result<Result<u32, Event>, CliError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(e) = exited(nodes) {
            return Ok(Err(e));
        }
        let probe = async {
            match all_have_controller(nodes).await {
                Some(c) => Some(c),
                None => {
                    tokio::time::sleep(POLL_INTERVAL).await;
                    None
                }
            }
        };
        tokio::select! {
            _ = signals.recv() => return Ok(Err(Event::Signal)),
            r = tokio::time::timeout_at(deadline, probe) => match r {
                Ok(Some(c)) => return Ok(Ok(c)),
                Ok(None) => {}
                Err(_) => return Err(CliError(format!(
                    "the cluster did not elect a controller within {} s; see the broker logs",
                    READY_TIMEOUT.as_secs()
                ))),
            },
        }
    }
}

/// Waits for a signal, or for a broker to exit on its own. Unbounded in time by design: it is the
/// cluster's lifetime; each turn is bounded by [`POLL_INTERVAL`].
async fn wait_stop(nodes: &mut [Node], signals: &mut Signals) -> Event {
    loop {
        if let Some(e) = exited(nodes) {
            return e;
        }
        tokio::select! {
            _ = signals.recv() => return Event::Signal,
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// SIGTERM to every broker still running, then waits for all of them up to [`STOP_TIMEOUT`] and kills the
/// rest. Problems are reported on stderr; they do not change the exit code.
async fn stop(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        if let Ok(None) = n.child.try_wait() {
            let pid = n
                .child
                .id()
                .and_then(|p| rustix::process::Pid::from_raw(p as i32));
            if let Some(pid) = pid {
                if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
                    eprintln!("runnel dev: SIGTERM to node {}: {e}", n.id);
                }
            }
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for n in nodes.iter_mut() {
        match tokio::time::timeout_at(deadline, n.child.wait()).await {
            Ok(Ok(s)) if s.success() => {}
            Ok(Ok(s)) => eprintln!(
                "runnel dev: node {} exited with {s}; see {}",
                n.id,
                n.log.display()
            ),
            Ok(Err(e)) => eprintln!("runnel dev: waiting for node {}: {e}", n.id),
            Err(_) => {
                eprintln!(
                    "runnel dev: node {} did not stop within {} s; killing it",
                    n.id,
                    STOP_TIMEOUT.as_secs()
                );
                let _ = n.child.kill().await;
            }
        }
    }
}

/// Starts node `id` of `peers` on `port` with its data and log under `root`.
fn spawn(bin: &Path, root: &Path, id: u32, port: u16, peers: &str) -> Result<Node, CliError> {
    let dir = root.join(format!("node-{id}"));
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError(format!("cannot create {}: {e}", dir.display())))?;
    let log = dir.join("broker.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CliError(format!("cannot open {}: {e}", log.display())))?;
    let err_file = file
        .try_clone()
        .map_err(|e| CliError(format!("cannot open {}: {e}", log.display())))?;
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--listen")
        .arg(&addr)
        .arg("--advertise")
        .arg(&addr)
        .arg("--admin-listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--peers")
        .arg(peers)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err_file)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError(format!("cannot start {}: {e}", bin.display())))?;
    Ok(Node {
        id,
        addr,
        child,
        log,
    })
}

pub async fn run(out: Out, args: DevArgs) -> CliResult {
    let bin = find_broker(args.broker_bin.as_deref())?;
    let root = match args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| CliError(format!("cannot create {}: {e}", d.display())))?;
            Root::Kept(d)
        }
        None => Root::Temp(
            tempfile::Builder::new()
                .prefix("runnel-dev-")
                .tempdir()
                .map_err(|e| CliError(format!("cannot create a temporary directory: {e}")))?,
        ),
    };
    let temporary = matches!(root, Root::Temp(_));
    let mut signals = Signals::install()?;
    let ports = pick_ports(args.base_port, args.nodes)?;
    let peers = ports
        .iter()
        .zip(1..)
        .map(|(p, id)| format!("{id}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    out.either(
        || {
            format!(
                "data dir: {} ({})",
                root.path().display(),
                if temporary {
                    "temporary, removed at exit"
                } else {
                    "kept"
                }
            )
        },
        || json!({"data_dir": root.path(), "temporary": temporary}),
    )?;
    let mut nodes: Vec<Node> = Vec::with_capacity(ports.len());
    for (port, id) in ports.iter().zip(1..) {
        match spawn(&bin, root.path(), id, *port, &peers) {
            Ok(n) => nodes.push(n),
            Err(e) => {
                stop(&mut nodes).await;
                return Err(e);
            }
        }
    }
    let result = serve(out, &mut nodes, &mut signals, root.path()).await;
    stop(&mut nodes).await;
    if result.is_ok() {
        out.either(|| "stopped".to_string(), || json!({"stopped": true}))?;
    }
    drop(root);
    result
}

/// Prints the nodes, waits for readiness, then for the end; the caller stops the brokers.
async fn serve(out: Out, nodes: &mut [Node], signals: &mut Signals, root: &Path) -> CliResult {
    for n in nodes.iter() {
        let dir = root.join(format!("node-{}", n.id));
        let pid = n.child.id().unwrap_or(0);
        out.either(
            || {
                format!(
                    "node {} {} pid {pid} data {} log {}",
                    n.id,
                    n.addr,
                    dir.display(),
                    n.log.display()
                )
            },
            || json!({"node_id": n.id, "addr": n.addr, "pid": pid, "data_dir": dir, "log": n.log}),
        )?;
    }
    let list = nodes
        .iter()
        .map(|n| n.addr.as_str())
        .collect::<Vec<_>>()
        .join(",");
    out.either(|| format!("--brokers {list}"), || json!({"brokers": list}))?;
    let event = match wait_ready(nodes, signals).await? {
        Ok(controller) => {
            out.either(
                || "ready".to_string(),
                || json!({"ready": true, "controller_id": controller}),
            )?;
            wait_stop(nodes, signals).await
        }
        Err(e) => e,
    };
    match event {
        Event::Signal => Ok(ExitCode::SUCCESS),
        Event::Exited(id, status, log) => Err(CliError(format!(
            "node {id} exited with {status}; see {}",
            log.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_fall_back_when_taken() {
        let taken = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let base = taken.local_addr().unwrap().port();
        let ports = pick_ports(base, 3).unwrap();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], base, "a taken port is replaced");
        let mut d = ports.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 3, "{ports:?}");
        let free = pick_ports(0, 2).unwrap();
        assert!(free.iter().all(|&p| p != 0) && free[0] != free[1]);
    }

    #[test]
    fn a_missing_explicit_broker_is_a_clear_error() {
        let e = find_broker(Some(Path::new("/nonexistent/runnel-broker"))).unwrap_err();
        assert!(e.0.contains("/nonexistent/runnel-broker"), "{}", e.0);
    }
}
