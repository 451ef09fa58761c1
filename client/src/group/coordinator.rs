//! Finding and talking to a consumer group's coordinator.
//!
//! `FindCoordinator` may go to any broker; it names the broker that owns the group's offsets partition. The
//! answer is cached until a request to it fails at the connection level or is answered `NOT_COORDINATOR` /
//! `COORDINATOR_NOT_AVAILABLE`, which makes the next request look the coordinator up again.
//!
//! Invariants: every call is bounded by the timeout it is given (lookup included); retries are bounded by
//! [`COORDINATOR_ATTEMPTS_MAX`] and spaced by [`COORDINATOR_RETRY_BACKOFF`]; only retriable failures are
//! retried, so a refusal (`UNKNOWN_MEMBER_ID`, `GROUP_NOT_EMPTY`, ...) comes back at once.

use std::sync::Mutex;
use std::time::Duration;

use runnel_protocol::messages::FindCoordinatorRequest;
use runnel_protocol::{ErrorCode, Request, Response};

use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// Most attempts of one coordinator request (retriable failures only).
pub const COORDINATOR_ATTEMPTS_MAX: u32 = 40;
/// Pause between attempts of a coordinator request.
pub const COORDINATOR_RETRY_BACKOFF: Duration = Duration::from_millis(250);
/// Longest group id accepted by the client.
pub const GROUP_ID_LEN_MAX: usize = 255;

/// Checks a group id before it is sent anywhere.
pub fn validate_group_id(group_id: &str) -> Result<()> {
    if group_id.is_empty() {
        return Err(ClientError::InvalidArgument("the group id is empty".into()));
    }
    if group_id.len() > GROUP_ID_LEN_MAX {
        return Err(ClientError::InvalidArgument(format!(
            "the group id is longer than {GROUP_ID_LEN_MAX} bytes"
        )));
    }
    Ok(())
}

/// The coordinator of one group, looked up on demand.
#[derive(Debug)]
pub(crate) struct CoordinatorClient {
    cluster: Cluster,
    group_id: String,
    /// The coordinator's `host:port`, once known.
    addr: Mutex<Option<String>>,
}

/// True when the coordinator should be looked up again before the next attempt.
fn refind(e: &ClientError) -> bool {
    match e {
        ClientError::Broker { code, .. } => matches!(
            code,
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::BrokerShuttingDown
        ),
        ClientError::Connect { .. }
        | ClientError::NoBrokerReachable { .. }
        | ClientError::ConnectionLost { .. }
        | ClientError::Timeout { .. } => true,
        _ => false,
    }
}

impl CoordinatorClient {
    pub fn new(cluster: Cluster, group_id: &str) -> CoordinatorClient {
        CoordinatorClient {
            cluster,
            group_id: group_id.to_string(),
            addr: Mutex::new(None),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    fn cached(&self) -> Option<String> {
        self.addr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn forget(&self) {
        *self.addr.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Asks any broker where the coordinator is, and caches the answer.
    pub async fn find(&self) -> Result<String> {
        let req = Request::FindCoordinator(FindCoordinatorRequest {
            group_id: self.group_id.clone(),
        });
        let Response::FindCoordinator(r) = self.cluster.request_any(&req).await? else {
            return Err(ClientError::Protocol(
                "FindCoordinator answered with another response".into(),
            ));
        };
        if r.error_code != 0 {
            return Err(ClientError::broker(
                ErrorCode::from_u16(r.error_code),
                r.error_message,
            ));
        }
        if r.host.is_empty() || r.port == 0 {
            return Err(ClientError::broker(
                ErrorCode::CoordinatorNotAvailable,
                Some(format!("no coordinator for group {}", self.group_id)),
            ));
        }
        let addr = if r.host.contains(':') {
            format!("[{}]:{}", r.host, r.port)
        } else {
            format!("{}:{}", r.host, r.port)
        };
        *self.addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.clone());
        Ok(addr)
    }

    /// One attempt, lookup included, bounded by `timeout`. A request-level broker error comes back as
    /// [`ClientError::Broker`]; body-level error codes are the caller's to read.
    pub async fn request(&self, req: &Request, timeout: Duration) -> Result<Response> {
        let attempt = async {
            let addr = match self.cached() {
                Some(a) => a,
                None => self.find().await?,
            };
            let conn = self.cluster.connection_at(&addr).await?;
            let r = conn.request(req, timeout).await;
            if matches!(
                r,
                Err(ClientError::ConnectionLost { .. } | ClientError::Timeout { .. })
            ) {
                self.cluster.drop_connection(&addr).await;
            }
            r
        };
        let r = match tokio::time::timeout(timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                what: format!(
                    "{:?} to the coordinator of {}",
                    req.api_key(),
                    self.group_id
                ),
                ms: timeout.as_millis() as u64,
            }),
        };
        if let Err(e) = &r {
            if refind(e) {
                self.forget();
            }
        }
        r
    }

    /// Sends `req` until `read` accepts the answer, retrying retriable failures (of the request or of what
    /// `read` finds in the body) at most [`COORDINATOR_ATTEMPTS_MAX`] times.
    pub async fn call<T>(
        &self,
        req: &Request,
        timeout: Duration,
        read: impl Fn(Response) -> Result<T>,
    ) -> Result<T> {
        let mut attempt = 1;
        loop {
            let r = self.request(req, timeout).await.and_then(&read);
            match r {
                Err(e) if e.retriable() && attempt < COORDINATOR_ATTEMPTS_MAX => {
                    if refind(&e) {
                        self.forget();
                    }
                    tracing::debug!(group = %self.group_id, attempt, error = %e, "coordinator request failed; retrying");
                    attempt += 1;
                    tokio::time::sleep(COORDINATOR_RETRY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }
}

/// Turns a body-level error code into an error (request-level ones already are).
pub(crate) fn body_error(code: u16, message: Option<String>) -> Result<()> {
    match ErrorCode::from_u16(code) {
        ErrorCode::None => Ok(()),
        c => Err(ClientError::broker(c, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClientConfig;
    use crate::testing::{self, FakeBroker, Incoming};
    use runnel_protocol::messages::{
        FindCoordinatorResponse, OffsetFetchRequest, OffsetFetchResponse,
    };

    #[test]
    fn group_ids_are_checked() {
        assert!(validate_group_id("").is_err());
        assert!(validate_group_id(&"g".repeat(GROUP_ID_LEN_MAX)).is_ok());
        assert!(validate_group_id(&"g".repeat(GROUP_ID_LEN_MAX + 1)).is_err());
    }

    async fn next(fb: &mut FakeBroker) -> Incoming {
        tokio::time::timeout(Duration::from_secs(5), fb.requests.recv())
            .await
            .expect("a request within 5 s")
            .expect("fake broker alive")
    }

    fn found(fb: &FakeBroker) -> Response {
        let port: u16 = fb.addr.rsplit(':').next().unwrap().parse().unwrap();
        Response::FindCoordinator(FindCoordinatorResponse {
            node_id: 1,
            host: "127.0.0.1".into(),
            port,
            ..Default::default()
        })
    }

    fn fetch_answer(code: ErrorCode) -> Response {
        Response::OffsetFetch(OffsetFetchResponse {
            error_code: code.as_u16(),
            ..Default::default()
        })
    }

    async fn setup() -> (FakeBroker, std::sync::Arc<CoordinatorClient>) {
        let fb = testing::start(&[("t", 1)]).await;
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        (
            fb,
            std::sync::Arc::new(CoordinatorClient::new(cluster, "g")),
        )
    }

    fn spawn_fetch(c: &std::sync::Arc<CoordinatorClient>) -> tokio::task::JoinHandle<Result<()>> {
        let c = c.clone();
        tokio::spawn(async move {
            let req = Request::OffsetFetch(OffsetFetchRequest {
                group_id: "g".into(),
                topics: None,
            });
            c.call(&req, Duration::from_secs(5), |r| match r {
                Response::OffsetFetch(f) => body_error(f.error_code, f.error_message),
                _ => Err(ClientError::Protocol("other".into())),
            })
            .await
        })
    }

    #[tokio::test]
    async fn not_coordinator_is_retried_after_a_new_lookup() {
        let (mut fb, c) = setup().await;
        let call = spawn_fetch(&c);
        let inc = next(&mut fb).await;
        assert!(matches!(inc.request, Request::FindCoordinator(_)));
        inc.reply.send(found(&fb)).unwrap();
        let inc = next(&mut fb).await;
        assert!(matches!(inc.request, Request::OffsetFetch(_)));
        inc.reply
            .send(fetch_answer(ErrorCode::NotCoordinator))
            .unwrap();
        // The cached coordinator is forgotten: the retry starts with a new lookup.
        let inc = next(&mut fb).await;
        assert!(
            matches!(inc.request, Request::FindCoordinator(_)),
            "{:?}",
            inc.request
        );
        inc.reply.send(found(&fb)).unwrap();
        let inc = next(&mut fb).await;
        inc.reply.send(fetch_answer(ErrorCode::None)).unwrap();
        call.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refusals_come_back_at_once_and_retries_are_bounded() {
        let (mut fb, c) = setup().await;
        let call = spawn_fetch(&c);
        let inc = next(&mut fb).await;
        inc.reply.send(found(&fb)).unwrap();
        let inc = next(&mut fb).await;
        inc.reply
            .send(fetch_answer(ErrorCode::UnknownMemberId))
            .unwrap();
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownMemberId));
        // A coordinator that keeps saying "not available" is asked exactly COORDINATOR_ATTEMPTS_MAX times.
        let call = spawn_fetch(&c);
        let mut fetches = 0;
        while fetches < COORDINATOR_ATTEMPTS_MAX {
            let inc = next(&mut fb).await;
            match inc.request {
                Request::FindCoordinator(_) => inc.reply.send(found(&fb)).unwrap(),
                Request::OffsetFetch(_) => {
                    fetches += 1;
                    inc.reply
                        .send(fetch_answer(ErrorCode::CoordinatorNotAvailable))
                        .unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let e = call.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::CoordinatorNotAvailable));
        assert!(
            fb.requests.try_recv().is_err(),
            "an attempt beyond the limit"
        );
    }
}
