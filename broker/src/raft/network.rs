//! The Raft network: partition groups on this broker talk to their peers' groups over the broker protocol's
//! internal RaftRpc API (key 100).
//!
//! - [`NoNetwork`]: the factory of single-member groups, which never send an RPC.
//! - [`RaftNet`]: one per broker. It holds the node-address book (from `--peers`), **one pipelined TCP
//!   connection per peer broker shared by every group** ([`PeerClient`]), and the registry of local groups
//!   (group name → `Raft` handle) that [`RaftNet::handle`] dispatches incoming RPCs to.
//! - [`GroupNetwork`] / [`GroupClient`]: openraft's `RaftNetworkFactory` / `RaftNetworkV2` for one group,
//!   forwarding to the shared peer connection.
//! - Quiescence pings (RaftRpc kind 6, no group) are answered here from the registry's quiet states
//!   ([`super::quiesce`]).
//!
//! Payloads are bincode 2 (serde) encodings of openraft's request/response types wrapped in an
//! [`Envelope`] naming the target node (a misaddressed RPC is refused, never applied to the wrong replica).
//! Entry payloads are therefore copied by serde; the zero-copy frame of the design notes (§5.6) is future work.
//!
//! Invariants:
//! - At most [`PEER_INFLIGHT_MAX`] RPCs are outstanding per peer connection; more callers wait (bounded by
//!   their own timeout). Every call is bounded by a timeout ([`CONNECT_TIMEOUT`] to connect, the RPC's TTL
//!   for the rest); a timed-out or failed write drops the connection (framing may be broken).
//! - A failed connect backs off exponentially between [`RECONNECT_BACKOFF_MIN`] and
//!   [`RECONNECT_BACKOFF_MAX`]; calls during the back-off fail at once as `Unreachable`.
//! - Error mapping: cannot connect / connection lost / peer does not host the group / peer's group stopped
//!   → `Unreachable` (openraft backs off); TTL elapsed → `Timeout`; undecodable response → `Network`.
//! - Nothing here panics on network input.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use openraft::errors::{
    NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, Raft, RaftNetworkFactory, RaftNetworkV2};
use runnel_protocol::codec::frame_codec;
use runnel_protocol::frame::{decode_response, encode_request, response_correlation_id};
use runnel_protocol::limits::FRAME_SIZE_MAX;
use runnel_protocol::messages::raft_rpc::{
    RaftRpcRequest, RaftRpcResponse, RAFT_RPC_APPEND, RAFT_RPC_PRE_VOTE, RAFT_RPC_QUIESCE,
    RAFT_RPC_SNAPSHOT, RAFT_RPC_STREAM_APPEND, RAFT_RPC_TRANSFER_LEADER, RAFT_RPC_VOTE,
};
use runnel_protocol::{ApiKey, ErrorCode, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::quiesce::GroupQuiet;
use super::state_machine::HwmStateMachine;
use super::types::{PartitionRaft, SnapshotMeta, Vote};

type Snapshot = openraft::alias::SnapshotOf<PartitionRaft, std::io::Cursor<Vec<u8>>>;
/// A local group's Raft handle, as the registry keeps it.
pub type GroupRaft = Raft<PartitionRaft, HwmStateMachine>;

/// Most RPCs outstanding on one peer connection.
pub const PEER_INFLIGHT_MAX: usize = 256;
/// Longest a connect to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First pause after a failed connect; it doubles up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between connect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest a full-snapshot install may take (snapshots are tiny: the retention boundary only).
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an AppendEntries carrying entries may take (heartbeats keep openraft's short TTL).
pub const APPEND_WITH_ENTRIES_TTL: Duration = Duration::from_secs(10);
/// How a broker answers a RaftRpc kind it does not know (older brokers say the same).
const UNKNOWN_KIND: &str = "unknown raft rpc kind";
/// Most AppendEntries of one replication stream in flight to one follower.
pub const APPEND_PIPELINE_MAX: usize = 8;
/// Most entries (record batches of up to `BATCH_SIZE_BYTES_MAX` each) in one AppendEntries, so that the
/// request always fits in one frame.
pub const ENTRIES_PER_APPEND_MAX: u64 =
    (FRAME_SIZE_MAX / runnel_protocol::limits::BATCH_SIZE_BYTES_MAX) as u64 - 1;
/// Largest RaftRpc payload decoded (bincode's allocation limit); the frame bound caps it anyway.
pub const RPC_PAYLOAD_MAX: usize = FRAME_SIZE_MAX;
/// The client id RaftRpc requests carry.
pub const RAFT_CLIENT_ID: &str = "raft";

fn rpc_cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<RPC_PAYLOAD_MAX>()
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Bytes, String> {
    bincode::serde::encode_to_vec(v, rpc_cfg())
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match bincode::serde::decode_from_slice::<T, _>(b, rpc_cfg()) {
        Ok((v, n)) if n == b.len() => Ok(v),
        Ok((_, n)) => Err(format!("{} trailing bytes after the payload", b.len() - n)),
        Err(e) => Err(e.to_string()),
    }
}

/// Every RaftRpc payload: the node the RPC is meant for, and the openraft message.
#[derive(Serialize, Deserialize)]
pub struct Envelope<T> {
    pub target: u64,
    pub body: T,
}

/// A full snapshot on the wire (the data is the state machine's small blob).
#[derive(Serialize, Deserialize)]
struct SnapshotRpc {
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The factory for groups with no remote members.
#[derive(Clone, Debug, Default)]
pub struct NoNetwork;

/// A connection that never connects.
#[derive(Clone, Debug, Default)]
pub struct NoConnection;

fn no_network() -> Unreachable<PartitionRaft> {
    Unreachable::new(&io::Error::new(
        io::ErrorKind::NotConnected,
        "a single-member group has no peers",
    ))
}

impl RaftNetworkFactory<PartitionRaft> for NoNetwork {
    type Network = NoConnection;

    async fn new_client(&mut self, _target: u64, _node: &openraft::BasicNode) -> NoConnection {
        NoConnection
    }
}

impl RaftNetworkV2<PartitionRaft> for NoConnection {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Err(RPCError::Unreachable(no_network()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Err(RPCError::Unreachable(no_network()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: Vote,
        _snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        Err(StreamingError::Unreachable(no_network()))
    }
}

/// Why a call to a peer failed (before openraft's error types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Cannot connect, backing off, the connection was lost, or the peer cannot serve the group now.
    Unreachable(String),
    /// The call's time budget ran out.
    Timeout,
    /// The peer answered something undecodable.
    Network(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(s) => write!(f, "unreachable: {s}"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Network(s) => write!(f, "network error: {s}"),
        }
    }
}

type Pending = HashMap<u32, oneshot::Sender<Result<RaftRpcResponse, CallError>>>;

/// The sending side of a group's follower append lane.
type AppendLane = mpsc::UnboundedSender<(
    AppendEntriesRequest<PartitionRaft>,
    oneshot::Sender<RaftRpcResponse>,
)>;

/// The response to a RaftRpc already written to the peer (see [`PeerClient::send`]).
pub type PendingCall =
    std::pin::Pin<Box<dyn Future<Output = Result<RaftRpcResponse, CallError>> + Send + 'static>>;

/// State shared by a connection's writer side (the callers) and its reader task.
struct ConnShared {
    pending: Mutex<Pending>,
    dead: AtomicBool,
}

impl ConnShared {
    fn take(&self, cid: u32) -> Option<oneshot::Sender<Result<RaftRpcResponse, CallError>>> {
        self.pending.lock().ok().and_then(|mut p| p.remove(&cid))
    }

    /// Marks the connection dead and fails every pending call (their senders drop).
    fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
    }
}

struct Conn {
    wr: OwnedWriteHalf,
    shared: Arc<ConnShared>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.shared.kill();
    }
}

enum ConnState {
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
    Up(Conn),
}

/// The one pipelined connection to a peer broker, shared by all groups. Requests carry correlation ids;
/// responses may come back in any order.
pub struct PeerClient {
    target: u64,
    addr: String,
    inflight: Arc<Semaphore>,
    /// The peer answered a pipelined AppendEntries with "unknown kind" (an older broker, mid rolling
    /// upgrade): replicate to it one request at a time until the connection is replaced.
    no_stream_append: AtomicBool,
    next_cid: AtomicU32,
    conn: tokio::sync::Mutex<ConnState>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerClient")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Writes every chunk with vectored writes (one syscall for a whole small frame; TCP_NODELAY is on).
async fn write_all_vectored(wr: &mut OwnedWriteHalf, chunks: &[Bytes]) -> io::Result<()> {
    let mut i = 0; // first chunk not fully written
    let mut off = 0; // bytes of chunks[i] already written
    while i < chunks.len() {
        let slices: Vec<io::IoSlice<'_>> = chunks
            .iter()
            .skip(i)
            .enumerate()
            .map(|(k, c)| {
                io::IoSlice::new(if k == 0 {
                    c.get(off..).unwrap_or(&[])
                } else {
                    c
                })
            })
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while i < chunks.len() && n > 0 {
            let left = chunks[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
        while i < chunks.len() && chunks[i].len() == off {
            i += 1;
            off = 0;
        }
    }
    Ok(())
}

async fn read_loop(rd: tokio::net::tcp::OwnedReadHalf, shared: Arc<ConnShared>) {
    let mut frames = FramedRead::new(rd, frame_codec());
    while let Some(Ok(frame)) = frames.next().await {
        let frame = frame.freeze();
        let Ok(cid) = response_correlation_id(&frame) else {
            break;
        };
        let Some(tx) = shared.take(cid) else {
            continue; // its caller timed out and left
        };
        let r = match decode_response(ApiKey::RaftRpc, frame) {
            Ok((_, Ok(Response::RaftRpc(r)))) => Ok(r),
            Ok((_, Ok(other))) => Err(CallError::Network(format!(
                "a {:?} response to a RaftRpc request",
                other.api_key()
            ))),
            // A request-level error (draining broker, unsupported API): the peer cannot serve us now.
            Ok((_, Err(e))) => Err(CallError::Unreachable(format!(
                "{}: {}",
                e.code.name(),
                e.message
            ))),
            Err(e) => Err(CallError::Network(e.to_string())),
        };
        let _ = tx.send(r);
    }
    shared.kill();
}

impl PeerClient {
    fn new(target: u64, addr: String) -> PeerClient {
        PeerClient {
            target,
            addr,
            inflight: Arc::new(Semaphore::new(PEER_INFLIGHT_MAX)),
            no_stream_append: AtomicBool::new(false),
            next_cid: AtomicU32::new(1),
            conn: tokio::sync::Mutex::new(ConnState::Down {
                retry_at: Instant::now(),
                backoff: RECONNECT_BACKOFF_MIN,
            }),
        }
    }

    /// Makes sure `st` is `Up`, connecting if allowed; fails as `Unreachable` while backing off.
    async fn ensure_connected(&self, st: &mut ConnState) -> Result<(), CallError> {
        let backoff = match st {
            ConnState::Up(c) if !c.shared.dead.load(Ordering::Acquire) => return Ok(()),
            ConnState::Up(_) => RECONNECT_BACKOFF_MIN,
            ConnState::Down { retry_at, backoff } => {
                if Instant::now() < *retry_at {
                    return Err(CallError::Unreachable(format!(
                        "node {} ({}): backing off after a failed connect",
                        self.target, self.addr
                    )));
                }
                *backoff
            }
        };
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr.as_str())).await;
        let stream = match connected {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                *st = ConnState::Down {
                    retry_at: Instant::now() + backoff,
                    backoff: (backoff * 2).min(RECONNECT_BACKOFF_MAX),
                };
                return Err(CallError::Unreachable(format!(
                    "node {} ({}): {e}",
                    self.target, self.addr
                )));
            }
            Err(_) => {
                *st = ConnState::Down {
                    retry_at: Instant::now() + backoff,
                    backoff: (backoff * 2).min(RECONNECT_BACKOFF_MAX),
                };
                return Err(CallError::Unreachable(format!(
                    "node {} ({}): connect timed out",
                    self.target, self.addr
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(ConnShared {
            pending: Mutex::new(HashMap::new()),
            dead: AtomicBool::new(false),
        });
        let reader = tokio::spawn(read_loop(rd, shared.clone()));
        *st = ConnState::Up(Conn { wr, shared, reader });
        // A new connection may reach an upgraded broker.
        self.no_stream_append.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one request and waits for its response, all within `ttl`.
    pub async fn call(
        &self,
        req: RaftRpcRequest,
        ttl: Duration,
    ) -> Result<RaftRpcResponse, CallError> {
        self.send(req, ttl).await?.await
    }

    /// The first half of [`PeerClient::call`]: writes the request and returns the future of its response
    /// (bounded by the same `ttl`, counted from now). Requests sent by calls that return one after another
    /// are written to the connection in that order.
    pub async fn send(&self, req: RaftRpcRequest, ttl: Duration) -> Result<PendingCall, CallError> {
        let deadline = Instant::now() + ttl;
        let slot = tokio::time::timeout_at(deadline, self.inflight.clone().acquire_owned())
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|_| CallError::Unreachable("peer client closed".into()))?;
        let cid = self.next_cid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let chunks = encode_request(cid, RAFT_CLIENT_ID, &Request::RaftRpc(req));
        let shared = {
            let mut st = tokio::time::timeout_at(deadline, self.conn.lock())
                .await
                .map_err(|_| CallError::Timeout)?;
            self.ensure_connected(&mut st).await?;
            let ConnState::Up(conn) = &mut *st else {
                return Err(CallError::Unreachable("not connected".into()));
            };
            if let Ok(mut p) = conn.shared.pending.lock() {
                p.insert(cid, tx);
            }
            let write = write_all_vectored(&mut conn.wr, &chunks);
            let written = tokio::time::timeout_at(deadline, write).await;
            let shared = conn.shared.clone();
            match written {
                Ok(Ok(())) => shared,
                failed => {
                    // A partial write breaks the framing: drop the connection, reconnect on the next call.
                    *st = ConnState::Down {
                        retry_at: Instant::now(),
                        backoff: RECONNECT_BACKOFF_MIN,
                    };
                    return Err(match failed {
                        Ok(Err(e)) => CallError::Unreachable(format!(
                            "node {} ({}): {e}",
                            self.target, self.addr
                        )),
                        _ => CallError::Timeout,
                    });
                }
            }
        };
        let lost = format!("node {} ({}): connection lost", self.target, self.addr);
        Ok(Box::pin(async move {
            let _slot = slot;
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(CallError::Unreachable(lost)),
                Err(_) => {
                    shared.take(cid);
                    Err(CallError::Timeout)
                }
            }
        }))
    }

    /// Whether a connection is up right now (tests and diagnostics).
    pub async fn is_connected(&self) -> bool {
        matches!(&*self.conn.lock().await, ConnState::Up(c) if !c.shared.dead.load(Ordering::Acquire))
    }
}

/// A local group in the registry: its Raft handle and, for groups that may quiesce, their quiet state.
#[derive(Clone)]
struct Registered {
    raft: GroupRaft,
    quiet: Option<Arc<GroupQuiet>>,
}

/// This broker's Raft network: address book, peer connections and the local group registry.
pub struct RaftNet {
    node_id: u64,
    book: HashMap<u64, String>,
    peers: Mutex<HashMap<u64, Arc<PeerClient>>>,
    groups: RwLock<HashMap<String, Registered>>,
    /// Which local follower groups each leader broker's quiescence pings keep quiet.
    follower_side: super::quiesce::FollowerSide,
    /// Per local group, the follower-side lane of pipelined AppendEntries ([`append_lane`]).
    lanes: Mutex<HashMap<String, AppendLane>>,
    /// Most AppendEntries any lane has held handed to Raft and not yet answered (> 1: pipelining works).
    lane_depth_max: Arc<std::sync::atomic::AtomicUsize>,
    /// AppendEntries (heartbeats included) received for local groups.
    appends_received: std::sync::atomic::AtomicU64,
    /// Timing of every replicated group on this broker.
    timing: super::GroupConfig,
}

impl std::fmt::Debug for RaftNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNet")
            .field("node_id", &self.node_id)
            .field("book", &self.book)
            .finish()
    }
}

fn error_response(code: ErrorCode, message: String) -> RaftRpcResponse {
    RaftRpcResponse {
        error_code: code.as_u16(),
        error_message: Some(message),
        payload: Bytes::new(),
    }
}

/// A stopped group answers with BROKER_SHUTTING_DOWN, a failed one with STORAGE_ERROR.
fn fatal_response<E: std::fmt::Display>(e: E) -> RaftRpcResponse {
    let s = e.to_string();
    let code = if s.contains("shut") || s.contains("Stopped") {
        ErrorCode::BrokerShuttingDown
    } else {
        ErrorCode::StorageError
    };
    error_response(code, s)
}

fn ok_response<T: Serialize>(v: &T) -> RaftRpcResponse {
    match encode(v) {
        Ok(payload) => RaftRpcResponse {
            error_code: 0,
            error_message: None,
            payload,
        },
        Err(e) => error_response(ErrorCode::Unknown, format!("encoding the response: {e}")),
    }
}

impl RaftNet {
    /// `book` maps node ids to `host:port` (this node's own entry is ignored).
    pub fn new(node_id: u64, book: impl IntoIterator<Item = (u64, String)>) -> Arc<RaftNet> {
        RaftNet::with_timing(node_id, book, super::GroupConfig::replicated())
    }

    /// A network whose groups use `timing` (see [`super::GroupConfig::replicated_with`]).
    pub fn with_timing(
        node_id: u64,
        book: impl IntoIterator<Item = (u64, String)>,
        timing: super::GroupConfig,
    ) -> Arc<RaftNet> {
        Arc::new(RaftNet {
            node_id,
            book: book.into_iter().filter(|(n, _)| *n != node_id).collect(),
            peers: Mutex::new(HashMap::new()),
            groups: RwLock::new(HashMap::new()),
            follower_side: super::quiesce::FollowerSide::new(Duration::from_millis(
                timing.election_timeout_max_ms,
            )),
            lanes: Mutex::new(HashMap::new()),
            lane_depth_max: Arc::default(),
            appends_received: Default::default(),
            timing,
        })
    }

    /// Timing of the replicated groups on this broker.
    pub fn timing(&self) -> &super::GroupConfig {
        &self.timing
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The shared connection to `target`, created on first use.
    pub fn peer(&self, target: u64) -> Result<Arc<PeerClient>, CallError> {
        let addr = self
            .book
            .get(&target)
            .ok_or_else(|| CallError::Unreachable(format!("node {target} is not in --peers")))?;
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| CallError::Unreachable("peer table poisoned".into()))?;
        Ok(peers
            .entry(target)
            .or_insert_with(|| Arc::new(PeerClient::new(target, addr.clone())))
            .clone())
    }

    /// Registers a local group for incoming RPCs; refuses a name already registered (two replicas of one
    /// group on one node would answer for each other). A group that may `quiesce` gets its quiet state.
    pub(crate) fn register(
        &self,
        group: &str,
        raft: GroupRaft,
        quiesce: bool,
    ) -> Result<Option<Arc<GroupQuiet>>, String> {
        let mut g = self
            .groups
            .write()
            .map_err(|_| "group registry poisoned".to_string())?;
        if g.contains_key(group) {
            return Err(format!(
                "raft group {group:?} is already open on node {}",
                self.node_id
            ));
        }
        let quiet = quiesce.then(|| Arc::new(GroupQuiet::new(raft.clone(), self.node_id)));
        g.insert(
            group.to_string(),
            Registered {
                raft,
                quiet: quiet.clone(),
            },
        );
        Ok(quiet)
    }

    fn registered(&self, group: &str) -> Option<Registered> {
        self.groups.read().ok().and_then(|g| g.get(group).cloned())
    }

    /// The quiet state of a local group that may quiesce.
    pub(crate) fn quiet_group(&self, group: &str) -> Option<Arc<GroupQuiet>> {
        self.registered(group).and_then(|r| r.quiet)
    }

    /// Every local group that may quiesce, by name.
    pub(crate) fn quiet_groups(&self) -> Vec<(String, Arc<GroupQuiet>)> {
        self.groups
            .read()
            .map(|g| {
                g.iter()
                    .filter_map(|(n, r)| r.quiet.clone().map(|q| (n.clone(), q)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn follower_side(&self) -> &super::quiesce::FollowerSide {
        &self.follower_side
    }

    /// The other brokers of the address book.
    pub fn peer_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.book.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub(crate) fn deregister(&self, group: &str) {
        if let Ok(mut g) = self.groups.write() {
            g.remove(group);
        }
        // Its lane ends once the requests already queued are answered.
        self.lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group);
    }

    /// Names of the local groups (tests and diagnostics).
    pub fn group_names(&self) -> Vec<String> {
        self.groups
            .read()
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Serves one incoming RaftRpc against the local group it names. Unknown group →
    /// UNKNOWN_TOPIC_OR_PARTITION; misaddressed or undecodable → INVALID_REQUEST; stopped group →
    /// BROKER_SHUTTING_DOWN.
    pub async fn handle(&self, req: RaftRpcRequest) -> RaftRpcResponse {
        if req.kind == RAFT_RPC_QUIESCE {
            return match self.handle_quiet_ping(&req.payload) {
                Ok(pong) => ok_response(&pong),
                Err(e) => error_response(ErrorCode::InvalidRequest, e),
            };
        }
        let Some(Registered { raft, quiet }) = self.registered(&req.group) else {
            return error_response(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "node {} does not host raft group {:?}",
                    self.node_id, req.group
                ),
            );
        };
        match req.kind {
            RAFT_RPC_APPEND => match self.open::<AppendEntriesRequest<PartitionRaft>>(&req) {
                Ok(rpc) => match self.append_entries(&raft, rpc).await {
                    Ok(r) => ok_response(&r),
                    Err(e) => fatal_response(e),
                },
                Err(e) => e,
            },
            RAFT_RPC_STREAM_APPEND => self.submit_stream_append(req).await,
            RAFT_RPC_VOTE => match self.open::<VoteRequest<PartitionRaft>>(&req) {
                Ok(rpc) => match raft.vote(rpc).await {
                    Ok(r) => ok_response(&r),
                    Err(e) => fatal_response(e),
                },
                Err(e) => e,
            },
            RAFT_RPC_PRE_VOTE => match self.open::<VoteRequest<PartitionRaft>>(&req) {
                Ok(rpc) => match raft.pre_vote(rpc).await {
                    Ok(r) => ok_response(&r),
                    Err(e) => fatal_response(e),
                },
                Err(e) => e,
            },
            RAFT_RPC_TRANSFER_LEADER => {
                // The named replica campaigns at once; as leader it must tick (heartbeats).
                if let Some(q) = &quiet {
                    q.wake();
                }
                match self.open::<TransferLeaderRequest<PartitionRaft>>(&req) {
                    Ok(rpc) => match raft.handle_transfer_leader(rpc).await {
                        Ok(r) => ok_response(&r),
                        Err(e) => fatal_response(e),
                    },
                    Err(e) => e,
                }
            }
            RAFT_RPC_SNAPSHOT => match self.open::<SnapshotRpc>(&req) {
                Ok(s) => {
                    let snapshot = Snapshot {
                        meta: s.meta,
                        snapshot: std::io::Cursor::new(s.data),
                    };
                    match raft.install_full_snapshot(s.vote, snapshot).await {
                        Ok(r) => ok_response(&r),
                        Err(e) => fatal_response(e),
                    }
                }
                Err(e) => e,
            },
            k => error_response(ErrorCode::InvalidRequest, format!("{UNKNOWN_KIND} {k}")),
        }
    }

    /// Hands one AppendEntries of a pipelined replication stream to its group's append lane, at once (the
    /// caller calls this in the order the requests arrived, so they reach Raft in that order), and returns
    /// the future of its answer: a `StreamAppendResult`, or an error response if the lane ended first (the
    /// leader then restarts its stream).
    pub fn submit_stream_append(
        &self,
        req: RaftRpcRequest,
    ) -> impl Future<Output = RaftRpcResponse> + Send + 'static {
        let submitted = self.submit_to_lane(&req);
        async move {
            match submitted {
                Err(r) => r,
                Ok(reply) => reply.await.unwrap_or_else(|_| {
                    error_response(
                        ErrorCode::BrokerShuttingDown,
                        "the append stream ended before this request was answered".into(),
                    )
                }),
            }
        }
    }

    fn submit_to_lane(
        &self,
        req: &RaftRpcRequest,
    ) -> Result<oneshot::Receiver<RaftRpcResponse>, RaftRpcResponse> {
        self.appends_received.fetch_add(1, Ordering::Relaxed);
        let raft = self.registered(&req.group).map(|r| r.raft).ok_or_else(|| {
            error_response(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "node {} does not host raft group {:?}",
                    self.node_id, req.group
                ),
            )
        })?;
        let rpc = self.open::<AppendEntriesRequest<PartitionRaft>>(req)?;
        let (reply, answer) = oneshot::channel();
        let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let mut item = (rpc, reply);
        if let Some(lane) = lanes.get(&req.group) {
            match lane.send(item) {
                Ok(()) => return Ok(answer),
                Err(mpsc::error::SendError(back)) => item = back,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // A fresh channel with its receiver in hand cannot refuse.
        let _ = tx.send(item);
        lanes.insert(req.group.clone(), tx);
        tokio::spawn(append_lane(raft, rx, self.lane_depth_max.clone()));
        Ok(answer)
    }

    /// One-at-a-time AppendEntries (heartbeats of a peer without pipelined appends), counted.
    async fn append_entries(
        &self,
        raft: &GroupRaft,
        rpc: AppendEntriesRequest<PartitionRaft>,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, openraft::errors::RaftError<PartitionRaft>>
    {
        self.appends_received.fetch_add(1, Ordering::Relaxed);
        raft.append_entries(rpc).await
    }

    /// AppendEntries (heartbeats included) this broker has received for its groups.
    pub fn appends_received(&self) -> u64 {
        self.appends_received.load(Ordering::Relaxed)
    }

    /// The most pipelined AppendEntries one of this broker's groups has had in Raft's hands at once.
    pub fn append_lane_depth_max(&self) -> usize {
        self.lane_depth_max.load(Ordering::Relaxed)
    }

    /// Decodes an envelope and checks it is addressed to this node.
    fn open<T: DeserializeOwned>(&self, req: &RaftRpcRequest) -> Result<T, RaftRpcResponse> {
        let env: Envelope<T> = decode(&req.payload).map_err(|e| {
            error_response(
                ErrorCode::InvalidRequest,
                format!("undecodable raft rpc: {e}"),
            )
        })?;
        if env.target != self.node_id {
            return Err(error_response(
                ErrorCode::InvalidRequest,
                format!(
                    "raft rpc for node {} reached node {}",
                    env.target, self.node_id
                ),
            ));
        }
        Ok(env.body)
    }
}

/// One group's follower side of pipelined replication: feeds the AppendEntries it is given, in order, to
/// `Raft::stream_append` (which hands each to the core without waiting for the previous one's flush) and
/// answers them in order. Ends at the first error (a conflict, a higher vote: the leader's stream ends
/// there too) or when the group stops; requests queued behind are then answered with an error.
/// Its channels are unbounded but their contents are not: every request in them holds one of its
/// connection's in-flight slots (`max_inflight_per_connection`) until answered.
async fn append_lane(
    raft: GroupRaft,
    mut requests: mpsc::UnboundedReceiver<(
        AppendEntriesRequest<PartitionRaft>,
        oneshot::Sender<RaftRpcResponse>,
    )>,
    depth_max: Arc<std::sync::atomic::AtomicUsize>,
) {
    let (to_raft, from_lane) = mpsc::unbounded_channel();
    let input = futures::stream::unfold(from_lane, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let mut answers = std::pin::pin!(raft.stream_append(Box::pin(input)));
    let mut waiting: std::collections::VecDeque<oneshot::Sender<RaftRpcResponse>> =
        std::collections::VecDeque::new();
    loop {
        tokio::select! {
            biased;
            answer = answers.next(), if !waiting.is_empty() => {
                let Some(reply) = waiting.pop_front() else { break };
                let (response, go_on) = match answer {
                    Some(Ok(r)) => (ok_response(&r), r.is_ok()),
                    Some(Err(fatal)) => (fatal_response(fatal), false),
                    None => (
                        error_response(ErrorCode::BrokerShuttingDown, "the append stream ended".into()),
                        false,
                    ),
                };
                let _ = reply.send(response);
                if !go_on {
                    break;
                }
            }
            next = requests.recv() => {
                let Some((rpc, reply)) = next else { break };
                if to_raft.send(rpc).is_err() {
                    break;
                }
                waiting.push_back(reply);
                depth_max.fetch_max(waiting.len(), Ordering::Relaxed);
            }
        }
    }
}

/// openraft's network factory for one group.
#[derive(Clone, Debug)]
pub struct GroupNetwork {
    pub net: Arc<RaftNet>,
    pub group: Arc<str>,
}

impl RaftNetworkFactory<PartitionRaft> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, _node: &openraft::BasicNode) -> GroupClient {
        GroupClient {
            net: self.net.clone(),
            group: self.group.clone(),
            target,
        }
    }
}

/// One group's client to one peer; the connection underneath is the peer's shared [`PeerClient`].
#[derive(Clone, Debug)]
pub struct GroupClient {
    net: Arc<RaftNet>,
    group: Arc<str>,
    target: u64,
}

fn to_rpc_error(
    e: CallError,
    action: RPCTypes,
    id: u64,
    target: u64,
    ttl: Duration,
) -> RPCError<PartitionRaft> {
    match e {
        CallError::Unreachable(s) => RPCError::Unreachable(Unreachable::from_string(s)),
        CallError::Timeout => RPCError::Timeout(Timeout {
            action,
            id,
            target,
            timeout: ttl,
        }),
        CallError::Network(s) => RPCError::Network(NetworkError::from_string(s)),
    }
}

impl GroupClient {
    /// A RequestVote or Pre-Vote RPC (`kind`): same request and response, same error mapping.
    async fn vote_rpc(
        &self,
        kind: u8,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let ttl = option.hard_ttl();
        self.call(kind, rpc, ttl)
            .await
            .map_err(|e| to_rpc_error(e, RPCTypes::Vote, self.net.node_id, self.target, ttl))
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        kind: u8,
        body: Q,
        ttl: Duration,
    ) -> Result<A, CallError> {
        let payload = encode(&Envelope {
            target: self.target,
            body,
        })
        .map_err(CallError::Network)?;
        let peer = self.net.peer(self.target)?;
        let resp = peer
            .call(
                RaftRpcRequest {
                    group: self.group.to_string(),
                    kind,
                    payload,
                },
                ttl,
            )
            .await?;
        if resp.error_code != 0 {
            return Err(CallError::Unreachable(format!(
                "node {}: {}: {}",
                self.target,
                ErrorCode::from_u16(resp.error_code).name(),
                resp.error_message.unwrap_or_default()
            )));
        }
        decode(&resp.payload).map_err(CallError::Network)
    }
}

/// A pipelined AppendEntries on its way: its answer, the last log id it carries and its TTL.
struct InFlightAppend {
    answer: PendingCall,
    last: Option<openraft::alias::LogIdOf<PartitionRaft>>,
    ttl: Duration,
}

/// State of one pipelined replication stream to one follower.
struct AppendStream<S> {
    client: GroupClient,
    input: S,
    input_done: bool,
    in_flight: std::collections::VecDeque<InFlightAppend>,
    ended: bool,
}

type StreamItem =
    Result<openraft::raft::StreamAppendResult<PartitionRaft>, RPCError<PartitionRaft>>;

impl<S> AppendStream<S>
where
    S: futures::Stream<Item = AppendEntriesRequest<PartitionRaft>> + Unpin,
{
    /// Writes one request to the follower (in call order) and queues its answer.
    async fn send(&mut self, rpc: AppendEntriesRequest<PartitionRaft>) -> Result<(), StreamItem> {
        let ttl = append_ttl(&rpc, self.client.net.timing().heartbeat_interval_ms);
        let last = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        let err = |e: CallError, c: &GroupClient| {
            Err(to_rpc_error(
                e,
                RPCTypes::AppendEntries,
                c.net.node_id,
                c.target,
                ttl,
            ))
        };
        let payload = match encode(&Envelope {
            target: self.client.target,
            body: rpc,
        }) {
            Ok(p) => p,
            Err(e) => return Err(err(CallError::Network(e), &self.client)),
        };
        let peer = match self.client.net.peer(self.client.target) {
            Ok(p) => p,
            Err(e) => return Err(err(e, &self.client)),
        };
        let req = RaftRpcRequest {
            group: self.client.group.to_string(),
            kind: RAFT_RPC_STREAM_APPEND,
            payload,
        };
        match peer.send(req, ttl).await {
            Ok(answer) => {
                self.in_flight
                    .push_back(InFlightAppend { answer, last, ttl });
                Ok(())
            }
            Err(e) => Err(err(e, &self.client)),
        }
    }

    /// The next answer, in request order, keeping up to [`APPEND_PIPELINE_MAX`] requests in flight.
    async fn next_answer(&mut self) -> Option<StreamItem> {
        if self.ended {
            return None;
        }
        loop {
            if self.in_flight.is_empty() {
                if self.input_done {
                    return None;
                }
                match self.input.next().await {
                    None => return None,
                    Some(rpc) => {
                        if let Err(e) = self.send(rpc).await {
                            self.ended = true;
                            return Some(e);
                        }
                        continue;
                    }
                }
            }
            let more = !self.input_done && self.in_flight.len() < APPEND_PIPELINE_MAX;
            let head = self.in_flight.front_mut()?;
            let answer = if more {
                tokio::select! {
                    biased;
                    a = &mut head.answer => a,
                    next = self.input.next() => {
                        match next {
                            None => self.input_done = true,
                            Some(rpc) => {
                                if let Err(e) = self.send(rpc).await {
                                    self.ended = true;
                                    return Some(e);
                                }
                            }
                        }
                        continue;
                    }
                }
            } else {
                (&mut head.answer).await
            };
            let head = self.in_flight.pop_front()?;
            let item = self.answer_item(answer, &head);
            // Past an error, a conflict or a partial append, later answers mean nothing: openraft restarts
            // the stream from what the follower reported.
            let go_on = matches!(&item, Ok(Ok(m)) if *m == head.last);
            if !go_on {
                self.ended = true;
            }
            return Some(item);
        }
    }

    fn answer_item(
        &self,
        answer: Result<RaftRpcResponse, CallError>,
        head: &InFlightAppend,
    ) -> StreamItem {
        let c = &self.client;
        let err = |e| {
            to_rpc_error(
                e,
                RPCTypes::AppendEntries,
                c.net.node_id,
                c.target,
                head.ttl,
            )
        };
        let resp = answer.map_err(err)?;
        if resp.error_code == ErrorCode::InvalidRequest.as_u16()
            && resp
                .error_message
                .as_deref()
                .is_some_and(|m| m.starts_with(UNKNOWN_KIND))
        {
            if let Ok(peer) = c.net.peer(c.target) {
                peer.no_stream_append.store(true, Ordering::Relaxed);
            }
        }
        if resp.error_code != 0 {
            return Err(err(CallError::Unreachable(format!(
                "node {}: {}: {}",
                c.target,
                ErrorCode::from_u16(resp.error_code).name(),
                resp.error_message.unwrap_or_default()
            ))));
        }
        decode(&resp.payload).map_err(|e| err(CallError::Network(e)))
    }
}

/// openraft's TTL for an AppendEntries is the heartbeat interval: right for heartbeats, far too short for
/// a payload of several batches (encode, send, fsync on the follower).
fn append_ttl(rpc: &AppendEntriesRequest<PartitionRaft>, heartbeat_ms: u64) -> Duration {
    let ttl = Duration::from_millis(heartbeat_ms);
    if rpc.entries.is_empty() {
        ttl
    } else {
        ttl.max(APPEND_WITH_ENTRIES_TTL)
    }
}

impl RaftNetworkV2<PartitionRaft> for GroupClient {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    /// Pipelined replication: up to [`APPEND_PIPELINE_MAX`] AppendEntries in flight to the follower, written
    /// in order on the shared peer connection; the follower hands them to Raft in arrival order
    /// ([`RaftNet::submit_stream_append`]); answers are yielded in request order.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> openraft::base::BoxFuture<
        's,
        Result<openraft::base::BoxStream<'s, StreamItem>, RPCError<PartitionRaft>>,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<PartitionRaft>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        let sequential = self
            .net
            .peer(self.target)
            .is_ok_and(|p| p.no_stream_append.load(Ordering::Relaxed));
        if sequential {
            return openraft::network::stream_append_sequential(self, input, option);
        }
        let state = AppendStream {
            client: self.clone(),
            input,
            input_done: false,
            in_flight: std::collections::VecDeque::new(),
            ended: false,
        };
        Box::pin(async move {
            let answers = futures::stream::unfold(state, |mut st| async move {
                st.next_answer().await.map(|item| (item, st))
            });
            let answers: openraft::base::BoxStream<'s, StreamItem> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        // openraft's TTL is the heartbeat interval: right for heartbeats, far too short for a catch-up
        // payload of several batches (encode, send, fsync on the follower).
        let ttl = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(APPEND_WITH_ENTRIES_TTL)
        };
        self.call(RAFT_RPC_APPEND, rpc, ttl).await.map_err(|e| {
            to_rpc_error(
                e,
                RPCTypes::AppendEntries,
                self.net.node_id,
                self.target,
                ttl,
            )
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        self.vote_rpc(RAFT_RPC_VOTE, rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        self.vote_rpc(RAFT_RPC_PRE_VOTE, rpc, option).await
    }

    /// Without this openraft's leadership transfer degrades to waiting out the old leader's lease: the
    /// voters would refuse the named replica's election for about two seconds (measured: a SIGTERM'd
    /// leader stalled writes 2–3 s; with it the new leader is elected in milliseconds).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        let ttl = option.hard_ttl();
        self.call(RAFT_RPC_TRANSFER_LEADER, req, ttl)
            .await
            .map_err(|e| {
                to_rpc_error(
                    e,
                    RPCTypes::TransferLeader,
                    self.net.node_id,
                    self.target,
                    ttl,
                )
            })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        let body = SnapshotRpc {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        let ttl = SNAPSHOT_RPC_TIMEOUT;
        let call = self.call::<_, SnapshotResponse<PartitionRaft>>(RAFT_RPC_SNAPSHOT, body, ttl);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = call => r.map_err(|e| match e {
                CallError::Unreachable(s) => StreamingError::Unreachable(Unreachable::from_string(s)),
                CallError::Timeout => StreamingError::Timeout(Timeout {
                    action: RPCTypes::InstallSnapshot,
                    id: self.net.node_id,
                    target: self.target,
                    timeout: ttl,
                }),
                CallError::Network(s) => StreamingError::Network(NetworkError::from_string(s)),
            }),
        }
    }
}
