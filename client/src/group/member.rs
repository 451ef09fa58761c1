//! The member's heartbeat loop: one background task per [`super::GroupConsumer`] that joins the group,
//! heartbeats, rejoins, and leaves.
//!
//! Protocol (KIP-848 style, see `protocol/src/messages/group_heartbeat.rs`): the first heartbeat joins
//! (`member_epoch` 0, with the subscription); every answer carries the member's full current assignment; each
//! heartbeat reports what the consumer owns. The task never touches partitions itself: it publishes the latest
//! [`Membership`] through a `watch` channel (only the newest value matters, so the channel is bounded by
//! construction) and the consumer applies it inside `poll`, then reports what it holds through [`Shared`] and
//! wakes the task so a release reaches the coordinator at once.
//!
//! Invariants:
//! - An *incarnation* is one stint of membership. It changes whenever membership is lost (`UNKNOWN_MEMBER_ID`,
//!   `FENCED_MEMBER_EPOCH`, or no successful heartbeat for a whole session timeout); the consumer then drops
//!   every partition without committing (they may already belong to someone else). What the consumer holds
//!   is reported only for the incarnation it was acquired in, so a rejoin never claims stale partitions.
//! - Every request is bounded by [`heartbeat_timeout`]; failures back off exponentially between
//!   [`HEARTBEAT_BACKOFF_MIN`] and [`HEARTBEAT_BACKOFF_MAX`]; the loop ends only on shutdown (after a bounded
//!   leave) or on a non-retriable error, which is published for `poll` to return.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_protocol::messages::{
    GroupHeartbeatRequest, GroupHeartbeatResponse, TopicPartitions, JOIN_EPOCH, LEAVE_EPOCH,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::coordinator::CoordinatorClient;
use super::TopicPartition;
use crate::error::{ClientError, Result};

/// The coordinator's heartbeat interval is clamped to at least this...
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(50);
/// ...and at most this (and a third of the session timeout).
pub const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(5);
/// First pause after a failed heartbeat; doubled per failure up to [`HEARTBEAT_BACKOFF_MAX`].
pub const HEARTBEAT_BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const HEARTBEAT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long leaving the group may take on close.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most partitions one assignment may hold (a larger one is a protocol error).
pub const ASSIGNED_PARTITIONS_MAX: usize = 100_000;

/// What the member knows about its place in the group; published to the consumer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Membership {
    /// Bumped every time membership is lost; starts at 1.
    pub incarnation: u64,
    pub member_id: String,
    pub member_epoch: i32,
    /// The coordinator's latest assignment for this member (empty until joined, and after a loss).
    pub assignment: Arc<BTreeSet<TopicPartition>>,
    /// A non-retriable failure: the task has stopped.
    pub error: Option<ClientError>,
}

/// What the consumer reports back: the partitions it holds, for one incarnation.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    pub incarnation: u64,
    pub partitions: Vec<TopicPartitions>,
}

/// State shared between the consumer and its heartbeat task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub owned: Mutex<Owned>,
    /// Notified when the consumer released partitions: heartbeat now instead of at the next interval.
    pub wake: Notify,
}

impl Shared {
    pub fn set_owned(&self, incarnation: u64, held: &BTreeSet<TopicPartition>) {
        let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        o.incarnation = incarnation;
        o.partitions = to_wire(held);
    }

    fn owned_for(&self, incarnation: u64) -> Vec<TopicPartitions> {
        let o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if o.incarnation == incarnation {
            o.partitions.clone()
        } else {
            Vec::new()
        }
    }
}

/// How the member presents itself.
#[derive(Debug, Clone)]
pub(crate) struct MemberConfig {
    pub topics: Vec<String>,
    pub instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// Bound on one heartbeat round trip: well inside the session, so a slow coordinator is noticed in time.
pub fn heartbeat_timeout(session_timeout: Duration) -> Duration {
    (session_timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(10))
}

fn interval_from(ms: u32, session_timeout: Duration) -> Duration {
    Duration::from_millis(u64::from(ms))
        .min(session_timeout / 3)
        .clamp(HEARTBEAT_INTERVAL_MIN, HEARTBEAT_INTERVAL_MAX)
}

pub(crate) fn to_wire(tps: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (t, p) in tps {
        match out.last_mut() {
            Some(last) if *last.topic == **t => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: t.to_string(),
                partitions: vec![*p],
            }),
        }
    }
    out
}

/// The assignment as a set; `Arc<str>` names are shared with `known` where they match, so repeated
/// assignments of the same topics do not allocate new names.
pub(crate) fn from_wire(
    tps: Vec<TopicPartitions>,
    known: &BTreeSet<TopicPartition>,
) -> Result<BTreeSet<TopicPartition>> {
    let total: usize = tps.iter().map(|t| t.partitions.len()).sum();
    if total > ASSIGNED_PARTITIONS_MAX {
        return Err(ClientError::Protocol(format!(
            "assignment of {total} partitions exceeds {ASSIGNED_PARTITIONS_MAX}"
        )));
    }
    let mut out = BTreeSet::new();
    for t in tps {
        let name: Arc<str> = match known.iter().find(|(k, _)| **k == *t.topic) {
            Some((k, _)) => k.clone(),
            None => Arc::from(t.topic.as_str()),
        };
        for p in t.partitions {
            out.insert((name.clone(), p));
        }
    }
    Ok(out)
}

/// What one heartbeat attempt means for the loop.
enum Outcome {
    Ok(GroupHeartbeatResponse),
    /// Membership is gone: rejoin.
    Lost(ClientError),
    /// Try again after a backoff.
    Retry(ClientError),
    /// Give up: publish and stop.
    Fatal(ClientError),
}

fn classify(r: Result<Response>) -> Outcome {
    let resp = match r {
        Ok(Response::GroupHeartbeat(h)) => h,
        Ok(_) => {
            return Outcome::Fatal(ClientError::Protocol(
                "GroupHeartbeat answered with another response".into(),
            ))
        }
        Err(e) if e.retriable() => return Outcome::Retry(e),
        Err(e) => return Outcome::Fatal(e),
    };
    match ErrorCode::from_u16(resp.error_code) {
        ErrorCode::None => Outcome::Ok(resp),
        c @ (ErrorCode::UnknownMemberId | ErrorCode::FencedMemberEpoch) => {
            Outcome::Lost(ClientError::broker(c, resp.error_message))
        }
        c => {
            let e = ClientError::broker(c, resp.error_message);
            if e.retriable() {
                Outcome::Retry(e)
            } else {
                Outcome::Fatal(e)
            }
        }
    }
}

/// The heartbeat task.
pub(crate) struct Heartbeat {
    pub coordinator: Arc<CoordinatorClient>,
    pub config: MemberConfig,
    pub shared: Arc<Shared>,
    pub tx: watch::Sender<Membership>,
    pub shutdown: CancellationToken,
}

impl Heartbeat {
    fn request(&self, member_id: &str, epoch: i32, incarnation: u64) -> Request {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group_id: self.coordinator.group_id().to_string(),
            member_id: member_id.to_string(),
            member_epoch: epoch,
            instance_id: self.config.instance_id.clone(),
            rebalance_timeout_ms: ms(self.config.rebalance_timeout),
            session_timeout_ms: ms(self.config.session_timeout),
            subscribed_topics: (epoch == JOIN_EPOCH).then(|| self.config.topics.clone()),
            owned: Some(if epoch == JOIN_EPOCH {
                Vec::new()
            } else {
                self.shared.owned_for(incarnation)
            }),
        })
    }

    /// Starts a new incarnation with nothing assigned; the consumer drops what it holds.
    fn lose(&self, incarnation: &mut u64, epoch: &mut i32, why: &ClientError) {
        tracing::warn!(group = %self.coordinator.group_id(), error = %why, "group membership lost; rejoining");
        *incarnation += 1;
        *epoch = JOIN_EPOCH;
        let inc = *incarnation;
        self.tx.send_modify(|m| {
            m.incarnation = inc;
            m.member_epoch = JOIN_EPOCH;
            m.assignment = Arc::new(BTreeSet::new());
        });
    }

    /// Publishes a successful answer; returns false if the assignment was malformed (published as fatal).
    fn accept(&self, resp: GroupHeartbeatResponse) -> bool {
        let assignment = match resp.assignment {
            None => None,
            Some(a) => match from_wire(a, &self.tx.borrow().assignment) {
                Ok(set) => Some(set),
                Err(e) => {
                    self.tx.send_modify(|m| m.error = Some(e));
                    return false;
                }
            },
        };
        self.tx.send_if_modified(|m| {
            let mut changed = false;
            if m.member_id != resp.member_id {
                m.member_id = resp.member_id.clone();
                changed = true;
            }
            if m.member_epoch != resp.member_epoch {
                m.member_epoch = resp.member_epoch;
                changed = true;
            }
            if let Some(a) = assignment {
                if *m.assignment != a {
                    m.assignment = Arc::new(a);
                    changed = true;
                }
            }
            changed
        });
        true
    }

    pub async fn run(self) {
        let mut incarnation: u64 = 1;
        self.tx.send_modify(|m| m.incarnation = incarnation);
        let mut member_id = String::new();
        let mut epoch = JOIN_EPOCH;
        let mut backoff = HEARTBEAT_BACKOFF_MIN;
        let mut last_ok = Instant::now();
        let session = self.config.session_timeout;
        let timeout = heartbeat_timeout(session);
        loop {
            let req = self.request(&member_id, epoch, incarnation);
            let r = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                r = self.coordinator.request(&req, timeout) => r,
            };
            let wait = match classify(r) {
                Outcome::Ok(resp) => {
                    backoff = HEARTBEAT_BACKOFF_MIN;
                    last_ok = Instant::now();
                    let interval = interval_from(resp.heartbeat_interval_ms, session);
                    if epoch == JOIN_EPOCH {
                        tracing::info!(group = %self.coordinator.group_id(), member = %resp.member_id, epoch = resp.member_epoch, "joined the group");
                    }
                    member_id = resp.member_id.clone();
                    epoch = resp.member_epoch;
                    if !self.accept(resp) {
                        return;
                    }
                    interval
                }
                Outcome::Lost(e) if epoch == JOIN_EPOCH => {
                    // Refused while joining: nothing to lose, but do not spin.
                    tracing::debug!(group = %self.coordinator.group_id(), error = %e, "join refused; retrying");
                    let b = backoff;
                    backoff = (backoff * 2).min(HEARTBEAT_BACKOFF_MAX);
                    b
                }
                Outcome::Lost(e) => {
                    self.lose(&mut incarnation, &mut epoch, &e);
                    Duration::ZERO
                }
                Outcome::Retry(e) => {
                    tracing::debug!(group = %self.coordinator.group_id(), error = %e, "heartbeat failed; retrying");
                    // The coordinator has not heard from us for a whole session: it has removed us by now.
                    if epoch != JOIN_EPOCH && last_ok.elapsed() >= session {
                        self.lose(&mut incarnation, &mut epoch, &e);
                    }
                    let b = backoff;
                    backoff = (backoff * 2).min(HEARTBEAT_BACKOFF_MAX);
                    b
                }
                Outcome::Fatal(e) => {
                    tracing::warn!(group = %self.coordinator.group_id(), error = %e, "heartbeat failed for good");
                    self.tx.send_modify(|m| m.error = Some(e));
                    return;
                }
            };
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if epoch != JOIN_EPOCH && !member_id.is_empty() {
            let req = self.request(&member_id, LEAVE_EPOCH, incarnation);
            match self.coordinator.request(&req, LEAVE_TIMEOUT).await {
                Ok(_) => {
                    tracing::info!(group = %self.coordinator.group_id(), member = %member_id, "left the group")
                }
                Err(e) => {
                    tracing::warn!(group = %self.coordinator.group_id(), error = %e, "leaving the group failed; the session timeout will remove this member")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: u32) -> TopicPartition {
        (Arc::from(t), p)
    }

    #[test]
    fn wire_round_trip_groups_by_topic_and_shares_names() {
        let set: BTreeSet<TopicPartition> =
            [tp("a", 2), tp("b", 0), tp("a", 0)].into_iter().collect();
        let wire = to_wire(&set);
        assert_eq!(wire.len(), 2);
        assert_eq!(wire[0].topic, "a");
        assert_eq!(wire[0].partitions, vec![0, 2]);
        let back = from_wire(wire, &set).unwrap();
        assert_eq!(back, set);
        // Names come from the known set, not fresh allocations.
        let known = set.iter().next().unwrap().0.clone();
        assert!(back.iter().any(|(t, _)| Arc::ptr_eq(t, &known)));
    }

    #[test]
    fn assignments_beyond_the_limit_are_refused() {
        let at_limit = vec![TopicPartitions {
            topic: "t".into(),
            partitions: (0..ASSIGNED_PARTITIONS_MAX as u32).collect(),
        }];
        assert_eq!(
            from_wire(at_limit, &BTreeSet::new()).unwrap().len(),
            ASSIGNED_PARTITIONS_MAX
        );
        let over = vec![
            TopicPartitions {
                topic: "t".into(),
                partitions: (0..ASSIGNED_PARTITIONS_MAX as u32).collect(),
            },
            TopicPartitions {
                topic: "u".into(),
                partitions: vec![0],
            },
        ];
        assert!(from_wire(over, &BTreeSet::new()).is_err());
    }

    #[test]
    fn intervals_and_timeouts_are_clamped() {
        let s = Duration::from_secs(10);
        assert_eq!(interval_from(500, s), Duration::from_millis(500));
        assert_eq!(interval_from(0, s), HEARTBEAT_INTERVAL_MIN);
        assert_eq!(interval_from(60_000, s), s / 3);
        assert_eq!(
            interval_from(60_000, Duration::from_secs(300)),
            HEARTBEAT_INTERVAL_MAX
        );
        assert_eq!(heartbeat_timeout(s), Duration::from_secs(5));
        assert_eq!(
            heartbeat_timeout(Duration::from_millis(100)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn owned_is_reported_only_for_its_incarnation() {
        let s = Shared::default();
        s.set_owned(2, &[tp("t", 1)].into_iter().collect());
        assert_eq!(s.owned_for(2).len(), 1);
        assert!(s.owned_for(3).is_empty());
    }

    #[test]
    fn outcomes() {
        let hb = |code: ErrorCode| {
            Ok(Response::GroupHeartbeat(GroupHeartbeatResponse {
                error_code: code.as_u16(),
                ..Default::default()
            }))
        };
        assert!(matches!(classify(hb(ErrorCode::None)), Outcome::Ok(_)));
        assert!(matches!(
            classify(hb(ErrorCode::UnknownMemberId)),
            Outcome::Lost(_)
        ));
        assert!(matches!(
            classify(hb(ErrorCode::FencedMemberEpoch)),
            Outcome::Lost(_)
        ));
        assert!(matches!(
            classify(hb(ErrorCode::CoordinatorNotAvailable)),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            classify(hb(ErrorCode::InvalidRequest)),
            Outcome::Fatal(_)
        ));
        assert!(matches!(
            classify(Err(ClientError::Timeout {
                what: "x".into(),
                ms: 1
            })),
            Outcome::Retry(_)
        ));
    }
}
