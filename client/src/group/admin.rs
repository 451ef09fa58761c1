//! Group administration: list groups, describe one (members, assignment, committed offsets, lag), and reset a
//! group's committed offsets (`runnel group list | describe | reset-offsets`).
//!
//! Lag is `log_end_offset - committed_offset`, where the log end is the high watermark (`ListOffsets`
//! latest), the offset the next produced record gets. A reset is an *admin commit* (member id "", epoch -1),
//! which the coordinator refuses with `GROUP_NOT_EMPTY` while the group has live members, so a reset never
//! races a running consumer.
//!
//! Invariants: every request is bounded (the coordinator's by [`super::coordinator::COORDINATOR_ATTEMPTS_MAX`],
//! `ListOffsets` by [`ADMIN_ATTEMPTS_MAX`] attempts with a metadata refresh in between); rows come out sorted
//! by topic and partition.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use runnel_protocol::messages::{
    DescribeGroupRequest, ListGroupsRequest, ListOffsetsPartition, ListOffsetsRequest,
    ListOffsetsTopic, OffsetCommitPartition, OffsetCommitRequest, OffsetCommitTopic,
    OffsetFetchRequest, EARLIEST, LATEST,
};
use runnel_protocol::{ErrorCode, Request, Response};

use super::coordinator::{body_error, validate_group_id, CoordinatorClient};
use crate::admin::{ADMIN_ATTEMPTS_MAX, ADMIN_RETRY_BACKOFF};
use crate::cluster::Cluster;
use crate::error::{ClientError, Result};

/// One group as `group list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    pub group_id: String,
    /// `empty`, `stable` or `reconciling`.
    pub state: String,
    pub members: u32,
}

/// One member and its current assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub member_epoch: i32,
    pub assignment: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: String,
    pub group_epoch: i32,
    pub members: Vec<GroupMemberInfo>,
}

/// One partition as `group describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub committed_offset: Option<u64>,
    /// The high watermark; `None` if the topic no longer exists.
    pub log_end_offset: Option<u64>,
    /// `log_end_offset - committed_offset` (never negative); `None` where nothing is committed.
    pub lag: Option<u64>,
    /// The member that owns the partition now.
    pub member: Option<String>,
}

/// Where `reset-offsets` moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// An absolute offset, clamped into `[log start, high watermark]` per partition.
    Offset(u64),
    /// The first offset whose batch timestamp is at or after this time (ms since the epoch).
    Time(i64),
}

/// One partition of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub topic: String,
    pub partition: u32,
    pub current_offset: Option<u64>,
    pub new_offset: u64,
}

/// Group administration over a [`Cluster`].
#[derive(Debug, Clone)]
pub struct GroupAdmin {
    cluster: Cluster,
}

/// The rows of `group describe`: every partition of every topic the group is assigned or has committed
/// offsets for. `partition_counts` holds the topics that exist; `log_ends` their high watermarks.
pub fn lag_rows(
    group: &str,
    members: &[GroupMemberInfo],
    committed: &BTreeMap<(String, u32), u64>,
    partition_counts: &BTreeMap<String, u32>,
    log_ends: &BTreeMap<(String, u32), u64>,
) -> Vec<PartitionLag> {
    let mut owner: BTreeMap<(String, u32), &str> = BTreeMap::new();
    for m in members {
        for (t, p) in &m.assignment {
            owner.insert((t.clone(), *p), &m.member_id);
        }
    }
    let mut keys: BTreeSet<(String, u32)> = committed.keys().cloned().collect();
    keys.extend(owner.keys().cloned());
    let topics: BTreeSet<String> = keys.iter().map(|(t, _)| t.clone()).collect();
    for t in &topics {
        if let Some(&n) = partition_counts.get(t) {
            keys.extend((0..n).map(|p| (t.clone(), p)));
        }
    }
    keys.into_iter()
        .map(|k| {
            let c = committed.get(&k).copied();
            let end = log_ends.get(&k).copied();
            PartitionLag {
                group: group.to_string(),
                lag: match (c, end) {
                    (Some(c), Some(e)) => Some(e.saturating_sub(c)),
                    _ => None,
                },
                member: owner.get(&k).map(|m| m.to_string()),
                committed_offset: c,
                log_end_offset: end,
                topic: k.0,
                partition: k.1,
            }
        })
        .collect()
}

/// Parses `--to-time`: milliseconds since the epoch, or an RFC 3339 UTC time
/// (`2024-05-01T12:00:00Z`, optional `.fff` fraction).
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return if ms >= 0 {
            Ok(ms)
        } else {
            Err(format!("time {s} is before the epoch"))
        };
    }
    let bad = || {
        format!("expected milliseconds since the epoch or YYYY-MM-DDTHH:MM:SS[.fff]Z, got {s:?}")
    };
    let rest = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = rest.split_once('T').ok_or_else(bad)?;
    let num = |x: &str, len: usize| -> std::result::Result<i64, String> {
        if x.len() == len && x.bytes().all(|b| b.is_ascii_digit()) {
            x.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d[..] else {
        return Err(bad());
    };
    let (y, mo, da) = (num(y, 4)?, num(mo, 2)?, num(da, 2)?);
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) if !f.is_empty() && f.len() <= 3 && f.bytes().all(|b| b.is_ascii_digit()) => {
            (h, num(f, f.len())? * 10i64.pow(3 - f.len() as u32))
        }
        Some(_) => return Err(bad()),
        None => (time, 0),
    };
    let t: Vec<&str> = hms.split(':').collect();
    let [h, mi, se] = t[..] else {
        return Err(bad());
    };
    let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + frac;
    if ms < 0 {
        return Err(format!("time {s} is before the epoch"));
    }
    Ok(ms)
}

impl GroupAdmin {
    pub fn new(cluster: Cluster) -> GroupAdmin {
        GroupAdmin { cluster }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn coordinator(&self, group: &str) -> Result<CoordinatorClient> {
        validate_group_id(group)?;
        Ok(CoordinatorClient::new(self.cluster.clone(), group))
    }

    fn timeout(&self) -> Duration {
        self.cluster.request_timeout()
    }

    /// Every group any broker coordinates, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let meta = self.cluster.refresh_metadata().await?;
        let req = Request::ListGroups(ListGroupsRequest {});
        let mut answers = Vec::new();
        if meta.brokers.is_empty() {
            answers.push(self.cluster.request_any(&req).await?);
        }
        // Each broker lists the groups it coordinates; a broker that is down coordinates none (its
        // offsets partitions have moved), so it is skipped unless no broker answers at all.
        let mut last_err = None;
        for b in &meta.brokers {
            let answer = match self.cluster.connection(b.node_id).await {
                Ok(c) => c.request(&req, self.timeout()).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(a) => answers.push(a),
                Err(e) => last_err = Some(e),
            }
        }
        if answers.is_empty() {
            if let Some(e) = last_err {
                return Err(e);
            }
        }
        let mut out: BTreeMap<String, GroupSummary> = BTreeMap::new();
        for a in answers {
            let Response::ListGroups(l) = a else {
                return Err(ClientError::Protocol(
                    "ListGroups answered with another response".into(),
                ));
            };
            for g in l.groups {
                out.insert(
                    g.group_id.clone(),
                    GroupSummary {
                        group_id: g.group_id,
                        state: g.state,
                        members: g.members,
                    },
                );
            }
        }
        Ok(out.into_values().collect())
    }

    /// Members and their assignment. `GROUP_ID_NOT_FOUND` for a group the coordinator does not know.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let c = self.coordinator(group)?;
        let req = Request::DescribeGroup(DescribeGroupRequest {
            group_id: group.to_string(),
        });
        let d = c
            .call(&req, self.timeout(), |r| match r {
                Response::DescribeGroup(d) => {
                    body_error(d.error_code, d.error_message.clone())?;
                    Ok(d)
                }
                _ => Err(ClientError::Protocol(
                    "DescribeGroup answered with another response".into(),
                )),
            })
            .await?;
        Ok(GroupDescription {
            group_id: d.group_id,
            state: d.state,
            group_epoch: d.group_epoch,
            members: d
                .members
                .into_iter()
                .map(|m| GroupMemberInfo {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    member_epoch: m.member_epoch,
                    assignment: m
                        .assignment
                        .into_iter()
                        .flat_map(|t| {
                            let topic = t.topic;
                            t.partitions.into_iter().map(move |p| (topic.clone(), p))
                        })
                        .collect(),
                })
                .collect(),
        })
    }

    /// The group's committed offsets (every partition it committed for).
    pub async fn committed_offsets(&self, group: &str) -> Result<BTreeMap<(String, u32), u64>> {
        let c = self.coordinator(group)?;
        let req = Request::OffsetFetch(OffsetFetchRequest {
            group_id: group.to_string(),
            topics: None,
        });
        let f = c
            .call(&req, self.timeout(), |r| match r {
                Response::OffsetFetch(f) => {
                    body_error(f.error_code, f.error_message.clone())?;
                    Ok(f)
                }
                _ => Err(ClientError::Protocol(
                    "OffsetFetch answered with another response".into(),
                )),
            })
            .await?;
        let mut out = BTreeMap::new();
        for t in f.topics {
            for p in t.partitions {
                if let Some(o) = p.committed_offset {
                    out.insert((t.name.clone(), p.partition), o);
                }
            }
        }
        Ok(out)
    }

    /// `ListOffsets` for every partition of `topic` at `timestamp` (`EARLIEST`, `LATEST` or ms since the
    /// epoch), asked of each partition's leader.
    pub async fn topic_offsets(&self, topic: &str, timestamp: i64) -> Result<BTreeMap<u32, u64>> {
        let mut out = BTreeMap::new();
        let mut attempt = 1;
        loop {
            let info = self.cluster.topic(topic).await?;
            let mut by_leader: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            let mut failure: Option<ClientError> = None;
            for p in &info.partitions {
                if out.contains_key(&p.partition) {
                    continue;
                }
                match p.leader {
                    Some(l) => by_leader.entry(l).or_default().push(p.partition),
                    None => {
                        failure = Some(ClientError::broker(
                            ErrorCode::LeaderNotAvailable,
                            Some(format!("{topic}/{} has no leader", p.partition)),
                        ))
                    }
                }
            }
            for (leader, parts) in by_leader {
                let req = Request::ListOffsets(ListOffsetsRequest {
                    topics: vec![ListOffsetsTopic {
                        name: topic.to_string(),
                        partitions: parts
                            .iter()
                            .map(|&partition| ListOffsetsPartition {
                                partition,
                                timestamp,
                            })
                            .collect(),
                    }],
                });
                let r = async {
                    let c = self.cluster.connection(leader).await?;
                    c.request(&req, self.timeout()).await
                }
                .await;
                match r {
                    Ok(Response::ListOffsets(l)) => {
                        for p in l.topics.into_iter().flat_map(|t| t.partitions) {
                            match ErrorCode::from_u16(p.error_code) {
                                ErrorCode::None => {
                                    out.insert(p.partition, p.offset);
                                }
                                c => failure = Some(ClientError::broker(c, p.error_message)),
                            }
                        }
                    }
                    Ok(_) => {
                        return Err(ClientError::Protocol(
                            "ListOffsets answered with another response".into(),
                        ))
                    }
                    Err(e) => failure = Some(e),
                }
            }
            if failure.is_none() && out.len() >= info.partitions.len() {
                return Ok(out);
            }
            let e = failure.unwrap_or_else(|| {
                ClientError::broker(
                    ErrorCode::LeaderNotAvailable,
                    Some(format!("ListOffsets left partitions of {topic} unanswered")),
                )
            });
            if !e.retriable() || attempt >= ADMIN_ATTEMPTS_MAX {
                return Err(e);
            }
            attempt += 1;
            tokio::time::sleep(ADMIN_RETRY_BACKOFF).await;
            let _ = self.cluster.refresh_metadata().await;
        }
    }

    /// `group describe`: one row per partition of every topic the group is assigned or committed for.
    pub async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let desc = self.describe_group(group).await?;
        let committed = self.committed_offsets(group).await?;
        let mut topics: BTreeSet<String> = committed.keys().map(|(t, _)| t.clone()).collect();
        for m in &desc.members {
            topics.extend(m.assignment.iter().map(|(t, _)| t.clone()));
        }
        let meta = self.cluster.refresh_metadata().await?;
        let mut counts = BTreeMap::new();
        let mut log_ends = BTreeMap::new();
        for t in &topics {
            let Some(info) = meta.topic(t) else { continue };
            counts.insert(t.clone(), info.partitions.len() as u32);
            for (p, o) in self.topic_offsets(t, LATEST).await? {
                log_ends.insert((t.clone(), p), o);
            }
        }
        Ok(lag_rows(
            group,
            &desc.members,
            &committed,
            &counts,
            &log_ends,
        ))
    }

    /// The plan of a reset of `group` on every partition of `topic` (nothing is changed).
    pub async fn plan_reset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<ResetPlan>> {
        validate_group_id(group)?;
        let info = self.cluster.topic(topic).await?;
        let committed = self.committed_offsets(group).await?;
        let new: BTreeMap<u32, u64> = match to {
            ResetTo::Earliest => self.topic_offsets(topic, EARLIEST).await?,
            ResetTo::Latest => self.topic_offsets(topic, LATEST).await?,
            ResetTo::Time(t) => self.topic_offsets(topic, t.max(0)).await?,
            ResetTo::Offset(n) => {
                let lo = self.topic_offsets(topic, EARLIEST).await?;
                let hi = self.topic_offsets(topic, LATEST).await?;
                lo.iter()
                    .map(|(p, &l)| (*p, n.clamp(l, hi.get(p).copied().unwrap_or(l).max(l))))
                    .collect()
            }
        };
        info.partitions
            .iter()
            .map(|p| {
                let new_offset = new.get(&p.partition).copied().ok_or_else(|| {
                    ClientError::Protocol(format!("no offset for {topic}/{}", p.partition))
                })?;
                Ok(ResetPlan {
                    topic: topic.to_string(),
                    partition: p.partition,
                    current_offset: committed.get(&(topic.to_string(), p.partition)).copied(),
                    new_offset,
                })
            })
            .collect()
    }

    /// Commits `plan` as an admin (refused with `GROUP_NOT_EMPTY` while the group has live members).
    pub async fn execute_reset(&self, group: &str, plan: &[ResetPlan]) -> Result<()> {
        let c = self.coordinator(group)?;
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for r in plan {
            let part = OffsetCommitPartition {
                partition: r.partition,
                offset: r.new_offset,
                metadata: None,
            };
            match topics.iter_mut().find(|t| t.name == r.topic) {
                Some(t) => t.partitions.push(part),
                None => topics.push(OffsetCommitTopic {
                    name: r.topic.clone(),
                    partitions: vec![part],
                }),
            }
        }
        let req = Request::OffsetCommit(OffsetCommitRequest {
            group_id: group.to_string(),
            member_id: String::new(),
            member_epoch: -1,
            topics,
        });
        let resp = c
            .call(&req, self.timeout(), |r| match r {
                Response::OffsetCommit(o) => {
                    body_error(o.error_code, o.error_message.clone())?;
                    Ok(o)
                }
                _ => Err(ClientError::Protocol(
                    "OffsetCommit answered with another response".into(),
                )),
            })
            .await?;
        for t in resp.topics {
            for p in t.partitions {
                let code = ErrorCode::from_u16(p.error_code);
                if code != ErrorCode::None {
                    return Err(ClientError::broker(
                        code,
                        Some(format!(
                            "reset of {}/{} refused: {}",
                            t.name,
                            p.partition,
                            code.message()
                        )),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_rows_cover_assigned_and_committed_topics_with_nulls() {
        let members = vec![GroupMemberInfo {
            member_id: "m1".into(),
            instance_id: None,
            member_epoch: 3,
            assignment: vec![("a".into(), 1)],
        }];
        let committed: BTreeMap<(String, u32), u64> =
            [(("a".into(), 0), 5), (("gone".into(), 2), 7)].into();
        let counts: BTreeMap<String, u32> = [("a".to_string(), 3)].into();
        let ends: BTreeMap<(String, u32), u64> = [
            (("a".into(), 0), 9),
            (("a".into(), 1), 4),
            (("a".into(), 2), 0),
        ]
        .into();
        let rows = lag_rows("g", &members, &committed, &counts, &ends);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.topic.as_str(),
                    r.partition,
                    r.committed_offset,
                    r.log_end_offset,
                    r.lag,
                    r.member.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 0, Some(5), Some(9), Some(4), None),
                ("a", 1, None, Some(4), None, Some("m1")),
                ("a", 2, None, Some(0), None, None),
                // A deleted topic keeps its committed row, without a log end.
                ("gone", 2, Some(7), None, None, None),
            ]
        );
        // A commit beyond the log end (after truncation) never shows negative lag.
        let committed: BTreeMap<(String, u32), u64> = [(("a".into(), 0), 50)].into();
        let rows = lag_rows("g", &[], &committed, &counts, &ends);
        assert_eq!(rows[0].lag, Some(0));
        assert!(lag_rows("g", &[], &BTreeMap::new(), &counts, &ends).is_empty());
    }

    #[test]
    fn times_parse_as_millis_or_rfc3339_utc() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1700000000123"), Ok(1_700_000_000_123));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2024-02-29T12:34:56Z"), Ok(1_709_210_096_000));
        assert_eq!(parse_time("2024-02-29T12:34:56.5Z"), Ok(1_709_210_096_500));
        assert_eq!(parse_time("2000-03-01T00:00:00.001Z"), Ok(951_868_800_001));
        for bad in [
            "-1",
            "",
            "yesterday",
            "2024-02-29 12:34:56Z",
            "2024-02-29T12:34:56",
            "2024-13-01T00:00:00Z",
            "2024-02-29T24:00:00Z",
            "2024-02-29T12:34:56.1234Z",
            "1969-12-31T23:59:59Z",
            "24-02-29T12:34:56Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }
}
