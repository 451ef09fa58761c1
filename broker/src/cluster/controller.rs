//! [`Controller`]: the metadata group. Its log is an ordinary partition replica (segment log + Raft group)
//! at `<data_dir>/cluster-metadata/`, registered with the broker's [`RaftNet`] as
//! `"__cluster_metadata-0"`, over every broker of `--peers`. Each entry is a record batch with one record
//! whose value is the JSON of a whole [`MetadataSnapshot`].
//!
//! Invariants:
//! - Entries are applied in log order and only up to the metadata group's high watermark (committed).
//! - An entry is accepted iff its epoch is the applied epoch + 1 (`Registry::apply_snapshot` decides); the
//!   outcome of the last [`OUTCOMES_KEPT`] entries is remembered so a proposer learns whether its entry won.
//! - A proposal is bounded: [`PROPOSE_TIMEOUT`] overall, retried every [`PROPOSE_RETRY_BACKOFF`] while no
//!   controller is known; a non-controller forwards it to the controller over the peer connection.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::batch::{self, RecordBatchBuilder};
use runnel_protocol::messages::raft_rpc::{
    RaftRpcRequest, RaftRpcResponse, RAFT_RPC_METADATA_PROPOSE,
};
use runnel_protocol::messages::ACKS_ALL;
use runnel_protocol::ErrorCode;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metadata::{MetadataSnapshot, TopicError};
use crate::partition::{
    LogConfig, Partition, PartitionError, PartitionId, PartitionOptions, StorageContext,
};
use crate::raft::{GroupConfig, RaftNet};
use crate::server::Broker;

/// The metadata group's topic name (reserved: users cannot create it).
pub const METADATA_GROUP_TOPIC: &str = "__cluster_metadata";
/// Where the metadata log lives inside the data dir.
pub const METADATA_DIR: &str = "cluster-metadata";
/// Longest a metadata proposal may take, forwarding and commit included.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between attempts while no controller is known.
pub const PROPOSE_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Most bytes the applier reads from the metadata log at once.
pub const APPLY_READ_BYTES: usize = 4 * 1024 * 1024;
/// Entry outcomes remembered for proposers.
pub const OUTCOMES_KEPT: usize = 1024;
/// Longest a client request waits, right after this broker started, for its metadata to catch up (see
/// [`Controller::caught_up`]) before it is served from whatever is applied.
pub const STARTUP_METADATA_WAIT: Duration = Duration::from_secs(5);
/// How often a starting broker checks whether its metadata caught up.
pub const STARTUP_METADATA_POLL: Duration = Duration::from_millis(10);
/// Segment size of the metadata log (it is small and never expires).
pub const METADATA_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// The metadata group of this broker.
pub struct Controller {
    node_id: u32,
    voters: Vec<u32>,
    partition: Arc<Partition>,
    net: Arc<RaftNet>,
    /// Next metadata-log offset to apply.
    applied: watch::Sender<u64>,
    /// offset → whether the entry there was accepted.
    outcomes: Mutex<BTreeMap<u64, bool>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .field("voters", &self.voters)
            .finish()
    }
}

fn propose_err(code: ErrorCode, message: impl Into<String>) -> TopicError {
    TopicError {
        code,
        message: message.into(),
    }
}

/// One metadata record: the snapshot, or why it is not one.
pub type DecodedSnapshot = Result<MetadataSnapshot, String>;

/// Encodes a snapshot as a one-record batch.
pub fn encode_snapshot(snap: &MetadataSnapshot) -> Result<Bytes, String> {
    let json = serde_json::to_vec(snap).map_err(|e| e.to_string())?;
    let mut b = RecordBatchBuilder::new(json.len() + 128);
    b.push(crate::storage::log::now_ms(), None, &json, &[]);
    Ok(b.finish())
}

/// Decodes every snapshot of one metadata batch, with its offset. A record that is not a snapshot is
/// reported as an error (and skipped by the applier, identically on every broker).
pub fn decode_snapshots(b: &Bytes) -> Result<Vec<(u64, DecodedSnapshot)>, String> {
    let recs = batch::records(b).map_err(|e| e.to_string())?;
    Ok(recs
        .into_iter()
        .map(|r| {
            let doc = match &r.value {
                Some(v) => serde_json::from_slice::<MetadataSnapshot>(v).map_err(|e| e.to_string()),
                None => Err("a metadata record without a value".into()),
            };
            (r.offset, doc)
        })
        .collect())
}

impl Controller {
    /// Opens (recovering) this broker's replica of the metadata group over `voters`.
    pub async fn open(
        node_id: u32,
        voters: Vec<u32>,
        data_dir: &Path,
        ctx: StorageContext,
        net: Arc<RaftNet>,
    ) -> Result<Arc<Controller>, PartitionError> {
        let config = LogConfig {
            segment_bytes: METADATA_SEGMENT_BYTES,
            retention_ms: None,
            retention_bytes: None,
            ..LogConfig::default()
        };
        let partition = Partition::open_with(
            PartitionId {
                topic: METADATA_GROUP_TOPIC.to_string(),
                partition: 0,
            },
            data_dir.join(METADATA_DIR),
            node_id,
            voters.clone(),
            config,
            ctx,
            PartitionOptions {
                group: GroupConfig {
                    persist_every_commit: true,
                    ..net.timing().clone()
                },
                ..PartitionOptions::replicated(net.clone())
            },
        )
        .await?;
        let start = partition.log_start_offset();
        Ok(Arc::new(Controller {
            node_id,
            voters,
            partition,
            net,
            applied: watch::Sender::new(start),
            outcomes: Mutex::new(BTreeMap::new()),
        }))
    }

    /// The controller (the metadata group's leader), if one is known.
    pub fn leader(&self) -> Option<u32> {
        self.partition.leader()
    }

    pub fn is_leader(&self) -> bool {
        self.partition.is_leader()
    }

    pub fn voters(&self) -> &[u32] {
        &self.voters
    }

    pub fn partition(&self) -> &Arc<Partition> {
        &self.partition
    }

    /// Next metadata offset to apply.
    pub fn applied_offset(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Appends `snap` to the metadata log (here if this broker is the controller, else forwarded to it) and
    /// waits until this broker has applied it. `Ok(true)` if it was accepted, `Ok(false)` if another change
    /// won the epoch (the caller rebuilds from the new state and retries).
    pub async fn propose(&self, snap: &MetadataSnapshot) -> Result<bool, TopicError> {
        let batch = encode_snapshot(snap)
            .map_err(|e| propose_err(ErrorCode::Unknown, format!("encoding metadata: {e}")))?;
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        let offset = self.append_anywhere(batch, deadline).await?;
        self.wait_applied(offset + 1, deadline).await?;
        let accepted = self
            .outcomes
            .lock()
            .ok()
            .and_then(|o| o.get(&offset).copied());
        Ok(accepted.unwrap_or(false))
    }

    async fn append_anywhere(&self, batch: Bytes, deadline: Instant) -> Result<u64, TopicError> {
        let header = batch::validate(&batch)
            .map_err(|e| propose_err(ErrorCode::Unknown, format!("metadata batch: {e}")))?;
        loop {
            if Instant::now() >= deadline {
                return Err(propose_err(
                    ErrorCode::RequestTimedOut,
                    "no controller committed the metadata change in time",
                ));
            }
            let leader = match self
                .partition
                .append(batch.clone(), &header, ACKS_ALL)
                .await
            {
                Ok(out) => return Ok(out.base_offset),
                Err(PartitionError::NotLeader { leader_hint }) => leader_hint,
                Err(PartitionError::ShuttingDown) => {
                    return Err(propose_err(
                        ErrorCode::BrokerShuttingDown,
                        "the broker is shutting down",
                    ))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "metadata append failed; retrying");
                    None
                }
            };
            if let Some(l) = leader.filter(|l| *l != self.node_id) {
                match self.forward(l, batch.clone(), deadline).await {
                    Ok(off) => return Ok(off),
                    Err(e) => {
                        tracing::debug!(controller = l, error = %e, "forwarding a metadata change failed")
                    }
                }
            }
            tokio::time::sleep(PROPOSE_RETRY_BACKOFF).await;
        }
    }

    async fn forward(&self, to: u32, batch: Bytes, deadline: Instant) -> Result<u64, String> {
        let peer = self.net.peer(u64::from(to)).map_err(|e| e.to_string())?;
        let ttl = deadline.saturating_duration_since(Instant::now());
        let resp = peer
            .call(
                RaftRpcRequest {
                    group: format!("{METADATA_GROUP_TOPIC}-0"),
                    kind: RAFT_RPC_METADATA_PROPOSE,
                    payload: batch,
                },
                ttl,
            )
            .await
            .map_err(|e| e.to_string())?;
        if resp.error_code != 0 {
            return Err(resp.error_message.unwrap_or_default());
        }
        let b: [u8; 8] = resp.payload[..]
            .try_into()
            .map_err(|_| "a malformed propose response".to_string())?;
        Ok(u64::from_be_bytes(b))
    }

    /// Serves a forwarded proposal: appends it if this broker is the controller.
    pub async fn handle_propose(&self, req: RaftRpcRequest) -> RaftRpcResponse {
        let fail = |code: ErrorCode, m: String| RaftRpcResponse {
            error_code: code.as_u16(),
            error_message: Some(m),
            payload: Bytes::new(),
        };
        let header = match batch::validate(&req.payload) {
            Ok(h) => h,
            Err(e) => return fail(ErrorCode::CorruptMessage, e.to_string()),
        };
        if let Err(e) = decode_snapshots(&req.payload)
            .and_then(|v| v.into_iter().try_for_each(|(_, d)| d.map(|_| ())))
        {
            return fail(
                ErrorCode::InvalidRequest,
                format!("not a metadata snapshot: {e}"),
            );
        }
        let appended = tokio::time::timeout(
            PROPOSE_TIMEOUT,
            self.partition.append(req.payload, &header, ACKS_ALL),
        )
        .await;
        match appended {
            Ok(Ok(out)) => RaftRpcResponse {
                error_code: 0,
                error_message: None,
                payload: Bytes::copy_from_slice(&out.base_offset.to_be_bytes()),
            },
            Ok(Err(e)) => fail(e.code(), e.to_string()),
            Err(_) => fail(
                ErrorCode::RequestTimedOut,
                "metadata commit timed out".into(),
            ),
        }
    }

    async fn wait_applied(&self, offset: u64, deadline: Instant) -> Result<(), TopicError> {
        let mut rx = self.applied.subscribe();
        let r = tokio::time::timeout_at(deadline, rx.wait_for(|a| *a >= offset)).await;
        match r {
            Ok(Ok(_)) => Ok(()),
            _ => Err(propose_err(
                ErrorCode::RequestTimedOut,
                format!("metadata entry {offset} committed but not applied here in time"),
            )),
        }
    }

    /// True once this broker's metadata is as current as the controller's was a moment ago: it is the
    /// controller and has applied its own high watermark, or it has applied the high watermark the
    /// controller reported in leader gossip (`hint_hwm`; gossip is kept in memory only, so any report
    /// arrived after this broker started). A starting broker answers clients only from then on.
    pub fn caught_up(&self, hint_hwm: Option<u64>) -> bool {
        let target = if self.is_leader() {
            self.partition.high_watermark()
        } else {
            match hint_hwm {
                Some(h) => h,
                None => return false,
            }
        };
        self.applied_offset() >= target
    }

    fn record_outcome(&self, offset: u64, accepted: bool) {
        if let Ok(mut o) = self.outcomes.lock() {
            o.insert(offset, accepted);
            while o.len() > OUTCOMES_KEPT {
                o.pop_first();
            }
        }
    }

    /// Applies committed metadata entries to `broker.registry` as the high watermark moves, until `stop`.
    pub async fn run_applier(self: Arc<Self>, broker: Arc<Broker>, stop: CancellationToken) {
        let mut hwm = self.partition.watch_high_watermark();
        loop {
            let target = *hwm.borrow_and_update();
            let mut next = self.applied_offset();
            while next < target {
                let batches = match self.partition.read(next, APPLY_READ_BYTES) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(offset = next, error = %e, "reading the metadata log failed");
                        break;
                    }
                };
                if batches.is_empty() {
                    break;
                }
                for b in batches {
                    let end = match batch::RecordBatchHeader::parse(&b) {
                        Ok(h) => h.next_offset(),
                        Err(e) => {
                            tracing::error!(offset = next, error = %e, "a corrupt metadata batch");
                            break;
                        }
                    };
                    match decode_snapshots(&b) {
                        Ok(docs) => {
                            for (off, doc) in docs {
                                if off < next {
                                    continue;
                                }
                                let accepted = match doc {
                                    Ok(d) => broker.registry.apply_snapshot(d).await,
                                    Err(e) => {
                                        tracing::error!(offset = off, error = %e, "skipping an undecodable metadata entry");
                                        false
                                    }
                                };
                                self.record_outcome(off, accepted);
                            }
                        }
                        Err(e) => {
                            tracing::error!(offset = next, error = %e, "skipping an undecodable metadata batch")
                        }
                    }
                    next = end.max(next);
                    self.applied.send_replace(next);
                }
            }
            tokio::select! {
                r = hwm.changed() => if r.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Stops the metadata replica (flushing it).
    pub async fn shutdown(&self) {
        if let Err(e) = self.partition.shutdown().await {
            tracing::warn!(error = %e, "metadata log shutdown failed");
        }
    }
}
