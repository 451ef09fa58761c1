//! The client listener and the broker's lifecycle in two steps: [`Server::bind`] takes the data dir lock and
//! binds the client and admin listeners, and starts the admin HTTP endpoint at once (so `/health/live` answers
//! and `/health/ready` says "starting" while partitions recover); [`Starting::open`] opens the topic registry
//! (every partition, running crash recovery) and starts serving clients. [`Server::start`] does both.
//! [`ServerHandle::shutdown`] drains. Binding first makes a port conflict fail at once rather than after a
//! long recovery; connections that arrive meanwhile wait in the listen backlog.
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

use crate::admin_http::AdminState;
use crate::config::{BrokerConfig, ConfigError};
use crate::metadata::OpenProgress;
use crate::metadata::{
    FileMetadataStore, MetadataError, Registry, RegistryOptions, TopicDefaults, METADATA_FILE,
    PARTITIONS_PER_BROKER_MAX,
};
use crate::partition::StorageContext;
use crate::storage::io::RealIo;
pub use metrics::Metrics;

/// Longest a drain waits for in-flight requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a drain waits for connections to write their last responses.
pub const CONNECTION_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);
/// Longest a drain spends handing leadership to other brokers.
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the hand-off checks what this broker still leads (and asks again).
pub const HANDOFF_POLL: Duration = Duration::from_millis(100);
/// The lock file inside the data dir.
pub const LOCK_FILE: &str = ".lock";

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the cluster metadata log: {0}")]
    Controller(crate::partition::PartitionError),
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
    pub metrics: Arc<Metrics>,
    /// The consumer-group coordinator, started on the first group request.
    pub groups: tokio::sync::OnceCell<Arc<crate::groups::coordinator::Coordinator>>,
    /// Raft RPCs between brokers: peer connections and the registry of local Raft groups.
    pub raft: Arc<crate::raft::RaftNet>,
    /// Cluster mode: who leads the partitions this broker does not host (from leader gossip).
    pub leaders: crate::cluster::gossip::LeaderHints,
    /// Cancelled at shutdown: stops the metadata applier, gossip and bootstrap tasks.
    background: CancellationToken,
    /// Cancelled when a drain starts handing leadership to other brokers (not ready from then on).
    handing_off: CancellationToken,
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
    /// Cancelled once this broker's metadata has caught up after it started (at once on a single node).
    metadata_ready: CancellationToken,
}

impl Broker {
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves when the drain starts.
    pub fn draining(&self) -> &CancellationToken {
        &self.draining
    }

    /// Waits until this broker's metadata has caught up after its start, at most
    /// [`STARTUP_METADATA_WAIT`](crate::cluster::controller::STARTUP_METADATA_WAIT): a broker that has just
    /// restarted must not answer clients from the metadata of before its crash (a topic created since
    /// missing, or no topics at all before its log is applied).
    pub async fn metadata_caught_up(&self) {
        if self.metadata_ready.is_cancelled() {
            return; // every request after the first moments: no timer
        }
        let wait = crate::cluster::controller::STARTUP_METADATA_WAIT;
        let _ = tokio::time::timeout(wait, self.metadata_ready.cancelled()).await;
    }

    /// `Ok` when this node serves and every partition has a leader; otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_draining() || self.handing_off.is_cancelled() {
            return Err("draining: the broker is shutting down".into());
        }
        if let Some(c) = self.registry.cluster() {
            if c.controller.leader().is_none() {
                return Err("no controller elected yet".into());
            }
            if self.registry.epoch() == 0 {
                return Err("the cluster metadata is not initialized yet".into());
            }
        }
        if let Some((t, p)) = self.registry.leaderless_partition() {
            return Err(format!("partition {t}-{p} has no leader"));
        }
        Ok(())
    }
}

/// Marks the broker's metadata caught up once its controller replica says so (polled: it is a moment after
/// start), or after [`STARTUP_METADATA_WAIT`](crate::cluster::controller::STARTUP_METADATA_WAIT) whatever
/// the state (a minority side serves what it has, as before).
async fn watch_metadata_caught_up(broker: Arc<Broker>) {
    use crate::cluster::controller::{STARTUP_METADATA_POLL, STARTUP_METADATA_WAIT};
    let t0 = tokio::time::Instant::now();
    if let Some(c) = broker.registry.cluster() {
        // Not from the local log alone: after a kill -9 its committed index is not recovered, and it
        // lacks what was committed while this broker was down. The controller's high watermark comes with
        // leader gossip (asked of every peer at once on start); epoch 0 means nothing is applied yet.
        let caught_up = || {
            let hint = broker
                .leaders
                .get(crate::cluster::controller::METADATA_GROUP_TOPIC, 0)
                .map(|h| h.led.high_watermark);
            broker.registry.epoch() > 0 && c.controller.caught_up(hint)
        };
        while !caught_up() && t0.elapsed() < STARTUP_METADATA_WAIT {
            tokio::select! {
                _ = tokio::time::sleep(STARTUP_METADATA_POLL) => {}
                _ = broker.background.cancelled() => break,
            }
        }
        tracing::info!(
            caught_up = caught_up(),
            after = ?t0.elapsed(),
            epoch = broker.registry.epoch(),
            "serving clients"
        );
    }
    broker.metadata_ready.cancel();
}

/// Splits an advertised `HOST:PORT` (brackets around an IPv6 host are dropped).
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port))
}

/// Starts brokers.
pub struct Server;

/// A broker between [`Server::bind`] and [`Starting::open`]: listeners bound, admin HTTP answering (not
/// ready), partitions not yet open. Dropping it stops the admin endpoint and releases the data dir.
pub struct Starting {
    config: BrokerConfig,
    lock: DataDirLock,
    listener: TcpListener,
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin: Arc<AdminState>,
    admin_task: JoinHandle<()>,
    admin_stop: tokio_util::sync::DropGuard,
}

impl Server {
    /// [`Server::bind`] then [`Starting::open`].
    pub async fn start(config: BrokerConfig) -> Result<ServerHandle, StartError> {
        Server::bind(config).await?.open().await
    }

    /// Validates the configuration, takes the data dir, binds the client and admin listeners and starts the
    /// admin HTTP endpoint (live; not ready until [`Starting::open`] has opened every partition).
    pub async fn bind(config: BrokerConfig) -> Result<Starting, StartError> {
        config.validate()?;
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(|error| StartError::DataDir {
                path: config.data_dir.clone(),
                error,
            })?;
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let bind_err = |what, addr, error| StartError::Bind { what, addr, error };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| bind_err("client listener", config.listen, e))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|e| bind_err("admin listener", config.admin_listen, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| bind_err("client listener", config.listen, e))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| bind_err("admin listener", config.admin_listen, e))?;
        let admin = Arc::new(AdminState::new(Arc::new(Metrics::new())));
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(crate::admin_http::serve(
            admin_listener,
            admin.clone(),
            admin_stop.clone(),
        ));
        Ok(Starting {
            config,
            lock,
            listener,
            local_addr,
            admin_addr,
            admin,
            admin_task,
            admin_stop: admin_stop.drop_guard(),
        })
    }
}

impl Starting {
    /// The bound client listener address (not accepting until [`Starting::open`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound admin HTTP address (already serving).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// How far opening the partitions has come.
    pub fn progress(&self) -> &Arc<OpenProgress> {
        self.admin.progress()
    }

    /// Opens the topic registry (reopening every known partition) and starts serving clients.
    pub async fn open(self) -> Result<ServerHandle, StartError> {
        let Starting {
            config,
            lock,
            listener,
            local_addr,
            admin_addr,
            admin,
            admin_task,
            admin_stop,
        } = self;
        let metrics = admin.metrics().clone();
        tracing::info!(data_dir = %config.data_dir.display(), admin = %admin_addr, "opening partitions");
        let raft = crate::raft::RaftNet::with_timing(
            u64::from(config.node_id),
            config
                .peers
                .iter()
                .map(|p| (u64::from(p.node_id), p.addr.clone())),
            crate::raft::GroupConfig::replicated_with(config.raft_heartbeat_ms),
        );
        let ctx = StorageContext::with_observer(Arc::new(RealIo), Some(metrics.fsync_observer()));
        let opts = RegistryOptions {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            defaults: TopicDefaults::from_config(&config),
            max_partitions: PARTITIONS_PER_BROKER_MAX,
        };
        let registry = if config.is_multi_node() {
            let voters: Vec<u32> = config.peers.iter().map(|p| p.node_id).collect();
            let controller = crate::cluster::Controller::open(
                config.node_id,
                voters.clone(),
                &config.data_dir,
                ctx.clone(),
                raft.clone(),
            )
            .await
            .map_err(StartError::Controller)?;
            admin.progress().mark_loaded(0);
            Registry::open_cluster(opts, ctx, controller, raft.clone(), voters).await?
        } else {
            Registry::open_with_progress(
                opts,
                Box::new(FileMetadataStore::new(config.data_dir.join(METADATA_FILE))),
                ctx,
                admin.progress().clone(),
            )
            .await?
        };
        let advertised = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let (advertised_host, advertised_port) = split_host_port(&advertised)
            .unwrap_or_else(|| (local_addr.ip().to_string(), local_addr.port()));
        let broker = Arc::new(Broker {
            raft,
            leaders: crate::cluster::gossip::LeaderHints::default(),
            background: CancellationToken::new(),
            handing_off: CancellationToken::new(),
            registry,
            metrics,
            groups: tokio::sync::OnceCell::new(),
            advertised_host,
            advertised_port,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
            kill: CancellationToken::new(),
            requests: TaskTracker::new(),
            metadata_ready: CancellationToken::new(),
            config,
        });
        admin.set_broker(broker.clone());
        if let Some(c) = broker.registry.cluster() {
            let stop = broker.background.clone();
            tokio::spawn(
                c.controller
                    .clone()
                    .run_applier(broker.clone(), stop.clone()),
            );
            let peers: Vec<u32> = c
                .brokers
                .iter()
                .copied()
                .filter(|b| *b != broker.config.node_id)
                .collect();
            tokio::spawn(crate::cluster::gossip::run(
                broker.clone(),
                peers,
                stop.clone(),
            ));
            tokio::spawn(crate::raft::quiesce::run(
                broker.raft.clone(),
                (broker.config.raft_quiesce_ms > 0)
                    .then(|| Duration::from_millis(broker.config.raft_quiesce_ms)),
                stop.clone(),
            ));
            tokio::spawn(bootstrap(broker.clone(), stop));
            tokio::spawn(watch_metadata_caught_up(broker.clone()));
        } else {
            broker.metadata_ready.cancel();
        }
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
            admin_stop: admin_stop.disarm(),
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
        if b.registry.cluster().is_some() {
            b.handing_off.cancel();
            hand_off_leadership(b).await;
        }
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
        b.background.cancel();
        b.registry.shutdown().await;
        if let Some(c) = b.registry.cluster() {
            c.controller.shutdown().await;
        }
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

/// Hands every leadership this broker holds (partitions and the controller) to a caught-up replica and
/// waits, at most [`HANDOFF_TIMEOUT`], until it leads nothing: clients then see NOT_LEADER with a hint (and
/// retry) rather than a broker that vanished mid-request. Requests keep being served meanwhile.
async fn hand_off_leadership(b: &Broker) {
    let me = b.registry.node_id();
    let mut parts: Vec<Arc<crate::partition::Partition>> = b
        .registry
        .topics()
        .iter()
        .flat_map(|t| t.local().cloned().collect::<Vec<_>>())
        .collect();
    if let Some(c) = b.registry.cluster() {
        parts.push(c.controller.partition().clone());
    }
    let deadline = tokio::time::Instant::now() + HANDOFF_TIMEOUT;
    let led = parts.iter().filter(|p| p.is_leader()).count();
    loop {
        let leading: Vec<_> = parts.iter().filter(|p| p.is_leader()).collect();
        if leading.is_empty() || tokio::time::Instant::now() >= deadline {
            if !leading.is_empty() {
                tracing::warn!(
                    still_leading = leading.len(),
                    "leadership hand-off timed out; stopping anyway"
                );
            } else {
                tracing::info!(partitions = led, "leadership handed off");
            }
            return;
        }
        for p in leading {
            // The most caught-up other replica (lag 0 means it holds every entry and acked recently).
            let target = p
                .replica_lag()
                .unwrap_or_default()
                .into_iter()
                .filter(|(n, _)| *n != me)
                .min_by_key(|(_, lag)| *lag)
                .map(|(n, _)| n);
            if let Some(t) = target {
                if let Err(e) = p.transfer_leadership(t).await {
                    tracing::debug!(partition = ?p.id(), error = %e, "leadership transfer failed");
                }
            }
        }
        tokio::time::sleep(HANDOFF_POLL).await;
    }
}

/// Proposes the cluster's first metadata snapshot until some broker's proposal is applied.
async fn bootstrap(broker: Arc<Broker>, stop: CancellationToken) {
    while broker.registry.epoch() == 0 && !stop.is_cancelled() {
        match broker.registry.bootstrap_cluster().await {
            Ok(()) => {}
            Err(e) => tracing::debug!(error = %e, "cluster metadata bootstrap: retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::cluster::controller::PROPOSE_RETRY_BACKOFF) => {}
            _ = stop.cancelled() => return,
        }
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
