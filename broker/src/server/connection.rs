//! One client connection: a reader that decodes frames and dispatches each request to its own handler task,
//! and a writer that sends responses, in completion order, with vectored writes.
//!
//! Invariants:
//! - At most `max_inflight_per_connection` requests are outstanding per connection, counted from the moment
//!   a frame is read until its response is written. The reader takes a slot *before* reading the next frame,
//!   so a full connection stops being read (TCP back-pressure); that is the bound on its memory.
//! - A framing error (oversized length prefix, a frame cut short by EOF) or a header too short to carry a
//!   correlation id closes the connection: framing cannot be recovered. A bad body is answered with an
//!   error response (UNSUPPORTED_API, UNSUPPORTED_VERSION or INVALID_REQUEST) and the connection stays up.
//! - Nothing here panics on input; a handler that panics anyway is answered with UNKNOWN_SERVER_ERROR.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use runnel_protocol::codec::frame_codec;
use runnel_protocol::frame::{decode_request, encode_response};
use runnel_protocol::messages::raft_rpc::RAFT_RPC_STREAM_APPEND;
use runnel_protocol::wire::DecodeError;
use runnel_protocol::{ApiKey, ErrorCode, ErrorResponse, Request, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::metrics::{api_label, InflightGuard};
use super::Broker;
use crate::handlers;

/// Responses gathered into one vectored write at most.
pub const WRITE_BATCH_MAX: usize = 64;
/// Buffers passed to one `writev` at most (well under every platform's IOV_MAX).
pub const IOV_BATCH: usize = 64;

/// A request's hold on its connection: the in-flight slot and the broker-wide in-flight gauge, both released
/// when the response has been written (or dropped).
struct Slot {
    _permit: OwnedSemaphorePermit,
    _inflight: InflightGuard,
}

/// A response on its way to the socket; `_slot` frees the request's in-flight slot once written.
struct Outgoing {
    chunks: Vec<Bytes>,
    _slot: Slot,
}

/// Decrements the connection gauge however the connection ends.
struct ConnectionGauge(Arc<Broker>);

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.metrics.connection_closed();
    }
}

/// Serves one connection until the peer closes it, framing fails, or the broker drains.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    _conn_permit: OwnedSemaphorePermit,
) {
    broker.metrics.connection_opened();
    let _gauge = ConnectionGauge(broker.clone());
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let inflight = broker.config.max_inflight_per_connection;
    let slots = Arc::new(Semaphore::new(inflight));
    // Every queued response holds a slot, so the queue never holds more than `inflight` and sends never wait.
    let (tx, rx) = mpsc::channel::<Outgoing>(inflight);
    let stop = broker.kill.child_token();
    let writer = tokio::spawn(write_loop(wr, rx, stop.clone()));
    let mut frames = FramedRead::new(rd, frame_codec());
    // Signalled when the last produce request read from this connection has submitted its batches.
    let mut produce_turn: Option<oneshot::Receiver<()>> = None;
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = broker.closing.cancelled() => break,
            _ = stop.cancelled() => break,
        };
        let frame = tokio::select! {
            f = frames.next() => f,
            _ = broker.closing.cancelled() => break,
            _ = stop.cancelled() => break,
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(%peer, error = %e, "framing error; closing the connection");
                stop.cancel();
                break;
            }
            Some(Ok(frame)) => {
                if !dispatch(frame.freeze(), slot, &tx, &broker, peer, &mut produce_turn) {
                    stop.cancel();
                    break;
                }
            }
        }
    }
    // The writer sends what the handlers still produce, then ends when the last sender is gone.
    drop(tx);
    let _ = writer.await;
}

/// The error code for a body that did not decode.
fn decode_error_code(e: &DecodeError) -> ErrorCode {
    match e {
        DecodeError::UnknownApi(_) => ErrorCode::UnsupportedApi,
        DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        DecodeError::Incomplete | DecodeError::TooLarge { .. } | DecodeError::Malformed(_) => {
            ErrorCode::InvalidRequest
        }
    }
}

fn queue(tx: &mpsc::Sender<Outgoing>, chunks: Vec<Bytes>, slot: Slot) -> bool {
    tx.try_send(Outgoing {
        chunks,
        _slot: slot,
    })
    .is_ok()
}

/// Handles one frame. Returns false when the connection must close.
fn dispatch(
    frame: Bytes,
    slot: OwnedSemaphorePermit,
    tx: &mpsc::Sender<Outgoing>,
    broker: &Arc<Broker>,
    peer: SocketAddr,
    produce_turn: &mut Option<oneshot::Receiver<()>>,
) -> bool {
    let started = Instant::now();
    let slot = Slot {
        _permit: slot,
        _inflight: broker.metrics.request_started(),
    };
    let (header, body) = match decode_request(frame.clone()) {
        Ok(x) => x,
        Err(e) => {
            // The header itself is cut short. With api key, version and correlation id present the client can
            // still be told; otherwise there is nothing to address an answer to.
            if frame.len() < 8 {
                tracing::debug!(%peer, error = %e, "unreadable request header; closing the connection");
                return false;
            }
            let cid = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let api = ApiKey::from_u16(u16::from_be_bytes([frame[0], frame[1]]));
            let resp = ErrorResponse {
                code: ErrorCode::InvalidRequest,
                message: format!("request header: {e}"),
            };
            let label = api_label(api);
            broker.metrics.observe_request(label, started.elapsed());
            broker
                .metrics
                .observe_error(label, resp.code, Some(&resp.message));
            return queue(tx, encode_response(cid, Err(&resp)), slot);
        }
    };
    let api = ApiKey::from_u16(header.api_key);
    let req = match body {
        Ok(req) => req,
        Err(e) => {
            tracing::debug!(%peer, api = header.api_key, version = header.api_version, error = %e, "bad request body");
            let resp = ErrorResponse {
                code: decode_error_code(&e),
                message: e.to_string(),
            };
            let label = api_label(api);
            broker.metrics.observe_request(label, started.elapsed());
            broker
                .metrics
                .observe_error(label, resp.code, Some(&resp.message));
            return queue(tx, encode_response(header.correlation_id, Err(&resp)), slot);
        }
    };
    if broker.is_draining() {
        let resp = ErrorResponse {
            code: ErrorCode::BrokerShuttingDown,
            message: "the broker is shutting down; retry on another broker or after restart".into(),
        };
        let label = api_label(api);
        broker.metrics.observe_request(label, started.elapsed());
        broker
            .metrics
            .observe_error(label, resp.code, Some(&resp.message));
        return queue(tx, encode_response(header.correlation_id, Err(&resp)), slot);
    }
    let tx = tx.clone();
    let b = broker.clone();
    let cid = header.correlation_id;
    let label = api_label(Some(req.api_key()));
    // Produce requests of one connection submit their batches in arrival order (see handlers::produce), and
    // so do pipelined AppendEntries.
    let handler = match req {
        Request::Produce(r) => {
            let (submitted, next) = oneshot::channel();
            let after = produce_turn.replace(next);
            let b = b.clone();
            async move {
                handlers::produce::handle_in_turn(&b, r, after, Some(submitted))
                    .await
                    .map(Response::Produce)
            }
            .boxed()
        }
        // Pipelined AppendEntries reach their group's append lane in arrival order (see raft::network).
        Request::RaftRpc(r) if r.kind == RAFT_RPC_STREAM_APPEND => {
            let answer = b.raft.submit_stream_append(r);
            async move { Ok(Response::RaftRpc(answer.await)) }.boxed()
        }
        req => {
            let b = b.clone();
            async move { handlers::handle(&b, req).await }.boxed()
        }
    };
    broker.requests.spawn(async move {
        let result = std::panic::AssertUnwindSafe(handler)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(api = label, "request handler panicked");
                Err(ErrorResponse {
                    code: ErrorCode::Unknown,
                    message: "internal error while handling the request".into(),
                })
            });
        let chunks = match &result {
            Ok(r) => encode_response(cid, Ok(r)),
            Err(e) => encode_response(cid, Err(e)),
        };
        b.metrics.observe_request(label, started.elapsed());
        b.metrics.observe_outcome(label, &result);
        let _ = tx
            .send(Outgoing {
                chunks,
                _slot: slot,
            })
            .await;
    });
    true
}

/// Writes queued responses, batching whatever is ready into one vectored write, until the queue closes or
/// `stop` fires. A write error stops the connection.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH_MAX);
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = stop.cancelled() => return,
        };
        batch.push(first);
        while batch.len() < WRITE_BATCH_MAX {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let chunks: Vec<&Bytes> = batch.iter().flat_map(|o| o.chunks.iter()).collect();
        let res = tokio::select! {
            r = write_all_chunks(&mut wr, &chunks) => r,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "write failed; closing the connection");
            stop.cancel();
            return;
        }
        drop(chunks);
        batch.clear();
    }
    let _ = wr.shutdown().await;
}

/// Writes every chunk in order with `writev`, resuming after partial writes.
pub(crate) async fn write_all_chunks<W: AsyncWrite + Unpin>(
    w: &mut W,
    chunks: &[&Bytes],
) -> io::Result<()> {
    let (mut idx, mut off) = (0usize, 0usize);
    loop {
        while idx < chunks.len() && chunks.get(idx).is_some_and(|c| c.len() == off) {
            idx += 1;
            off = 0;
        }
        let Some(rest) = chunks.get(idx..) else {
            return Ok(());
        };
        if rest.is_empty() {
            return Ok(());
        }
        let mut slices = [IoSlice::new(&[]); IOV_BATCH];
        let mut n_slices = 0;
        for (i, c) in rest.iter().take(IOV_BATCH).enumerate() {
            let s: &[u8] = if i == 0 {
                c.get(off..).unwrap_or(&[])
            } else {
                c
            };
            slices[n_slices] = IoSlice::new(s);
            n_slices += 1;
        }
        let mut n = w.write_vectored(&slices[..n_slices]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the peer accepts no more bytes",
            ));
        }
        while n > 0 {
            let Some(c) = chunks.get(idx) else { break };
            let left = c.len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Accepts at most `max` bytes per call, so every write is partial.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut budget = self.max;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(budget);
                self.out.extend_from_slice(&b[..take]);
                budget -= take;
                n += take;
                if budget == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_vectored_writes_resume_in_order() {
        let chunks: Vec<Bytes> = (0..200u32)
            .map(|i| Bytes::from(vec![i as u8; (i % 7) as usize]))
            .collect();
        let want: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let refs: Vec<&Bytes> = chunks.iter().collect();
        for max in [1, 3, 64, 10_000] {
            let mut t = Trickle {
                out: Vec::new(),
                max,
                calls: 0,
            };
            write_all_chunks(&mut t, &refs).await.unwrap();
            assert_eq!(t.out, want, "max {max}");
            if max == 10_000 {
                // 200 chunks need at least ceil(200 / IOV_BATCH) calls.
                assert!(t.calls >= 200 / IOV_BATCH && t.calls <= 200, "{}", t.calls);
            }
        }
    }

    #[tokio::test]
    async fn a_writer_that_accepts_nothing_is_an_error() {
        let mut t = Trickle {
            out: Vec::new(),
            max: 0,
            calls: 0,
        };
        let b = Bytes::from_static(b"abc");
        let e = write_all_chunks(&mut t, &[&b]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
        write_all_chunks(&mut t, &[]).await.unwrap();
    }

    #[test]
    fn body_errors_map_to_codes() {
        assert_eq!(
            decode_error_code(&DecodeError::UnknownApi(99)),
            ErrorCode::UnsupportedApi
        );
        assert_eq!(
            decode_error_code(&DecodeError::UnsupportedVersion { api: 0, version: 9 }),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            decode_error_code(&DecodeError::Malformed("x")),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            decode_error_code(&DecodeError::Incomplete),
            ErrorCode::InvalidRequest
        );
    }
}
