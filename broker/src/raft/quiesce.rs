//! Quiescence: an idle partition group stops ticking, so a broker with 1,000 idle partitions spends
//! (almost) nothing on them, where openraft would otherwise run a timer and send heartbeats per group.
//!
//! Every heartbeat interval the broker's [`run`] loop does one *round*:
//! - **Leader side.** A group this broker leads that has not grown for the idle period, whose entries
//!   are all committed and applied here and matched by every voter (no learner, no joint config), is
//!   *proposed*: it is listed, with its term and last index, in this round's ping to each follower's
//!   broker (one RaftRpc `QUIESCE` per peer, whatever the number of groups). When every follower accepts
//!   it, the leader turns its tick off (no heartbeats, no timers) and records the confirmation, which then
//!   stands in for heartbeat acknowledgements (CheckQuorum in `RaftGroup::is_leader`, caught-up replicas).
//!   The group stays quiet only while every round is accepted by every follower: a refusal, a missing
//!   answer, a new entry (a write wakes the group at once), a lost leadership: ticking resumes.
//! - **Follower side** ([`RaftNet`]'s handling of a ping). A follower accepts a group when its committed
//!   vote names the pinging broker in that term and its log ends, applied, at the same index; it then
//!   turns its own tick off (no election timer). A group the same leader stops listing ticks again; so
//!   does every group of a leader whose pings stop for [`FollowerSide::silence`] (the longest election
//!   timeout): its election timer has long expired, so it campaigns at once — a dead broker's quiet
//!   partitions fail over like busy ones.
//!
//! Invariants: ticking affects liveness only, never safety (Raft's votes and commits do not depend on
//! timers), so every doubt resolves to "tick". The follower's silence limit (the longest election
//! timeout) is above the leader's round limit (half the shortest one), so a leader that cannot reach a
//! follower resumes heartbeats before that follower would campaign. A write racing a round may leave the
//! leader's tick off for one round; its replication does not need the tick, and the next round sees the
//! log grew and wakes the group. Pings are bounded: one per peer per round, listing at most
//! [`CLAIMS_PER_PING_MAX`] groups (the others keep ticking), each answered within [`round_ttl`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use runnel_protocol::messages::raft_rpc::{RaftRpcRequest, RAFT_RPC_QUIESCE};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::network::{decode, encode, GroupRaft, RaftNet};

/// Most groups one ping asks a follower to keep quiet; idle groups beyond it keep ticking (a ping of
/// 10,000 claims is ~300 KB with 20-character topic names, sent every heartbeat interval).
pub const CLAIMS_PER_PING_MAX: usize = 10_000;

/// What a group's tick is doing and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Ticking as openraft does.
    Active,
    /// Leader, idle and caught up: listed in pings, still ticking until every follower accepts.
    Proposed,
    /// Leader whose followers all accepted: tick off.
    QuietLeader,
    /// Follower quieted by this leader's pings: tick off.
    QuietFollower(u64),
}

impl Mode {
    fn ticks(self) -> bool {
        matches!(self, Mode::Active | Mode::Proposed)
    }
}

/// One group's quiescence state, shared by its `RaftGroup` (write path, leadership checks), the
/// registry (incoming pings) and the broker's [`run`] loop.
pub struct GroupQuiet {
    raft: GroupRaft,
    node_id: u64,
    mode: Mutex<Mode>,
    /// `mode != Active`: the write path's lock-free check.
    resting: AtomicBool,
    /// The term and time (ms since [`epoch`], 0 = never) at which every follower last confirmed this
    /// replica as leader.
    confirmed_term: AtomicU64,
    confirmed_at_ms: AtomicU64,
}

impl std::fmt::Debug for GroupQuiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupQuiet")
            .field("node_id", &self.node_id)
            .field("mode", &*self.lock())
            .finish()
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], plus one (0 means "never").
fn stamp(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_millis())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

/// What a leader's metrics say about quiescing its group.
struct LeaderView {
    term: u64,
    last_index: Option<u64>,
    /// Everything committed and applied here and matched by every voter; no learner, no joint config.
    settled: bool,
    followers: Vec<u64>,
}

impl GroupQuiet {
    pub(crate) fn new(raft: GroupRaft, node_id: u64) -> GroupQuiet {
        GroupQuiet {
            raft,
            node_id,
            mode: Mutex::new(Mode::Active),
            resting: AtomicBool::new(false),
            confirmed_term: AtomicU64::new(0),
            confirmed_at_ms: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Mode> {
        self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves to `next`, switching openraft's tick when that changes.
    fn set(&self, mode: &mut Mode, next: Mode) {
        if mode.ticks() != next.ticks() {
            self.raft.runtime_config().tick(next.ticks());
        }
        *mode = next;
        self.resting.store(next != Mode::Active, Ordering::Release);
    }

    /// Back to ticking as openraft does (a write, a leadership transfer, a campaign, a doubt).
    pub fn wake(&self) {
        if !self.resting.load(Ordering::Acquire) {
            return;
        }
        let mut m = self.lock();
        self.set(&mut m, Mode::Active);
    }

    /// Whether this group's tick is off.
    pub fn is_quiet(&self) -> bool {
        !self.lock().ticks()
    }

    /// Whether every follower confirmed this replica as leader of `term` within `within`.
    pub fn confirmed_within(&self, term: u64, within: Duration) -> bool {
        let at = self.confirmed_at_ms.load(Ordering::Acquire);
        at != 0
            && self.confirmed_term.load(Ordering::Acquire) == term
            && stamp(Instant::now()).saturating_sub(at)
                <= u64::try_from(within.as_millis()).unwrap_or(u64::MAX)
    }

    fn leader_view(&self) -> Option<LeaderView> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader
            || m.current_leader != Some(self.node_id)
            || !m.vote.committed
        {
            return None;
        }
        let last_index = m.last_log_index;
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let followers: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|v| *v != self.node_id)
            .collect();
        let plain =
            membership.get_joint_config().len() == 1 && membership.learner_ids().count() == 0;
        let index = |l: &Option<openraft::LogId<_>>| l.as_ref().map(|l| l.index);
        let all_matched = m.replication.as_ref().is_some_and(|r| {
            followers
                .iter()
                .all(|f| r.get(f).is_some_and(|l| index(l) == last_index))
        });
        let settled = plain
            && all_matched
            && index(&m.cluster_committed) == last_index
            && index(&m.last_applied) == last_index;
        Some(LeaderView {
            term: m.current_term,
            last_index,
            settled,
            followers,
        })
    }

    /// A ping from `leader` lists this group: accept (and stop ticking) if this replica follows `leader`
    /// in `claim.term` with the same log, applied; else refuse and tick.
    fn follower_accepts(&self, leader: u64, claim: &QuietClaim) -> bool {
        let agrees = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.state == ServerState::Follower
                && m.current_leader == Some(leader)
                && m.vote.committed
                && m.current_term == claim.term
                && m.last_log_index == claim.last_index
                && m.last_applied.as_ref().map(|l| l.index) == claim.last_index
        };
        let mut m = self.lock();
        match *m {
            Mode::Active | Mode::QuietFollower(_) if agrees => {
                self.set(&mut m, Mode::QuietFollower(leader));
                true
            }
            Mode::QuietFollower(_) => {
                self.set(&mut m, Mode::Active);
                false
            }
            _ => false,
        }
    }

    /// `leader` no longer lists this group, or went silent: tick again if it had quieted it.
    fn release(&self, leader: u64) {
        let mut m = self.lock();
        if *m == Mode::QuietFollower(leader) {
            self.set(&mut m, Mode::Active);
        }
    }

    /// Leader side: this replica no longer leads; a leader-side rest ends.
    fn leadership_lost(&self) {
        let mut m = self.lock();
        if matches!(*m, Mode::Proposed | Mode::QuietLeader) {
            self.set(&mut m, Mode::Active);
        }
    }

    /// Leader side: starts listing the group in pings (still ticking). A group quieted as a follower that
    /// now leads wakes instead.
    fn propose(&self) {
        let mut m = self.lock();
        match *m {
            Mode::Active => self.set(&mut m, Mode::Proposed),
            Mode::QuietFollower(_) => self.set(&mut m, Mode::Active),
            Mode::Proposed | Mode::QuietLeader => {}
        }
    }

    fn mode(&self) -> Mode {
        *self.lock()
    }

    /// Leader side: every follower accepted the group in the round started at `at`.
    fn confirmed(&self, term: u64, at: Instant) {
        self.confirmed_term.store(term, Ordering::Release);
        self.confirmed_at_ms.store(stamp(at), Ordering::Release);
        let mut m = self.lock();
        // A write may have woken it since the round started: it stays awake.
        if *m == Mode::Proposed {
            self.set(&mut m, Mode::QuietLeader);
        }
    }
}

/// One group a leader asks a follower to quiesce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuietClaim {
    pub group: String,
    pub term: u64,
    pub last_index: Option<u64>,
}

/// A round's ping from leader `from` to `target`: every group of `from`'s that `target` should keep
/// quiet. An empty list is a ping too (the follower releases whatever `from` quieted before).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuietPing {
    pub from: u64,
    pub target: u64,
    pub claims: Vec<QuietClaim>,
}

/// The answer: for each claim, in order, whether the follower accepted it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuietPong {
    pub accepted: Vec<bool>,
}

/// Follower side: which groups each leader broker quieted here, and when it last pinged.
#[derive(Debug)]
pub struct FollowerSide {
    by_leader: Mutex<HashMap<u64, (Instant, HashSet<String>)>>,
    silence: Duration,
}

impl FollowerSide {
    /// `silence`: how long a leader may go without pinging before its groups tick again.
    pub fn new(silence: Duration) -> FollowerSide {
        FollowerSide {
            by_leader: Mutex::new(HashMap::new()),
            silence,
        }
    }

    pub fn silence(&self) -> Duration {
        self.silence
    }

    /// Records the groups `leader` keeps quiet now; returns those it quieted before and no longer does.
    fn replace(&self, leader: u64, quiet: HashSet<String>, now: Instant) -> Vec<String> {
        let mut m = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        let before = m.insert(leader, (now, quiet));
        match (before, m.get(&leader)) {
            (Some((_, old)), Some((_, new))) => old.difference(new).cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Forgets the leaders silent for longer than [`FollowerSide::silence`]; returns their groups.
    fn expire(&self, now: Instant) -> Vec<(u64, String)> {
        let mut m = self.by_leader.lock().unwrap_or_else(|p| p.into_inner());
        let silent: Vec<u64> = m
            .iter()
            .filter(|(_, (at, _))| now.saturating_duration_since(*at) > self.silence)
            .map(|(l, _)| *l)
            .collect();
        let mut out = Vec::new();
        for l in silent {
            if let Some((_, groups)) = m.remove(&l) {
                out.extend(groups.into_iter().map(|g| (l, g)));
            }
        }
        out
    }
}

/// How long one round's pings may take: half the shortest election timeout (see the module invariants).
pub fn round_ttl(timing: &super::GroupConfig) -> Duration {
    Duration::from_millis((timing.election_timeout_min_ms / 2).max(1))
}

impl RaftNet {
    /// Serves a quiescence ping from a leader broker (RaftRpc kind `QUIESCE`).
    pub(crate) fn handle_quiet_ping(&self, payload: &[u8]) -> Result<QuietPong, String> {
        let ping: QuietPing = decode(payload)?;
        if ping.target != self.node_id() {
            return Err(format!(
                "quiescence ping for node {} reached node {}",
                ping.target,
                self.node_id()
            ));
        }
        let mut quiet = HashSet::new();
        let accepted = ping
            .claims
            .iter()
            .map(|c| {
                let ok = self
                    .quiet_group(&c.group)
                    .is_some_and(|q| q.follower_accepts(ping.from, c));
                if ok {
                    quiet.insert(c.group.clone());
                }
                ok
            })
            .collect();
        for g in self
            .follower_side()
            .replace(ping.from, quiet, Instant::now())
        {
            if let Some(q) = self.quiet_group(&g) {
                q.release(ping.from);
            }
        }
        Ok(QuietPong { accepted })
    }

    /// How many local groups have their tick off (metrics, tests).
    pub fn quiet_group_count(&self) -> usize {
        self.quiet_groups()
            .iter()
            .filter(|(_, q)| q.is_quiet())
            .count()
    }
}

/// Sends one round's ping to `peer`; the names it accepted, or `None` without a valid answer.
async fn ping(
    net: &RaftNet,
    peer: u64,
    claims: Vec<QuietClaim>,
    ttl: Duration,
) -> Option<HashSet<String>> {
    let msg = QuietPing {
        from: net.node_id(),
        target: peer,
        claims,
    };
    let payload = encode(&msg).ok()?;
    let resp = net
        .peer(peer)
        .ok()?
        .call(
            RaftRpcRequest {
                group: String::new(),
                kind: RAFT_RPC_QUIESCE,
                payload,
            },
            ttl,
        )
        .await
        .ok()?;
    if resp.error_code != 0 {
        return None;
    }
    let pong: QuietPong = decode(&resp.payload).ok()?;
    if pong.accepted.len() != msg.claims.len() {
        return None;
    }
    Some(
        msg.claims
            .into_iter()
            .zip(pong.accepted)
            .filter(|(_, ok)| *ok)
            .map(|(c, _)| c.group)
            .collect(),
    )
}

/// Per led group: its last index and term when last seen, and since when they have not changed.
struct Idle {
    last_index: Option<u64>,
    term: u64,
    since: Instant,
}

/// Runs quiescence rounds every heartbeat interval until `stop`: groups led here that stayed idle for
/// `idle_after` are quieted with their followers' consent (`None`: never), and follower-side groups of
/// silent leaders wake. Every broker of a cluster runs it, even one that never quiesces its own groups:
/// its followers may have been quieted by peers that do, and only this loop wakes them.
pub async fn run(net: Arc<RaftNet>, idle_after: Option<Duration>, stop: CancellationToken) {
    let period = Duration::from_millis(net.timing().heartbeat_interval_ms.max(1));
    let ttl = round_ttl(net.timing());
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle: HashMap<String, Idle> = HashMap::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        round(&net, idle_after, ttl, &mut idle).await;
    }
}

/// One round (see the module doc).
async fn round(
    net: &RaftNet,
    idle_after: Option<Duration>,
    ttl: Duration,
    idle: &mut HashMap<String, Idle>,
) {
    let start = Instant::now();
    let groups = net.quiet_groups();
    let mut claims: HashMap<u64, Vec<QuietClaim>> = HashMap::new();
    let mut listed: Vec<(String, Arc<GroupQuiet>, u64, Vec<u64>)> = Vec::new();
    for (name, q) in &groups {
        let Some(v) = q.leader_view() else {
            q.leadership_lost();
            idle.remove(name);
            continue;
        };
        let e = idle.entry(name.clone()).or_insert(Idle {
            last_index: v.last_index,
            term: v.term,
            since: start,
        });
        if e.last_index != v.last_index || e.term != v.term || !v.settled {
            *e = Idle {
                last_index: v.last_index,
                term: v.term,
                since: start,
            };
            q.wake();
            continue;
        }
        let full = v.followers.iter().any(|f| {
            claims
                .get(f)
                .is_some_and(|c| c.len() >= CLAIMS_PER_PING_MAX)
        });
        if full {
            q.wake();
            continue;
        }
        if !matches!(q.mode(), Mode::Proposed | Mode::QuietLeader) {
            if idle_after.is_none_or(|d| start.saturating_duration_since(e.since) < d) {
                continue;
            }
            q.propose();
            if q.mode() != Mode::Proposed {
                continue;
            }
        }
        for f in &v.followers {
            claims.entry(*f).or_default().push(QuietClaim {
                group: name.clone(),
                term: v.term,
                last_index: v.last_index,
            });
        }
        listed.push((name.clone(), q.clone(), v.term, v.followers));
    }
    idle.retain(|name, _| groups.iter().any(|(n, _)| n == name));
    // Every peer is pinged, with an empty list too: that is how a follower learns it may tick again.
    let pings = net.peer_ids().into_iter().map(|p| {
        let c = claims.remove(&p).unwrap_or_default();
        async move { (p, ping(net, p, c, ttl).await) }
    });
    let answers: HashMap<u64, Option<HashSet<String>>> =
        futures::future::join_all(pings).await.into_iter().collect();
    for (name, q, term, followers) in listed {
        let all = followers.iter().all(|f| {
            answers
                .get(f)
                .and_then(|a| a.as_ref())
                .is_some_and(|a| a.contains(&name))
        });
        if all {
            q.confirmed(term, start);
        } else {
            q.wake();
            if let Some(e) = idle.get_mut(&name) {
                e.since = Instant::now();
            }
        }
    }
    for (leader, g) in net.follower_side().expire(Instant::now()) {
        if let Some(q) = net.quiet_group(&g) {
            q.release(leader);
        }
    }
}
