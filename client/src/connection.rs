//! One pipelined TCP connection to one broker.
//!
//! A connection owns two tasks: a writer that drains a bounded queue of encoded frames into the socket with
//! vectored writes (the chunk lists from `encode_request` reach the kernel without being gathered), and a
//! reader that splits the byte stream into frames and hands each to the request waiting for its correlation
//! id. Responses may come back in any order.
//!
//! Invariants:
//! - `ApiVersions` is the first request on every connection; [`Connection::connect`] returns only after the
//!   broker answered it, and requests for an API version the broker does not speak fail locally.
//! - At most [`INFLIGHT_REQUESTS_PER_CONNECTION`] requests are in flight; more callers wait for a permit.
//! - Every request is bounded by a timeout; a late response to a request that timed out is dropped.
//! - Once the connection fails, every pending and future request fails with `ConnectionLost` (never hangs):
//!   the reader marks the connection closed under the same lock that registers requests.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::StreamExt;
use runnel_protocol::codec::frame_codec;
use runnel_protocol::frame::{decode_response, encode_request, response_correlation_id};
use runnel_protocol::limits::INFLIGHT_REQUESTS_PER_CONNECTION_MAX;
use runnel_protocol::messages::ApiVersionsRequest;
use runnel_protocol::{ApiKey, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_util::codec::FramedRead;

use crate::error::{ClientError, Result};

/// Requests one connection may have in flight at once (well under the broker's
/// [`INFLIGHT_REQUESTS_PER_CONNECTION_MAX`], so a single client never trips the broker's throttle).
pub const INFLIGHT_REQUESTS_PER_CONNECTION: usize = 64;
const _: () = assert!(INFLIGHT_REQUESTS_PER_CONNECTION <= INFLIGHT_REQUESTS_PER_CONNECTION_MAX);

/// Default bound on opening a TCP connection and getting the `ApiVersions` answer.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Default bound on one request's round trip (fetch long-polls add their `max_wait_ms` on top).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Most chunks handed to one `writev` call.
const IOV_MAX_PER_WRITE: usize = 64;

type Waiter = oneshot::Sender<Result<Bytes>>;

/// The response to a request already queued for the socket (see [`Connection::send`]).
pub type PendingResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response>> + Send + 'static>>;

/// State shared by the caller side and the reader task.
struct Shared {
    addr: SocketAddr,
    /// Pending requests by correlation id; `None` once the connection is dead (with the reason).
    pending: Mutex<Result<HashMap<u32, Waiter>, String>>,
}

impl Shared {
    /// Marks the connection dead and fails every pending request. Idempotent.
    fn fail(&self, reason: String) {
        let waiters = {
            let mut g = lock(&self.pending);
            match std::mem::replace(&mut *g, Err(reason.clone())) {
                Ok(map) => map,
                Err(first) => {
                    *g = Err(first);
                    return;
                }
            }
        };
        for (_, w) in waiters {
            let _ = w.send(Err(ClientError::ConnectionLost {
                addr: self.addr,
                message: reason.clone(),
            }));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (single insert/remove operations).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    shared: Arc<Shared>,
    client_id: String,
    next_id: AtomicU32,
    permits: Arc<Semaphore>,
    frames: mpsc::Sender<Vec<Bytes>>,
    /// The broker's supported version range per API key (from `ApiVersions`).
    versions: Mutex<HashMap<u16, (u16, u16)>>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// A cheap-to-clone handle on one broker connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.inner.shared.addr)
            .finish()
    }
}

impl Connection {
    /// Opens a connection to `addr` (a `host:port` string), bounded by `connect_timeout`, and performs the
    /// `ApiVersions` handshake within the same bound.
    pub async fn connect(
        addr: &str,
        client_id: &str,
        connect_timeout: Duration,
    ) -> Result<Connection> {
        let connect_err = |message: String| ClientError::Connect {
            addr: addr.to_string(),
            message,
        };
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err(format!("no answer within {connect_timeout:?}")))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().map_err(|e| connect_err(e.to_string()))?;
        let conn = Connection::from_stream(stream, peer, client_id);
        let resp = conn
            .request_unchecked(
                &Request::ApiVersions(ApiVersionsRequest {}),
                connect_timeout,
            )
            .await
            .map_err(|e| connect_err(format!("ApiVersions handshake failed: {e}")))?;
        let Response::ApiVersions(v) = resp else {
            return Err(ClientError::Protocol(
                "ApiVersions answered with another response".into(),
            ));
        };
        {
            let mut map = lock(&conn.inner.versions);
            for a in v.apis {
                map.insert(a.api_key, (a.min_version, a.max_version));
            }
        }
        Ok(conn)
    }

    fn from_stream(stream: TcpStream, addr: SocketAddr, client_id: &str) -> Connection {
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            addr,
            pending: Mutex::new(Ok(HashMap::new())),
        });
        let (frames, rx) = mpsc::channel(INFLIGHT_REQUESTS_PER_CONNECTION);
        let reader = tokio::spawn(read_loop(rd, shared.clone())).abort_handle();
        let writer = tokio::spawn(write_loop(wr, rx, shared.clone())).abort_handle();
        Connection {
            inner: Arc::new(Inner {
                shared,
                client_id: client_id.to_string(),
                next_id: AtomicU32::new(1),
                permits: Arc::new(Semaphore::new(INFLIGHT_REQUESTS_PER_CONNECTION)),
                frames,
                versions: Mutex::new(HashMap::new()),
                reader,
                writer,
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.shared.addr
    }

    /// False once the connection failed; the cluster then replaces it.
    pub fn is_alive(&self) -> bool {
        lock(&self.inner.shared.pending).is_ok()
    }

    /// Sends `req` and waits for its response, at most `timeout`. A request-level error from the broker comes
    /// back as [`ClientError::Broker`].
    pub async fn request(&self, req: &Request, timeout: Duration) -> Result<Response> {
        self.send(req, timeout).await?.await
    }

    /// The first half of [`Connection::request`]: queues `req` for the socket and returns the future of its
    /// response (bounded by the same `timeout`, counted from now). Requests sent by calls that return one
    /// after another reach the broker in that order.
    pub async fn send(&self, req: &Request, timeout: Duration) -> Result<PendingResponse> {
        let api = req.api_key();
        let ours = api.versions().1;
        let supported = lock(&self.inner.versions).get(&(api as u16)).copied();
        match supported {
            Some((min, max)) if (min..=max).contains(&ours) => {}
            _ => {
                return Err(ClientError::UnsupportedVersion {
                    api: api_name(api),
                    version: ours,
                })
            }
        }
        self.send_unchecked(req, timeout).await
    }

    async fn request_unchecked(&self, req: &Request, timeout: Duration) -> Result<Response> {
        self.send_unchecked(req, timeout).await?.await
    }

    async fn send_unchecked(&self, req: &Request, timeout: Duration) -> Result<PendingResponse> {
        let api = req.api_key();
        let timeout_err = ClientError::Timeout {
            what: api_name(api),
            ms: timeout.as_millis() as u64,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let permit: OwnedSemaphorePermit =
            tokio::time::timeout_at(deadline, self.inner.permits.clone().acquire_owned())
                .await
                .map_err(|_| timeout_err.clone())?
                .map_err(|_| self.lost("connection closed"))?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match &mut *lock(&self.inner.shared.pending) {
            Ok(map) => {
                map.insert(id, tx);
            }
            Err(reason) => return Err(self.lost(reason)),
        }
        let frame = encode_request(id, &self.inner.client_id, req);
        let sent = tokio::time::timeout_at(deadline, self.inner.frames.send(frame)).await;
        if !matches!(sent, Ok(Ok(()))) {
            self.forget(id);
            return Err(match sent {
                Err(_) => timeout_err,
                _ => self.lost("writer stopped"),
            });
        }
        let conn = self.clone();
        Ok(Box::pin(async move {
            let _permit = permit;
            let frame = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err(conn.lost("connection closed")),
                Err(_) => {
                    conn.forget(id);
                    return Err(timeout_err);
                }
            };
            let (_, body) = decode_response(api, frame).map_err(ClientError::decode)?;
            body.map_err(|e| ClientError::broker(e.code, Some(e.message)))
        }))
    }

    fn forget(&self, id: u32) {
        if let Ok(map) = &mut *lock(&self.inner.shared.pending) {
            map.remove(&id);
        }
    }

    fn lost(&self, why: &str) -> ClientError {
        ClientError::ConnectionLost {
            addr: self.inner.shared.addr,
            message: why.to_string(),
        }
    }
}

fn api_name(api: ApiKey) -> String {
    format!("{api:?}")
}

async fn read_loop(rd: tokio::net::tcp::OwnedReadHalf, shared: Arc<Shared>) {
    let mut frames = FramedRead::new(rd, frame_codec());
    let reason = loop {
        match frames.next().await {
            Some(Ok(frame)) => {
                let frame = frame.freeze();
                let id = match response_correlation_id(&frame) {
                    Ok(id) => id,
                    Err(_) => break "response frame shorter than its header".to_string(),
                };
                let waiter = match &mut *lock(&shared.pending) {
                    Ok(map) => map.remove(&id),
                    Err(_) => return,
                };
                // No waiter: the request timed out and its caller left; the answer is dropped.
                if let Some(w) = waiter {
                    let _ = w.send(Ok(frame));
                }
            }
            Some(Err(e)) => break format!("read failed: {e}"),
            None => break "closed by the broker".to_string(),
        }
    };
    shared.fail(reason);
}

async fn write_loop(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<Bytes>>,
    shared: Arc<Shared>,
) {
    let mut queue: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    while let Some(first) = rx.recv().await {
        queue.extend(first);
        // Gather whatever else is already queued into the same writes.
        while queue.len() < IOV_MAX_PER_WRITE {
            match rx.try_recv() {
                Ok(more) => queue.extend(more),
                Err(_) => break,
            }
        }
        if let Err(e) = write_all_vectored(&mut wr, &mut queue).await {
            shared.fail(format!("write failed: {e}"));
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// Writes every chunk of `queue` with `writev`, at most [`IOV_MAX_PER_WRITE`] chunks per call.
async fn write_all_vectored<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    queue: &mut std::collections::VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !queue.is_empty() {
        let mut slices = [IoSlice::new(&[]); IOV_MAX_PER_WRITE];
        let mut n = 0;
        for (slot, chunk) in slices.iter_mut().zip(queue.iter()) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        let mut written = w.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    w.flush().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use runnel_protocol::frame::{decode_request, encode_response};
    use runnel_protocol::messages::{ApiVersionRange, ApiVersionsResponse, MetadataResponse};
    use runnel_protocol::ErrorResponse;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    pub(crate) fn all_versions() -> ApiVersionsResponse {
        ApiVersionsResponse {
            apis: ApiKey::ALL
                .iter()
                .map(|a| ApiVersionRange {
                    api_key: *a as u16,
                    min_version: a.versions().0,
                    max_version: a.versions().1,
                })
                .collect(),
            broker_version: "test".into(),
        }
    }

    /// Reads one request frame from a raw socket.
    pub(crate) async fn read_request(
        s: &mut TcpStream,
    ) -> Option<(runnel_protocol::RequestHeader, Request)> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.ok()?;
        let (h, body) = decode_request(Bytes::from(buf)).ok()?;
        Some((h, body.ok()?))
    }

    pub(crate) async fn write_response(s: &mut TcpStream, id: u32, r: &Response) {
        let frame = runnel_protocol::frame::concat(&encode_response(id, Ok(r)));
        s.write_all(&frame).await.unwrap();
    }

    fn meta(cluster: &str) -> Response {
        Response::Metadata(MetadataResponse {
            metadata_epoch: 0,
            cluster_id: cluster.into(),
            ..Default::default()
        })
    }

    fn metadata_req() -> Request {
        Request::Metadata(Default::default())
    }

    #[tokio::test]
    async fn handshake_then_out_of_order_responses_reach_their_callers() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (h, r) = read_request(&mut s).await.unwrap();
            assert!(matches!(r, Request::ApiVersions(_)));
            write_response(
                &mut s,
                h.correlation_id,
                &Response::ApiVersions(all_versions()),
            )
            .await;
            let (a, _) = read_request(&mut s).await.unwrap();
            let (b, _) = read_request(&mut s).await.unwrap();
            // Answer the second first.
            write_response(&mut s, b.correlation_id, &meta("second")).await;
            write_response(&mut s, a.correlation_id, &meta("first")).await;
            // A request-level error.
            let (c, _) = read_request(&mut s).await.unwrap();
            let e = ErrorResponse {
                code: runnel_protocol::ErrorCode::Throttled,
                message: "slow".into(),
            };
            let f = runnel_protocol::frame::concat(&encode_response(c.correlation_id, Err(&e)));
            s.write_all(&f).await.unwrap();
            s
        });
        let c = Connection::connect(&addr, "t", Duration::from_secs(2))
            .await
            .unwrap();
        let t = Duration::from_secs(2);
        let (q1, q2) = (metadata_req(), metadata_req());
        let r1 = c.request(&q1, t);
        let r2 = c.request(&q2, t);
        let (r1, r2) = tokio::join!(r1, r2);
        let name = |r: Response| match r {
            Response::Metadata(m) => m.cluster_id,
            _ => panic!(),
        };
        assert_eq!(name(r1.unwrap()), "first");
        assert_eq!(name(r2.unwrap()), "second");
        let e = c.request(&metadata_req(), t).await.unwrap_err();
        assert_eq!(e.code(), Some(runnel_protocol::ErrorCode::Throttled));
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn timeout_then_close_fail_requests_and_never_hang() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (close_tx, close_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (h, _) = read_request(&mut s).await.unwrap();
            write_response(
                &mut s,
                h.correlation_id,
                &Response::ApiVersions(all_versions()),
            )
            .await;
            // Never answer; close when told.
            let _ = close_rx.await;
            drop(s);
        });
        let c = Connection::connect(&addr, "t", Duration::from_secs(2))
            .await
            .unwrap();
        let e = c
            .request(&metadata_req(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        let pending = {
            let c = c.clone();
            tokio::spawn(async move { c.request(&metadata_req(), Duration::from_secs(30)).await })
        };
        close_tx.send(()).unwrap();
        let e = tokio::time::timeout(Duration::from_secs(5), pending)
            .await
            .expect("a pending request must fail when the connection closes")
            .unwrap()
            .unwrap_err();
        assert!(matches!(e, ClientError::ConnectionLost { .. }), "{e}");
        assert!(!c.is_alive());
        let e = c
            .request(&metadata_req(), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::ConnectionLost { .. }), "{e}");
    }

    #[tokio::test]
    async fn garbage_from_the_broker_is_an_error_not_a_panic() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (h, _) = read_request(&mut s).await.unwrap();
            write_response(
                &mut s,
                h.correlation_id,
                &Response::ApiVersions(all_versions()),
            )
            .await;
            // A frame with the right correlation id and a body that is not a Metadata response.
            let (h, _) = read_request(&mut s).await.unwrap();
            let mut f = Vec::new();
            f.extend_from_slice(&9u32.to_be_bytes());
            f.extend_from_slice(&h.correlation_id.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0xff, 0xff, 0xff]);
            s.write_all(&f).await.unwrap();
            // Then a length prefix beyond FRAME_SIZE_MAX: framing is lost, the connection must close.
            let _ = read_request(&mut s).await.unwrap();
            s.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
                .await
                .unwrap();
            let _ = read_request(&mut s).await;
        });
        let c = Connection::connect(&addr, "t", Duration::from_secs(2))
            .await
            .unwrap();
        let t = Duration::from_secs(5);
        let e = c.request(&metadata_req(), t).await.unwrap_err();
        assert!(matches!(e, ClientError::Protocol(_)), "{e}");
        let e = c.request(&metadata_req(), t).await.unwrap_err();
        assert!(matches!(e, ClientError::ConnectionLost { .. }), "{e}");
        assert!(!c.is_alive());
    }

    #[tokio::test]
    async fn connect_to_a_silent_listener_is_bounded() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = Connection::connect(&addr, "t", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        drop(l);
    }

    #[tokio::test]
    async fn in_flight_requests_stop_at_the_limit() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<u32>();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (h, _) = read_request(&mut s).await.unwrap();
            write_response(
                &mut s,
                h.correlation_id,
                &Response::ApiVersions(all_versions()),
            )
            .await;
            let mut ids = vec![];
            for _ in 0..INFLIGHT_REQUESTS_PER_CONNECTION {
                let (h, _) = read_request(&mut s).await.unwrap();
                seen_tx.send(h.correlation_id).unwrap();
                ids.push(h.correlation_id);
            }
            let _ = go_rx.await;
            for id in ids {
                write_response(&mut s, id, &meta("x")).await;
            }
            // The request beyond the limit arrives only now.
            let (h, _) = read_request(&mut s).await.unwrap();
            seen_tx.send(h.correlation_id).unwrap();
            write_response(&mut s, h.correlation_id, &meta("late")).await;
            s
        });
        let c = Connection::connect(&addr, "t", Duration::from_secs(2))
            .await
            .unwrap();
        let mut tasks = vec![];
        for _ in 0..INFLIGHT_REQUESTS_PER_CONNECTION + 1 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                c.request(&metadata_req(), Duration::from_secs(10)).await
            }));
        }
        for _ in 0..INFLIGHT_REQUESTS_PER_CONNECTION {
            seen_rx.recv().await.unwrap();
        }
        // The extra request must not reach the broker while the limit is used up.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), seen_rx.recv())
                .await
                .is_err(),
            "a request beyond the in-flight limit was sent"
        );
        go_tx.send(()).unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert!(seen_rx.recv().await.is_some());
    }

    #[tokio::test]
    async fn vectored_writer_handles_many_chunks_and_partial_writes() {
        let (mut a, mut b) = tokio::io::duplex(7);
        let mut q: std::collections::VecDeque<Bytes> = (0..200u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 5) as usize + 1]))
            .collect();
        let want: Vec<u8> = q.iter().flat_map(|c| c.iter().copied()).collect();
        let n = want.len();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; n];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        write_all_vectored(&mut a, &mut q).await.unwrap();
        assert!(q.is_empty());
        assert_eq!(reader.await.unwrap(), want);
    }
}
