//! One consumer group's membership and assignment, as a pure state machine (time is passed in, no I/O).
//!
//! Protocol (KIP-848 style, cooperative): members heartbeat with what they own; the coordinator keeps a
//! *target* assignment (from [`super::assignor::assign`]) and tells each member its *current* assignment:
//! its target partitions minus any still owned by another member. A partition moving from A to B is thus
//! first dropped from A's assignment; A stops consuming it, commits, and reports it released in its next
//! heartbeat; only then is it given to B. Invariant: no partition is ever in two members' current assignments,
//! and no partition is given to a member while another member reports owning it or may still hold it: a
//! partition dropped from a member's assignment stays *revoking* until that member heartbeats with the epoch
//! that dropped it (or a later one) and an `owned` list without it. (Without this, a member that joined and
//! had not yet reported what it owns would lose partitions to a newcomer while still consuming them.)
//!
//! Fencing: a member removed (session timeout or leave) is unknown; its heartbeats and commits are refused
//! with UNKNOWN_MEMBER_ID. A commit for a partition the member neither owns nor is assigned is refused with
//! FENCED_MEMBER_EPOCH, so a zombie cannot overwrite the new owner's progress. An admin commit (no member)
//! is refused while the group has members (GROUP_NOT_EMPTY).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use runnel_protocol::ErrorCode;

use super::assignor::{assign, TopicPartition};

/// Members a group may have.
pub const MEMBERS_PER_GROUP_MAX: usize = 1_000;
/// Bounds on the session timeout a member may ask for.
pub const SESSION_TIMEOUT_MS_MIN: u32 = 1_000;
pub const SESSION_TIMEOUT_MS_MAX: u32 = 300_000;
/// How often members are told to heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u32 = 500;

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    epoch: i32,
    subscribed: BTreeSet<String>,
    owned: BTreeSet<TopicPartition>,
    current: BTreeSet<TopicPartition>,
    /// Dropped from `current` but maybe still held: partition → the member epoch that dropped it.
    revoking: BTreeMap<TopicPartition, i32>,
    session_timeout: Duration,
    deadline: Instant,
}

/// A heartbeat as the group sees it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub subscribed_topics: Option<Vec<String>>,
    pub owned: Option<Vec<TopicPartition>>,
}

/// What the member is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    pub assignment: BTreeSet<TopicPartition>,
}

/// A member as `group describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub member_epoch: i32,
    pub assignment: BTreeSet<TopicPartition>,
}

/// Membership and assignment of one group.
#[derive(Debug, Default)]
pub struct Group {
    epoch: i32,
    members: BTreeMap<String, Member>,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    partition_counts: BTreeMap<String, u32>,
    next_member: u64,
}

impl Group {
    pub fn new() -> Group {
        Group::default()
    }

    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// `empty`, `reconciling` (some member's current assignment differs from its target) or `stable`.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "empty"
        } else if self
            .members
            .iter()
            .any(|(id, m)| self.target.get(id) != Some(&m.current))
        {
            "reconciling"
        } else {
            "stable"
        }
    }

    /// Topics any member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect()
    }

    /// Handles one heartbeat. `partition_counts` gives the current partition count of every subscribed topic
    /// that exists. `new_member_id` is used when a member joins without an id.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
        new_member_id: impl FnOnce(u64) -> String,
    ) -> Result<HeartbeatReply, (ErrorCode, String)> {
        if hb.member_epoch == -1 {
            if self.members.remove(&hb.member_id).is_some() {
                self.rebalance(partition_counts);
            }
            return Ok(HeartbeatReply {
                member_id: hb.member_id,
                member_epoch: -1,
                assignment: BTreeSet::new(),
            });
        }
        let timeout_ms = hb
            .session_timeout_ms
            .clamp(SESSION_TIMEOUT_MS_MIN, SESSION_TIMEOUT_MS_MAX);
        let session_timeout = Duration::from_millis(timeout_ms as u64);
        let mut changed = false;
        let id = if hb.member_epoch == 0 {
            let subscribed: BTreeSet<String> = hb
                .subscribed_topics
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            if subscribed.is_empty() {
                return Err((
                    ErrorCode::InvalidRequest,
                    "a joining member must subscribe to at least one topic".into(),
                ));
            }
            // Static membership: a member with the same instance id replaces the old one and inherits its
            // partitions, without moving them elsewhere.
            let replaced = hb.instance_id.as_ref().and_then(|iid| {
                self.members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(iid))
                    .map(|(id, _)| id.clone())
            });
            let id = match (&replaced, hb.member_id.is_empty()) {
                (Some(old), _) => old.clone(),
                (None, false) if self.members.contains_key(&hb.member_id) => hb.member_id.clone(),
                _ => {
                    if self.members.len() >= MEMBERS_PER_GROUP_MAX {
                        return Err((
                            ErrorCode::InvalidRequest,
                            format!("group is full ({MEMBERS_PER_GROUP_MAX} members)"),
                        ));
                    }
                    self.next_member += 1;
                    new_member_id(self.next_member)
                }
            };
            let entry = self.members.entry(id.clone()).or_insert_with(|| {
                changed = true;
                Member {
                    instance_id: hb.instance_id.clone(),
                    epoch: 0,
                    subscribed: BTreeSet::new(),
                    owned: BTreeSet::new(),
                    current: BTreeSet::new(),
                    revoking: BTreeMap::new(),
                    session_timeout,
                    deadline: now + session_timeout,
                }
            });
            if entry.subscribed != subscribed {
                entry.subscribed = subscribed;
                changed = true;
            }
            id
        } else {
            let Some(m) = self.members.get_mut(&hb.member_id) else {
                return Err((
                    ErrorCode::UnknownMemberId,
                    format!("member {} is not in the group; rejoin", hb.member_id),
                ));
            };
            if hb.member_epoch > m.epoch {
                return Err((
                    ErrorCode::FencedMemberEpoch,
                    format!("member epoch {} is ahead of {}", hb.member_epoch, m.epoch),
                ));
            }
            if let Some(topics) = &hb.subscribed_topics {
                let s: BTreeSet<String> = topics.iter().cloned().collect();
                if s != m.subscribed && !s.is_empty() {
                    m.subscribed = s;
                    changed = true;
                }
            }
            hb.member_id.clone()
        };
        if let Some(m) = self.members.get_mut(&id) {
            m.session_timeout = session_timeout;
            m.deadline = now + session_timeout;
            if let Some(owned) = hb.owned {
                m.owned = owned.into_iter().collect();
                // Released: the member knew of the revocation (its epoch) and no longer owns the partition.
                let (epoch, owned) = (hb.member_epoch, &m.owned);
                m.revoking
                    .retain(|tp, at| *at > epoch || owned.contains(tp));
            }
        }
        let counts_changed = self
            .subscribed_topics()
            .iter()
            .any(|t| partition_counts.get(t) != self.partition_counts.get(t));
        if changed || counts_changed {
            self.rebalance(partition_counts);
        }
        self.reconcile(&id);
        let m = &self.members[&id];
        Ok(HeartbeatReply {
            member_id: id,
            member_epoch: m.epoch,
            assignment: m.current.clone(),
        })
    }

    /// Removes members whose session expired; returns their ids.
    pub fn expire(
        &mut self,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let dead: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        if !dead.is_empty() {
            for id in &dead {
                self.members.remove(id);
            }
            self.rebalance(partition_counts);
        }
        dead
    }

    /// May this commit be applied? `member_id` empty means an admin commit.
    pub fn check_commit(
        &self,
        member_id: &str,
        partitions: &[TopicPartition],
    ) -> Result<(), (ErrorCode, String)> {
        if member_id.is_empty() {
            if !self.members.is_empty() {
                return Err((
                    ErrorCode::GroupNotEmpty,
                    format!("the group has {} live members", self.members.len()),
                ));
            }
            return Ok(());
        }
        let Some(m) = self.members.get(member_id) else {
            return Err((
                ErrorCode::UnknownMemberId,
                format!("member {member_id} is not in the group"),
            ));
        };
        for tp in partitions {
            if !m.current.contains(tp) && !m.owned.contains(tp) && !m.revoking.contains_key(tp) {
                return Err((
                    ErrorCode::FencedMemberEpoch,
                    format!("member {member_id} does not own {}-{}", tp.0, tp.1),
                ));
            }
        }
        Ok(())
    }

    pub fn members(&self) -> Vec<MemberView> {
        self.members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                member_epoch: m.epoch,
                assignment: m.current.clone(),
            })
            .collect()
    }

    fn rebalance(&mut self, partition_counts: &BTreeMap<String, u32>) {
        self.epoch += 1;
        self.partition_counts = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| partition_counts.get(&t).map(|c| (t, *c)))
            .collect();
        let subs = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.subscribed.clone()))
            .collect();
        let current = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), &m.owned | &m.current))
            .collect();
        self.target = assign(&subs, &self.partition_counts, &current);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            self.reconcile(&id);
        }
    }

    /// Recomputes one member's current assignment: its target minus what others still own or hold.
    fn reconcile(&mut self, id: &str) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let busy: BTreeSet<&TopicPartition> = self
            .members
            .iter()
            .filter(|(other, _)| other.as_str() != id)
            .flat_map(|(_, m)| {
                m.owned
                    .iter()
                    .chain(m.current.iter())
                    .chain(m.revoking.keys())
            })
            .collect();
        let next: BTreeSet<TopicPartition> =
            target.into_iter().filter(|tp| !busy.contains(tp)).collect();
        if let Some(m) = self.members.get_mut(id) {
            if m.current != next || m.epoch == 0 {
                let epoch = self.epoch.max(m.epoch + 1);
                for tp in m.current.difference(&next) {
                    m.revoking.insert(tp.clone(), epoch);
                }
                for tp in &next {
                    m.revoking.remove(tp);
                }
                m.current = next;
                m.epoch = epoch;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: u32) -> BTreeMap<String, u32> {
        [("t".to_string(), n)].into()
    }

    fn join(g: &mut Group, now: Instant, name: &str) -> HeartbeatReply {
        let name = name.to_string();
        g.heartbeat(
            Heartbeat {
                member_epoch: 0,
                session_timeout_ms: 10_000,
                subscribed_topics: Some(vec!["t".into()]),
                ..Default::default()
            },
            now,
            &counts(6),
            move |_| name,
        )
        .unwrap()
    }

    fn beat(
        g: &mut Group,
        now: Instant,
        r: &HeartbeatReply,
        owned: &BTreeSet<TopicPartition>,
    ) -> HeartbeatReply {
        g.heartbeat(
            Heartbeat {
                member_id: r.member_id.clone(),
                member_epoch: r.member_epoch,
                session_timeout_ms: 10_000,
                owned: Some(owned.iter().cloned().collect()),
                ..Default::default()
            },
            now,
            &counts(6),
            |_| unreachable!(),
        )
        .unwrap()
    }

    #[test]
    fn cooperative_handover_never_double_assigns() {
        let now = Instant::now();
        let mut g = Group::new();
        let a = join(&mut g, now, "a");
        assert_eq!(a.assignment.len(), 6);
        let a = beat(&mut g, now, &a, &a.assignment.clone());
        let b = join(&mut g, now, "b");
        // a still owns everything: b gets nothing yet.
        assert!(b.assignment.is_empty());
        // a is told to drop three; it does, and reports it.
        let a2 = beat(&mut g, now, &a, &a.assignment.clone());
        assert_eq!(a2.assignment.len(), 3);
        let a3 = beat(&mut g, now, &a2, &a2.assignment.clone());
        assert_eq!(a3.assignment, a2.assignment);
        let b2 = beat(&mut g, now, &b, &BTreeSet::new());
        assert_eq!(b2.assignment.len(), 3);
        assert!(b2.assignment.is_disjoint(&a3.assignment));
        assert_eq!(g.state(), "stable");
    }

    #[test]
    fn a_revoked_partition_stays_busy_until_its_member_acknowledges_the_revocation() {
        let now = Instant::now();
        let mut g = Group::new();
        // a joins and has not heartbeated since: the coordinator has never heard what it owns.
        let a = join(&mut g, now, "a");
        assert_eq!(a.assignment.len(), 6);
        let b = join(&mut g, now, "b");
        assert!(b.assignment.is_empty(), "b got partitions a may still hold");
        let b = beat(&mut g, now, &b, &BTreeSet::new());
        assert!(b.assignment.is_empty());
        // a heartbeats with the epoch it knew before the revocation: its report cannot release anything.
        let a2 = beat(&mut g, now, &a, &BTreeSet::new());
        assert_eq!(a2.assignment.len(), 3);
        assert!(a2.member_epoch > a.member_epoch);
        let b = beat(&mut g, now, &b, &BTreeSet::new());
        assert!(
            b.assignment.is_empty(),
            "released by a report that predates the revocation"
        );
        // While revoking, a may still commit the partitions it is giving up.
        let gone: Vec<TopicPartition> = a.assignment.difference(&a2.assignment).cloned().collect();
        assert!(g.check_commit(&a.member_id, &gone).is_ok());
        // a acknowledges at the new epoch, still holding them: still busy.
        let a3 = beat(&mut g, now, &a2, &a.assignment.clone());
        let b = beat(&mut g, now, &b, &BTreeSet::new());
        assert!(b.assignment.is_empty());
        // a releases them: b gets them.
        let _ = beat(&mut g, now, &a3, &a2.assignment.clone());
        let b = beat(&mut g, now, &b, &BTreeSet::new());
        assert_eq!(b.assignment, gone.into_iter().collect());
        assert!(b.assignment.is_disjoint(&a2.assignment));
    }

    #[test]
    fn expired_member_is_fenced_and_its_partitions_move() {
        let now = Instant::now();
        let mut g = Group::new();
        let a = join(&mut g, now, "a");
        let a = beat(&mut g, now, &a, &a.assignment.clone());
        let b = join(&mut g, now, "b");
        let later = now + Duration::from_secs(11);
        // b keeps heartbeating; a went silent.
        let _ = g.heartbeat(
            Heartbeat {
                member_id: b.member_id.clone(),
                member_epoch: b.member_epoch,
                session_timeout_ms: 30_000,
                owned: Some(vec![]),
                ..Default::default()
            },
            now + Duration::from_secs(5),
            &counts(6),
            |_| unreachable!(),
        );
        assert_eq!(g.expire(later, &counts(6)), vec!["a".to_string()]);
        let b2 = beat(&mut g, later, &b, &BTreeSet::new());
        assert_eq!(b2.assignment.len(), 6);
        assert_eq!(
            g.check_commit("a", &[("t".into(), 0)]).unwrap_err().0,
            ErrorCode::UnknownMemberId
        );
        let r = g.heartbeat(
            Heartbeat {
                member_id: a.member_id.clone(),
                member_epoch: a.member_epoch,
                ..Default::default()
            },
            later,
            &counts(6),
            |_| unreachable!(),
        );
        assert_eq!(r.unwrap_err().0, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn commits_are_checked_against_ownership_and_admin_needs_an_empty_group() {
        let now = Instant::now();
        let mut g = Group::new();
        assert!(g.check_commit("", &[("t".into(), 0)]).is_ok());
        let a = join(&mut g, now, "a");
        assert!(g.check_commit("a", &[("t".into(), 0)]).is_ok());
        assert_eq!(
            g.check_commit("", &[("t".into(), 0)]).unwrap_err().0,
            ErrorCode::GroupNotEmpty
        );
        let _ = g.heartbeat(
            Heartbeat {
                member_id: a.member_id,
                member_epoch: -1,
                ..Default::default()
            },
            now,
            &counts(6),
            |_| unreachable!(),
        );
        assert!(g.is_empty());
        assert!(g.check_commit("", &[("t".into(), 0)]).is_ok());
    }

    #[test]
    fn partition_growth_rebalances() {
        let now = Instant::now();
        let mut g = Group::new();
        let a = join(&mut g, now, "a");
        let r = g
            .heartbeat(
                Heartbeat {
                    member_id: a.member_id.clone(),
                    member_epoch: a.member_epoch,
                    session_timeout_ms: 10_000,
                    owned: Some(a.assignment.iter().cloned().collect()),
                    ..Default::default()
                },
                now,
                &counts(8),
                |_| unreachable!(),
            )
            .unwrap();
        assert_eq!(r.assignment.len(), 8);
        assert!(r.member_epoch > a.member_epoch);
    }

    #[test]
    fn static_member_rejoins_with_its_partitions() {
        let now = Instant::now();
        let mut g = Group::new();
        let hb = |id: Option<&str>| Heartbeat {
            member_epoch: 0,
            instance_id: id.map(String::from),
            session_timeout_ms: 10_000,
            subscribed_topics: Some(vec!["t".into()]),
            ..Default::default()
        };
        let a = g
            .heartbeat(hb(Some("host-a")), now, &counts(6), |_| "a".into())
            .unwrap();
        let b = g
            .heartbeat(hb(None), now, &counts(6), |_| "b".into())
            .unwrap();
        let a = beat(&mut g, now, &a, &BTreeSet::new());
        let _ = beat(&mut g, now, &b, &BTreeSet::new());
        let before = g
            .members()
            .into_iter()
            .find(|m| m.member_id == a.member_id)
            .unwrap()
            .assignment;
        // The process restarts and rejoins with the same instance id: same member, same partitions.
        let again = g
            .heartbeat(hb(Some("host-a")), now, &counts(6), |_| unreachable!())
            .unwrap();
        assert_eq!(again.member_id, a.member_id);
        assert_eq!(again.assignment, before);
    }
}
