//! Test support: a scriptable fake broker on loopback. It answers `ApiVersions`, `Metadata` and
//! `InitProducerId` itself and hands every other request to the test, which answers (or not) through a
//! oneshot, in any order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use runnel_protocol::frame::{concat, encode_response};
use runnel_protocol::messages::{
    BrokerMeta, InitProducerIdResponse, MetadataResponse, PartitionMeta, TopicMeta,
};
use runnel_protocol::{Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::connection::tests::all_versions;

/// One request the fake broker received; send the answer through `reply` (drop it to never answer).
pub struct Incoming {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

pub struct FakeBroker {
    pub addr: String,
    pub requests: mpsc::UnboundedReceiver<Incoming>,
    /// Answers to the next `InitProducerId` requests, in order; once empty, each gets the next id from
    /// [`FAKE_FIRST_PRODUCER_ID`] on.
    pub init_producer_id: Arc<Mutex<VecDeque<InitProducerIdResponse>>>,
}

/// The first producer id a fake broker hands out (far from 0, so a test sees it is the broker's).
pub const FAKE_FIRST_PRODUCER_ID: i64 = 7_000;

/// Metadata for a one-broker cluster with the given topics (name, partition count), all led by node 1.
pub fn single_node_metadata(port: u16, topics: &[(&str, u32)]) -> MetadataResponse {
    MetadataResponse {
        metadata_epoch: 0,
        cluster_id: "fake".into(),
        controller_id: Some(1),
        brokers: vec![BrokerMeta {
            node_id: 1,
            host: "127.0.0.1".into(),
            port,
        }],
        topics: topics
            .iter()
            .map(|(name, n)| TopicMeta {
                name: name.to_string(),
                partitions: (0..*n)
                    .map(|p| PartitionMeta {
                        partition: p,
                        leader: Some(1),
                        replicas: vec![1],
                        in_sync: vec![1],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

/// Starts a fake broker serving metadata for `topics`.
pub async fn start(topics: &[(&str, u32)]) -> FakeBroker {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let meta = Arc::new(Mutex::new(single_node_metadata(port, topics)));
    serve(l, meta)
}

/// Starts a fake broker answering `Metadata` with whatever `meta` holds at the time (tests change it to
/// move leaders between several fake brokers).
pub async fn start_shared(meta: Arc<Mutex<MetadataResponse>>) -> FakeBroker {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(l, meta)
}

fn serve(l: TcpListener, meta: Arc<Mutex<MetadataResponse>>) -> FakeBroker {
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let scripted: Arc<Mutex<VecDeque<InitProducerIdResponse>>> = Arc::default();
    let next_pid = Arc::new(AtomicI64::new(FAKE_FIRST_PRODUCER_ID));
    let init_producer_id = scripted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            let meta = meta.clone();
            let scripted = scripted.clone();
            let next_pid = next_pid.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = s.into_split();
                let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
                tokio::spawn(async move {
                    while let Some(b) = out_rx.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
                let mut s = rd_stream(&mut rd);
                while let Some((h, r)) = s.next().await {
                    let id = h.correlation_id;
                    let answer = move |r: &Response| concat(&encode_response(id, Ok(r)));
                    match r {
                        Request::ApiVersions(_) => {
                            let _ = out_tx.send(answer(&Response::ApiVersions(all_versions())));
                        }
                        Request::Metadata(_) => {
                            let m = meta.lock().unwrap().clone();
                            let _ = out_tx.send(answer(&Response::Metadata(m)));
                        }
                        Request::InitProducerId(_) => {
                            let r = scripted.lock().unwrap().pop_front().unwrap_or_else(|| {
                                InitProducerIdResponse {
                                    producer_id: next_pid.fetch_add(1, Ordering::SeqCst),
                                    ..Default::default()
                                }
                            });
                            let _ = out_tx.send(answer(&Response::InitProducerId(r)));
                        }
                        other => {
                            let (reply, rx) = oneshot::channel();
                            let _ = tx.send(Incoming {
                                request: other,
                                reply,
                            });
                            let out_tx = out_tx.clone();
                            tokio::spawn(async move {
                                if let Ok(r) = rx.await {
                                    let _ = out_tx.send(answer(&r));
                                }
                            });
                        }
                    }
                }
            });
        }
    });
    FakeBroker {
        addr: addr.to_string(),
        requests: rx,
        init_producer_id,
    }
}

/// Adapts a read half to the frame reader used by the connection tests.
fn rd_stream(rd: &mut tokio::net::tcp::OwnedReadHalf) -> FrameStream<'_> {
    FrameStream { rd }
}

struct FrameStream<'a> {
    rd: &'a mut tokio::net::tcp::OwnedReadHalf,
}

impl FrameStream<'_> {
    async fn next(&mut self) -> Option<(runnel_protocol::RequestHeader, Request)> {
        use tokio::io::AsyncReadExt;
        let mut len = [0u8; 4];
        self.rd.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        self.rd.read_exact(&mut buf).await.ok()?;
        let (h, body) = runnel_protocol::frame::decode_request(Bytes::from(buf)).ok()?;
        Some((h, body.ok()?))
    }
}

/// Two fake brokers (node ids 1 and 2) sharing metadata for one single-partition topic led by node 1;
/// set the leader with [`set_leader`].
pub async fn two_brokers(topic: &str) -> (Arc<Mutex<MetadataResponse>>, FakeBroker, FakeBroker) {
    let meta = Arc::new(Mutex::new(MetadataResponse::default()));
    let a = start_shared(meta.clone()).await;
    let b = start_shared(meta.clone()).await;
    let port = |f: &FakeBroker| f.addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut m = single_node_metadata(port(&a), &[(topic, 1)]);
    m.brokers.push(BrokerMeta {
        node_id: 2,
        host: "127.0.0.1".into(),
        port: port(&b),
    });
    *meta.lock().unwrap() = m;
    (meta, a, b)
}

/// Moves the leadership of every partition to `node`.
pub fn set_leader(meta: &Mutex<MetadataResponse>, node: u32) {
    for t in &mut meta.lock().unwrap().topics {
        for p in &mut t.partitions {
            p.leader = Some(node);
            p.leader_term += 1;
        }
    }
}
