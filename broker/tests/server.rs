//! Server behaviour over real sockets: pipelining at and past the in-flight limit, back-pressure, long-poll
//! fetch, the connection limit, drain on shutdown, restart on the same data dir, the admin HTTP endpoints.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use runnel_broker::{Server, StartError};
use runnel_protocol::messages::*;
use runnel_protocol::{ErrorCode, Request, Response};

#[tokio::test]
async fn more_than_the_inflight_limit_pipelined_are_all_answered() {
    const LIMIT: usize = 4;
    const N: usize = 500;
    let b = start_with(|c| c.max_inflight_per_connection = LIMIT).await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 2).await;
    // One write carrying N requests: produces to two partitions interleaved with metadata requests.
    let mut all = Vec::new();
    let mut sent = HashSet::new();
    for i in 0..N {
        let req = match i % 3 {
            0 => produce_req("t", 0, batch(&[&format!("a{i}")], i as i64)),
            1 => produce_req("t", 1, batch(&[&format!("b{i}")], i as i64)),
            _ => Request::Metadata(MetadataRequest { topics: None }),
        };
        let (cid, bytes) = c.encode(&req);
        sent.insert(cid);
        all.extend_from_slice(&bytes);
    }
    c.send_raw(&all).await;
    let mut offsets = [Vec::new(), Vec::new()];
    for _ in 0..N {
        let (cid, r) = c.recv().await;
        assert!(sent.remove(&cid), "cid {cid} answered twice or never sent");
        if let Ok(Response::Produce(p)) = r {
            let p = &p.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "{p:?}");
            offsets[p.partition as usize].push(p.base_offset);
        } else {
            assert!(matches!(r, Ok(Response::Metadata(_))), "{r:?}");
        }
    }
    assert!(sent.is_empty());
    for o in &mut offsets {
        o.sort();
        let dense: Vec<u64> = (0..o.len() as u64).collect();
        assert_eq!(*o, dense, "every produce appended exactly once");
    }
}

/// An idempotent producer pipelining many batches of one partition on one connection: the broker submits
/// them in arrival order, so every one follows its predecessor (none is OUT_OF_ORDER_SEQUENCE) and each is
/// written at the offset its sequence number says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_idempotent_batches_are_written_in_the_order_sent() {
    const N: i32 = 300;
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let pid = init_producer_id(&mut c).await;
    let mut all = Vec::new();
    let mut seq_of = std::collections::HashMap::new();
    for seq in 0..N {
        let mut bb = runnel_protocol::batch::RecordBatchBuilder::new(128).idempotent(pid, 0, seq);
        bb.push(i64::from(seq), None, format!("v{seq}").as_bytes(), &[]);
        let (cid, bytes) = c.encode(&produce_req("t", 0, bb.finish()));
        seq_of.insert(cid, seq);
        all.extend_from_slice(&bytes);
    }
    c.send_raw(&all).await;
    for _ in 0..N {
        let (cid, r) = c.recv().await;
        let seq = seq_of
            .remove(&cid)
            .expect("an answer to a request sent once");
        let Ok(Response::Produce(p)) = r else {
            panic!("{r:?}")
        };
        let p = &p.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "sequence {seq}: {p:?}");
        assert_eq!(p.base_offset, seq as u64, "sequence {seq}");
    }
}

#[tokio::test]
async fn a_full_connection_is_not_read_until_a_slot_frees() {
    const LIMIT: usize = 3;
    let b = start_with(|c| c.max_inflight_per_connection = LIMIT).await;
    let mut admin = Client::connect(b.addr()).await;
    admin.create_topic("t", 1).await;
    let mut c = Client::connect(b.addr()).await;
    // LIMIT long polls fill every slot; the request after them must not be read yet.
    for _ in 0..LIMIT {
        c.send(&fetch_req("t", 0, 0, 30_000, 1)).await;
    }
    let versions = c.send(&Request::ApiVersions(ApiVersionsRequest {})).await;
    // A negative check needs a window: nothing may arrive while the slots are held.
    let early = tokio::time::timeout(Duration::from_millis(300), c.recv_frame()).await;
    assert!(
        early.is_err(),
        "a response arrived while every slot was held"
    );
    // Data arrives: the long polls complete, then the ApiVersions request is read and answered last.
    assert_eq!(admin.produce("t", 0, batch(&["go"], 1)).await.error_code, 0);
    let mut order = Vec::new();
    for _ in 0..=LIMIT {
        let (cid, r) = c.recv().await;
        assert!(r.is_ok(), "{r:?}");
        order.push(cid);
    }
    // The ApiVersions request was only read once a long poll's slot freed, so a fetch answer precedes it.
    assert_ne!(
        order.first(),
        Some(&versions),
        "answered in order {order:?}"
    );
    assert!(order.contains(&versions));
}

/// Frames on a connection are read in order and each is dispatched before the next is read, so an answer to
/// a request sent after a long poll proves the long poll is in flight (and, having no answer yet, parked).
async fn park_proof(c: &mut Client) {
    let probe = c.send(&Request::ApiVersions(ApiVersionsRequest {})).await;
    let (cid, r) = c.recv().await;
    assert_eq!(cid, probe, "the long poll answered before it parked: {r:?}");
}

#[tokio::test]
async fn long_poll_wakes_on_an_append_after_it_parked() {
    let b = start().await;
    let mut admin = Client::connect(b.addr()).await;
    admin.create_topic("t", 1).await;
    let mut c = Client::connect(b.addr()).await;
    let started = Instant::now();
    c.send(&fetch_req("t", 0, 0, 30_000, 1)).await;
    park_proof(&mut c).await;
    assert_eq!(
        admin.produce("t", 0, batch(&["late"], 1)).await.error_code,
        0
    );
    let (_, r) = c.recv().await;
    let Ok(Response::Fetch(f)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(values(&f.topics[0].partitions[0].records).len(), 1);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn long_poll_returns_empty_after_max_wait() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let started = Instant::now();
    let f = c.fetch("t", 0, 0, 300, 1).await;
    let waited = started.elapsed();
    assert_eq!((f.error_code, f.records.len()), (0, 0));
    assert!(
        waited >= Duration::from_millis(300),
        "returned after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    // min_bytes = 0 answers at once.
    let started = Instant::now();
    c.fetch("t", 0, 0, 30_000, 0).await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn fetch_respects_partition_and_response_byte_limits() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 2).await;
    let one = batch(&["0123456789"], 1);
    for _ in 0..5 {
        c.produce("t", 0, one.clone()).await;
        c.produce("t", 1, one.clone()).await;
    }
    let req = |partition_max: u32, max: u32| {
        Request::Fetch(FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: max,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: (0..2)
                    .map(|p| FetchPartition {
                        partition: p,
                        fetch_offset: 0,
                        partition_max_bytes: partition_max,
                    })
                    .collect(),
            }],
            read_replica: false,
        })
    };
    let len = one.len() as u32;
    let sizes = |r: Result<Response, _>| -> Vec<usize> {
        let Ok(Response::Fetch(f)) = r else {
            panic!("{r:?}")
        };
        f.topics[0]
            .partitions
            .iter()
            .map(|p| p.records.len())
            .collect()
    };
    // Partition limit of two batches each.
    assert_eq!(
        sizes(c.call(req(2 * len, 1 << 20)).await),
        [2 * len as usize, 2 * len as usize]
    );
    // Response limit of three batches: two from the first partition, one from the second.
    assert_eq!(
        sizes(c.call(req(2 * len, 3 * len)).await),
        [2 * len as usize, len as usize]
    );
    // Limits below one batch: the first batch still comes back whole, nothing more.
    assert_eq!(sizes(c.call(req(1, 1)).await), [len as usize, 0]);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_at_once() {
    let b = start_with(|c| c.max_connections = 2).await;
    let mut c1 = Client::connect(b.addr()).await;
    let mut c2 = Client::connect(b.addr()).await;
    assert!(c1
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
    assert!(c2
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
    let mut c3 = Client::connect(b.addr()).await;
    assert!(
        c3.is_closed_by_broker().await,
        "the third connection is closed"
    );
    drop(c1);
    // The slot frees when the broker notices the close; poll for it with a bounded deadline.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut c = Client::connect(b.addr()).await;
        let (_, bytes) = c.encode(&Request::ApiVersions(ApiVersionsRequest {}));
        if c.try_send_raw(&bytes).await && c.recv_frame().await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::task::yield_now().await;
    }
    assert!(c2
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
}

#[tokio::test]
async fn shutdown_drains_and_a_restart_keeps_the_topics() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("kept", 3).await;
    let mut poller = Client::connect(b.addr()).await;
    let fetch = poller.send(&fetch_req("kept", 0, 0, 30_000, 1)).await;
    park_proof(&mut poller).await;
    // The parked long poll must not hold the drain for its 30 s: shutdown wakes it and answers it.
    let started = Instant::now();
    let TestBroker { handle, dir } = b;
    let addr = handle.local_addr();
    handle.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "drain took {:?}",
        started.elapsed()
    );
    let (cid, r) = poller.recv().await;
    assert_eq!(cid, fetch);
    assert!(r.is_ok(), "the in-flight fetch was answered: {r:?}");
    assert!(poller.is_closed_by_broker().await);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );

    // Same data dir: the lock was released and the topic is still there.
    let handle = Server::start(test_config(dir.path())).await.unwrap();
    let mut c = Client::connect(handle.local_addr()).await;
    let r = c
        .call(Request::Metadata(MetadataRequest { topics: None }))
        .await;
    let Ok(Response::Metadata(m)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(m.topics.len(), 1);
    assert_eq!(m.topics[0].name, "kept");
    assert_eq!(m.topics[0].partitions.len(), 3);
    handle.shutdown().await;
}

#[tokio::test]
async fn requests_during_a_drain_get_broker_shutting_down() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    b.handle.begin_drain();
    let r = c.call(Request::ApiVersions(ApiVersionsRequest {})).await;
    assert_eq!(r.unwrap_err().code, ErrorCode::BrokerShuttingDown);
    let (status, body) = http_get(b.handle.admin_addr(), "/health/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("draining"), "{body}");
    b.handle.shutdown().await;
}

#[tokio::test]
async fn two_brokers_cannot_share_a_data_dir() {
    let b = start().await;
    let e = Server::start(test_config(b.dir.path())).await.err();
    assert!(matches!(e, Some(StartError::DataDirLocked(_))), "{e:?}");
}

#[tokio::test]
async fn peers_naming_only_this_node_is_a_single_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    c.peers = runnel_broker::config::parse_peers("1@127.0.0.1:1").unwrap();
    let h = Server::start(c).await.unwrap();
    assert!(h.broker().registry.cluster().is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn admin_http_serves_health_and_metrics() {
    let b = start().await;
    let admin = b.handle.admin_addr();
    assert_eq!(http_get(admin, "/health/live").await.0, 200);
    assert_eq!(
        http_get(admin, "/health/ready").await,
        (200, "ready\n".to_string())
    );
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("m", 1).await;
    let one = batch(&["a", "b", "c"], 1);
    c.produce("m", 0, one.clone()).await;
    c.fetch("m", 0, 0, 0, 0).await;
    let (status, text) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "runnel_requests_total{api=\"produce\"} 1",
        "runnel_requests_total{api=\"create_topics\"} 1",
        "runnel_request_duration_seconds_bucket{",
        "runnel_request_duration_seconds_count{api=\"fetch\"} 1",
        "runnel_connections 1",
        &format!("runnel_produce_bytes_total {}", one.len()),
        &format!("runnel_fetch_bytes_total {}", one.len()),
        "runnel_partition_high_watermark{topic=\"m\",partition=\"0\"} 3",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle:?}:\n{text}");
    }
    assert_eq!(http_get(admin, "/nope").await.0, 404);
}

/// Asks for one producer id; panics on anything but a success.
async fn init_producer_id(c: &mut Client) -> i64 {
    let r = c
        .call(Request::InitProducerId(InitProducerIdRequest::default()))
        .await;
    let Ok(Response::InitProducerId(r)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(r.error_code, 0, "{r:?}");
    assert_eq!(r.producer_epoch, 0);
    r.producer_id
}

/// Many concurrent InitProducerId calls get distinct ids from the reserved blocks; after a restart on the
/// same data dir the broker reserves a fresh block, so no id comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_producer_id_is_unique_and_not_reused_after_a_restart() {
    const CONNECTIONS: usize = 8;
    const CALLS_PER_CONNECTION: usize = 150;
    let b = start().await;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let addr = b.addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut ids = Vec::with_capacity(CALLS_PER_CONNECTION);
            for _ in 0..CALLS_PER_CONNECTION {
                ids.push(init_producer_id(&mut c).await);
            }
            ids
        }));
    }
    let mut before = std::collections::BTreeSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(before.insert(id), "producer id {id} handed out twice");
        }
    }
    assert_eq!(before.len(), CONNECTIONS * CALLS_PER_CONNECTION);
    assert_eq!(before.first(), Some(&0));
    // A transactional id is refused (no transactions yet), and costs no id.
    let mut c = Client::connect(b.addr()).await;
    let r = c
        .call(Request::InitProducerId(InitProducerIdRequest {
            transactional_id: Some("tx".into()),
        }))
        .await;
    let Ok(Response::InitProducerId(r)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(r.error_code, ErrorCode::InvalidRequest.as_u16(), "{r:?}");
    assert_eq!(r.producer_id, -1);
    drop(c);

    let TestBroker { handle, dir } = b;
    handle.shutdown().await;
    let handle = Server::start(test_config(dir.path())).await.unwrap();
    let mut c = Client::connect(handle.local_addr()).await;
    let max_before = *before.last().unwrap();
    for _ in 0..10 {
        let id = init_producer_id(&mut c).await;
        assert!(
            id > max_before && !before.contains(&id),
            "{id} after a restart (max before: {max_before})"
        );
    }
    handle.shutdown().await;
}
