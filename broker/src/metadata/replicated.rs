//! The registry in cluster mode: the topic set comes from the metadata group (see [`crate::cluster`]), and
//! this broker opens exactly the partition replicas the committed assignment gives it.
//!
//! - Admin changes (create, delete, add partitions, alter configs) build the next whole snapshot from the
//!   applied one and propose it as epoch + 1; if another change won that epoch they rebuild and retry, at
//!   most [`PROPOSE_ATTEMPTS_MAX`] times. They never touch local partitions themselves.
//! - [`Registry::apply_snapshot`] (called by the metadata applier, in log order) reconciles: opens the
//!   replicas assigned here, shuts down and removes the ones no longer assigned or whose topic was deleted,
//!   and pushes config changes to live partitions.
//!
//! Invariants:
//! - A partition directory carries a `topic-id` file naming the topic incarnation (the epoch that created
//!   it); a directory with another id (a deleted topic's leftovers under a reused name) is wiped before use.
//! - Replica placement: partition `p` of a topic goes on `rf` distinct brokers, consecutive in id order from
//!   `(partitions already in the cluster + p) % brokers`, so replicas and preferred leaders (the first
//!   replica) spread evenly. A new partition's preferred replica starts an election at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use runnel_protocol::ErrorCode;

use super::{
    check_growth, fsync_dir, new_cluster_id, partition_dir_name, reserve_after, terr,
    unknown_topic, MetadataError, MetadataSnapshot, MetadataStore, ProducerIdBlock, Registry,
    RegistryOptions, State, Topic, TopicError, TopicRecord, METADATA_FORMAT_VERSION,
    PARTITIONS_DIR, PARTITION_OPEN_CONCURRENCY,
};
use crate::cluster::Controller;
use crate::partition::{Partition, PartitionId, PartitionOptions, StorageContext};
use crate::raft::RaftNet;

/// The file in a partition directory naming the topic incarnation it belongs to.
pub const TOPIC_ID_FILE: &str = "topic-id";
/// Most times an admin change is rebuilt after losing its epoch to a concurrent change.
pub const PROPOSE_ATTEMPTS_MAX: usize = 5;

/// What the registry needs in cluster mode.
pub struct ClusterMode {
    pub controller: Arc<Controller>,
    pub net: Arc<RaftNet>,
    /// Every broker of the cluster, sorted.
    pub brokers: Vec<u32>,
    apply_lock: tokio::sync::Mutex<()>,
}

/// Cluster mode persists metadata through the controller; the file store of a single node is never used.
struct ControllerPersists;

impl MetadataStore for ControllerPersists {
    fn load(
        &self,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Option<MetadataSnapshot>>> {
        Box::pin(async { Ok(None) })
    }

    fn save(
        &self,
        _: MetadataSnapshot,
    ) -> futures::future::BoxFuture<'static, std::io::Result<()>> {
        Box::pin(async {
            Err(std::io::Error::other(
                "cluster metadata is saved through the controller",
            ))
        })
    }
}

/// Replica sets for partitions `from..to` of a new or growing topic (see the module doc).
pub fn place(brokers: &[u32], existing: usize, from: u32, to: u32, rf: u16) -> Vec<Vec<u32>> {
    let n = brokers.len().max(1);
    (from..to)
        .map(|p| {
            let start = existing + p as usize;
            (0..rf as usize)
                .filter_map(|k| brokers.get((start + k) % n).copied())
                .collect()
        })
        .collect()
}

fn read_topic_id(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(TOPIC_ID_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Makes `dir` the home of topic incarnation `id`: wipes it if it holds another incarnation.
fn prepare_dir(dir: &std::path::Path, id: u64) -> std::io::Result<()> {
    if dir.exists() {
        if read_topic_id(dir) == Some(id) {
            return Ok(());
        }
        tracing::warn!(dir = %dir.display(), "removing a partition directory of another topic incarnation");
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("topic-id.tmp");
    std::fs::write(&tmp, id.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(TOPIC_ID_FILE))?;
    fsync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

impl Registry {
    /// An empty registry in cluster mode; topics arrive through [`Registry::apply_snapshot`].
    pub async fn open_cluster(
        opts: RegistryOptions,
        ctx: StorageContext,
        controller: Arc<Controller>,
        net: Arc<RaftNet>,
        mut brokers: Vec<u32>,
    ) -> Result<Registry, MetadataError> {
        let partitions_dir = opts.data_dir.join(PARTITIONS_DIR);
        tokio::fs::create_dir_all(&partitions_dir)
            .await
            .map_err(MetadataError::Store)?;
        brokers.sort_unstable();
        brokers.dedup();
        Ok(Registry {
            partitions_dir,
            ctx,
            store: Box::new(ControllerPersists),
            state: std::sync::RwLock::new(State {
                topics: BTreeMap::new(),
                partition_count: 0,
                closed: false,
                cluster_id: String::new(),
                epoch: 0,
                next_producer_id: 0,
            }),
            admin: tokio::sync::Mutex::new(()),
            cluster: Some(ClusterMode {
                controller,
                net,
                brokers,
                apply_lock: tokio::sync::Mutex::new(()),
            }),
            producer_ids: ProducerIdBlock::new(),
            opts,
        })
    }

    /// Cluster mode: the metadata group handle.
    pub fn cluster(&self) -> Option<&ClusterMode> {
        self.cluster.as_ref()
    }

    /// The applied metadata epoch (0 before the cluster's first metadata change, and on a single node).
    pub fn epoch(&self) -> u64 {
        self.read().epoch
    }

    /// Proposes the first metadata snapshot (cluster id, no topics) if none was applied yet. Every broker
    /// may call it; the epoch check lets exactly one such proposal win.
    pub async fn bootstrap_cluster(&self) -> Result<(), TopicError> {
        self.change(|cur| Ok((cur.epoch == 0).then(|| cur.clone())))
            .await
            .map(|_| ())
    }

    /// Reserves the next `count` producer ids: a metadata change moving `next_producer_id` forward. Once it
    /// is accepted (committed, and applied here) the range is this broker's alone.
    pub(super) async fn reserve_producer_ids_replicated(
        &self,
        count: i64,
    ) -> Result<std::ops::Range<i64>, TopicError> {
        let accepted = self
            .change(|cur| {
                let mut next = cur.clone();
                next.next_producer_id = reserve_after(cur.next_producer_id, count)?;
                Ok(Some(next))
            })
            .await?
            .ok_or_else(|| {
                terr(
                    ErrorCode::Unknown,
                    "the producer id reservation was dropped",
                )
            })?;
        let end = accepted.next_producer_id;
        Ok(end - count..end)
    }

    /// Builds the next snapshot with `build` (None: nothing to change) and proposes it until accepted;
    /// returns the accepted snapshot (`None` when there was nothing to change).
    async fn change(
        &self,
        build: impl Fn(&MetadataSnapshot) -> Result<Option<MetadataSnapshot>, TopicError>,
    ) -> Result<Option<MetadataSnapshot>, TopicError> {
        let Some(c) = &self.cluster else {
            return Err(terr(ErrorCode::Unknown, "not in cluster mode"));
        };
        for _ in 0..PROPOSE_ATTEMPTS_MAX {
            let cur = {
                let st = self.read();
                if st.closed {
                    return Err(terr(
                        ErrorCode::BrokerShuttingDown,
                        "the broker is shutting down",
                    ));
                }
                self.snapshot(&st)
            };
            let Some(mut next) = build(&cur)? else {
                return Ok(None);
            };
            next.version = METADATA_FORMAT_VERSION;
            next.epoch = cur.epoch + 1;
            if next.cluster_id.is_empty() {
                next.cluster_id = new_cluster_id();
            }
            if c.controller.propose(&next).await? {
                return Ok(Some(next));
            }
            tracing::debug!(
                epoch = next.epoch,
                "a concurrent metadata change won the epoch; rebuilding"
            );
        }
        Err(terr(
            ErrorCode::RequestTimedOut,
            format!("the metadata changed concurrently {PROPOSE_ATTEMPTS_MAX} times; try again"),
        ))
    }

    pub(super) async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        rf: u16,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), TopicError> {
        let exists = |snap: &MetadataSnapshot| {
            if snap.topics.iter().any(|t| t.name == name) {
                Err(terr(
                    ErrorCode::TopicAlreadyExists,
                    format!("topic {name:?} already exists"),
                ))
            } else {
                Ok(())
            }
        };
        {
            let st = self.read();
            exists(&self.snapshot(&st))?;
        }
        if validate_only {
            return Ok(());
        }
        let brokers = self
            .cluster
            .as_ref()
            .map(|c| c.brokers.clone())
            .unwrap_or_default();
        self.change(|cur| {
            exists(cur)?;
            let existing: usize = cur.topics.iter().map(|t| t.assignments.len()).sum();
            let mut next = cur.clone();
            next.topics.push(TopicRecord {
                name: name.to_string(),
                replication_factor: rf,
                assignments: place(&brokers, existing, 0, partitions, rf),
                configs: configs.clone(),
                id: cur.epoch + 1,
            });
            Ok(Some(next))
        })
        .await?;
        tracing::info!(
            topic = name,
            partitions,
            replication_factor = rf,
            "topic created"
        );
        Ok(())
    }

    pub(super) async fn delete_topic_replicated(&self, name: &str) -> Result<(), TopicError> {
        self.change(|cur| {
            if !cur.topics.iter().any(|t| t.name == name) {
                return Err(unknown_topic(name));
            }
            let mut next = cur.clone();
            next.topics.retain(|t| t.name != name);
            Ok(Some(next))
        })
        .await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub(super) async fn create_partitions_replicated(
        &self,
        name: &str,
        new_total: u32,
    ) -> Result<(), TopicError> {
        let brokers = self
            .cluster
            .as_ref()
            .map(|c| c.brokers.clone())
            .unwrap_or_default();
        self.change(|cur| {
            let mut next = cur.clone();
            let existing: usize = cur.topics.iter().map(|t| t.assignments.len()).sum();
            let t = next
                .topics
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| unknown_topic(name))?;
            let current = t.assignments.len() as u32;
            check_growth(name, current, new_total)?;
            let added = place(&brokers, existing, current, new_total, t.replication_factor);
            t.assignments.extend(added);
            Ok(Some(next))
        })
        .await?;
        tracing::info!(topic = name, to = new_total, "partitions added");
        Ok(())
    }

    pub(super) async fn alter_configs_replicated(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        self.change(|cur| {
            let mut next = cur.clone();
            let t = next
                .topics
                .iter_mut()
                .find(|t| t.name == name)
                .ok_or_else(|| unknown_topic(name))?;
            if t.configs == configs {
                return Ok(None);
            }
            t.configs = configs.clone();
            Ok(Some(next))
        })
        .await?;
        tracing::info!(topic = name, configs = ?configs, "topic configs altered");
        Ok(configs)
    }

    /// Applies one committed metadata snapshot (the applier calls this in log order). Returns whether it
    /// was accepted (its epoch is the applied epoch + 1); a rejected one changes nothing.
    pub async fn apply_snapshot(&self, doc: MetadataSnapshot) -> bool {
        let Some(c) = &self.cluster else {
            return false;
        };
        let _apply = c.apply_lock.lock().await;
        let (epoch, old_topics, closed) = {
            let st = self.read();
            (st.epoch, st.topics.clone(), st.closed)
        };
        if closed || doc.epoch != epoch + 1 {
            tracing::debug!(
                applied = epoch,
                proposed = doc.epoch,
                "metadata entry not accepted"
            );
            return false;
        }
        let me = self.opts.node_id;
        let mut to_open: Vec<(TopicRecord, u32)> = Vec::new();
        let mut to_close: Vec<(Arc<Partition>, String, u32)> = Vec::new();
        let mut new_topics: BTreeMap<String, Vec<Option<Arc<Partition>>>> = BTreeMap::new();
        for rec in &doc.topics {
            let old = old_topics.get(&rec.name).filter(|t| t.record.id == rec.id);
            let mut parts = Vec::with_capacity(rec.assignments.len());
            for (p, replicas) in rec.assignments.iter().enumerate() {
                let existing = old.and_then(|t| t.partitions.get(p).cloned().flatten());
                match (replicas.contains(&me), existing) {
                    (true, Some(e)) => parts.push(Some(e)),
                    (true, None) => {
                        to_open.push((rec.clone(), p as u32));
                        parts.push(None);
                    }
                    (false, Some(e)) => {
                        to_close.push((e, rec.name.clone(), p as u32));
                        parts.push(None);
                    }
                    (false, None) => parts.push(None),
                }
            }
            if let Some(o) = old {
                if o.record.configs != rec.configs {
                    let cfg = self.log_config(rec);
                    for p in o.local() {
                        if let Err(e) = p.set_log_config(cfg.clone()) {
                            tracing::warn!(topic = %rec.name, error = %e, "cannot apply the new config");
                            continue;
                        }
                        // Retention may have shrunk: apply it now rather than at the next periodic check
                        // (only the leader snapshots and purges; followers follow its snapshot).
                        let p = p.clone();
                        tokio::spawn(async move {
                            if let Err(e) = p.enforce_retention().await {
                                tracing::debug!(error = %e, "retention check after a config change failed");
                            }
                        });
                    }
                }
            }
            new_topics.insert(rec.name.clone(), parts);
        }
        for (name, t) in &old_topics {
            let kept = doc
                .topics
                .iter()
                .any(|r| &r.name == name && r.id == t.record.id);
            if !kept {
                for (p, part) in t.partitions.iter().enumerate() {
                    if let Some(part) = part {
                        to_close.push((part.clone(), name.clone(), p as u32));
                    }
                }
            }
        }
        let opened: Vec<(String, u32, Option<Arc<Partition>>)> = futures::stream::iter(to_open)
            .map(|(rec, p)| async move {
                let part = self.open_replica(&rec, p).await;
                (rec.name, p, part)
            })
            .buffer_unordered(PARTITION_OPEN_CONCURRENCY)
            .collect()
            .await;
        for (name, p, part) in opened {
            if let Some(slot) = new_topics
                .get_mut(&name)
                .and_then(|v| v.get_mut(p as usize))
            {
                *slot = part;
            }
        }
        {
            let mut st = self.write();
            st.topics = doc
                .topics
                .iter()
                .map(|rec| {
                    let partitions = new_topics.remove(&rec.name).unwrap_or_default();
                    (
                        rec.name.clone(),
                        Arc::new(Topic {
                            record: rec.clone(),
                            partitions,
                        }),
                    )
                })
                .collect();
            st.partition_count = st.topics.values().map(|t| t.local().count()).sum();
            st.epoch = doc.epoch;
            st.cluster_id = doc.cluster_id.clone();
            // Every change is built from the applied state, so this only grows; `max` keeps a (buggy)
            // document that lowers it from handing reserved ids out again.
            st.next_producer_id = st.next_producer_id.max(doc.next_producer_id);
        }
        for (part, name, p) in to_close {
            if let Err(e) = part.shutdown().await {
                tracing::warn!(topic = %name, partition = p, error = %e, "partition shutdown failed");
            }
            self.remove_partition_dirs(&name, p..p + 1).await;
            tracing::info!(topic = %name, partition = p, "replica removed");
        }
        tracing::debug!(epoch = doc.epoch, "metadata applied");
        true
    }

    /// Opens this broker's replica of partition `p` of `rec`; `None` (logged) if it cannot.
    async fn open_replica(&self, rec: &TopicRecord, p: u32) -> Option<Arc<Partition>> {
        let c = self.cluster.as_ref()?;
        let dir = self.partitions_dir.join(partition_dir_name(&rec.name, p));
        let voters = rec.assignments.get(p as usize)?.clone();
        let d = dir.clone();
        let id = rec.id;
        match tokio::task::spawn_blocking(move || prepare_dir(&d, id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot prepare a partition directory");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "preparing a partition directory panicked");
                return None;
            }
        }
        let options = if voters == [self.opts.node_id] {
            PartitionOptions::default()
        } else {
            PartitionOptions::replicated(c.net.clone())
        };
        let preferred = voters.first() == Some(&self.opts.node_id) && voters.len() > 1;
        let opened = Partition::open_with(
            PartitionId {
                topic: rec.name.clone(),
                partition: p,
            },
            dir,
            self.opts.node_id,
            voters,
            self.log_config(rec),
            self.ctx.clone(),
            options,
        )
        .await;
        match opened {
            Ok(part) => {
                // A brand-new group (term 0): its preferred replica campaigns so leaders spread evenly.
                if preferred && part.term() == 0 {
                    if let Err(e) = part.campaign().await {
                        tracing::debug!(topic = %rec.name, partition = p, error = %e, "campaign failed");
                    }
                }
                Some(part)
            }
            Err(e) => {
                tracing::error!(topic = %rec.name, partition = p, error = %e, "cannot open a partition replica");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_replicas_and_preferred_leaders() {
        let b = [1, 2, 3];
        let a = place(&b, 0, 0, 6, 3);
        for r in &a {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "distinct replicas: {r:?}");
        }
        let firsts: Vec<u32> = a.iter().map(|r| r[0]).collect();
        assert_eq!(firsts, vec![1, 2, 3, 1, 2, 3]);
        // A second topic continues where the first stopped.
        assert_eq!(place(&b, 6, 0, 1, 2), vec![vec![1, 2]]);
        assert_eq!(place(&b, 7, 0, 1, 1), vec![vec![2]]);
    }

    #[test]
    fn a_directory_of_another_incarnation_is_wiped() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("t-0");
        prepare_dir(&dir, 5).unwrap();
        std::fs::write(dir.join("data"), b"x").unwrap();
        prepare_dir(&dir, 5).unwrap();
        assert!(dir.join("data").exists(), "same incarnation keeps its data");
        prepare_dir(&dir, 9).unwrap();
        assert!(!dir.join("data").exists(), "a new incarnation starts clean");
        assert_eq!(read_topic_id(&dir), Some(9));
    }
}
