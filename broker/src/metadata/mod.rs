//! The topic registry of a single node: which topics exist (name, replica assignment per partition,
//! replication factor, config overrides) and the open [`Partition`] of each.
//!
//! Persistence is behind [`MetadataStore`] so that a replicated metadata group can replace the local file
//! later; [`FileMetadataStore`] keeps one JSON document at `<data_dir>/metadata.json`, replaced crash-safely
//! (write a temp file, fsync it, rename it over the old one, fsync the directory). Partition replicas live at
//! `<data_dir>/partitions/<topic>-<partition>/`.
//!
//! Invariants:
//! - The persisted document is the truth: a partition directory that it does not name is garbage (left by a
//!   crash in the middle of a create or delete) and is removed at start or before its name is reused.
//! - Create opens the partitions before it persists the topic; delete persists first and removes files after,
//!   so a crash at any point leaves either the old or the new topic set, never a topic without its files.
//! - Mutations (create, delete, add partitions, shutdown) are serialized by one async mutex; readers take a
//!   short std `RwLock` and never hold it across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::StreamExt;
use runnel_protocol::limits::{
    PARTITIONS_PER_TOPIC_MAX, REPLICATION_FACTOR_MAX, TOPIC_NAME_LEN_MAX,
};
use runnel_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::config::{self, DEFAULT_SEGMENT_MS};
use crate::partition::{LogConfig, Partition, PartitionId, StorageContext};

mod producer_ids;
mod replicated;
pub use producer_ids::{ProducerIdBlock, PRODUCER_ID_BLOCK};
pub use replicated::ClusterMode;

pub const METADATA_FILE: &str = "metadata.json";
pub const PARTITIONS_DIR: &str = "partitions";
/// Partitions opened (or shut down) concurrently at start, create and shutdown.
pub const PARTITION_OPEN_CONCURRENCY: usize = 8;
/// Most partitions one broker hosts (each costs files, memory and a Raft group).
pub const PARTITIONS_PER_BROKER_MAX: usize = 100_000;
/// Largest metadata document read at start.
pub const METADATA_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
const METADATA_FORMAT_VERSION: u32 = 1;
/// How often [`Registry::await_leaders`] looks at the partitions.
pub const LEADER_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest an admin request waits for the leaders of partitions it created.
pub const LEADER_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Topic config keys a topic may override.
pub const CONFIG_RETENTION_MS: &str = "retention.ms";
pub const CONFIG_RETENTION_BYTES: &str = "retention.bytes";
pub const CONFIG_SEGMENT_BYTES: &str = "segment.bytes";
pub const CONFIG_SEGMENT_MS: &str = "segment.ms";
pub const TOPIC_CONFIG_KEYS: [&str; 4] = [
    CONFIG_RETENTION_MS,
    CONFIG_RETENTION_BYTES,
    CONFIG_SEGMENT_BYTES,
    CONFIG_SEGMENT_MS,
];

/// One topic as persisted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TopicRecord {
    pub name: String,
    pub replication_factor: u16,
    /// The replica set of each partition; its length is the partition count.
    pub assignments: Vec<Vec<u32>>,
    /// Explicit per-topic overrides (validated keys and values).
    pub configs: BTreeMap<String, String>,
    /// Cluster mode: the metadata epoch that created the topic (tells a re-created topic's replicas from
    /// the old one's leftovers). 0 on a single node.
    #[serde(default)]
    pub id: u64,
}

/// The whole persisted registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MetadataSnapshot {
    pub version: u32,
    pub cluster_id: String,
    pub topics: Vec<TopicRecord>,
    /// Cluster mode: the number of accepted metadata changes (a change is accepted only as epoch + 1).
    #[serde(default)]
    pub epoch: u64,
    /// The first producer id no broker has reserved yet (see [`producer_ids`]). 0 in a document written
    /// before producer ids were handed out.
    #[serde(default)]
    pub next_producer_id: i64,
}

/// Where the registry is persisted. A replicated metadata group implements this later.
pub trait MetadataStore: Send + Sync + 'static {
    /// The last saved snapshot, or `None` if nothing was ever saved.
    fn load(&self) -> BoxFuture<'static, io::Result<Option<MetadataSnapshot>>>;
    /// Durably replaces the snapshot; when this returns Ok the new state survives a crash.
    fn save(&self, snapshot: MetadataSnapshot) -> BoxFuture<'static, io::Result<()>>;
}

/// A JSON file replaced atomically (temp file, fsync, rename, fsync of the directory).
pub struct FileMetadataStore {
    path: PathBuf,
}

impl FileMetadataStore {
    pub fn new(path: PathBuf) -> FileMetadataStore {
        FileMetadataStore { path }
    }
}

fn load_file(path: &Path) -> io::Result<Option<MetadataSnapshot>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len > METADATA_FILE_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes; limit {METADATA_FILE_BYTES_MAX}",
                path.display()
            ),
        ));
    }
    let snap: MetadataSnapshot = serde_json::from_reader(io::BufReader::new(f)).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not valid metadata: {e}", path.display()),
        )
    })?;
    if snap.version != METADATA_FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has format version {}; this broker reads {METADATA_FORMAT_VERSION}",
                path.display(),
                snap.version
            ),
        ));
    }
    Ok(Some(snap))
}

fn save_file(path: &Path, snap: &MetadataSnapshot) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(snap).map_err(io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// Makes a rename or removal in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl MetadataStore for FileMetadataStore {
    fn load(&self) -> BoxFuture<'static, io::Result<Option<MetadataSnapshot>>> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || load_file(&path))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn save(&self, snapshot: MetadataSnapshot) -> BoxFuture<'static, io::Result<()>> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || save_file(&path, &snapshot))
                .await
                .map_err(io::Error::other)?
        })
    }
}

/// Broker-wide defaults for new topics (from the broker config).
#[derive(Clone, Copy, Debug)]
pub struct TopicDefaults {
    pub partitions: u32,
    pub segment_bytes: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
}

impl TopicDefaults {
    pub fn from_config(c: &config::BrokerConfig) -> TopicDefaults {
        TopicDefaults {
            partitions: c.default_partitions,
            segment_bytes: c.segment_bytes,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
        }
    }
}

/// Settings of the registry itself.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    pub node_id: u32,
    pub data_dir: PathBuf,
    pub defaults: TopicDefaults,
    /// Most partitions this broker hosts; [`PARTITIONS_PER_BROKER_MAX`] unless a test lowers it.
    pub max_partitions: usize,
}

/// A per-topic failure of an admin operation: a wire error code and a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

/// UNKNOWN_TOPIC_OR_PARTITION for topic `name`.
fn unknown_topic(name: &str) -> TopicError {
    terr(
        ErrorCode::UnknownTopicOrPartition,
        format!("topic {name:?} does not exist"),
    )
}

/// A topic of `current` partitions may grow to `new_total` (larger, within the per-topic limit).
fn check_growth(name: &str, current: u32, new_total: u32) -> Result<(), TopicError> {
    if new_total <= current {
        return Err(terr(
            ErrorCode::InvalidPartitions,
            format!("topic {name:?} has {current} partitions; the new total must be larger, got {new_total}"),
        ));
    }
    if new_total > PARTITIONS_PER_TOPIC_MAX {
        return Err(terr(
            ErrorCode::InvalidPartitions,
            format!("{new_total} partitions; a topic may have at most {PARTITIONS_PER_TOPIC_MAX}"),
        ));
    }
    Ok(())
}

fn terr(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError {
        code,
        message: message.into(),
    }
}

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata store: {0}")]
    Store(io::Error),
    #[error("{0}")]
    Inconsistent(String),
    #[error("opening partition {topic}-{partition}: {error}")]
    Partition {
        topic: String,
        partition: u32,
        error: crate::partition::PartitionError,
    },
}

/// How far [`Registry::open_with_progress`] has come opening the stored partitions (for `/health/ready`
/// while a node recovers).
#[derive(Debug, Default)]
pub struct OpenProgress {
    loaded: std::sync::atomic::AtomicBool,
    total: std::sync::atomic::AtomicUsize,
    opened: std::sync::atomic::AtomicUsize,
}

impl OpenProgress {
    /// Records that the topic metadata is known and `total` partitions are to be opened.
    pub fn mark_loaded(&self, total: usize) {
        use std::sync::atomic::Ordering::{Relaxed, Release};
        self.total.store(total, Relaxed);
        self.loaded.store(true, Release);
    }

    /// `None` until the topic metadata is loaded; then (partitions opened, partitions to open).
    pub fn get(&self) -> Option<(usize, usize)> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        self.loaded
            .load(Acquire)
            .then(|| (self.opened.load(Relaxed), self.total.load(Relaxed)))
    }
}

/// A topic and its partitions: `Some` where this broker hosts a replica (always, on a single node).
/// Immutable: a change replaces the `Arc<Topic>` in the map.
pub struct Topic {
    pub record: TopicRecord,
    pub partitions: Vec<Option<Arc<Partition>>>,
}

impl Topic {
    /// The replicas this broker hosts.
    pub fn local(&self) -> impl Iterator<Item = &Arc<Partition>> {
        self.partitions.iter().flatten()
    }
}

/// What a partition lookup can fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    UnknownTopicOrPartition,
    /// The partition exists but this broker hosts no replica of it.
    NotHosted,
}

struct State {
    topics: BTreeMap<String, Arc<Topic>>,
    partition_count: usize,
    closed: bool,
    cluster_id: String,
    /// Cluster mode: the applied metadata epoch.
    epoch: u64,
    /// The first producer id not reserved yet (persisted with the topics).
    next_producer_id: i64,
}

/// The topic registry. Cheap to share as `Arc<Registry>`.
pub struct Registry {
    opts: RegistryOptions,
    partitions_dir: PathBuf,
    ctx: StorageContext,
    store: Box<dyn MetadataStore>,
    state: std::sync::RwLock<State>,
    admin: tokio::sync::Mutex<()>,
    /// Set in cluster mode (see [`replicated`]).
    cluster: Option<replicated::ClusterMode>,
    /// The producer ids this broker hands out (see [`producer_ids`]).
    producer_ids: ProducerIdBlock,
}

/// Checks a topic name: 1..=249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return Err(terr(
            ErrorCode::InvalidTopic,
            format!(
                "topic name must be 1 to {TOPIC_NAME_LEN_MAX} characters; got {}",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(terr(
            ErrorCode::InvalidTopic,
            format!("topic name {name:?} is reserved"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(terr(
            ErrorCode::InvalidTopic,
            format!("topic name {name:?} contains {c:?}; allowed are [A-Za-z0-9._-]"),
        ));
    }
    Ok(())
}

fn parse_int<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, TopicError> {
    v.trim().parse().map_err(|_| {
        terr(
            ErrorCode::InvalidConfig,
            format!("{key}: {v:?} is not an integer in range"),
        )
    })
}

fn config_err(e: config::ConfigError) -> TopicError {
    let message = match e {
        config::ConfigError::Invalid { key, message } => format!("{key}: {message}"),
        other => other.to_string(),
    };
    terr(ErrorCode::InvalidConfig, message)
}

/// Validates topic config overrides; returns them normalized (trimmed integers), sorted by key.
pub fn validate_topic_configs(
    configs: &[(String, String)],
    defaults: &TopicDefaults,
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut out = BTreeMap::new();
    for (k, v) in configs {
        let normalized = match k.as_str() {
            CONFIG_RETENTION_MS | CONFIG_RETENTION_BYTES => {
                let n: i64 = parse_int(k, v)?;
                let key = if k == CONFIG_RETENTION_MS {
                    CONFIG_RETENTION_MS
                } else {
                    CONFIG_RETENTION_BYTES
                };
                config::check_retention(key, n).map_err(config_err)?;
                n.to_string()
            }
            CONFIG_SEGMENT_BYTES => {
                let n: u64 = parse_int(k, v)?;
                config::check_segment_bytes(CONFIG_SEGMENT_BYTES, n).map_err(config_err)?;
                n.to_string()
            }
            CONFIG_SEGMENT_MS => {
                let n: u64 = parse_int(k, v)?;
                if n == 0 {
                    return Err(terr(ErrorCode::InvalidConfig, "segment.ms: must be > 0"));
                }
                n.to_string()
            }
            other => {
                return Err(terr(
                    ErrorCode::InvalidConfig,
                    format!(
                        "unknown topic config {other:?}; known keys are {}",
                        TOPIC_CONFIG_KEYS.join(", ")
                    ),
                ))
            }
        };
        if out.insert(k.clone(), normalized).is_some() {
            return Err(terr(
                ErrorCode::InvalidConfig,
                format!("config {k:?} is given twice"),
            ));
        }
    }
    let eff = EffectiveConfig::resolve(&out, defaults);
    config::check_retention_vs_segment(
        CONFIG_RETENTION_BYTES,
        eff.retention_bytes,
        eff.segment_bytes,
    )
    .map_err(config_err)?;
    Ok(out)
}

/// A topic's settings after applying its overrides to the broker defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
}

impl EffectiveConfig {
    /// Overrides were validated on the way in; an unparsable stored value falls back to the default.
    pub fn resolve(overrides: &BTreeMap<String, String>, d: &TopicDefaults) -> EffectiveConfig {
        let get = |k: &str| overrides.get(k).map(|s| s.as_str());
        EffectiveConfig {
            retention_ms: get(CONFIG_RETENTION_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.retention_ms),
            retention_bytes: get(CONFIG_RETENTION_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.retention_bytes),
            segment_bytes: get(CONFIG_SEGMENT_BYTES)
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.segment_bytes),
            segment_ms: get(CONFIG_SEGMENT_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_SEGMENT_MS),
        }
    }

    pub fn log_config(&self) -> LogConfig {
        let opt = |v: i64| u64::try_from(v).ok().filter(|&n| n > 0);
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_bytes: opt(self.retention_bytes),
            retention_ms: opt(self.retention_ms),
            ..LogConfig::default()
        }
    }

    /// As `(key, value)` pairs for the Metadata response.
    pub fn pairs(&self) -> Vec<(String, String)> {
        vec![
            (CONFIG_RETENTION_MS.into(), self.retention_ms.to_string()),
            (
                CONFIG_RETENTION_BYTES.into(),
                self.retention_bytes.to_string(),
            ),
            (CONFIG_SEGMENT_BYTES.into(), self.segment_bytes.to_string()),
            (CONFIG_SEGMENT_MS.into(), self.segment_ms.to_string()),
        ]
    }
}

fn partition_dir_name(topic: &str, partition: u32) -> String {
    format!("{topic}-{partition}")
}

fn new_cluster_id() -> String {
    // RandomState is seeded randomly per process; mixing in the time keeps ids distinct across restarts.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut parts = [0u64; 2];
    for (i, p) in parts.iter_mut().enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_usize(i);
        *p = h.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

impl Registry {
    /// Loads the registry (creating an empty one on a fresh data dir), removes partition directories it does
    /// not name, and opens every known partition.
    pub async fn open(
        opts: RegistryOptions,
        store: Box<dyn MetadataStore>,
        ctx: StorageContext,
    ) -> Result<Registry, MetadataError> {
        Registry::open_with_progress(opts, store, ctx, Arc::new(OpenProgress::default())).await
    }

    /// [`Registry::open`], counting opened partitions in `progress` as it goes.
    pub async fn open_with_progress(
        opts: RegistryOptions,
        store: Box<dyn MetadataStore>,
        ctx: StorageContext,
        progress: Arc<OpenProgress>,
    ) -> Result<Registry, MetadataError> {
        let partitions_dir = opts.data_dir.join(PARTITIONS_DIR);
        tokio::fs::create_dir_all(&partitions_dir)
            .await
            .map_err(MetadataError::Store)?;
        let snap = match store.load().await.map_err(MetadataError::Store)? {
            Some(s) => s,
            None => {
                let mut rd = tokio::fs::read_dir(&partitions_dir)
                    .await
                    .map_err(MetadataError::Store)?;
                if rd
                    .next_entry()
                    .await
                    .map_err(MetadataError::Store)?
                    .is_some()
                {
                    return Err(MetadataError::Inconsistent(format!(
                        "{} holds partition data but the topic metadata is missing; refusing to start \
                         rather than discard it",
                        partitions_dir.display()
                    )));
                }
                let s = MetadataSnapshot {
                    version: METADATA_FORMAT_VERSION,
                    epoch: 0,
                    cluster_id: new_cluster_id(),
                    topics: Vec::new(),
                    next_producer_id: 0,
                };
                store.save(s.clone()).await.map_err(MetadataError::Store)?;
                s
            }
        };
        let reg = Registry {
            partitions_dir,
            ctx,
            store,
            state: std::sync::RwLock::new(State {
                topics: BTreeMap::new(),
                partition_count: 0,
                closed: false,
                cluster_id: snap.cluster_id.clone(),
                epoch: 0,
                next_producer_id: snap.next_producer_id,
            }),
            admin: tokio::sync::Mutex::new(()),
            cluster: None,
            producer_ids: ProducerIdBlock::new(),
            opts,
        };
        reg.sweep_unknown_dirs(&snap).await?;
        progress.total.store(
            snap.topics.iter().map(|t| t.assignments.len()).sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        progress
            .loaded
            .store(true, std::sync::atomic::Ordering::Release);
        let mut topics = BTreeMap::new();
        let mut count = 0;
        for record in snap.topics {
            validate_topic_name(&record.name)
                .map_err(|e| MetadataError::Inconsistent(format!("stored topic: {e}")))?;
            let parts = reg
                .open_partitions(&record, 0..record.assignments.len() as u32)
                .await
                .map_err(|(partition, error)| MetadataError::Partition {
                    topic: record.name.clone(),
                    partition,
                    error,
                })?;
            count += parts.len();
            progress
                .opened
                .fetch_add(parts.len(), std::sync::atomic::Ordering::Relaxed);
            topics.insert(
                record.name.clone(),
                Arc::new(Topic {
                    record,
                    partitions: parts.into_iter().map(Some).collect(),
                }),
            );
        }
        {
            let mut st = reg.write();
            st.topics = topics;
            st.partition_count = count;
        }
        tracing::info!(
            topics = reg.read().topics.len(),
            partitions = count,
            "topic registry open"
        );
        Ok(reg)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // Writers never panic while holding the lock; recover from poisoning rather than propagate it.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn sweep_unknown_dirs(&self, snap: &MetadataSnapshot) -> Result<(), MetadataError> {
        let known: BTreeSet<String> = snap
            .topics
            .iter()
            .flat_map(|t| (0..t.assignments.len() as u32).map(|p| partition_dir_name(&t.name, p)))
            .collect();
        let mut rd = tokio::fs::read_dir(&self.partitions_dir)
            .await
            .map_err(MetadataError::Store)?;
        let mut removed = false;
        while let Some(entry) = rd.next_entry().await.map_err(MetadataError::Store)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if known.contains(&name) || !entry.path().is_dir() {
                continue;
            }
            tracing::warn!(dir = %entry.path().display(), "removing a partition directory no topic owns");
            tokio::fs::remove_dir_all(entry.path())
                .await
                .map_err(MetadataError::Store)?;
            removed = true;
        }
        if removed {
            fsync_dir(&self.partitions_dir).map_err(MetadataError::Store)?;
        }
        Ok(())
    }

    fn log_config(&self, record: &TopicRecord) -> LogConfig {
        EffectiveConfig::resolve(&record.configs, &self.opts.defaults).log_config()
    }

    /// Opens partitions `range` of `record`, at most [`PARTITION_OPEN_CONCURRENCY`] at a time. On failure the
    /// ones already open are shut down and the failing partition's number is returned.
    async fn open_partitions(
        &self,
        record: &TopicRecord,
        range: std::ops::Range<u32>,
    ) -> Result<Vec<Arc<Partition>>, (u32, crate::partition::PartitionError)> {
        let cfg = self.log_config(record);
        let opened: Vec<Result<Arc<Partition>, (u32, _)>> = futures::stream::iter(range)
            .map(|p| {
                let id = PartitionId {
                    topic: record.name.clone(),
                    partition: p,
                };
                let dir = self
                    .partitions_dir
                    .join(partition_dir_name(&record.name, p));
                let voters = record
                    .assignments
                    .get(p as usize)
                    .cloned()
                    .unwrap_or_else(|| vec![self.opts.node_id]);
                let fut = Partition::open(
                    id,
                    dir,
                    self.opts.node_id,
                    voters,
                    cfg.clone(),
                    self.ctx.clone(),
                );
                async move { fut.await.map_err(|e| (p, e)) }
            })
            .buffered(PARTITION_OPEN_CONCURRENCY)
            .collect()
            .await;
        let mut ok = Vec::with_capacity(opened.len());
        let mut first_err = None;
        for r in opened {
            match r {
                Ok(p) => ok.push(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            None => Ok(ok),
            Some(e) => {
                shutdown_all(&ok).await;
                Err(e)
            }
        }
    }

    /// Removes a partition directory and makes the removal durable.
    async fn remove_partition_dirs(&self, topic: &str, range: std::ops::Range<u32>) {
        for p in range {
            let dir = self.partitions_dir.join(partition_dir_name(topic, p));
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Left behind, it is swept at the next start or before the name is reused.
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove partition dir")
                }
            }
        }
        if let Err(e) = fsync_dir(&self.partitions_dir) {
            tracing::warn!(error = %e, "cannot fsync the partitions directory");
        }
    }

    fn snapshot(&self, st: &State) -> MetadataSnapshot {
        MetadataSnapshot {
            version: METADATA_FORMAT_VERSION,
            cluster_id: st.cluster_id.clone(),
            topics: st.topics.values().map(|t| t.record.clone()).collect(),
            epoch: st.epoch,
            next_producer_id: st.next_producer_id,
        }
    }

    /// The persisted form of the registry with `record` in place of the topic of the same name.
    fn snapshot_replacing(&self, record: &TopicRecord) -> MetadataSnapshot {
        let st = self.read();
        let mut snap = self.snapshot(&st);
        for t in &mut snap.topics {
            if t.name == record.name {
                *t = record.clone();
            }
        }
        snap
    }

    pub fn cluster_id(&self) -> String {
        self.read().cluster_id.clone()
    }

    pub fn node_id(&self) -> u32 {
        self.opts.node_id
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.opts.defaults
    }

    /// Number of brokers replicas can be placed on.
    pub fn broker_count(&self) -> usize {
        self.cluster.as_ref().map_or(1, |c| c.brokers.len())
    }

    /// The open partition `partition` of `topic`.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, LookupError> {
        self.read()
            .topics
            .get(topic)
            .ok_or(LookupError::UnknownTopicOrPartition)?
            .partitions
            .get(partition as usize)
            .ok_or(LookupError::UnknownTopicOrPartition)?
            .clone()
            .ok_or(LookupError::NotHosted)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.read().topics.get(name).cloned()
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.read().topics.values().cloned().collect()
    }

    /// The effective configuration of a topic.
    pub fn effective_config(&self, record: &TopicRecord) -> EffectiveConfig {
        EffectiveConfig::resolve(&record.configs, &self.opts.defaults)
    }

    /// `Ok` when every partition has a leader; otherwise the first one without, for `/health/ready`.
    pub fn leaderless_partition(&self) -> Option<(String, u32)> {
        let st = self.read();
        for t in st.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                if p.as_ref().is_some_and(|p| p.leader().is_none()) {
                    return Some((t.record.name.clone(), i as u32));
                }
            }
        }
        None
    }

    /// Waits until every partition of `topic` has a leader or `timeout` passes; true if they all have one.
    /// A new single-voter group elects itself within moments; waiting here lets a client produce right after
    /// its create returns. Polls every [`LEADER_POLL_INTERVAL`].
    pub async fn await_leaders(&self, topic: &str, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(t) = self.topic(topic) else {
                return false;
            };
            if t.local().all(|p| p.leader().is_some()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LEADER_POLL_INTERVAL).await;
        }
    }

    /// Creates a topic. `partitions == 0` and `replication_factor == 0` mean the broker defaults.
    /// With `validate_only` nothing changes.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(String, String)],
        validate_only: bool,
    ) -> Result<(), TopicError> {
        validate_topic_name(name)?;
        if name == crate::cluster::METADATA_GROUP_TOPIC {
            return Err(terr(
                ErrorCode::InvalidTopic,
                format!("topic name {name:?} is reserved for the cluster metadata"),
            ));
        }
        let partitions = if partitions == 0 {
            self.opts.defaults.partitions
        } else {
            partitions
        };
        if partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(terr(
                ErrorCode::InvalidPartitions,
                format!(
                    "{partitions} partitions; a topic may have 1 to {PARTITIONS_PER_TOPIC_MAX}"
                ),
            ));
        }
        let rf = if replication_factor == 0 {
            // Cluster mode: as many replicas as a quorum of three needs, when there are brokers for it.
            self.broker_count().min(3) as u16
        } else {
            replication_factor
        };
        if rf > REPLICATION_FACTOR_MAX || rf as usize > self.broker_count() {
            return Err(terr(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {rf} exceeds the {} broker(s) of this cluster",
                    self.broker_count()
                ),
            ));
        }
        let configs = validate_topic_configs(configs, &self.opts.defaults)?;
        if self.cluster.is_some() {
            return self
                .create_topic_replicated(name, partitions, rf, configs, validate_only)
                .await;
        }
        let _admin = self.admin.lock().await;
        {
            let st = self.read();
            if st.closed {
                return Err(terr(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            if st.topics.contains_key(name) {
                return Err(terr(
                    ErrorCode::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                ));
            }
            let total = st.partition_count + partitions as usize;
            if total > self.opts.max_partitions {
                return Err(terr(
                    ErrorCode::InvalidPartitions,
                    format!(
                        "this broker would host {total} partitions; its limit is {}",
                        self.opts.max_partitions
                    ),
                ));
            }
        }
        if validate_only {
            return Ok(());
        }
        let record = TopicRecord {
            name: name.to_string(),
            replication_factor: rf,
            assignments: vec![vec![self.opts.node_id]; partitions as usize],
            configs,
            id: 0,
        };
        // Directories with this name belong to no topic (a crashed create or a failed delete): start clean.
        self.remove_partition_dirs(name, 0..partitions).await;
        let parts = self
            .open_partitions(&record, 0..partitions)
            .await
            .map_err(|(p, e)| terr(e.code(), format!("opening partition {p}: {e}")))?;
        let topic = Arc::new(Topic {
            record,
            partitions: parts.into_iter().map(Some).collect(),
        });
        let snap = {
            let st = self.read();
            let mut snap = self.snapshot(&st);
            snap.topics.push(topic.record.clone());
            snap
        };
        if let Err(e) = self.store.save(snap).await {
            shutdown_all(&topic.local().cloned().collect::<Vec<_>>()).await;
            self.remove_partition_dirs(name, 0..partitions).await;
            return Err(terr(
                ErrorCode::StorageError,
                format!("saving topic metadata: {e}"),
            ));
        }
        let mut st = self.write();
        st.partition_count += topic.partitions.len();
        st.topics.insert(name.to_string(), topic);
        tracing::info!(topic = name, partitions, "topic created");
        Ok(())
    }

    /// Deletes a topic: forgets it durably, then shuts its partitions down and removes their files.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        if self.cluster.is_some() {
            return self.delete_topic_replicated(name).await;
        }
        let _admin = self.admin.lock().await;
        let snap = {
            let st = self.read();
            if st.closed {
                return Err(terr(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            if !st.topics.contains_key(name) {
                return Err(unknown_topic(name));
            }
            let mut snap = self.snapshot(&st);
            snap.topics.retain(|t| t.name != name);
            snap
        };
        self.store.save(snap).await.map_err(|e| {
            terr(
                ErrorCode::StorageError,
                format!("saving topic metadata: {e}"),
            )
        })?;
        let topic = {
            let mut st = self.write();
            let t = st.topics.remove(name);
            if let Some(t) = &t {
                st.partition_count -= t.partitions.len();
            }
            t
        };
        if let Some(t) = topic {
            shutdown_all(&t.local().cloned().collect::<Vec<_>>()).await;
            self.remove_partition_dirs(name, 0..t.partitions.len() as u32)
                .await;
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Grows a topic to `new_total` partitions (never shrinks).
    pub async fn create_partitions(&self, name: &str, new_total: u32) -> Result<(), TopicError> {
        if self.cluster.is_some() {
            return self.create_partitions_replicated(name, new_total).await;
        }
        let _admin = self.admin.lock().await;
        let (old, current) = {
            let st = self.read();
            if st.closed {
                return Err(terr(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            let t = st
                .topics
                .get(name)
                .cloned()
                .ok_or_else(|| unknown_topic(name))?;
            let current = t.partitions.len() as u32;
            check_growth(name, current, new_total)?;
            let total = st.partition_count + (new_total - current) as usize;
            if total > self.opts.max_partitions {
                return Err(terr(
                    ErrorCode::InvalidPartitions,
                    format!(
                        "this broker would host {total} partitions; its limit is {}",
                        self.opts.max_partitions
                    ),
                ));
            }
            (t, current)
        };
        let mut record = old.record.clone();
        record
            .assignments
            .resize(new_total as usize, vec![self.opts.node_id]);
        self.remove_partition_dirs(name, current..new_total).await;
        let added = self
            .open_partitions(&record, current..new_total)
            .await
            .map_err(|(p, e)| terr(e.code(), format!("opening partition {p}: {e}")))?;
        let mut partitions = old.partitions.clone();
        partitions.extend(added.iter().cloned().map(Some));
        let topic = Arc::new(Topic { record, partitions });
        let snap = self.snapshot_replacing(&topic.record);
        if let Err(e) = self.store.save(snap).await {
            shutdown_all(&added).await;
            self.remove_partition_dirs(name, current..new_total).await;
            return Err(terr(
                ErrorCode::StorageError,
                format!("saving topic metadata: {e}"),
            ));
        }
        let mut st = self.write();
        st.partition_count += added.len();
        st.topics.insert(name.to_string(), topic);
        tracing::info!(
            topic = name,
            from = current,
            to = new_total,
            "partitions added"
        );
        Ok(())
    }

    /// Changes a topic's config overrides: each pair sets a key, an empty value removes the override (the
    /// broker default applies again). The resulting set is validated as a whole, persisted, then applied to
    /// the live partitions (segment settings from their next append, retention at once). Internal topics
    /// (`__*`) are refused: the broker manages their configs. With `validate_only` nothing changes.
    /// Returns the overrides now in force.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        changes: &[(String, String)],
        validate_only: bool,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        let _admin = self.admin.lock().await;
        let old = {
            let st = self.read();
            if st.closed {
                return Err(terr(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            st.topics
                .get(name)
                .cloned()
                .ok_or_else(|| unknown_topic(name))?
        };
        if name.starts_with("__") {
            return Err(terr(
                ErrorCode::InvalidConfig,
                format!("topic {name:?} is internal; the broker manages its configs"),
            ));
        }
        let mut seen = BTreeSet::new();
        for (k, _) in changes {
            if !seen.insert(k.as_str()) {
                return Err(terr(
                    ErrorCode::InvalidConfig,
                    format!("config {k:?} is given twice"),
                ));
            }
        }
        let mut merged = old.record.configs.clone();
        for (k, v) in changes {
            if !TOPIC_CONFIG_KEYS.contains(&k.as_str()) {
                return Err(terr(
                    ErrorCode::InvalidConfig,
                    format!(
                        "unknown topic config {k:?}; known keys are {}",
                        TOPIC_CONFIG_KEYS.join(", ")
                    ),
                ));
            }
            if v.trim().is_empty() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let pairs: Vec<(String, String)> = merged.into_iter().collect();
        let configs = validate_topic_configs(&pairs, &self.opts.defaults)?;
        if validate_only || configs == old.record.configs {
            return Ok(configs);
        }
        if self.cluster.is_some() {
            drop(_admin);
            return self.alter_configs_replicated(name, configs).await;
        }
        let mut record = old.record.clone();
        record.configs = configs.clone();
        let log_config = self.log_config(&record);
        let topic = Arc::new(Topic {
            record,
            partitions: old.partitions.clone(),
        });
        let snap = self.snapshot_replacing(&topic.record);
        self.store.save(snap).await.map_err(|e| {
            terr(
                ErrorCode::StorageError,
                format!("saving topic metadata: {e}"),
            )
        })?;
        self.write().topics.insert(name.to_string(), topic.clone());
        for p in topic.local() {
            // The config passed validation; a partition shutting down concurrently is the only failure.
            if let Err(e) = p.set_log_config(log_config.clone()) {
                tracing::warn!(topic = name, partition = p.id().partition, error = %e, "cannot apply the new config");
                continue;
            }
            if let Err(e) = p.enforce_retention().await {
                tracing::warn!(topic = name, partition = p.id().partition, error = %e, "retention check after a config change failed");
            }
        }
        tracing::info!(
            topic = name,
            old = ?old.record.configs,
            new = ?configs,
            "topic configs altered"
        );
        Ok(configs)
    }

    /// A producer id never handed out before, by this broker or any other (see [`producer_ids`]).
    pub async fn next_producer_id(&self) -> Result<i64, TopicError> {
        self.producer_ids
            .next(|| self.reserve_producer_ids(PRODUCER_ID_BLOCK))
            .await
    }

    /// The first producer id not reserved yet, as applied here.
    pub fn producer_id_watermark(&self) -> i64 {
        self.read().next_producer_id
    }

    /// Durably reserves the next `count` producer ids: through the controller in cluster mode, else by
    /// saving the metadata file (under the admin lock, so no other save can write an older value).
    async fn reserve_producer_ids(&self, count: i64) -> Result<std::ops::Range<i64>, TopicError> {
        if self.cluster.is_some() {
            return self.reserve_producer_ids_replicated(count).await;
        }
        let _admin = self.admin.lock().await;
        let (snap, start) = {
            let st = self.read();
            if st.closed {
                return Err(terr(
                    ErrorCode::BrokerShuttingDown,
                    "the broker is shutting down",
                ));
            }
            let mut snap = self.snapshot(&st);
            snap.next_producer_id = reserve_after(st.next_producer_id, count)?;
            (snap, st.next_producer_id)
        };
        let end = snap.next_producer_id;
        self.store.save(snap).await.map_err(|e| {
            terr(
                ErrorCode::StorageError,
                format!("saving the producer id reservation: {e}"),
            )
        })?;
        self.write().next_producer_id = end;
        Ok(start..end)
    }

    /// Shuts every partition down (flushing it); later admin operations fail with BROKER_SHUTTING_DOWN.
    pub async fn shutdown(&self) {
        let _admin = self.admin.lock().await;
        let parts: Vec<Arc<Partition>> = {
            let mut st = self.write();
            st.closed = true;
            st.topics
                .values()
                .flat_map(|t| t.local().cloned().collect::<Vec<_>>())
                .collect()
        };
        shutdown_all(&parts).await;
        tracing::info!(partitions = parts.len(), "every partition shut down");
    }
}

/// The `next_producer_id` after reserving `count` ids from `next`; an error when the id space is spent.
fn reserve_after(next: i64, count: i64) -> Result<i64, TopicError> {
    next.checked_add(count)
        .filter(|_| next >= 0)
        .ok_or_else(|| {
            terr(
                ErrorCode::Unknown,
                format!("producer ids are exhausted (next {next})"),
            )
        })
}

/// Shuts partitions down, a bounded number at a time, logging failures.
async fn shutdown_all(parts: &[Arc<Partition>]) {
    futures::stream::iter(parts.iter().cloned())
        .for_each_concurrent(PARTITION_OPEN_CONCURRENCY, |p| async move {
            if let Err(e) = p.shutdown().await {
                tracing::warn!(error = %e, "partition shutdown failed");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        TopicDefaults {
            partitions: 2,
            segment_bytes: 1 << 20,
            retention_ms: 1000,
            retention_bytes: -1,
        }
    }

    async fn open(dir: &Path, max_partitions: usize) -> Registry {
        Registry::open(
            RegistryOptions {
                node_id: 1,
                data_dir: dir.to_path_buf(),
                defaults: defaults(),
                max_partitions,
            },
            Box::new(FileMetadataStore::new(dir.join(METADATA_FILE))),
            StorageContext::new(),
        )
        .await
        .unwrap()
    }

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "A.b_c-9", &"x".repeat(249), "..."] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250), "a\0"] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code,
                ErrorCode::InvalidTopic,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topic_configs_are_checked() {
        let d = defaults();
        let kv = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let c = validate_topic_configs(&kv("retention.ms", " 5 "), &d).unwrap();
        assert_eq!(c.get("retention.ms").map(String::as_str), Some("5"));
        validate_topic_configs(&kv("retention.bytes", "-1"), &d).unwrap();
        validate_topic_configs(&kv("segment.ms", "10"), &d).unwrap();
        for (k, v) in [
            ("retention.ms", "0"),
            ("retention.ms", "x"),
            ("segment.bytes", "10"),
            ("segment.ms", "0"),
            ("cleanup.policy", "compact"),
            // smaller than the (default) segment size
            ("retention.bytes", "5000"),
        ] {
            let e = validate_topic_configs(&kv(k, v), &d).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{k}={v}");
            assert!(e.message.contains(k), "{}", e.message);
        }
        let twice = vec![
            ("segment.ms".to_string(), "1".to_string()),
            ("segment.ms".to_string(), "2".to_string()),
        ];
        assert!(validate_topic_configs(&twice, &d).is_err());
        let eff = EffectiveConfig::resolve(&c, &d);
        assert_eq!(eff.retention_ms, 5);
        assert_eq!(eff.log_config().retention_ms, Some(5));
        assert_eq!(eff.log_config().retention_bytes, None);
    }

    #[tokio::test]
    async fn topics_persist_across_reopen_and_orphans_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let cluster_id;
        {
            let r = open(dir.path(), 100).await;
            cluster_id = r.cluster_id().to_string();
            r.create_topic("a", 0, 0, &[], false).await.unwrap();
            r.create_topic("b", 3, 1, &[("retention.ms".into(), "77".into())], false)
                .await
                .unwrap();
            r.create_topic("v", 3, 1, &[], true).await.unwrap();
            assert!(r.topic("v").is_none(), "validate_only creates nothing");
            assert_eq!(
                r.create_topic("a", 1, 1, &[], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::TopicAlreadyExists
            );
            assert_eq!(
                r.create_topic("c", 1, 2, &[], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidReplicationFactor
            );
            assert_eq!(
                r.create_topic("c", PARTITIONS_PER_TOPIC_MAX + 1, 1, &[], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidPartitions
            );
            r.create_partitions("a", 4).await.unwrap();
            assert!(r.await_leaders("a", std::time::Duration::ZERO).await);
            assert!(!r.await_leaders("zz", std::time::Duration::ZERO).await);
            assert_eq!(
                r.create_partitions("a", 4).await.unwrap_err().code,
                ErrorCode::InvalidPartitions
            );
            assert_eq!(
                r.create_partitions("zz", 4).await.unwrap_err().code,
                ErrorCode::UnknownTopicOrPartition
            );
            r.create_topic("gone", 2, 1, &[], false).await.unwrap();
            assert!(dir.path().join("partitions/gone-1").is_dir());
            r.delete_topic("gone").await.unwrap();
            assert!(!dir.path().join("partitions/gone-0").exists());
            assert_eq!(
                r.delete_topic("gone").await.unwrap_err().code,
                ErrorCode::UnknownTopicOrPartition
            );
            r.shutdown().await;
            assert_eq!(
                r.create_topic("late", 1, 1, &[], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::BrokerShuttingDown
            );
        }
        // A crash between opening partitions and saving metadata leaves an orphan directory.
        std::fs::create_dir_all(dir.path().join("partitions/orphan-0")).unwrap();
        let progress = Arc::new(OpenProgress::default());
        assert_eq!(progress.get(), None);
        let r = Registry::open_with_progress(
            RegistryOptions {
                node_id: 1,
                data_dir: dir.path().to_path_buf(),
                defaults: defaults(),
                max_partitions: 100,
            },
            Box::new(FileMetadataStore::new(dir.path().join(METADATA_FILE))),
            StorageContext::new(),
            progress.clone(),
        )
        .await
        .unwrap();
        assert_eq!(progress.get(), Some((7, 7)), "a: 4 partitions, b: 3");
        assert_eq!(r.cluster_id(), cluster_id);
        let names: Vec<String> = r.topics().iter().map(|t| t.record.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(r.topic("a").unwrap().partitions.len(), 4);
        let b = r.topic("b").unwrap();
        assert_eq!(b.partitions.len(), 3);
        assert_eq!(r.effective_config(&b.record).retention_ms, 77);
        assert!(r.partition("b", 2).is_ok());
        assert!(r.partition("b", 3).is_err());
        assert!(!dir.path().join("partitions/orphan-0").exists());
        assert!(r.leaderless_partition().is_none());
    }

    #[tokio::test]
    async fn configs_are_altered_persisted_and_applied_to_live_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        {
            let r = open(dir.path(), 100).await;
            r.create_topic("t", 2, 1, &[kv("segment.ms", "5000")], false)
                .await
                .unwrap();
            let got = r
                .alter_topic_configs("t", &[kv("retention.ms", "60000")], false)
                .await
                .unwrap();
            assert_eq!(got.get("retention.ms").map(String::as_str), Some("60000"));
            assert_eq!(
                got.get("segment.ms").map(String::as_str),
                Some("5000"),
                "kept"
            );
            for p in r.topic("t").unwrap().local() {
                let c = p.log_config();
                assert_eq!((c.retention_ms, c.segment_ms), (Some(60_000), 5000));
            }
            // validate_only changes nothing.
            r.alter_topic_configs("t", &[kv("retention.ms", "7")], true)
                .await
                .unwrap();
            assert_eq!(
                r.topic("t").unwrap().partitions[0]
                    .as_ref()
                    .unwrap()
                    .log_config()
                    .retention_ms,
                Some(60_000)
            );
            // Refusals name the key; nothing changes.
            for (changes, key) in [
                (vec![kv("retention.ms", "0")], "retention.ms"),
                (vec![kv("segment.bytes", "4096")], "segment.bytes"),
                (vec![kv("cleanup.policy", "compact")], "cleanup.policy"),
                (vec![kv("retention.bytes", "1000")], "retention.bytes"),
                (
                    vec![kv("segment.ms", "1"), kv("segment.ms", "2")],
                    "segment.ms",
                ),
            ] {
                let e = r
                    .alter_topic_configs("t", &changes, false)
                    .await
                    .unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidConfig, "{changes:?}");
                assert!(e.message.contains(key), "{}", e.message);
            }
            assert_eq!(
                r.alter_topic_configs("nope", &[kv("retention.ms", "1")], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::UnknownTopicOrPartition
            );
            r.create_topic("__internal", 1, 1, &[], false)
                .await
                .unwrap();
            assert_eq!(
                r.alter_topic_configs("__internal", &[kv("retention.ms", "1")], false)
                    .await
                    .unwrap_err()
                    .code,
                ErrorCode::InvalidConfig
            );
            r.shutdown().await;
        }
        // Persisted: a restart opens the partitions with the altered config; an empty value reverts a key.
        let r = open(dir.path(), 100).await;
        let t = r.topic("t").unwrap();
        assert_eq!(r.effective_config(&t.record).retention_ms, 60_000);
        assert_eq!(
            t.partitions[1].as_ref().unwrap().log_config().retention_ms,
            Some(60_000)
        );
        let got = r
            .alter_topic_configs("t", &[kv("retention.ms", "")], false)
            .await
            .unwrap();
        assert!(!got.contains_key("retention.ms"));
        assert_eq!(
            t.partitions[0].as_ref().unwrap().log_config().retention_ms,
            Some(defaults().retention_ms as u64)
        );
        r.shutdown().await;
    }

    #[tokio::test]
    async fn partition_limit_per_broker_is_enforced_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let r = open(dir.path(), 3).await;
        r.create_topic("a", 2, 1, &[], false).await.unwrap();
        r.create_topic("b", 1, 1, &[], false).await.unwrap();
        assert_eq!(
            r.create_topic("c", 1, 1, &[], false)
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidPartitions
        );
        assert_eq!(
            r.create_partitions("b", 2).await.unwrap_err().code,
            ErrorCode::InvalidPartitions
        );
        r.delete_topic("b").await.unwrap();
        r.create_partitions("a", 3).await.unwrap();
    }

    #[tokio::test]
    async fn missing_metadata_with_data_present_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("partitions/t-0")).unwrap();
        let r = Registry::open(
            RegistryOptions {
                node_id: 1,
                data_dir: dir.path().to_path_buf(),
                defaults: defaults(),
                max_partitions: 10,
            },
            Box::new(FileMetadataStore::new(dir.path().join(METADATA_FILE))),
            StorageContext::new(),
        )
        .await;
        assert!(matches!(r, Err(MetadataError::Inconsistent(_))));
        assert!(
            dir.path().join("partitions/t-0").exists(),
            "nothing deleted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn producer_ids_are_unique_under_concurrency_and_never_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let calls = PRODUCER_ID_BLOCK as usize * 2 + 500;
        let first: BTreeSet<i64>;
        {
            let r = Arc::new(open(dir.path(), 100).await);
            assert_eq!(r.producer_id_watermark(), 0);
            let mut tasks = Vec::new();
            for i in 0..calls {
                let r = r.clone();
                tasks.push(tokio::spawn(async move {
                    // Topic saves interleave with reservations: neither may lose the other's change.
                    if i % 1000 == 1 {
                        r.create_topic(&format!("t{i}"), 1, 1, &[], false)
                            .await
                            .unwrap();
                    }
                    r.next_producer_id().await.unwrap()
                }));
            }
            let mut ids = BTreeSet::new();
            for t in tasks {
                assert!(ids.insert(t.await.unwrap()), "an id handed out twice");
            }
            assert_eq!(ids.len(), calls);
            assert_eq!(ids.first(), Some(&0));
            assert_eq!(
                r.producer_id_watermark(),
                3 * PRODUCER_ID_BLOCK,
                "three blocks reserved, no more"
            );
            assert!(ids.iter().all(|id| *id < 3 * PRODUCER_ID_BLOCK));
            assert_eq!(r.topics().len(), 3, "t1, t1001, t2001");
            r.shutdown().await;
            first = ids;
        }
        // The file holds the reservation; a restarted broker skips the rest of its old block.
        let r = open(dir.path(), 100).await;
        assert_eq!(r.producer_id_watermark(), 3 * PRODUCER_ID_BLOCK);
        assert_eq!(r.topics().len(), 3);
        let max_old = *first.last().unwrap();
        for _ in 0..10 {
            let id = r.next_producer_id().await.unwrap();
            assert!(id > max_old && id >= 3 * PRODUCER_ID_BLOCK, "{id} reused");
        }
        assert_eq!(r.producer_id_watermark(), 4 * PRODUCER_ID_BLOCK);
        r.shutdown().await;
    }

    #[test]
    fn a_snapshot_written_before_producer_ids_loads_with_zero() {
        let doc = r#"{"version":1,"cluster_id":"c","topics":[],"epoch":4}"#;
        let s: MetadataSnapshot = serde_json::from_str(doc).unwrap();
        assert_eq!((s.epoch, s.next_producer_id), (4, 0));
        assert_eq!(reserve_after(0, 1000).unwrap(), 1000);
        assert!(reserve_after(i64::MAX - 10, 1000).is_err());
        assert!(reserve_after(-5, 1000).is_err());
    }

    #[tokio::test]
    async fn corrupt_metadata_is_an_error_not_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_FILE), b"{\"version\":1,").unwrap();
        let store = FileMetadataStore::new(dir.path().join(METADATA_FILE));
        let e = store.load().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
