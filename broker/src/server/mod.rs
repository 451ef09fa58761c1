//! The client listener and the broker's lifecycle: [`Server::start`] opens the data dir, the topic registry,
//! the TCP listener and the admin HTTP listener; [`ServerHandle::shutdown`] drains them.
//!
//! Invariants:
//! - At most `max_connections` connections are served at once (a semaphore); one over the limit is accepted
//!   and closed at once, so a client sees a clean close instead of a hanging SYN.
//! - Drain order: stop accepting and answer new requests with BROKER_SHUTTING_DOWN; wait (at most
//!   [`DRAIN_TIMEOUT`]) for in-flight requests; let writers flush (at most [`CONNECTION_FLUSH_TIMEOUT`]);
//!   close connections; shut every partition down (flush); stop the admin listener; release the data dir.
//! - One broker per data dir: `<data_dir>/.lock` is held (flock) while the server runs.

pub mod connection;
pub mod metrics;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BrokerConfig, ConfigError};
use crate::metadata::{
    FileMetadataStore, MetadataError, Registry, RegistryOptions, TopicDefaults, METADATA_FILE,
    PARTITIONS_PER_BROKER_MAX,
};
use crate::partition::StorageContext;
pub use metrics::Metrics;

/// Longest a drain waits for in-flight requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a drain waits for connections to write their last responses.
pub const CONNECTION_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// The lock file inside the data dir.
pub const LOCK_FILE: &str = ".lock";

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--peers names other nodes ({0}): multi-node replication is not implemented yet")]
    MultiNode(String),
    #[error("data dir {path}: {error}")]
    DataDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("data dir {0} is in use by another broker (its .lock file is held)")]
    DataDirLocked(PathBuf),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// An exclusive advisory lock on `<data_dir>/.lock`, released when dropped (or when the process dies).
struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    fn acquire(dir: &Path) -> Result<DataDirLock, StartError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|error| StartError::DataDir {
                path: path.clone(),
                error,
            })?;
        // The lock lives as long as `file` stays open.
        if let Err(errno) =
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        {
            let error = std::io::Error::from(errno);
            if error.kind() == std::io::ErrorKind::WouldBlock {
                return Err(StartError::DataDirLocked(dir.to_path_buf()));
            }
            return Err(StartError::DataDir { path, error });
        }
        Ok(DataDirLock { _file: file })
    }
}

/// State shared by the listener, every connection, the handlers and the admin endpoint.
pub struct Broker {
    pub config: BrokerConfig,
    pub registry: Registry,
    pub metrics: Metrics,
    /// The consumer-group coordinator, started on the first group request.
    pub groups: tokio::sync::OnceCell<Arc<crate::groups::coordinator::Coordinator>>,
    /// Raft RPCs between brokers: peer connections and the registry of local Raft groups.
    pub raft: Arc<crate::raft::RaftNet>,
    /// The host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Cancelled when the drain starts: new requests are refused, long polls return.
    draining: CancellationToken,
    /// Cancelled once in-flight requests are done: readers stop, writers flush and close.
    closing: CancellationToken,
    /// Cancelled last: writers stop even with responses pending.
    kill: CancellationToken,
    /// Every request handler task.
    requests: TaskTracker,
}

impl Broker {
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves when the drain starts.
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// `Ok` when this node serves and every partition has a leader; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("draining: the broker is shutting down".into());
        }
        if let Some((t, p)) = self.registry.leaderless_partition() {
            return Err(format!("partition {t}-{p} has no leader"));
        }
        Ok(())
    }
}

/// Splits an advertised `HOST:PORT` (brackets around an IPv6 host are dropped).
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port))
}

/// Starts brokers.
pub struct Server;

impl Server {
    /// Opens the data dir and the topic registry (reopening every known partition), binds the client and
    /// admin listeners and starts serving on the current tokio runtime.
    pub async fn start(config: BrokerConfig) -> Result<ServerHandle, StartError> {
        config.validate()?;
        if config.is_multi_node() {
            let others: Vec<String> = config
                .peers
                .iter()
                .filter(|p| p.node_id != config.node_id)
                .map(|p| format!("{}@{}", p.node_id, p.addr))
                .collect();
            return Err(StartError::MultiNode(others.join(",")));
        }
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(|error| StartError::DataDir {
                path: config.data_dir.clone(),
                error,
            })?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let registry = Registry::open(
            RegistryOptions {
                node_id: config.node_id,
                data_dir: config.data_dir.clone(),
                defaults: TopicDefaults::from_config(&config),
                max_partitions: PARTITIONS_PER_BROKER_MAX,
            },
            Box::new(FileMetadataStore::new(config.data_dir.join(METADATA_FILE))),
            StorageContext::new(),
        )
        .await?;
        let listener = match TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(error) => {
                registry.shutdown().await;
                return Err(StartError::Bind {
                    what: "client listener",
                    addr: config.listen,
                    error,
                });
            }
        };
        let admin_listener = match TcpListener::bind(config.admin_listen).await {
            Ok(l) => l,
            Err(error) => {
                registry.shutdown().await;
                return Err(StartError::Bind {
                    what: "admin listener",
                    addr: config.admin_listen,
                    error,
                });
            }
        };
        let bind_err = |what, addr, error| StartError::Bind { what, addr, error };
        let local_addr = listener
            .local_addr()
            .map_err(|e| bind_err("client listener", config.listen, e))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| bind_err("admin listener", config.admin_listen, e))?;
        let advertised = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let (advertised_host, advertised_port) = split_host_port(&advertised)
            .unwrap_or_else(|| (local_addr.ip().to_string(), local_addr.port()));

        let raft = crate::raft::RaftNet::new(
            u64::from(config.node_id),
            config
                .peers
                .iter()
                .map(|p| (u64::from(p.node_id), p.addr.clone())),
        );
        let broker = Arc::new(Broker {
            raft,
            registry,
            metrics: Metrics::new(),
            groups: tokio::sync::OnceCell::new(),
            advertised_host,
            advertised_port,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            kill: CancellationToken::new(),
            requests: TaskTracker::new(),
            config,
        });
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(crate::admin_http::serve(
            admin_listener,
            broker.clone(),
            admin_stop.clone(),
        ));
        let connections = TaskTracker::new();
        let accept_task = tokio::spawn(accept_loop(
            listener,
            broker.clone(),
            connections.clone(),
            Arc::new(Semaphore::new(broker.config.max_connections)),
        ));
        tracing::info!(
            listen = %local_addr,
            advertise = %advertised,
            admin = %admin_addr,
            data_dir = %broker.config.data_dir.display(),
            node_id = broker.config.node_id,
            "broker serving"
        );
        Ok(ServerHandle {
            broker,
            local_addr,
            admin_addr,
            accept_task,
            admin_task,
            admin_stop,
            connections,
            _lock: lock,
        })
    }
}

/// A running broker.
pub struct ServerHandle {
    broker: Arc<Broker>,
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    accept_task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    admin_stop: CancellationToken,
    connections: TaskTracker,
    _lock: DataDirLock,
}

impl ServerHandle {
    /// The bound client listener address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The shared broker state (registry, metrics).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Starts the drain without waiting: stop accepting, answer new requests with BROKER_SHUTTING_DOWN, wake
    /// long polls, report not ready. [`ServerHandle::shutdown`] completes it.
    pub fn begin_drain(&self) {
        self.broker.draining.cancel();
    }

    /// Drains and stops the broker (see the module doc); returns once every partition is shut down.
    pub async fn shutdown(self) {
        let b = &self.broker;
        tracing::info!("draining: no new connections or requests");
        b.draining.cancel();
        let _ = self.accept_task.await;
        b.requests.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, b.requests.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_s = DRAIN_TIMEOUT.as_secs(),
                "in-flight requests did not finish in time; closing anyway"
            );
        }
        b.closing.cancel();
        self.connections.close();
        if tokio::time::timeout(CONNECTION_FLUSH_TIMEOUT, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections did not flush in time; closing them");
        }
        b.kill.cancel();
        b.registry.shutdown().await;
        self.admin_stop.cancel();
        if tokio::time::timeout(CONNECTION_FLUSH_TIMEOUT, self.admin_task)
            .await
            .is_err()
        {
            tracing::warn!("admin HTTP connections did not close in time");
        }
        tracing::info!("drained; broker stopped");
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    connections: TaskTracker,
    limit: Arc<Semaphore>,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = broker.draining.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                Ok(permit) => {
                    connections.spawn(connection::serve(stream, peer, broker.clone(), permit));
                }
                Err(_) => {
                    tracing::debug!(%peer, limit = broker.config.max_connections, "connection limit reached; closing");
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_split() {
        assert_eq!(
            split_host_port("h.example:9292"),
            Some(("h.example".into(), 9292))
        );
        assert_eq!(split_host_port("[::1]:5"), Some(("::1".into(), 5)));
        assert_eq!(split_host_port("nope"), None);
    }

    #[test]
    fn a_data_dir_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            DataDirLock::acquire(dir.path()),
            Err(StartError::DataDirLocked(_))
        ));
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
