//! Administration: create, delete, list, describe topics, add partitions, alter topic configs, and the
//! cluster's state and health.
//!
//! Topic changes go to the controller when metadata names one (any broker otherwise) and are retried a
//! bounded number of times ([`ADMIN_RETRIES_MAX`]) on `NOT_CONTROLLER` and other retriable errors, refreshing
//! metadata in between. A retry after an ambiguous failure (timeout, lost connection) that finds the change
//! already made (`TOPIC_ALREADY_EXISTS` on create, `UNKNOWN_TOPIC_OR_PARTITION` on delete) counts as success.
//!
//! Health follows DESIGN §6: healthy when the contacted broker answers metadata, a controller is known and
//! every partition has a leader; under-replicated partitions are reported but do not make it unhealthy.

use std::sync::Arc;
use std::time::Duration;

use runnel_protocol::limits::{
    PARTITIONS_PER_TOPIC_MAX, REPLICATION_FACTOR_MAX, TOPIC_NAME_LEN_MAX,
};
use runnel_protocol::messages::{
    AlterConfigsRequest, CreatableTopic, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, TopicResult,
};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::time::Instant;

use crate::cluster::{BrokerInfo, Cluster, Metadata, TopicInfo};
use crate::error::{ClientError, Result};

/// Most attempts of one admin request (retriable errors only).
pub const ADMIN_ATTEMPTS_MAX: u32 = 6;
/// Re-sends after the first attempt.
pub const ADMIN_RETRIES_MAX: u32 = ADMIN_ATTEMPTS_MAX - 1;
/// Backoff between admin attempts.
pub const ADMIN_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// How long `create_topic` / `add_partitions` wait for every partition to have a leader.
pub const TOPIC_READY_WAIT: Duration = Duration::from_secs(10);

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub configs: Vec<(String, String)>,
}

impl NewTopic {
    pub fn new(name: &str, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor: 1,
            configs: Vec::new(),
        }
    }
}

/// A partition named by topic and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: u32,
}

/// What `runnel cluster info` prints.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub controller_id: Option<u32>,
    pub brokers: Vec<BrokerInfo>,
    pub topics: usize,
    pub partitions: usize,
    pub under_replicated: Vec<PartitionRef>,
    pub leaderless: Vec<PartitionRef>,
}

impl ClusterInfo {
    pub fn from_metadata(m: &Metadata) -> ClusterInfo {
        let mut topics: Vec<&Arc<TopicInfo>> = m.topics.values().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut under_replicated = Vec::new();
        let mut leaderless = Vec::new();
        let mut partitions = 0;
        for t in topics.iter().filter(|t| t.error.is_ok()) {
            for p in &t.partitions {
                partitions += 1;
                let r = || PartitionRef {
                    topic: t.name.clone(),
                    partition: p.partition,
                };
                if p.leader.is_none() {
                    leaderless.push(r());
                }
                if p.under_replicated() {
                    under_replicated.push(r());
                }
            }
        }
        let mut brokers = m.brokers.clone();
        brokers.sort_by_key(|b| b.node_id);
        ClusterInfo {
            cluster_id: m.cluster_id.clone(),
            controller_id: m.controller_id,
            brokers,
            topics: topics.len(),
            partitions,
            under_replicated,
            leaderless,
        }
    }

    /// Health per DESIGN §6 (the broker answered metadata, or this value would not exist).
    pub fn health(&self) -> Health {
        let mut problems = Vec::new();
        if self.controller_id.is_none() {
            problems.push("no controller is elected".to_string());
        }
        if !self.leaderless.is_empty() {
            problems.push(format!(
                "{} partition(s) without a leader",
                self.leaderless.len()
            ));
        }
        Health {
            healthy: problems.is_empty(),
            problems,
        }
    }
}

/// The verdict of `runnel cluster health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    /// Why it is unhealthy (empty when healthy).
    pub problems: Vec<String>,
}

/// Topic and cluster administration.
#[derive(Clone, Debug)]
pub struct Admin {
    cluster: Cluster,
    retry_backoff: Duration,
}

impl Admin {
    pub fn new(cluster: Cluster) -> Admin {
        Admin {
            cluster,
            retry_backoff: ADMIN_RETRY_BACKOFF,
        }
    }

    /// Sets the backoff unit between attempts (attempt n waits n × this).
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Admin {
        self.retry_backoff = backoff;
        self
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates a topic and waits (up to [`TOPIC_READY_WAIT`]) until each partition has a leader.
    pub async fn create_topic(&self, t: &NewTopic) -> Result<()> {
        validate_topic_name(&t.name)?;
        if t.partitions == 0 || t.partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(ClientError::broker(
                ErrorCode::InvalidPartitions,
                Some(format!(
                    "partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}, not {}",
                    t.partitions
                )),
            ));
        }
        if t.replication_factor == 0 || t.replication_factor > REPLICATION_FACTOR_MAX {
            return Err(ClientError::broker(
                ErrorCode::InvalidReplicationFactor,
                Some(format!(
                    "replication factor must be in 1..={REPLICATION_FACTOR_MAX}, not {}",
                    t.replication_factor
                )),
            ));
        }
        let timeout_ms = self.timeout_ms();
        let req = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreatableTopic {
                name: t.name.clone(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs.clone(),
            }],
            timeout_ms,
            validate_only: false,
        });
        self.topic_change(&req, ErrorCode::TopicAlreadyExists, |r| match r {
            Response::CreateTopics(c) => c.topics.into_iter().next(),
            _ => None,
        })
        .await?;
        self.wait_ready(&t.name, t.partitions).await;
        Ok(())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let req = Request::DeleteTopics(DeleteTopicsRequest {
            names: vec![name.to_string()],
            timeout_ms: self.timeout_ms(),
        });
        self.topic_change(&req, ErrorCode::UnknownTopicOrPartition, |r| match r {
            Response::DeleteTopics(d) => d.topics.into_iter().next(),
            _ => None,
        })
        .await?;
        let _ = self.cluster.refresh_metadata().await;
        Ok(())
    }

    /// Adds `count` partitions to a topic; returns the new total.
    pub async fn add_partitions(&self, name: &str, count: u32) -> Result<u32> {
        if count == 0 {
            return Err(ClientError::broker(
                ErrorCode::InvalidPartitions,
                Some("the number of partitions to add must be at least 1".into()),
            ));
        }
        let current = self.describe_topic(name).await?.partitions.len() as u32;
        let new_total = current.saturating_add(count);
        if new_total > PARTITIONS_PER_TOPIC_MAX {
            return Err(ClientError::broker(
                ErrorCode::InvalidPartitions,
                Some(format!(
                    "{name} would have {new_total} partitions, more than {PARTITIONS_PER_TOPIC_MAX}"
                )),
            ));
        }
        let req = Request::CreatePartitions(CreatePartitionsRequest {
            topic: name.to_string(),
            new_total,
            timeout_ms: self.timeout_ms(),
        });
        self.topic_change(&req, ErrorCode::None, |r| match r {
            Response::CreatePartitions(c) => Some(c.result),
            _ => None,
        })
        .await?;
        self.wait_ready(name, new_total).await;
        Ok(new_total)
    }

    /// Changes a topic's config overrides: each pair sets a key; an empty value removes the override (the
    /// broker default applies again). Keys not named keep their value. The broker validates the resulting
    /// set (INVALID_CONFIG naming the key otherwise) and applies it to the live partitions before answering.
    /// Idempotent, so it is retried like the other admin requests.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        configs: &[(String, String)],
    ) -> Result<()> {
        validate_topic_name(name)?;
        if configs.is_empty() {
            return Err(ClientError::broker(
                ErrorCode::InvalidConfig,
                Some("no config to alter; give at least one key=value".into()),
            ));
        }
        let req = Request::AlterConfigs(AlterConfigsRequest {
            topic: name.to_string(),
            configs: configs.to_vec(),
            validate_only: false,
        });
        self.topic_change(&req, ErrorCode::None, |r| match r {
            Response::AlterConfigs(a) => Some(a.result),
            _ => None,
        })
        .await?;
        let _ = self.cluster.refresh_metadata().await;
        Ok(())
    }

    /// Every topic, sorted by name (internal topics included; see [`TopicInfo::internal`]).
    pub async fn list_topics(&self) -> Result<Vec<Arc<TopicInfo>>> {
        let m = self.cluster.refresh_metadata().await?;
        let mut v: Vec<Arc<TopicInfo>> = m
            .topics
            .values()
            .filter(|t| t.error.is_ok())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// One topic with its partitions, fresh from the cluster.
    pub async fn describe_topic(&self, name: &str) -> Result<Arc<TopicInfo>> {
        let m = self.cluster.refresh_metadata().await?;
        match m.topics.get(name) {
            Some(t) if t.error.is_ok() => Ok(t.clone()),
            Some(t) => Err(ClientError::broker(t.error, Some(format!("topic {name}")))),
            None => Err(ClientError::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!("topic {name} does not exist")),
            )),
        }
    }

    /// Brokers, controller, partition counts, under-replicated and leaderless partitions.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        let m = self.cluster.refresh_metadata().await?;
        Ok(ClusterInfo::from_metadata(&m))
    }

    fn timeout_ms(&self) -> u32 {
        self.cluster
            .request_timeout()
            .as_millis()
            .min(u32::MAX as u128) as u32
    }

    /// Sends a topic-level admin request with bounded retries; `done_code` is the error that means "already
    /// done" on a retry after an ambiguous failure.
    async fn topic_change(
        &self,
        req: &Request,
        done_code: ErrorCode,
        result: impl Fn(Response) -> Option<TopicResult>,
    ) -> Result<()> {
        let mut ambiguous = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome: Result<()> = match self.send_to_controller(req).await {
                Ok(resp) => match result(resp) {
                    Some(r) if r.error_code == 0 => return Ok(()),
                    Some(r) => {
                        let code = ErrorCode::from_u16(r.error_code);
                        if ambiguous && code == done_code && code != ErrorCode::None {
                            return Ok(());
                        }
                        Err(ClientError::broker(code, r.error_message))
                    }
                    None => Err(ClientError::Protocol(
                        "admin response without a topic result".into(),
                    )),
                },
                Err(e) => Err(e),
            };
            let Err(e) = outcome else { return Ok(()) };
            // UNKNOWN_TOPIC_OR_PARTITION is not worth retrying for admin requests: it is the answer.
            let retry = e.retriable() && e.code() != Some(ErrorCode::UnknownTopicOrPartition);
            if !retry || attempt >= ADMIN_ATTEMPTS_MAX {
                return Err(e);
            }
            ambiguous |= matches!(
                e,
                ClientError::Timeout { .. } | ClientError::ConnectionLost { .. }
            );
            tokio::time::sleep(self.retry_backoff * attempt).await;
            let _ = self.cluster.refresh_metadata().await;
        }
    }

    async fn send_to_controller(&self, req: &Request) -> Result<Response> {
        let controller = self.cluster.metadata().controller_id;
        if let Some(id) = controller {
            if let Ok(c) = self.cluster.connection(id).await {
                return c.request(req, self.cluster.request_timeout()).await;
            }
        }
        self.cluster.request_any(req).await
    }

    /// Waits until metadata shows `partitions` partitions of `name`, each with a leader (bounded; best effort).
    async fn wait_ready(&self, name: &str, partitions: u32) {
        let deadline = Instant::now() + TOPIC_READY_WAIT;
        let mut pause = Duration::from_millis(20);
        while Instant::now() < deadline {
            if let Ok(m) = self.cluster.refresh_metadata().await {
                if let Some(t) = m.topic(name) {
                    if t.partitions.len() as u32 >= partitions
                        && t.partitions.iter().all(|p| p.leader.is_some())
                    {
                        return;
                    }
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

/// Kafka's topic-name rule: 1..=249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(ClientError::broker(
            ErrorCode::InvalidTopic,
            Some(format!("invalid topic name {name:?}: {why}")),
        ))
    };
    if name.is_empty() || name.len() > TOPIC_NAME_LEN_MAX {
        return bad(&format!("length must be 1..={TOPIC_NAME_LEN_MAX}"));
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PartitionInfo;
    use std::collections::HashMap;

    fn part(p: u32, leader: Option<u32>, replicas: &[u32], in_sync: &[u32]) -> PartitionInfo {
        PartitionInfo {
            partition: p,
            error: ErrorCode::None,
            leader,
            leader_term: 1,
            replicas: replicas.to_vec(),
            in_sync: in_sync.to_vec(),
            high_watermark: 0,
            log_start_offset: 0,
            log_end_offset: 0,
        }
    }

    fn meta(controller: Option<u32>, parts: Vec<PartitionInfo>) -> Metadata {
        let t = TopicInfo {
            name: "t".into(),
            error: ErrorCode::None,
            internal: false,
            partitions: parts,
            configs: vec![],
        };
        Metadata {
            cluster_id: "c".into(),
            controller_id: controller,
            brokers: vec![],
            topics: HashMap::from([("t".to_string(), Arc::new(t))]),
            epoch: 0,
        }
    }

    #[test]
    fn health_rules() {
        // A fresh single node with no topics is healthy.
        let empty = Metadata {
            controller_id: Some(1),
            ..Default::default()
        };
        assert!(ClusterInfo::from_metadata(&empty).health().healthy);
        // Under-replicated alone does not fail health, but is reported.
        let m = meta(Some(1), vec![part(0, Some(1), &[1, 2, 3], &[1, 2])]);
        let info = ClusterInfo::from_metadata(&m);
        assert!(info.health().healthy);
        assert_eq!(info.under_replicated.len(), 1);
        // A leaderless partition or no controller does.
        let m = meta(Some(1), vec![part(0, None, &[1], &[])]);
        assert!(!ClusterInfo::from_metadata(&m).health().healthy);
        let m = meta(None, vec![part(0, Some(1), &[1], &[1])]);
        let h = ClusterInfo::from_metadata(&m).health();
        assert!(!h.healthy);
        assert_eq!(h.problems, vec!["no controller is elected".to_string()]);
    }

    #[tokio::test]
    async fn admin_retries_stop_at_the_bound() {
        use crate::cluster::ClientConfig;
        use runnel_protocol::messages::{CreateTopicsResponse, DeleteTopicsResponse};
        let mut fb = crate::testing::start(&[]).await;
        let cluster = Cluster::connect(ClientConfig::new(&fb.addr).unwrap())
            .await
            .unwrap();
        let admin = Admin::new(cluster).with_retry_backoff(Duration::from_millis(1));
        let result = |code: ErrorCode| TopicResult {
            name: "x".into(),
            error_code: code.as_u16(),
            error_message: None,
        };
        let task = {
            let admin = admin.clone();
            tokio::spawn(async move { admin.create_topic(&NewTopic::new("x", 1)).await })
        };
        for _ in 0..ADMIN_ATTEMPTS_MAX {
            let inc = tokio::time::timeout(Duration::from_secs(5), fb.requests.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(matches!(inc.request, Request::CreateTopics(_)));
            let r = Response::CreateTopics(CreateTopicsResponse {
                topics: vec![result(ErrorCode::NotController)],
            });
            inc.reply.send(r).unwrap();
        }
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotController));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), fb.requests.recv())
                .await
                .is_err(),
            "more than ADMIN_ATTEMPTS_MAX attempts"
        );
        // A non-retriable answer is returned at once.
        let task = {
            let admin = admin.clone();
            tokio::spawn(async move { admin.delete_topic("x").await })
        };
        let inc = fb.requests.recv().await.unwrap();
        let r = Response::DeleteTopics(DeleteTopicsResponse {
            topics: vec![result(ErrorCode::UnknownTopicOrPartition)],
        });
        inc.reply.send(r).unwrap();
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("bars-t.1_x").is_ok());
        for bad in ["", ".", "..", "a b", "é", &"x".repeat(250)] {
            assert_eq!(
                validate_topic_name(bad).unwrap_err().code(),
                Some(ErrorCode::InvalidTopic),
                "{bad:?}"
            );
        }
    }
}
