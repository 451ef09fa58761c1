//! Replication over real TCP on 127.0.0.1: three replicas of one partition on three "nodes" (each a
//! [`RaftNet`] behind a minimal RaftRpc listener), plus the peer connection's limits and error mapping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use runnel_protocol::batch::{validate, RecordBatchBuilder, RecordBatchHeader};
use runnel_protocol::codec::frame_codec;
use runnel_protocol::frame::{decode_request, encode_response};
use runnel_protocol::messages::produce::ACKS_ALL;
use runnel_protocol::messages::raft_rpc::{
    RaftRpcRequest, RaftRpcResponse, RAFT_RPC_STREAM_APPEND, RAFT_RPC_VOTE,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::network::{CallError, RaftNet, PEER_INFLIGHT_MAX, RECONNECT_BACKOFF_MIN};
use crate::partition::{Partition, PartitionError, PartitionId, PartitionOptions};
use crate::storage::{LogConfig, StorageContext};

/// Bound on every "eventually" in these tests.
const DEADLINE: Duration = Duration::from_secs(20);

/// A minimal RaftRpc-only listener: what a broker's connection loop does for key 100.
async fn serve_rpc(
    listener: TcpListener,
    net: Arc<RaftNet>,
    stop: CancellationToken,
    accepted: Arc<AtomicUsize>,
    legacy: Arc<AtomicBool>,
) {
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = stop.cancelled() => break,
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let net = net.clone();
        let stop = stop.clone();
        let legacy = legacy.clone();
        conns.spawn(async move {
            let _ = stream.set_nodelay(true);
            let (rd, mut wr) = stream.into_split();
            let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(PEER_INFLIGHT_MAX);
            let writer = tokio::spawn(async move {
                while let Some(chunks) = rx.recv().await {
                    for c in chunks {
                        if wr.write_all(&c).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let mut frames = FramedRead::new(rd, frame_codec());
            loop {
                let f = tokio::select! {
                    f = frames.next() => f,
                    _ = stop.cancelled() => break,
                };
                let Some(Ok(f)) = f else { break };
                let Ok((h, Ok(Request::RaftRpc(req)))) = decode_request(f.freeze()) else {
                    break;
                };
                let tx = tx.clone();
                // A broker of before pipelined replication does not know the kind.
                if req.kind == RAFT_RPC_STREAM_APPEND && legacy.load(Ordering::SeqCst) {
                    let resp = Response::RaftRpc(RaftRpcResponse {
                        error_code: ErrorCode::InvalidRequest.as_u16(),
                        error_message: Some(format!("unknown raft rpc kind {}", req.kind)),
                        payload: Bytes::new(),
                    });
                    let _ = tx.send(encode_response(h.correlation_id, Ok(&resp))).await;
                    continue;
                }
                // As the broker does: pipelined appends reach their lane in arrival order.
                if req.kind == RAFT_RPC_STREAM_APPEND {
                    let answer = net.submit_stream_append(req);
                    tokio::spawn(async move {
                        let resp = Response::RaftRpc(answer.await);
                        let _ = tx.send(encode_response(h.correlation_id, Ok(&resp))).await;
                    });
                    continue;
                }
                let net = net.clone();
                tokio::spawn(async move {
                    let resp = Response::RaftRpc(net.handle(req).await);
                    let _ = tx.send(encode_response(h.correlation_id, Ok(&resp))).await;
                });
            }
            writer.abort();
        });
    }
    conns.close();
    conns.wait().await;
}

struct Node {
    id: u32,
    book: Vec<(u64, String)>,
    net: Arc<RaftNet>,
    stop: CancellationToken,
    /// Connections this node's listener accepted.
    accepted: Arc<AtomicUsize>,
    /// Answer pipelined appends like a broker that predates them ("unknown raft rpc kind").
    legacy: Arc<AtomicBool>,
    dir: tempfile::TempDir,
    partition: Option<Arc<Partition>>,
}

fn pid() -> PartitionId {
    PartitionId {
        topic: "r".into(),
        partition: 0,
    }
}

/// Binds `n` listeners and starts a RaftRpc server per node (no partition opened yet).
async fn cluster(n: u32) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let book: Vec<(u64, String)> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let id = i as u32 + 1;
        let net = RaftNet::new(u64::from(id), book.clone());
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicUsize::new(0));
        let legacy = Arc::new(AtomicBool::new(false));
        tokio::spawn(serve_rpc(
            l,
            net.clone(),
            stop.clone(),
            accepted.clone(),
            legacy.clone(),
        ));
        nodes.push(Node {
            id,
            legacy,
            book: book.clone(),
            net,
            stop,
            accepted,
            dir: tempfile::tempdir().unwrap(),
            partition: None,
        });
    }
    nodes
}

async fn open_replica(node: &mut Node, voters: &[u32]) {
    open_replica_with(node, voters, LogConfig::default()).await
}

async fn open_replica_with(node: &mut Node, voters: &[u32], cfg: LogConfig) {
    let p = Partition::open_with(
        pid(),
        node.dir.path().to_path_buf(),
        node.id,
        voters.to_vec(),
        cfg,
        StorageContext::new(),
        PartitionOptions::replicated(node.net.clone()),
    )
    .await
    .unwrap();
    node.partition = Some(p);
}

/// Stops a node: its partition (Raft group) and its listener.
async fn kill(node: &mut Node) {
    if let Some(p) = node.partition.take() {
        p.shutdown().await.unwrap();
    }
    node.stop.cancel();
}

/// Two records; the first value is padded with `pad` bytes.
/// Restarts a killed node on the same address and data dir (a fresh `RaftNet`, as after a process restart).
async fn restart(node: &mut Node, voters: &[u32]) {
    let addr = node
        .book
        .iter()
        .find(|(n, _)| *n == u64::from(node.id))
        .map(|(_, a)| a.clone())
        .unwrap();
    let l = TcpListener::bind(addr.as_str()).await.unwrap();
    node.net = RaftNet::new(u64::from(node.id), node.book.clone());
    node.stop = CancellationToken::new();
    tokio::spawn(serve_rpc(
        l,
        node.net.clone(),
        node.stop.clone(),
        node.accepted.clone(),
        node.legacy.clone(),
    ));
    open_replica(node, voters).await;
}

fn batch(i: usize) -> (Bytes, RecordBatchHeader) {
    padded_batch(i, 0)
}

fn padded_batch(i: usize, pad: usize) -> (Bytes, RecordBatchHeader) {
    let mut b = RecordBatchBuilder::new(256 + pad);
    let v = format!("v{i}-{}", "x".repeat(pad));
    b.push(1_000 + i as i64, Some(b"k"), v.as_bytes(), &[]);
    b.push(1_001 + i as i64, None, format!("w{i}").as_bytes(), &[]);
    let b = b.finish();
    let h = validate(&b).unwrap();
    (b, h)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every live replica agrees on one leader that says it leads; returns its index in `nodes`.
async fn agreed_leader(nodes: &[Node], not: Option<u32>) -> usize {
    let mut found = None;
    eventually("an agreed leader", || {
        let live: Vec<&Arc<Partition>> =
            nodes.iter().filter_map(|n| n.partition.as_ref()).collect();
        let Some(l) = live.first().and_then(|p| p.leader()) else {
            return false;
        };
        if Some(l) == not || !live.iter().all(|p| p.leader() == Some(l)) {
            return false;
        }
        match nodes
            .iter()
            .position(|n| n.id == l && n.partition.as_ref().is_some_and(|p| p.is_leader()))
        {
            Some(i) => {
                found = Some(i);
                true
            }
            None => false,
        }
    })
    .await;
    found.unwrap()
}

/// Every committed batch of `p`, from its log start.
fn read_all(p: &Partition) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut off = p.log_start_offset();
    loop {
        let got = p.read(off, 1 << 20).unwrap();
        if got.is_empty() {
            return out;
        }
        for b in got {
            let h = validate(&b).unwrap();
            off = h.base_offset + u64::from(h.record_count);
            out.push(b);
        }
    }
}

/// Appends `range` batches on the leader with acks=all; returns (base offset, batch) per acked batch.
/// A just-elected leader refuses writes (NOT_LEADER without a hint) until its lease is established; like
/// a client, retry those (bounded) — they were refused before reaching the log.
async fn produce(p: &Partition, range: std::ops::Range<usize>) -> Vec<(u64, Bytes)> {
    produce_padded(p, range, 0).await
}

async fn produce_padded(
    p: &Partition,
    range: std::ops::Range<usize>,
    pad: usize,
) -> Vec<(u64, Bytes)> {
    let mut acked = Vec::new();
    for i in range {
        let (b, h) = padded_batch(i, pad);
        let deadline = Instant::now() + DEADLINE;
        let o = loop {
            match p.append(b.clone(), &h, ACKS_ALL).await {
                Ok(o) => break o,
                Err(PartitionError::NotLeader { leader_hint: None })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("append {i}: {e:?}"),
            }
        };
        acked.push((o.base_offset, b));
    }
    acked
}

/// Every acked batch is on `p` at its offset with the same record bytes (the first 8 bytes are the
/// base offset the log stamps).
fn assert_has(p: &Partition, acked: &[(u64, Bytes)]) {
    let all = read_all(p);
    for (off, b) in acked {
        let found = all
            .iter()
            .find(|x| validate(x).unwrap().base_offset == *off)
            .unwrap_or_else(|| panic!("offset {off} missing"));
        assert_eq!(&found[8..], &b[8..], "batch at {off} differs");
    }
}

/// Every replica reaches high watermark `end` and holds every acknowledged batch.
async fn converged(nodes: &[Node], end: u64, acked: &[(u64, Bytes)]) {
    for n in nodes {
        let p = n.partition.as_ref().unwrap();
        eventually("every replica reaches the high watermark", || {
            p.high_watermark() == end
        })
        .await;
        assert_has(p, acked);
    }
}

/// Many batches handed to the leader at once (as a pipelining producer does): followers receive several
/// AppendEntries before answering the first (their append lanes hold more than one), and every replica
/// ends with the same log, in proposal order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_pipelined_to_followers_and_replicas_agree() {
    const N: usize = 400;
    let mut nodes = cluster(3).await;
    for n in nodes.iter_mut() {
        open_replica(n, &[1, 2, 3]).await;
    }
    let li = agreed_leader(&nodes, None).await;
    let leader = nodes[li].partition.clone().unwrap();
    let mut pending = Vec::with_capacity(N);
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let (b, h) = padded_batch(i, 4096);
        pending.push(leader.submit(b.clone(), &h, ACKS_ALL).await.unwrap());
        sent.push(b);
    }
    let mut acked = Vec::with_capacity(N);
    for (f, b) in pending.into_iter().zip(sent) {
        acked.push((f.await.unwrap().base_offset, b));
    }
    // Proposal order is offset order.
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0));
    converged(&nodes, leader.high_watermark(), &acked).await;
    let depth = nodes
        .iter()
        .filter(|n| n.id != nodes[li].id)
        .map(|n| n.net.append_lane_depth_max())
        .max()
        .unwrap_or(0);
    assert!(
        depth > 1,
        "no follower ever had two appends of the stream in hand (max {depth})"
    );
}

/// Mid rolling upgrade: followers that do not know pipelined appends still get every entry (the leader
/// falls back to one AppendEntries at a time towards them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_without_pipelined_appends_still_replicate() {
    let mut nodes = cluster(3).await;
    for n in &nodes {
        n.legacy.store(true, Ordering::SeqCst);
    }
    for n in nodes.iter_mut() {
        open_replica(n, &[1, 2, 3]).await;
    }
    let li = agreed_leader(&nodes, None).await;
    let acked = produce(nodes[li].partition.as_ref().unwrap(), 0..30).await;
    converged(
        &nodes,
        nodes[li].partition.as_ref().unwrap().high_watermark(),
        &acked,
    )
    .await;
    for n in &nodes {
        assert_eq!(n.net.append_lane_depth_max(), 0, "no lane was used");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_and_fail_over() {
    let mut nodes = cluster(3).await;
    for n in nodes.iter_mut() {
        open_replica(n, &[1, 2, 3]).await;
    }
    let li = agreed_leader(&nodes, None).await;
    let leader_id = nodes[li].id;
    // Followers refuse writes with a hint to the leader.
    for n in nodes.iter().filter(|n| n.id != leader_id) {
        let (b, h) = batch(0);
        match n.partition.as_ref().unwrap().append(b, &h, ACKS_ALL).await {
            Err(PartitionError::NotLeader { leader_hint }) => {
                assert_eq!(leader_hint, Some(leader_id))
            }
            other => panic!("follower append: {other:?}"),
        }
    }
    let mut acked = produce(nodes[li].partition.as_ref().unwrap(), 0..20).await;
    let offsets: Vec<u64> = acked.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..20).map(|i| i * 2).collect::<Vec<u64>>());
    // Committed everywhere: same offsets, same bytes.
    for n in &nodes {
        let p = n.partition.as_ref().unwrap();
        eventually("followers reach the high watermark", || {
            p.high_watermark() == 40
        })
        .await;
    }
    let reference = read_all(nodes[li].partition.as_ref().unwrap());
    assert_eq!(reference.len(), 20);
    for n in &nodes {
        assert_eq!(read_all(n.partition.as_ref().unwrap()), reference);
        assert_has(n.partition.as_ref().unwrap(), &acked);
    }
    // All groups of a node share one connection per peer.
    assert!(
        nodes[li]
            .net
            .peer(u64::from(nodes[(li + 1) % 3].id))
            .unwrap()
            .is_connected()
            .await
    );

    // Kill the leader: a survivor takes over within the bound, nothing acknowledged is lost.
    let killed_at = Instant::now();
    kill(&mut nodes[li]).await;
    let ni = agreed_leader(&nodes, Some(leader_id)).await;
    let failover = killed_at.elapsed();
    assert!(failover < DEADLINE, "failover took {failover:?}");
    assert_ne!(nodes[ni].id, leader_id);
    let more = produce(nodes[ni].partition.as_ref().unwrap(), 20..30).await;
    assert!(more.iter().all(|(o, _)| *o >= 40));
    acked.extend(more);
    for n in nodes.iter().filter(|n| n.partition.is_some()) {
        let p = n.partition.as_ref().unwrap();
        let end = acked.last().map(|(o, _)| o + 2).unwrap();
        eventually("survivors commit the new writes", || {
            p.high_watermark() >= end
        })
        .await;
        assert_has(p, &acked);
    }
    for n in nodes.iter_mut() {
        kill(n).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_catches_up() {
    let mut nodes = cluster(3).await;
    // Node 3 is down (its listener answers "unknown group") while the other two form a majority.
    open_replica(&mut nodes[0], &[1, 2, 3]).await;
    open_replica(&mut nodes[1], &[1, 2, 3]).await;
    let li = agreed_leader(&nodes, None).await;
    let acked = produce(nodes[li].partition.as_ref().unwrap(), 0..15).await;
    // A hosted group refuses an RPC addressed to another node, and an undecodable one.
    let vote = super::types::Vote::new(1, 2);
    let misaddressed = super::network::encode(&super::network::Envelope {
        target: 2,
        body: openraft::raft::VoteRequest::<super::types::PartitionRaft>::new(vote, None),
    })
    .unwrap();
    for payload in [misaddressed, Bytes::from_static(b"\xff\xff")] {
        let r = nodes[0]
            .net
            .handle(RaftRpcRequest {
                group: pid().group_name(),
                kind: RAFT_RPC_VOTE,
                payload,
            })
            .await;
        assert_eq!(r.error_code, ErrorCode::InvalidRequest.as_u16(), "{r:?}");
    }
    open_replica(&mut nodes[2], &[1, 2, 3]).await;
    let p3 = nodes[2].partition.clone().unwrap();
    eventually("the lagging replica catches up", || {
        p3.high_watermark() == 30
    })
    .await;
    assert_has(&p3, &acked);
    assert_eq!(
        read_all(&p3),
        read_all(nodes[li].partition.as_ref().unwrap())
    );
    assert_eq!(p3.leader(), Some(nodes[li].id));
    for n in nodes.iter_mut() {
        kill(n).await;
    }
}

/// Several groups on the same nodes share one connection per node pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_share_one_connection_per_peer() {
    const GROUPS: u32 = 4;
    let nodes = cluster(3).await;
    let mut parts: Vec<Vec<Arc<Partition>>> = Vec::new();
    let mut dirs = Vec::new();
    for g in 0..GROUPS {
        let mut replicas = Vec::new();
        for n in &nodes {
            let dir = tempfile::tempdir().unwrap();
            let p = Partition::open_with(
                PartitionId {
                    topic: "s".into(),
                    partition: g,
                },
                dir.path().to_path_buf(),
                n.id,
                vec![1, 2, 3],
                LogConfig::default(),
                StorageContext::new(),
                PartitionOptions::replicated(n.net.clone()),
            )
            .await
            .unwrap();
            dirs.push(dir);
            replicas.push(p);
        }
        parts.push(replicas);
    }
    for replicas in &parts {
        let mut leader = None;
        eventually("each group elects a writable leader", || {
            leader = replicas.iter().find(|p| p.is_leader()).cloned();
            leader.is_some()
        })
        .await;
        let leader = leader.unwrap();
        let acked = produce(&leader, 0..3).await;
        for p in replicas {
            eventually("replicas commit", || p.high_watermark() == 6).await;
            assert_has(p, &acked);
        }
    }
    // Each node was dialled by each of its two peers once, whatever the number of groups.
    for n in &nodes {
        assert_eq!(n.accepted.load(Ordering::SeqCst), 2, "node {}", n.id);
        assert_eq!(n.net.group_names().len(), GROUPS as usize);
    }
    for replicas in parts {
        for p in replicas {
            p.shutdown().await.unwrap();
        }
    }
}

/// A follower restarted from its data dir rejoins (its peers reconnect to it) and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_rejoins_and_converges() {
    let mut nodes = cluster(3).await;
    for n in nodes.iter_mut() {
        open_replica(n, &[1, 2, 3]).await;
    }
    let li = agreed_leader(&nodes, None).await;
    let leader = nodes[li].partition.clone().unwrap();
    let mut acked = produce(&leader, 0..10).await;
    let fi = (li + 1) % 3;
    let f = nodes[fi].partition.clone().unwrap();
    eventually("the follower has the first writes", || {
        f.high_watermark() == 20
    })
    .await;
    drop(f);
    kill(&mut nodes[fi]).await;
    acked.extend(produce(&leader, 10..20).await);
    restart(&mut nodes[fi], &[1, 2, 3]).await;
    let f = nodes[fi].partition.clone().unwrap();
    eventually("the restarted follower converges", || {
        f.high_watermark() == 40
    })
    .await;
    assert_has(&f, &acked);
    assert_eq!(read_all(&f), read_all(&leader));
    assert_eq!(f.leader(), Some(nodes[li].id));
    // A second replica of the same group on one node is refused (it would answer for the first).
    let dup = tempfile::tempdir().unwrap();
    let r = Partition::open_with(
        pid(),
        dup.path().to_path_buf(),
        nodes[fi].id,
        vec![1, 2, 3],
        LogConfig::default(),
        StorageContext::new(),
        PartitionOptions::replicated(nodes[fi].net.clone()),
    )
    .await;
    match r {
        Err(e) => assert!(e.to_string().contains("already open"), "{e}"),
        Ok(_) => panic!("a duplicate replica was opened"),
    }
    assert_eq!(nodes[fi].net.group_names(), vec![pid().group_name()]);
    for n in nodes.iter_mut() {
        kill(n).await;
    }
}

/// Trap T6: a replica that returns after the leader purged by retention gets the tiny retention snapshot
/// (log start = the leader's) and then every retained batch by ordinary replication: no gap, no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_retention_boundary_catches_up_by_snapshot() {
    let cfg = LogConfig {
        segment_bytes: 4096,
        retention_bytes: Some(8192),
        retention_ms: None,
        ..LogConfig::default()
    };
    let mut nodes = cluster(3).await;
    open_replica_with(&mut nodes[0], &[1, 2, 3], cfg.clone()).await;
    open_replica_with(&mut nodes[1], &[1, 2, 3], cfg.clone()).await;
    let li = agreed_leader(&nodes, None).await;
    let leader = nodes[li].partition.clone().unwrap();
    let acked = produce_padded(&leader, 0..40, 1_000).await;
    let hwm = leader.high_watermark();
    assert_eq!(hwm, 80);
    assert!(leader.enforce_retention().await.unwrap());
    eventually("the leader purges by retention", || {
        leader.log_start_offset() > 0
    })
    .await;
    let start = leader.log_start_offset();
    open_replica_with(&mut nodes[2], &[1, 2, 3], cfg).await;
    let p3 = nodes[2].partition.clone().unwrap();
    eventually("the returning replica converges", || {
        p3.high_watermark() == hwm
    })
    .await;
    assert_eq!(p3.log_start_offset(), start);
    let retained: Vec<(u64, Bytes)> = acked.into_iter().filter(|(o, _)| *o >= start).collect();
    assert!(!retained.is_empty());
    let got = p3.read(start, 1 << 20).unwrap();
    assert_eq!(
        validate(&got[0]).unwrap().base_offset,
        start,
        "no gap at the log start"
    );
    assert_has(&p3, &retained);
    assert!(matches!(
        p3.read(start - 1, 100),
        Err(PartitionError::OffsetOutOfRange { .. })
    ));
    for n in nodes.iter_mut() {
        kill(n).await;
    }
}

#[tokio::test]
async fn unknown_groups_and_peers_are_refused() {
    let net = RaftNet::new(1, [(2, "127.0.0.1:1".to_string())]);
    let r = net
        .handle(RaftRpcRequest {
            group: "x-0".into(),
            kind: RAFT_RPC_VOTE,
            payload: Bytes::new(),
        })
        .await;
    assert_eq!(r.error_code, ErrorCode::UnknownTopicOrPartition.as_u16());
    assert!(matches!(net.peer(9), Err(CallError::Unreachable(_))));
}

#[tokio::test]
async fn connect_failures_back_off_and_report_unreachable() {
    // A port nobody listens on: bind, learn it, close.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let net = RaftNet::new(1, [(2, addr.to_string())]);
    let peer = net.peer(2).unwrap();
    let req = || RaftRpcRequest {
        group: "g".into(),
        kind: RAFT_RPC_VOTE,
        payload: Bytes::new(),
    };
    let first = peer.call(req(), Duration::from_secs(1)).await;
    assert!(matches!(first, Err(CallError::Unreachable(_))), "{first:?}");
    // Inside the back-off window the next call fails at once, without a connect attempt.
    let second = peer.call(req(), Duration::from_secs(1)).await;
    match second {
        Err(CallError::Unreachable(s)) => assert!(s.contains("backing off"), "{s}"),
        other => panic!("{other:?}"),
    }
    // After the window (which starts at RECONNECT_BACKOFF_MIN) it tries to connect again.
    let started = Instant::now();
    loop {
        match peer.call(req(), Duration::from_secs(1)).await {
            Err(CallError::Unreachable(s)) if s.contains("backing off") => {}
            Err(CallError::Unreachable(_)) => break,
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < DEADLINE, "never retried the connect");
        tokio::time::sleep(RECONNECT_BACKOFF_MIN / 5).await;
    }
    assert!(started.elapsed() >= RECONNECT_BACKOFF_MIN / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_rpcs_per_peer_are_bounded_and_time_out() {
    // A peer that reads requests and never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let r2 = received.clone();
    tokio::spawn(async move {
        let Ok((s, _)) = l.accept().await else { return };
        let mut frames = FramedRead::new(s, frame_codec());
        while let Some(Ok(_)) = frames.next().await {
            r2.fetch_add(1, Ordering::SeqCst);
        }
    });
    let net = RaftNet::new(1, [(2, addr.to_string())]);
    let peer = net.peer(2).unwrap();
    let req = || RaftRpcRequest {
        group: "g".into(),
        kind: RAFT_RPC_VOTE,
        payload: Bytes::new(),
    };
    let mut calls = Vec::new();
    for _ in 0..PEER_INFLIGHT_MAX {
        let peer = peer.clone();
        calls.push(tokio::spawn(async move {
            peer.call(req(), Duration::from_secs(2)).await
        }));
    }
    eventually("the limit of requests on the wire", || {
        received.load(Ordering::SeqCst) == PEER_INFLIGHT_MAX
    })
    .await;
    // One more waits for a slot and times out without reaching the wire.
    let extra = peer.call(req(), Duration::from_millis(200)).await;
    assert_eq!(extra, Err(CallError::Timeout));
    assert_eq!(received.load(Ordering::SeqCst), PEER_INFLIGHT_MAX);
    // The outstanding ones time out too (the peer never answers).
    for c in calls {
        assert_eq!(c.await.unwrap(), Err(CallError::Timeout));
    }
}

/// Three nodes, each with a replica of the partition (voters 1, 2, 3).
async fn three_replicas() -> Vec<Node> {
    let mut nodes = cluster(3).await;
    for n in nodes.iter_mut() {
        open_replica(n, &[1, 2, 3]).await;
    }
    nodes
}

async fn kill_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        kill(n).await;
    }
}

/// Starts each node's quiescence loop (what a broker does), groups quiescing after `idle` without writes.
fn quiesce_all(nodes: &[Node], idle: Duration) {
    for n in nodes {
        tokio::spawn(super::quiesce::run(
            n.net.clone(),
            Some(idle),
            n.stop.clone(),
        ));
    }
}

/// Waits until the group's replica is quiet (tick off) on every live node.
async fn all_quiet(nodes: &[Node]) {
    eventually("every replica quiet", || {
        nodes
            .iter()
            .filter(|n| n.partition.is_some())
            .all(|n| n.net.quiet_group_count() == 1)
    })
    .await;
}

/// An idle group stops heartbeating on every replica once all are caught up; its leader still counts
/// as leader (with caught-up followers) long past the CheckQuorum limit, on its followers' consent; a
/// write wakes it and commits, and it quiesces again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_quiesce_and_a_write_wakes_them() {
    let mut nodes = three_replicas().await;
    quiesce_all(&nodes, Duration::from_millis(300));
    let li = agreed_leader(&nodes, None).await;
    let mut acked = produce(nodes[li].partition.as_ref().unwrap(), 0..5).await;
    converged(&nodes, 10, &acked).await;
    all_quiet(&nodes).await;

    // Quiet: over a window of many heartbeat intervals and longer than CheckQuorum's limit, no follower
    // receives an AppendEntries, and the leader still leads with its followers caught up.
    let timing = nodes[li].net.timing().clone();
    let window = timing.quorum_stale_after() + Duration::from_millis(500);
    let before: Vec<u64> = nodes.iter().map(|n| n.net.appends_received()).collect();
    let start = Instant::now();
    while start.elapsed() < window {
        // The window itself is what is measured: nothing may happen in it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(nodes[li].net.quiet_group_count(), 1, "the leader woke up");
    }
    let after: Vec<u64> = nodes.iter().map(|n| n.net.appends_received()).collect();
    assert_eq!(
        before, after,
        "AppendEntries were sent to a quiet group over {window:?} ({} ms heartbeats)",
        timing.heartbeat_interval_ms
    );
    let leader = nodes[li].partition.as_ref().unwrap();
    assert!(
        leader.is_leader(),
        "a quiet leader stopped counting as leader"
    );
    assert_eq!(leader.leader(), Some(nodes[li].id));
    let lag = leader.replica_lag().unwrap();
    assert!(
        lag.iter().all(|(_, l)| *l == 0),
        "lag of a quiet group: {lag:?}"
    );
    for n in &nodes {
        assert_eq!(n.partition.as_ref().unwrap().leader(), Some(nodes[li].id));
    }

    // A write wakes it: acknowledged by a quorum, committed everywhere; then it rests again.
    acked.extend(produce(leader, 5..8).await);
    converged(&nodes, 16, &acked).await;
    all_quiet(&nodes).await;
    kill_all(&mut nodes).await;
}

/// A quiet group whose leader's broker dies fails over like a busy one: its followers stop hearing the
/// leader's pings, tick again and elect; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_group_fails_over_when_its_leader_goes_silent() {
    let mut nodes = three_replicas().await;
    quiesce_all(&nodes, Duration::from_millis(300));
    let li = agreed_leader(&nodes, None).await;
    let old = nodes[li].id;
    let mut acked = produce(nodes[li].partition.as_ref().unwrap(), 0..5).await;
    converged(&nodes, 10, &acked).await;
    all_quiet(&nodes).await;

    let killed_at = Instant::now();
    kill(&mut nodes[li]).await;
    let ni = agreed_leader(&nodes, Some(old)).await;
    eprintln!("quiet group failover: {:?}", killed_at.elapsed());
    acked.extend(produce(nodes[ni].partition.as_ref().unwrap(), 5..8).await);
    for n in nodes.iter().filter(|n| n.partition.is_some()) {
        let p = n.partition.as_ref().unwrap();
        eventually("survivors commit the new writes", || {
            p.high_watermark() >= 16
        })
        .await;
        assert_has(p, &acked);
    }
    // With one voter gone the survivors keep heartbeating (a quiet group needs every follower's consent).
    let before = nodes
        .iter()
        .filter(|n| n.partition.is_some())
        .map(|n| n.net.appends_received())
        .sum::<u64>();
    eventually("heartbeats between the survivors", || {
        nodes
            .iter()
            .filter(|n| n.partition.is_some())
            .map(|n| n.net.appends_received())
            .sum::<u64>()
            > before + 5
    })
    .await;
    for n in nodes.iter().filter(|n| n.partition.is_some()) {
        assert_eq!(n.net.quiet_group_count(), 0);
    }
    kill_all(&mut nodes).await;
}

/// A producer is answered at commit, before the state machine applies the batch; the leader's high
/// watermark is raised at that same point, so what was acknowledged is readable at once (read after ack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_batch_is_readable_on_the_leader_at_once() {
    let mut nodes = three_replicas().await;
    let li = agreed_leader(&nodes, None).await;
    let leader = nodes[li].partition.as_ref().unwrap();
    for i in 0..50 {
        let acked = produce(leader, i..i + 1).await;
        // Checked right as the append returns, before anything else can run on this task.
        let (base, _) = acked[0];
        assert_eq!(base, 2 * i as u64);
        assert!(leader.high_watermark() >= base + 2);
        assert_has(leader, &acked);
    }
    kill_all(&mut nodes).await;
}
