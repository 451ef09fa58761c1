//! The broker's configuration (DESIGN.md §7): command-line flags, `RUNNEL_*` environment variables, an
//! optional TOML file (`--config`) and built-in defaults, merged in that order of precedence
//! (flag > env > file > default) into one validated [`BrokerConfig`].
//!
//! Clap resolves flag > env itself; every clap field is an `Option` without a clap default, so "not given" is
//! visible and the file and then the default fill the gap. The file uses the flag names as keys
//! (`data-dir = "..."`); unknown keys are rejected. Invariant: a `BrokerConfig` returned by
//! [`BrokerConfig::load`] or [`BrokerConfig::validate`] has passed every check below, and each rejection names
//! the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use runnel_protocol::limits::{
    BATCH_SIZE_BYTES_MAX, INFLIGHT_REQUESTS_PER_CONNECTION_MAX, PARTITIONS_PER_TOPIC_MAX,
};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATA_DIR: &str = "./runnel-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9292";
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9644";
pub const DEFAULT_NODE_ID: u32 = 1;
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upper bound for `--max-connections` (each connection costs a task, buffers and a file descriptor).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
pub const DEFAULT_MAX_INFLIGHT_PER_CONNECTION: usize = INFLIGHT_REQUESTS_PER_CONNECTION_MAX;
pub const DEFAULT_PARTITIONS: u32 = 1;
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// Smallest segment size accepted: the batch limit ([`BATCH_SIZE_BYTES_MAX`]), so that the largest record
/// batch a produce request may carry fits one segment. (The storage engine itself accepts smaller segments;
/// its tests use them.)
pub const SEGMENT_BYTES_MIN: u64 = BATCH_SIZE_BYTES_MAX as u64;
/// Largest segment size: the storage engine's limit (index entries hold file positions as `u32`).
pub const SEGMENT_BYTES_MAX: u64 = crate::storage::log::SEGMENT_BYTES_MAX;
/// Raft heartbeat interval of replicated partitions (and of the metadata group), in ms.
pub const DEFAULT_RAFT_HEARTBEAT_MS: u64 = 150;
/// Bounds of `--raft-heartbeat-ms`.
pub const RAFT_HEARTBEAT_MS_MIN: u64 = 20;
pub const RAFT_HEARTBEAT_MS_MAX: u64 = 1_000;
/// How long a replicated partition stays idle before its group quiesces (stops heartbeats and timers).
pub const DEFAULT_RAFT_QUIESCE_MS: u64 = 2_000;
/// `--raft-quiesce-ms` bounds (0 = never quiesce).
pub const RAFT_QUIESCE_MS_MIN: u64 = 100;
pub const RAFT_QUIESCE_MS_MAX: u64 = 3_600_000;
pub const DEFAULT_SEGMENT_MS: u64 = 7 * 24 * 3600 * 1000;
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// `-1`: unlimited.
pub const DEFAULT_RETENTION_BYTES: i64 = -1;
/// Most voters a `--peers` list may name.
pub const PEERS_MAX: usize = 7;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// One voter of the cluster: `ID@HOST:PORT` (its advertised client address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub node_id: u32,
    pub addr: String,
}

/// Command-line flags. Every value is optional here; see the module doc for how gaps are filled.
#[derive(Parser, Debug, Default)]
#[command(
    name = "runnel-broker",
    version,
    about = "The Runnel broker: a replicated, partitioned log.",
    long_about = "The Runnel broker: a replicated, partitioned log.\n\nWith no arguments it starts a \
                  single-node cluster on 127.0.0.1:9292 with data in ./runnel-data. Every setting can come \
                  from a flag, a RUNNEL_* environment variable or a TOML file (--config) whose keys are the \
                  flag names (e.g. `data-dir = \"/var/lib/runnel\"`); precedence is flag > env > file > default.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A tool instead of the broker (none: run the broker).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Directory for partition data and topic metadata; created if missing. [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Client listener, IP:PORT; port 0 picks a free port. [default: 127.0.0.1:9292]
    #[arg(long, env = "RUNNEL_LISTEN", value_name = "IP:PORT")]
    pub listen: Option<String>,

    /// Address clients are told to connect to, HOST:PORT. [default: the bound --listen address]
    #[arg(long, env = "RUNNEL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Admin HTTP listener (/metrics, /health/live, /health/ready, /v1/cluster, /v1/partitions), IP:PORT;
    /// port 0 picks a free port and logs it. [default: 127.0.0.1:9644]
    #[arg(long, env = "RUNNEL_ADMIN_LISTEN", value_name = "IP:PORT")]
    pub admin_listen: Option<String>,

    /// This broker's node id, 1 or more. [default: 1]
    #[arg(long, env = "RUNNEL_NODE_ID", value_name = "N")]
    pub node_id: Option<u32>,

    /// Every voter of the cluster including this node, as ID@HOST:PORT,... by advertised address.
    /// [default: this node alone]
    #[arg(long, env = "RUNNEL_PEERS", value_name = "ID@HOST:PORT,...")]
    pub peers: Option<String>,

    /// TOML file with settings (keys are the flag names without dashes in front). [default: none]
    #[arg(long, env = "RUNNEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr, text or json; levels come from RUST_LOG (unset: "info,openraft=error").
    /// [default: text]
    #[arg(long, env = "RUNNEL_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Most client connections open at once; more are accepted and closed at once. [default: 10000]
    #[arg(long, env = "RUNNEL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most requests one connection may have in flight; the broker stops reading from a connection at
    /// this many, 1 to 256. [default: 256]
    #[arg(long, env = "RUNNEL_MAX_INFLIGHT_PER_CONNECTION", value_name = "N")]
    pub max_inflight_per_connection: Option<usize>,

    /// Partitions of a new topic when the request leaves it to the broker, 1 to 10000. [default: 1]
    #[arg(long, env = "RUNNEL_DEFAULT_PARTITIONS", value_name = "N")]
    pub default_partitions: Option<u32>,

    /// Segment size of topics without a segment.bytes override, in bytes, from the batch limit 16777216
    /// (16 MiB) to 1073741824 (1 GiB). [default: 134217728 (128 MiB)]
    #[arg(long, env = "RUNNEL_SEGMENT_BYTES", value_name = "BYTES")]
    pub segment_bytes: Option<u64>,

    /// Raft heartbeat interval of replicated partitions, in ms, 20 to 1000; elections start after 4 to 8
    /// silent intervals. Longer makes many idle partitions cheaper and failover slower. [default: 150]
    #[arg(long, env = "RUNNEL_RAFT_HEARTBEAT_MS", value_name = "MS")]
    pub raft_heartbeat_ms: Option<u64>,

    /// A replicated partition that has taken no write for this long, with every replica caught up,
    /// quiesces: no heartbeats, no timers, until the next write or until its leader's broker goes silent.
    /// 0 = never (heartbeat forever). 100 to 3600000 otherwise. [default: 2000]
    #[arg(long, env = "RUNNEL_RAFT_QUIESCE_MS", value_name = "MS")]
    pub raft_quiesce_ms: Option<u64>,

    /// Time-based retention of topics without a retention.ms override, in milliseconds; -1 = unlimited.
    /// [default: 604800000 (7 days)]
    #[arg(
        long,
        env = "RUNNEL_RETENTION_MS",
        value_name = "MS",
        allow_negative_numbers = true
    )]
    pub retention_ms: Option<i64>,

    /// Size-based retention per partition of topics without a retention.bytes override, in bytes; -1 =
    /// unlimited; at least --segment-bytes (retention deletes whole segments). [default: -1]
    #[arg(
        long,
        env = "RUNNEL_RETENTION_BYTES",
        value_name = "BYTES",
        allow_negative_numbers = true
    )]
    pub retention_bytes: Option<i64>,

    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Offline tools, run instead of the broker.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Print every record of a STOPPED node's partitions as JSON lines (read-only; refused while a broker
    /// holds the data dir). Keys/values: text when UTF-8, else base64 under key_b64/value_b64.
    Dump(DumpArgs),
}

/// `runnel-broker dump` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct DumpArgs {
    /// The stopped node's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Only this topic.
    #[arg(long, value_name = "T")]
    pub topic: Option<String>,
    /// Only this partition (of every topic, or of --topic).
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
}

/// The `--config` file: the same keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    advertise: Option<String>,
    admin_listen: Option<String>,
    node_id: Option<u32>,
    peers: Option<String>,
    log_format: Option<LogFormat>,
    max_connections: Option<usize>,
    max_inflight_per_connection: Option<usize>,
    default_partitions: Option<u32>,
    segment_bytes: Option<u64>,
    raft_heartbeat_ms: Option<u64>,
    raft_quiesce_ms: Option<u64>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
}

/// Why the configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read config file {path}: {error}")]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {error}")]
    ParseFile { path: PathBuf, error: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The effective, validated broker configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: advertise the bound listen address.
    pub advertise: Option<String>,
    pub admin_listen: SocketAddr,
    pub node_id: u32,
    /// Empty: this node alone.
    pub peers: Vec<Peer>,
    pub log_format: LogFormat,
    pub max_connections: usize,
    pub max_inflight_per_connection: usize,
    pub default_partitions: u32,
    pub segment_bytes: u64,
    pub raft_heartbeat_ms: u64,
    /// 0: never quiesce.
    pub raft_quiesce_ms: u64,
    /// `-1`: unlimited.
    pub retention_ms: i64,
    /// `-1`: unlimited.
    pub retention_bytes: i64,
}

impl Default for BrokerConfig {
    fn default() -> BrokerConfig {
        BrokerConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], 9292)),
            advertise: None,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9644)),
            node_id: DEFAULT_NODE_ID,
            peers: Vec::new(),
            log_format: LogFormat::Text,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight_per_connection: DEFAULT_MAX_INFLIGHT_PER_CONNECTION,
            default_partitions: DEFAULT_PARTITIONS,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            raft_heartbeat_ms: DEFAULT_RAFT_HEARTBEAT_MS,
            raft_quiesce_ms: DEFAULT_RAFT_QUIESCE_MS,
            retention_ms: DEFAULT_RETENTION_MS,
            retention_bytes: DEFAULT_RETENTION_BYTES,
        }
    }
}

/// What `--print-config` prints (and `--config` reads back).
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct PrintedConfig<'a> {
    data_dir: &'a Path,
    listen: String,
    advertise: String,
    admin_listen: String,
    node_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<String>,
    log_format: LogFormat,
    max_connections: usize,
    max_inflight_per_connection: usize,
    default_partitions: u32,
    segment_bytes: u64,
    raft_heartbeat_ms: u64,
    raft_quiesce_ms: u64,
    retention_ms: i64,
    retention_bytes: i64,
}

fn parse_socket_addr(key: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not an IP:PORT address (e.g. 127.0.0.1:9292)"),
        )
    })
}

/// Checks `HOST:PORT` (IPv6 hosts in brackets) with a non-zero port.
fn check_host_port(key: &'static str, v: &str) -> Result<(), ConfigError> {
    let bad = || invalid(key, format!("{v:?} is not a HOST:PORT address"));
    let (host, port) = v.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(())
}

/// Parses `ID@HOST:PORT,...`.
pub fn parse_peers(v: &str) -> Result<Vec<Peer>, ConfigError> {
    let mut peers: Vec<Peer> = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| invalid("peers", format!("{item:?} is not ID@HOST:PORT")))?;
        let node_id: u32 =
            id.parse().ok().filter(|&n| n >= 1).ok_or_else(|| {
                invalid("peers", format!("{id:?} in {item:?} is not a node id ≥ 1"))
            })?;
        check_host_port("peers", addr)?;
        if peers.iter().any(|p| p.node_id == node_id) {
            return Err(invalid("peers", format!("node id {node_id} appears twice")));
        }
        peers.push(Peer {
            node_id,
            addr: addr.to_string(),
        });
    }
    if peers.len() > PEERS_MAX {
        return Err(invalid(
            "peers",
            format!("{} voters named; at most {PEERS_MAX}", peers.len()),
        ));
    }
    Ok(peers)
}

fn format_peers(peers: &[Peer]) -> String {
    peers
        .iter()
        .map(|p| format!("{}@{}", p.node_id, p.addr))
        .collect::<Vec<_>>()
        .join(",")
}

impl BrokerConfig {
    /// Parses the process's arguments and environment (and the `--config` file they name).
    /// Returns the configuration and whether `--print-config` was given.
    pub fn load() -> Result<(BrokerConfig, bool), ConfigError> {
        let cli = Cli::parse();
        let print = cli.print_config;
        Ok((BrokerConfig::from_cli(cli)?, print))
    }

    /// Merges parsed flags/env with the file they name (if any) and the defaults, then validates.
    pub fn from_cli(cli: Cli) -> Result<BrokerConfig, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let d = BrokerConfig::default();
        let listen = match cli.listen.or(file.listen) {
            Some(v) => parse_socket_addr("listen", &v)?,
            None => d.listen,
        };
        let admin_listen = match cli.admin_listen.or(file.admin_listen) {
            Some(v) => parse_socket_addr("admin-listen", &v)?,
            None => d.admin_listen,
        };
        let peers = match cli.peers.or(file.peers) {
            Some(v) => parse_peers(&v)?,
            None => Vec::new(),
        };
        let c = BrokerConfig {
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
            listen,
            advertise: cli.advertise.or(file.advertise),
            admin_listen,
            node_id: cli.node_id.or(file.node_id).unwrap_or(d.node_id),
            peers,
            log_format: cli.log_format.or(file.log_format).unwrap_or(d.log_format),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_inflight_per_connection: cli
                .max_inflight_per_connection
                .or(file.max_inflight_per_connection)
                .unwrap_or(d.max_inflight_per_connection),
            default_partitions: cli
                .default_partitions
                .or(file.default_partitions)
                .unwrap_or(d.default_partitions),
            segment_bytes: cli
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(d.segment_bytes),
            raft_heartbeat_ms: cli
                .raft_heartbeat_ms
                .or(file.raft_heartbeat_ms)
                .unwrap_or(d.raft_heartbeat_ms),
            raft_quiesce_ms: cli
                .raft_quiesce_ms
                .or(file.raft_quiesce_ms)
                .unwrap_or(d.raft_quiesce_ms),
            retention_ms: cli
                .retention_ms
                .or(file.retention_ms)
                .unwrap_or(d.retention_ms),
            retention_bytes: cli
                .retention_bytes
                .or(file.retention_bytes)
                .unwrap_or(d.retention_bytes),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks every value and combination; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data-dir", "must not be empty"));
        }
        if let Some(a) = &self.advertise {
            check_host_port("advertise", a)?;
        }
        if self.admin_listen.port() != 0 && self.admin_listen == self.listen {
            return Err(invalid(
                "admin-listen",
                format!(
                    "{} is also the client listener (--listen)",
                    self.admin_listen
                ),
            ));
        }
        if self.node_id == 0 {
            return Err(invalid("node-id", "must be 1 or more"));
        }
        if !self.peers.is_empty() && !self.peers.iter().any(|p| p.node_id == self.node_id) {
            return Err(invalid(
                "peers",
                format!(
                    "must include this node (node-id {}); got {}",
                    self.node_id,
                    format_peers(&self.peers)
                ),
            ));
        }
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(invalid(
                "max-connections",
                format!(
                    "{} is outside 1..={MAX_CONNECTIONS_LIMIT}",
                    self.max_connections
                ),
            ));
        }
        if !(1..=INFLIGHT_REQUESTS_PER_CONNECTION_MAX).contains(&self.max_inflight_per_connection) {
            return Err(invalid(
                "max-inflight-per-connection",
                format!(
                    "{} is outside 1..={INFLIGHT_REQUESTS_PER_CONNECTION_MAX}",
                    self.max_inflight_per_connection
                ),
            ));
        }
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&self.default_partitions) {
            return Err(invalid(
                "default-partitions",
                format!(
                    "{} is outside 1..={PARTITIONS_PER_TOPIC_MAX}",
                    self.default_partitions
                ),
            ));
        }
        check_segment_bytes("segment-bytes", self.segment_bytes)?;
        if !(RAFT_HEARTBEAT_MS_MIN..=RAFT_HEARTBEAT_MS_MAX).contains(&self.raft_heartbeat_ms) {
            return Err(invalid(
                "raft-heartbeat-ms",
                format!(
                    "{} is outside {RAFT_HEARTBEAT_MS_MIN}..={RAFT_HEARTBEAT_MS_MAX}",
                    self.raft_heartbeat_ms
                ),
            ));
        }
        if self.raft_quiesce_ms != 0
            && !(RAFT_QUIESCE_MS_MIN..=RAFT_QUIESCE_MS_MAX).contains(&self.raft_quiesce_ms)
        {
            return Err(invalid(
                "raft-quiesce-ms",
                format!(
                    "{} is neither 0 (never) nor within {RAFT_QUIESCE_MS_MIN}..={RAFT_QUIESCE_MS_MAX}",
                    self.raft_quiesce_ms
                ),
            ));
        }
        check_retention("retention-ms", self.retention_ms)?;
        check_retention("retention-bytes", self.retention_bytes)?;
        check_retention_vs_segment("retention-bytes", self.retention_bytes, self.segment_bytes)?;
        Ok(())
    }

    /// True when `--peers` names voters other than this node.
    pub fn is_multi_node(&self) -> bool {
        self.peers.iter().any(|p| p.node_id != self.node_id)
    }

    /// The effective configuration as TOML, readable back with `--config`.
    pub fn to_toml(&self) -> String {
        let printed = PrintedConfig {
            data_dir: &self.data_dir,
            listen: self.listen.to_string(),
            advertise: self
                .advertise
                .clone()
                .unwrap_or_else(|| self.listen.to_string()),
            admin_listen: self.admin_listen.to_string(),
            node_id: self.node_id,
            peers: (!self.peers.is_empty()).then(|| format_peers(&self.peers)),
            log_format: self.log_format,
            max_connections: self.max_connections,
            max_inflight_per_connection: self.max_inflight_per_connection,
            default_partitions: self.default_partitions,
            segment_bytes: self.segment_bytes,
            raft_heartbeat_ms: self.raft_heartbeat_ms,
            raft_quiesce_ms: self.raft_quiesce_ms,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        };
        // Serializing plain strings and integers cannot fail; fall back to a comment rather than panic.
        toml::to_string(&printed).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// `segment.bytes` / `--segment-bytes` bounds.
pub fn check_segment_bytes(key: &'static str, v: u64) -> Result<(), ConfigError> {
    if v < SEGMENT_BYTES_MIN {
        return Err(invalid(
            key,
            format!(
                "{v} bytes is below the batch limit BATCH_SIZE_BYTES_MAX ({SEGMENT_BYTES_MIN} bytes): a \
                 segment must hold the largest record batch"
            ),
        ));
    }
    if v > SEGMENT_BYTES_MAX {
        return Err(invalid(
            key,
            format!("{v} bytes is above the largest segment size, {SEGMENT_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Retention values: `-1` (unlimited) or positive.
pub fn check_retention(key: &'static str, v: i64) -> Result<(), ConfigError> {
    if v == -1 || v > 0 {
        Ok(())
    } else {
        Err(invalid(key, format!("{v} must be -1 (unlimited) or > 0")))
    }
}

/// Size retention below one segment would delete each segment as soon as it rolls.
pub fn check_retention_vs_segment(
    key: &'static str,
    retention_bytes: i64,
    segment_bytes: u64,
) -> Result<(), ConfigError> {
    if retention_bytes > 0 && (retention_bytes as u64) < segment_bytes {
        return Err(invalid(
            key,
            format!(
                "{retention_bytes} is smaller than the segment size {segment_bytes}; retention works \
                 in whole segments"
            ),
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::ReadFile {
        path: path.to_path_buf(),
        error,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<BrokerConfig, ConfigError> {
        let mut v = vec!["runnel-broker"];
        v.extend_from_slice(args);
        BrokerConfig::from_cli(Cli::try_parse_from(v).unwrap())
    }

    fn err_key(r: Result<BrokerConfig, ConfigError>) -> &'static str {
        match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_gives_the_documented_defaults() {
        // The unit tests never set RUNNEL_* variables; the env layer is tested by a subprocess test.
        let c = parse(&[]).unwrap();
        assert_eq!(c, BrokerConfig::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(!c.is_multi_node());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:7000\"\nnode-id = 4\nmax-connections = 55\nretention-ms = -1\n",
        )
        .unwrap();
        let fs = f.to_str().unwrap();
        let c = parse(&["--config", fs, "--listen", "127.0.0.1:7001"]).unwrap();
        assert_eq!(c.listen.port(), 7001, "flag beats file");
        assert_eq!(c.node_id, 4, "file beats default");
        assert_eq!(c.max_connections, 55);
        assert_eq!(c.retention_ms, -1);
        assert_eq!(
            c.default_partitions, DEFAULT_PARTITIONS,
            "default fills the rest"
        );
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(&[
            "--listen",
            "127.0.0.1:7100",
            "--peers",
            "1@localhost:7100",
            "--retention-bytes",
            "999999999",
            "--log-format",
            "json",
        ])
        .unwrap();
        let f = dir.path().join("p.toml");
        std::fs::write(&f, c.to_toml()).unwrap();
        let back = parse(&["--config", f.to_str().unwrap()]).unwrap();
        // advertise is printed explicitly (= listen) and so comes back as Some.
        assert_eq!(back.advertise.as_deref(), Some("127.0.0.1:7100"));
        assert_eq!(
            BrokerConfig {
                advertise: None,
                ..back
            },
            c
        );
    }

    #[test]
    fn unknown_or_mistyped_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(&f, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let e = parse(&["--config", f.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        std::fs::write(&f, "node-id = \"one\"\n").unwrap();
        let e = parse(&["--config", f.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("node-id"), "{e}");
        let e = parse(&["--config", "/nonexistent/runnel.toml"]).unwrap_err();
        assert!(matches!(e, ConfigError::ReadFile { .. }));
    }

    #[test]
    fn invalid_values_name_their_key() {
        assert_eq!(err_key(parse(&["--listen", "localhost"])), "listen");
        assert_eq!(err_key(parse(&["--admin-listen", "x:1"])), "admin-listen");
        assert_eq!(
            err_key(parse(&[
                "--listen",
                "127.0.0.1:9000",
                "--admin-listen",
                "127.0.0.1:9000"
            ])),
            "admin-listen"
        );
        assert_eq!(err_key(parse(&["--advertise", "host"])), "advertise");
        assert_eq!(
            err_key(parse(&["--raft-heartbeat-ms", "19"])),
            "raft-heartbeat-ms"
        );
        assert_eq!(
            err_key(parse(&["--raft-heartbeat-ms", "1001"])),
            "raft-heartbeat-ms"
        );
        assert!(parse(&["--raft-heartbeat-ms", "1000"]).is_ok());
        assert_eq!(
            err_key(parse(&["--raft-quiesce-ms", "99"])),
            "raft-quiesce-ms"
        );
        assert_eq!(
            err_key(parse(&["--raft-quiesce-ms", "3600001"])),
            "raft-quiesce-ms"
        );
        assert!(parse(&["--raft-quiesce-ms", "0"]).is_ok());
        assert!(parse(&["--raft-quiesce-ms", "100"]).is_ok());
        assert!(parse(&["--raft-quiesce-ms", "3600000"]).is_ok());
        assert_eq!(err_key(parse(&["--advertise", "host:0"])), "advertise");
        assert_eq!(err_key(parse(&["--node-id", "0"])), "node-id");
        assert_eq!(
            err_key(parse(&["--max-connections", "0"])),
            "max-connections"
        );
        assert_eq!(
            err_key(parse(&["--max-inflight-per-connection", "257"])),
            "max-inflight-per-connection"
        );
        assert_eq!(
            err_key(parse(&["--default-partitions", "0"])),
            "default-partitions"
        );
        assert_eq!(err_key(parse(&["--segment-bytes", "100"])), "segment-bytes");
        // A segment smaller than the batch limit could not hold the largest batch; one above the storage
        // engine's limit could not be opened.
        let below = (SEGMENT_BYTES_MIN - 1).to_string();
        let e = parse(&["--segment-bytes", &below]).unwrap_err().to_string();
        assert!(
            e.contains("segment-bytes") && e.contains("batch limit"),
            "{e}"
        );
        let above = (SEGMENT_BYTES_MAX + 1).to_string();
        assert_eq!(
            err_key(parse(&["--segment-bytes", &above])),
            "segment-bytes"
        );
        assert_eq!(err_key(parse(&["--retention-ms", "0"])), "retention-ms");
        assert_eq!(
            err_key(parse(&["--retention-bytes", "-5"])),
            "retention-bytes"
        );
        // A combination: size retention smaller than one segment.
        assert_eq!(
            err_key(parse(&[
                "--segment-bytes",
                "20000000",
                "--retention-bytes",
                "19999999"
            ])),
            "retention-bytes"
        );
        // Limits themselves are accepted.
        let c = parse(&[
            "--max-inflight-per-connection",
            "256",
            "--default-partitions",
            "10000",
            "--segment-bytes",
            &SEGMENT_BYTES_MIN.to_string(),
        ])
        .unwrap();
        assert_eq!(
            c.max_inflight_per_connection,
            INFLIGHT_REQUESTS_PER_CONNECTION_MAX
        );
        assert_eq!(c.segment_bytes, BATCH_SIZE_BYTES_MAX as u64);
        parse(&["--segment-bytes", &SEGMENT_BYTES_MAX.to_string()]).unwrap();
    }

    #[test]
    fn peers_syntax_is_validated() {
        let p = parse_peers("1@a:1, 2@[::1]:2,3@b.example:3").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[1].addr, "[::1]:2");
        for bad in [
            "1a:1",
            "0@a:1",
            "x@a:1",
            "1@a",
            "1@:5",
            "1@a:1,1@b:2",
            "1@::1:5",
        ] {
            assert_eq!(
                err_key(parse_peers(bad).map(|_| BrokerConfig::default())),
                "peers",
                "{bad}"
            );
        }
        let c = parse(&["--peers", "1@a:1"]).unwrap();
        assert!(!c.is_multi_node());
        let c = parse(&["--peers", "1@a:1,2@b:2"]).unwrap();
        assert!(c.is_multi_node());
        assert_eq!(err_key(parse(&["--peers", "2@b:2"])), "peers");
    }

    #[test]
    fn help_documents_every_key_with_its_default() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--data-dir",
            DEFAULT_DATA_DIR,
            "--listen",
            DEFAULT_LISTEN,
            "--advertise",
            "--admin-listen",
            DEFAULT_ADMIN_LISTEN,
            "--node-id",
            "--peers",
            "--config",
            "--log-format",
            "--max-connections",
            &DEFAULT_MAX_CONNECTIONS.to_string(),
            "--max-inflight-per-connection",
            &DEFAULT_MAX_INFLIGHT_PER_CONNECTION.to_string(),
            "--default-partitions",
            "--segment-bytes",
            &DEFAULT_SEGMENT_BYTES.to_string(),
            "--retention-ms",
            &DEFAULT_RETENTION_MS.to_string(),
            "--retention-bytes",
            "--raft-heartbeat-ms",
            "--raft-quiesce-ms",
            &DEFAULT_RAFT_QUIESCE_MS.to_string(),
            "RUNNEL_DATA_DIR",
            "--print-config",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}");
        }
        assert_eq!(
            help.matches("[default: ").count(),
            16,
            "every setting states its default"
        );
    }
}
