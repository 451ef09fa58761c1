//! The client's view of the cluster: bootstrap, the metadata cache and one connection per broker.
//!
//! `--brokers` is only a bootstrap list: [`Cluster::connect`] tries each address in turn (each bounded by the
//! connect timeout, so a dead first entry costs at most that), fetches metadata, and from then on talks to
//! brokers by node id at the address they advertise. Partition leaders come from the cached metadata; callers
//! invalidate it with [`Cluster::refresh_metadata`] after `NOT_LEADER`, `LEADER_NOT_AVAILABLE`,
//! `UNKNOWN_TOPIC_OR_PARTITION` or a connection error.
//!
//! Invariants: the cache is replaced atomically (readers see one whole snapshot); concurrent refreshes
//! coalesce into one request; a dead connection is replaced on next use, never handed out.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use runnel_protocol::messages::{MetadataRequest, MetadataResponse, PartitionMeta, TopicMeta};
use runnel_protocol::{ErrorCode, Request, Response};
use tokio::sync::Mutex as AsyncMutex;

use crate::connection::{Connection, CONNECT_TIMEOUT_DEFAULT, REQUEST_TIMEOUT_DEFAULT};
use crate::error::{ClientError, Result};

/// Default bootstrap address (DESIGN §6).
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9292";
/// Bootstrap addresses accepted in one `--brokers` list.
pub const BOOTSTRAP_ADDRS_MAX: usize = 64;

/// How the client reaches the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bootstrap `host:port` addresses, tried in order.
    pub brokers: Vec<String>,
    pub client_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            brokers: vec![DEFAULT_BROKERS.to_string()],
            client_id: "runnel-client".to_string(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

impl ClientConfig {
    /// A config for a comma-separated bootstrap list (`"h1:p1,h2:p2"`).
    pub fn new(brokers: &str) -> Result<ClientConfig> {
        let list: Vec<String> = brokers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the broker list is empty".into(),
            ));
        }
        if list.len() > BOOTSTRAP_ADDRS_MAX {
            return Err(ClientError::InvalidArgument(format!(
                "more than {BOOTSTRAP_ADDRS_MAX} bootstrap brokers"
            )));
        }
        Ok(ClientConfig {
            brokers: list,
            ..ClientConfig::default()
        })
    }
}

/// One partition as metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub error: ErrorCode,
    pub leader: Option<u32>,
    pub leader_term: u64,
    pub replicas: Vec<u32>,
    pub in_sync: Vec<u32>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

impl PartitionInfo {
    /// Fewer caught-up replicas than assigned ones.
    pub fn under_replicated(&self) -> bool {
        self.in_sync.len() < self.replicas.len()
    }
}

/// One topic as metadata describes it; `partitions` is indexed by partition number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error: ErrorCode,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
    pub configs: Vec<(String, String)>,
}

impl TopicInfo {
    pub fn replication_factor(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0)
    }
}

/// A broker's advertised address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One whole metadata answer.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    pub cluster_id: String,
    pub controller_id: Option<u32>,
    pub brokers: Vec<BrokerInfo>,
    pub topics: HashMap<String, Arc<TopicInfo>>,
    /// The cluster metadata epoch of the answer (0 on a single node).
    pub epoch: u64,
}

impl Metadata {
    pub fn from_response(m: MetadataResponse) -> Metadata {
        let topics = m
            .topics
            .into_iter()
            .map(|t| (t.name.clone(), Arc::new(topic_info(t))))
            .collect();
        Metadata {
            cluster_id: m.cluster_id,
            controller_id: m.controller_id,
            brokers: m
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    node_id: b.node_id,
                    host: b.host,
                    port: b.port,
                })
                .collect(),
            topics,
            epoch: m.metadata_epoch,
        }
    }

    pub fn broker(&self, node_id: u32) -> Option<&BrokerInfo> {
        self.brokers.iter().find(|b| b.node_id == node_id)
    }

    /// The topic if metadata knows it without error.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name).filter(|t| t.error.is_ok())
    }
}

fn topic_info(t: TopicMeta) -> TopicInfo {
    let mut partitions: Vec<PartitionInfo> = t.partitions.into_iter().map(partition_info).collect();
    partitions.sort_by_key(|p| p.partition);
    TopicInfo {
        name: t.name,
        error: ErrorCode::from_u16(t.error_code),
        internal: t.internal,
        partitions,
        configs: t.configs,
    }
}

fn partition_info(p: PartitionMeta) -> PartitionInfo {
    PartitionInfo {
        partition: p.partition,
        error: ErrorCode::from_u16(p.error_code),
        leader: p.leader,
        leader_term: p.leader_term,
        replicas: p.replicas,
        in_sync: p.in_sync,
        high_watermark: p.high_watermark,
        log_start_offset: p.log_start_offset,
        log_end_offset: p.log_end_offset,
    }
}

struct Inner {
    config: ClientConfig,
    metadata: RwLock<Arc<Metadata>>,
    /// Bumped by every successful refresh; lets concurrent refreshes coalesce.
    generation: std::sync::atomic::AtomicU64,
    refresh: AsyncMutex<()>,
    /// Open connections by address.
    conns: AsyncMutex<HashMap<String, Connection>>,
}

/// A cheap-to-clone handle shared by the producer, consumer and admin clients.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("brokers", &self.inner.config.brokers)
            .finish()
    }
}

impl Cluster {
    /// Bootstraps: tries every address of `config.brokers` in turn until one answers `Metadata`.
    pub async fn connect(config: ClientConfig) -> Result<Cluster> {
        if config.brokers.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the broker list is empty".into(),
            ));
        }
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                metadata: RwLock::new(Arc::new(Metadata::default())),
                generation: 0.into(),
                refresh: AsyncMutex::new(()),
                conns: AsyncMutex::new(HashMap::new()),
            }),
        };
        cluster.refresh_metadata().await?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The cached metadata snapshot.
    /// Counts metadata refreshes: equal values mean no refresh in between (a cache keyed on it is current).
    pub fn metadata_generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn metadata(&self) -> Arc<Metadata> {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fetches fresh metadata for every topic. Callers that race coalesce: whoever waited on a refresh that
    /// completed meanwhile returns that one.
    /// Notes a leader a broker named in a NOT_LEADER answer, so the next request for that partition goes
    /// there without a metadata round trip. Ignored when `leader` is not a known broker or the topic or
    /// partition is unknown. The next [`Cluster::refresh_metadata`] replaces it with the cluster's answer.
    pub fn apply_leader_hint(&self, topic: &str, partition: u32, leader: u32) -> bool {
        let mut guard = self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if !guard.brokers.iter().any(|b| b.node_id == leader) {
            return false;
        }
        let Some(t) = guard.topics.get(topic) else {
            return false;
        };
        let Some(i) = t.partitions.iter().position(|p| p.partition == partition) else {
            return false;
        };
        if t.partitions[i].leader == Some(leader) {
            return true;
        }
        let mut t = TopicInfo::clone(t);
        t.partitions[i].leader = Some(leader);
        let mut m = Metadata::clone(&guard);
        m.topics.insert(topic.to_string(), Arc::new(t));
        // Not a refresh: `generation` (which lets concurrent refreshes coalesce) stays.
        *guard = Arc::new(m);
        true
    }

    pub async fn refresh_metadata(&self) -> Result<Arc<Metadata>> {
        use std::sync::atomic::Ordering;
        let seen = self.inner.generation.load(Ordering::Acquire);
        let _guard = self.inner.refresh.lock().await;
        if self.inner.generation.load(Ordering::Acquire) != seen {
            return Ok(self.metadata());
        }
        let req = Request::Metadata(MetadataRequest { topics: None });
        // A broker that has just restarted, or is cut off from the controller, may answer from older
        // metadata (a topic missing, old leaders): ask the next broker instead, and keep the cache when
        // every answer is older than it.
        // Each broker reports leaders as its own replicas see them: one cut off from the others (or that
        // has just lost its leadership) names no leader where the rest of the cluster knows one. An answer
        // with a leaderless partition sends the request on too; if no broker knows every leader, the
        // answer that knows most is taken.
        let known = self.metadata().epoch;
        let resp = self
            .request_first(&req, |r| match r {
                Response::Metadata(m) if m.metadata_epoch >= known => {
                    let parts = m.topics.iter().flat_map(|t| t.partitions.iter());
                    let (led, all) = parts.fold((0u64, 0u64), |(l, a), p| {
                        (l + u64::from(p.leader.is_some()), a + 1)
                    });
                    if led == all {
                        Ok(())
                    } else {
                        Err(1 + led)
                    }
                }
                _ => Err(0),
            })
            .await?;
        let Response::Metadata(m) = resp else {
            return Err(ClientError::Protocol(
                "Metadata answered with another response".into(),
            ));
        };
        if m.metadata_epoch < known {
            tracing::debug!(
                epoch = m.metadata_epoch,
                known,
                "every broker answered older metadata; keeping the cache"
            );
            return Ok(self.metadata());
        }
        let meta = Arc::new(Metadata::from_response(m));
        *self
            .inner
            .metadata
            .write()
            .unwrap_or_else(|p| p.into_inner()) = meta.clone();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        Ok(meta)
    }

    /// Candidate addresses: brokers from metadata first, then the bootstrap list, without duplicates.
    fn candidates(&self) -> Vec<String> {
        let meta = self.metadata();
        let mut out: Vec<String> = meta.brokers.iter().map(BrokerInfo::addr).collect();
        for b in &self.inner.config.brokers {
            if !out.contains(b) {
                out.push(b.clone());
            }
        }
        out
    }

    /// Sends `req` to the first broker that answers (metadata brokers, then the bootstrap list). A broker
    /// that cannot be reached or fails the request at the connection level is skipped; an error answered by
    /// a broker is returned as is.
    pub async fn request_any(&self, req: &Request) -> Result<Response> {
        self.request_first(req, |_| Ok(())).await
    }

    /// Like [`Cluster::request_any`], but an answer `judge` rejects (`Err(rank)`) sends the request on to
    /// the next broker; when every answer was rejected, the highest-ranked one (the first of equals) is
    /// returned.
    async fn request_first(
        &self,
        req: &Request,
        judge: impl Fn(&Response) -> std::result::Result<(), u64>,
    ) -> Result<Response> {
        let mut last: Option<ClientError> = None;
        let mut rejected: Option<(u64, Response)> = None;
        let candidates = self.candidates();
        for addr in &candidates {
            match self.connection_at(addr).await {
                Ok(c) => match c.request(req, self.inner.config.request_timeout).await {
                    Ok(r) => match judge(&r) {
                        Ok(()) => return Ok(r),
                        Err(rank) => {
                            if rejected.as_ref().is_none_or(|(best, _)| rank > *best) {
                                rejected = Some((rank, r));
                            }
                        }
                    },
                    Err(e @ (ClientError::ConnectionLost { .. } | ClientError::Timeout { .. })) => {
                        self.drop_connection(addr).await;
                        last = Some(e);
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => last = Some(e),
            }
        }
        if let Some((_, r)) = rejected {
            return Ok(r);
        }
        Err(ClientError::NoBrokerReachable {
            tried: candidates.join(","),
            last: last.map_or_else(|| "no address".to_string(), |e| e.to_string()),
        })
    }

    /// The connection to broker `node_id`, opened if needed.
    pub async fn connection(&self, node_id: u32) -> Result<Connection> {
        let addr = match self.metadata().broker(node_id) {
            Some(b) => b.addr(),
            None => {
                let meta = self.refresh_metadata().await?;
                meta.broker(node_id).map(BrokerInfo::addr).ok_or_else(|| {
                    ClientError::broker(
                        ErrorCode::LeaderNotAvailable,
                        Some(format!("broker {node_id} is not in the cluster metadata")),
                    )
                })?
            }
        };
        self.connection_at(&addr).await
    }

    /// The connection to `addr`, opened (bounded by the connect timeout) if none is alive. The map is not
    /// locked while connecting, so a dead broker never delays requests to live ones; two callers racing to
    /// open the same address keep the first connection stored.
    pub async fn connection_at(&self, addr: &str) -> Result<Connection> {
        {
            let mut conns = self.inner.conns.lock().await;
            if let Some(c) = conns.get(addr) {
                if c.is_alive() {
                    return Ok(c.clone());
                }
                conns.remove(addr);
            }
        }
        let c = Connection::connect(
            addr,
            &self.inner.config.client_id,
            self.inner.config.connect_timeout,
        )
        .await?;
        let mut conns = self.inner.conns.lock().await;
        match conns.get(addr) {
            Some(existing) if existing.is_alive() => Ok(existing.clone()),
            _ => {
                conns.insert(addr.to_string(), c.clone());
                Ok(c)
            }
        }
    }

    /// Forgets the connection to `addr` (after it failed or timed out).
    pub async fn drop_connection(&self, addr: &str) {
        self.inner.conns.lock().await.remove(addr);
    }

    /// The topic from the cache, refreshing once if it is missing. `UNKNOWN_TOPIC_OR_PARTITION` if the cluster
    /// does not know it.
    pub async fn topic(&self, name: &str) -> Result<Arc<TopicInfo>> {
        if let Some(t) = self.metadata().topic(name) {
            return Ok(t.clone());
        }
        let meta = self.refresh_metadata().await?;
        match meta.topics.get(name) {
            Some(t) if t.error.is_ok() => Ok(t.clone()),
            Some(t) => Err(ClientError::broker(t.error, Some(format!("topic {name}")))),
            None => Err(ClientError::broker(
                ErrorCode::UnknownTopicOrPartition,
                Some(format!("topic {name} does not exist")),
            )),
        }
    }

    /// The cached leader of `topic`/`partition`, if known.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<u32> {
        self.metadata()
            .topic(topic)?
            .partitions
            .get(partition as usize)
            .filter(|p| p.partition == partition)?
            .leader
    }

    /// The request timeout from the config.
    pub fn request_timeout(&self) -> Duration {
        self.inner.config.request_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::tests::{all_versions, read_request, write_response};
    use runnel_protocol::messages::BrokerMeta;
    use tokio::net::TcpListener;

    /// A fake broker answering ApiVersions and Metadata forever; returns its address and a request counter.
    pub(crate) async fn fake_broker(
        meta: impl Fn(u16) -> MetadataResponse + Send + Sync + 'static,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = count.clone();
        let meta = Arc::new(meta);
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let meta = meta.clone();
                let count = c2.clone();
                tokio::spawn(async move {
                    while let Some((h, r)) = read_request(&mut s).await {
                        let resp = match r {
                            Request::ApiVersions(_) => Response::ApiVersions(all_versions()),
                            Request::Metadata(_) => {
                                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                Response::Metadata(meta(addr.port()))
                            }
                            _ => return,
                        };
                        write_response(&mut s, h.correlation_id, &resp).await;
                    }
                });
            }
        });
        (addr.to_string(), count)
    }

    fn one_topic(port: u16) -> MetadataResponse {
        MetadataResponse {
            metadata_epoch: 0,
            cluster_id: "c".into(),
            controller_id: Some(1),
            brokers: vec![BrokerMeta {
                node_id: 1,
                host: "127.0.0.1".into(),
                port,
            }],
            topics: vec![TopicMeta {
                name: "t".into(),
                partitions: (0..3)
                    .rev()
                    .map(|p| PartitionMeta {
                        partition: p,
                        leader: Some(1),
                        replicas: vec![1],
                        in_sync: vec![1],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
        }
    }

    fn dead_addr() -> String {
        // Bind then drop: nothing listens there any more, so connecting is refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn dead_first_bootstrap_entry_is_skipped() {
        let (addr, _) = fake_broker(one_topic).await;
        let cfg = ClientConfig::new(&format!("{},{}", dead_addr(), addr)).unwrap();
        let c = Cluster::connect(cfg).await.unwrap();
        let t = c.topic("t").await.unwrap();
        assert_eq!(
            t.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(c.leader("t", 2), Some(1));
        assert_eq!(c.leader("t", 3), None);
        assert!(c.connection(1).await.unwrap().is_alive());
        let e = c.topic("nope").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopicOrPartition));
    }

    #[tokio::test]
    async fn no_reachable_broker_is_a_clear_error() {
        let cfg = ClientConfig::new(&format!("{},{}", dead_addr(), dead_addr())).unwrap();
        let e = Cluster::connect(cfg).await.unwrap_err();
        assert!(matches!(e, ClientError::NoBrokerReachable { .. }), "{e}");
        assert!(ClientConfig::new(" , ").is_err());
        let many: Vec<String> = (0..=BOOTSTRAP_ADDRS_MAX)
            .map(|i| format!("h{i}:1"))
            .collect();
        assert!(ClientConfig::new(&many.join(",")).is_err());
        assert!(ClientConfig::new(&many[..BOOTSTRAP_ADDRS_MAX].join(",")).is_ok());
    }

    /// A broker answering from older metadata (it has just restarted: no topics yet) never replaces a newer
    /// cache: the refresh asks the next broker, and keeps the cache when every answer is older.
    #[tokio::test]
    async fn older_metadata_never_replaces_newer() {
        use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
        fn broker(node_id: u32, port: u16) -> BrokerMeta {
            BrokerMeta {
                node_id,
                host: "127.0.0.1".into(),
                port,
            }
        }
        let (b, b_asked) = fake_broker(|port| MetadataResponse {
            cluster_id: "c".into(),
            brokers: vec![broker(2, port)],
            metadata_epoch: 3,
            ..Default::default()
        })
        .await;
        let b_port: u16 = b.rsplit_once(':').unwrap().1.parse().unwrap();
        let a_epoch = Arc::new(AtomicU64::new(5));
        let epoch = a_epoch.clone();
        let (a, a_asked) = fake_broker(move |port| MetadataResponse {
            // Broker 2 (the stale one) first, so a refresh asks it first.
            brokers: vec![broker(2, b_port), broker(1, port)],
            metadata_epoch: epoch.load(SeqCst),
            ..one_topic(port)
        })
        .await;
        let c = Cluster::connect(ClientConfig::new(&a).unwrap())
            .await
            .unwrap();
        assert_eq!(c.metadata().epoch, 5);
        let m = c.refresh_metadata().await.unwrap();
        assert_eq!(b_asked.load(SeqCst), 1, "the stale broker was asked first");
        assert!(a_asked.load(SeqCst) >= 2, "then the next one");
        assert_eq!((m.epoch, m.topic("t").is_some()), (5, true));
        // Every broker now answers older metadata: the cache stays.
        a_epoch.store(4, SeqCst);
        let m = c.refresh_metadata().await.unwrap();
        assert_eq!((m.epoch, m.topic("t").is_some()), (5, true));
        assert_eq!(c.leader("t", 0), Some(1));
    }

    /// A broker cut off from the others names no leader; the refresh asks on and takes the answer of a
    /// broker that knows the leaders (when none does, the one that knows most).
    #[tokio::test]
    async fn a_leaderless_answer_is_passed_over_for_one_naming_the_leaders() {
        use std::sync::atomic::Ordering::SeqCst;
        let (y, y_asked) = fake_broker(one_topic).await;
        let y_port: u16 = y.rsplit_once(':').unwrap().1.parse().unwrap();
        let (x, x_asked) = fake_broker(move |port| {
            let mut m = one_topic(y_port);
            // Node 2 (this broker, cut off) first, so a refresh asks it first.
            m.brokers.insert(
                0,
                BrokerMeta {
                    node_id: 2,
                    host: "127.0.0.1".into(),
                    port,
                },
            );
            for p in m.topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                p.leader = None;
            }
            m
        })
        .await;
        let c = Cluster::connect(ClientConfig::new(&x).unwrap())
            .await
            .unwrap();
        assert_eq!(
            c.leader("t", 0),
            None,
            "bootstrapped from the cut-off broker alone"
        );
        let m = c.refresh_metadata().await.unwrap();
        assert!(
            x_asked.load(SeqCst) >= 2,
            "the cut-off broker was asked first"
        );
        assert_eq!(y_asked.load(SeqCst), 1, "then the next one");
        assert_eq!(m.topic("t").map(|t| t.partitions.len()), Some(3));
        assert_eq!(c.leader("t", 0), Some(1));
    }

    #[tokio::test]
    async fn concurrent_refreshes_coalesce() {
        let (addr, count) = fake_broker(one_topic).await;
        let c = Cluster::connect(ClientConfig::new(&addr).unwrap())
            .await
            .unwrap();
        let before = count.load(std::sync::atomic::Ordering::SeqCst);
        let futs: Vec<_> = (0..8).map(|_| c.refresh_metadata()).collect();
        for r in futures::future::join_all(futs).await {
            r.unwrap();
        }
        let used = count.load(std::sync::atomic::Ordering::SeqCst) - before;
        assert!(
            (1..8).contains(&used),
            "8 concurrent refreshes made {used} requests"
        );
    }
}
