//! Test helpers: an in-process broker on 127.0.0.1:0 in a temp dir, and a raw protocol client that writes
//! frames encoded by the protocol crate (or arbitrary bytes) and reads response frames off the socket.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use runnel_broker::{BrokerConfig, Server, ServerHandle};
use runnel_protocol::batch::RecordBatchBuilder;
use runnel_protocol::codec::frame_codec;
use runnel_protocol::frame::{concat, decode_response, encode_request};
use runnel_protocol::messages::*;
use runnel_protocol::{ApiKey, ErrorCode, ErrorResponse, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

/// Upper bound for any single wait in these tests; reaching it is a failure, not a pass.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestBroker {
    pub handle: ServerHandle,
    pub dir: tempfile::TempDir,
}

impl TestBroker {
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
}

/// A config for an in-process broker: both listeners on free loopback ports, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    }
}

pub async fn start_with(f: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(dir.path());
    f(&mut c);
    let handle = Server::start(c).await.unwrap();
    TestBroker { handle, dir }
}

pub async fn start() -> TestBroker {
    start_with(|_| {}).await
}

/// One batch of `values`, with timestamps `ts, ts+1, ...`.
pub fn batch(values: &[&str], ts: i64) -> Bytes {
    let mut b = RecordBatchBuilder::new(256);
    for (i, v) in values.iter().enumerate() {
        b.push(ts + i as i64, Some(b"k"), v.as_bytes(), &[]);
    }
    b.finish()
}

/// The values of every record in a fetch response's records, in order.
pub fn values(records: &Records) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for item in runnel_protocol::batch::BatchIter::new(records.to_contiguous()) {
        let (_, b) = item.unwrap();
        for r in runnel_protocol::batch::records(&b).unwrap() {
            let v = r.value.unwrap_or_default();
            out.push((r.offset, String::from_utf8(v.to_vec()).unwrap()));
        }
    }
    out
}

/// A raw protocol client: requests are encoded by the protocol crate, responses read frame by frame.
pub struct Client {
    rd: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    wr: OwnedWriteHalf,
    next_cid: u32,
    apis: HashMap<u32, ApiKey>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        let (rd, wr) = s.into_split();
        Client {
            rd: FramedRead::new(rd, frame_codec()),
            wr,
            next_cid: 1,
            apis: HashMap::new(),
        }
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
    }

    /// Writes raw bytes; false if the connection is already gone.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.wr.write_all(bytes).await.is_ok()
    }

    /// Half-closes the connection (no more requests).
    pub async fn shutdown_write(&mut self) {
        self.wr.shutdown().await.unwrap();
    }

    /// Encodes a request into bytes (prefix included) and remembers its api for decoding the response.
    pub fn encode(&mut self, req: &Request) -> (u32, Bytes) {
        let cid = self.next_cid;
        self.next_cid += 1;
        self.apis.insert(cid, req.api_key());
        (cid, concat(&encode_request(cid, "test", req)))
    }

    pub async fn send(&mut self, req: &Request) -> u32 {
        let (cid, b) = self.encode(req);
        self.send_raw(&b).await;
        cid
    }

    /// The next response frame; `None` when the broker closed the connection.
    pub async fn recv_frame(&mut self) -> Option<Bytes> {
        match tokio::time::timeout(DEADLINE, self.rd.next())
            .await
            .expect("no response within the deadline")
        {
            Some(Ok(f)) => Some(f.freeze()),
            Some(Err(_)) | None => None,
        }
    }

    /// The next response, decoded for the request it answers.
    pub async fn recv(&mut self) -> (u32, Result<Response, ErrorResponse>) {
        let f = self.recv_frame().await.expect("connection closed");
        let cid = runnel_protocol::frame::response_correlation_id(&f).unwrap();
        let api = self
            .apis
            .remove(&cid)
            .expect("response to an unknown request");
        decode_response(api, f).unwrap()
    }

    /// Like [`Client::recv`], but `None` when the broker closed the connection.
    pub async fn try_recv(&mut self) -> Option<(u32, Result<Response, ErrorResponse>)> {
        let f = self.recv_frame().await?;
        let cid = runnel_protocol::frame::response_correlation_id(&f).unwrap();
        let api = self
            .apis
            .remove(&cid)
            .expect("response to an unknown request");
        Some(decode_response(api, f).unwrap())
    }

    /// Sends a request; false when the connection is already gone.
    pub async fn try_send(&mut self, req: &Request) -> Option<u32> {
        let (cid, b) = self.encode(req);
        self.try_send_raw(&b).await.then_some(cid)
    }

    pub async fn call(&mut self, req: Request) -> Result<Response, ErrorResponse> {
        let cid = self.send(&req).await;
        let (got, r) = self.recv().await;
        assert_eq!(got, cid);
        r
    }

    /// True once the broker has closed the connection (EOF or reset) within the deadline.
    pub async fn is_closed_by_broker(&mut self) -> bool {
        self.recv_frame().await.is_none()
    }

    pub async fn create_topic(&mut self, name: &str, partitions: u32) {
        let r = self
            .call(Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: name.into(),
                    partitions,
                    replication_factor: 1,
                    configs: vec![],
                }],
                timeout_ms: 5000,
                validate_only: false,
            }))
            .await;
        match r {
            Ok(Response::CreateTopics(r)) => {
                assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0])
            }
            other => panic!("{other:?}"),
        }
    }

    pub async fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        batch: Bytes,
    ) -> ProducePartitionResponse {
        match self.call(produce_req(topic, partition, batch)).await {
            Ok(Response::Produce(mut r)) => r.topics.remove(0).partitions.remove(0),
            other => panic!("{other:?}"),
        }
    }

    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
        min_bytes: u32,
    ) -> FetchPartitionResponse {
        match self
            .call(fetch_req(topic, partition, offset, max_wait_ms, min_bytes))
            .await
        {
            Ok(Response::Fetch(mut r)) => r.topics.remove(0).partitions.remove(0),
            other => panic!("{other:?}"),
        }
    }
}

pub fn produce_req(topic: &str, partition: u32, batch: Bytes) -> Request {
    Request::Produce(ProduceRequest {
        acks: ACKS_ALL,
        timeout_ms: 5000,
        topics: vec![ProduceTopicData {
            name: topic.into(),
            partitions: vec![ProducePartitionData { partition, batch }],
        }],
    })
}

pub fn fetch_req(
    topic: &str,
    partition: u32,
    offset: u64,
    max_wait_ms: u32,
    min_bytes: u32,
) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition,
                fetch_offset: offset,
                partition_max_bytes: 1 << 20,
            }],
        }],
        read_replica: false,
    })
}

pub fn code(c: u16) -> ErrorCode {
    ErrorCode::from_u16(c)
}

/// A minimal HTTP/1.1 GET against the admin listener: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("admin HTTP answer timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}
