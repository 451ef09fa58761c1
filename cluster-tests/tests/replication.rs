//! Issue 4 acceptance on real broker processes (3 nodes on loopback, RF=3):
//! 1. leader `kill -9` loop under an `acks=all` producer: every acknowledged record is read back, once, in
//!    per-partition order, through every broker; unavailability per kill is printed;
//! 2. a SIGSTOPped leader is replaced, and after SIGCONT nothing it acknowledged is missing;
//! 3. `kill -9` of every broker mid-load, restart: every acknowledged record is there;
//! 4. a replica stopped while the leader writes and purges by retention rejoins and converges (trap T6);
//! 5. an idempotent batch retried across a leader change is written once;
//! 6. producer ids (InitProducerId) from different brokers never collide, nor repeat after a full restart.
//! 7. idle partitions quiesce on every broker, and still fail over when the broker leading them dies.
//!
//! The checks compare what the producer was told (partition, offset) with what consumers read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runnel_client::{
    Cluster as Client, Consumer, ConsumerConfig, NewTopic, Offset, Producer, ProducerConfig,
    ProducerRecord,
};
use runnel_cluster_tests::cluster::connect;
use runnel_cluster_tests::Cluster;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const START: Duration = Duration::from_secs(60);
/// Most records one background producer sends.
const RECORDS_MAX: usize = 200_000;
/// Most enqueued records not yet acknowledged.
const WINDOW: usize = 2_000;

/// What a background producer was told: value index → (partition, offset), and how many sends failed.
#[derive(Default, Debug)]
struct Acks {
    acked: BTreeMap<usize, (u32, u64)>,
    failed: usize,
    /// The first few failures' messages, for the assertion that no send failed.
    errors: Vec<String>,
}

impl Acks {
    fn fail(&mut self, i: usize, e: impl std::fmt::Display) {
        self.failed += 1;
        if self.errors.len() < 10 {
            self.errors.push(format!("record {i}: {e}"));
        }
    }
}

fn value(i: usize) -> String {
    format!("v-{i:07}")
}

/// Sends `v-0000000`, `v-0000001`, ... to `topic` until `stop` (or [`RECORDS_MAX`]).
fn spawn_producer(client: Client, topic: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<Acks> {
    tokio::spawn(async move {
        let producer = Producer::new(client, ProducerConfig::default()).expect("producer");
        let mut acks = Acks::default();
        let mut pending = std::collections::VecDeque::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) && i < RECORDS_MAX {
            match producer
                .enqueue(ProducerRecord::new(topic, value(i).as_bytes()))
                .await
            {
                Ok(f) => pending.push_back((i, f)),
                Err(e) => acks.fail(i, e),
            }
            i += 1;
            while pending.len() >= WINDOW {
                let (j, f) = pending.pop_front().expect("non-empty");
                match f.await {
                    Ok(m) => {
                        acks.acked.insert(j, (m.partition, m.offset));
                    }
                    Err(e) => acks.fail(j, e),
                }
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for (j, f) in pending {
            match f.await {
                Ok(m) => {
                    acks.acked.insert(j, (m.partition, m.offset));
                }
                Err(e) => acks.fail(j, e),
            }
        }
        producer.close().await;
        acks
    })
}

/// Reads every partition of `topic` from its start up to the high watermark, bootstrapping from `via`
/// only, and checks the result against `acks`: each acknowledged value at its offset; no value twice;
/// acknowledged values in send order within a partition. Returns the number of records read.
async fn verify_via(via: &str, topic: &str, acks: &Acks) -> usize {
    let client = connect(via).await;
    let meta = client.refresh_metadata().await.expect("metadata");
    let t = meta.topic(topic).expect("topic exists").clone();
    // Up to the high watermark, and at least past every acknowledged offset (right after a restart the
    // high watermark a leader reports may still be catching up with its commit point).
    let mut ends: BTreeMap<u32, u64> = t
        .partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    for (p, o) in acks.acked.values() {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign(topic, None).await.expect("assign");
    consumer.seek_all(Offset::Earliest);
    let mut got: HashMap<(u32, u64), String> = HashMap::new();
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ends
        .iter()
        .any(|(p, end)| next.get(p).copied().unwrap_or(0) < *end)
    {
        assert!(
            Instant::now() < deadline,
            "read via {via}: stuck at {next:?} of {ends:?}"
        );
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap_or_default()
        {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            assert!(
                got.insert((r.partition, r.offset), v).is_none(),
                "via {via}: offset {}/{} read twice",
                r.partition,
                r.offset
            );
            next.insert(r.partition, r.offset + 1);
        }
    }
    for (i, (p, o)) in &acks.acked {
        assert_eq!(
            got.get(&(*p, *o)).map(String::as_str),
            Some(value(*i).as_str()),
            "via {via}: acknowledged record {i} at {p}/{o} lost or different"
        );
    }
    let mut by_value: HashMap<&str, (u32, u64)> = HashMap::new();
    for (k, v) in &got {
        if let Some(first) = by_value.insert(v.as_str(), *k) {
            panic!("via {via}: value {v} stored twice, at {first:?} and {k:?}");
        }
    }
    let mut per_partition: BTreeMap<u32, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, (p, o)) in &acks.acked {
        per_partition.entry(*p).or_default().push((*o, *i));
    }
    for (p, mut v) in per_partition {
        v.sort_unstable();
        assert!(
            v.windows(2).all(|w| w[0].1 < w[1].1),
            "via {via}: partition {p} holds acknowledged records out of send order"
        );
    }
    got.len()
}

async fn verify_everywhere(c: &Cluster, topic: &str, acks: &Acks) {
    for b in &c.brokers {
        let n = verify_via(&b.addr(), topic, acks).await;
        assert!(n >= acks.acked.len());
    }
}

async fn leader_of(client: &Client, topic: &str, partition: u32) -> Option<u32> {
    let m = client.refresh_metadata().await.ok()?;
    m.topic(topic)?
        .partitions
        .iter()
        .find(|p| p.partition == partition)?
        .leader
}

/// Waits until a record sent to `partition` is acknowledged; returns how long that took.
async fn until_writable(client: &Client, topic: &str, partition: u32, probe: &str) -> Duration {
    let t0 = Instant::now();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    loop {
        let r = match producer
            .enqueue(ProducerRecord::new(topic, probe.as_bytes()).partition(partition))
            .await
        {
            Ok(f) => f.await,
            Err(e) => Err(e),
        };
        if r.is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "partition {partition} not writable: {r:?}"
        );
    }
    producer.close().await;
    t0.elapsed()
}

async fn start(dir: &std::path::Path, topic: &NewTopic, extra: &[&str]) -> (Cluster, Client) {
    let c = Cluster::start(dir, 3, extra);
    assert!(c.wait_listening(START), "{}", c.logs());
    let client = c.client().await;
    c.create_topic(&client, topic).await;
    assert!(
        c.wait_leaders(&client, &topic.name, START).await,
        "no leaders:\n{}",
        c.logs()
    );
    (c, client)
}

fn rf3(name: &str, partitions: u32) -> NewTopic {
    let mut t = NewTopic::new(name, partitions);
    t.replication_factor = 3;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loop_loses_no_acknowledged_record() {
    const KILLS: u32 = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("lk", 6), &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(client.clone(), "lk", stop.clone());
    for k in 0..KILLS {
        // Let the producer run a while between kills.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let p = k % 6;
        let deadline = Instant::now() + START;
        let victim = loop {
            if let Some(l) = leader_of(&client, "lk", p).await {
                break l;
            }
            assert!(Instant::now() < deadline, "lk-{p} has no leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        c.node(victim).kill9();
        let down = until_writable(&client, "lk", p, &format!("probe-{k}")).await;
        println!(
            "kill {k}: node {victim} (leader of lk-{p}); lk-{p} writable again after {down:?}"
        );
        c.node(victim).restart();
        assert!(c.node(victim).wait_listening(START));
    }
    stop.store(true, Ordering::Relaxed);
    let acks = producer.await.expect("producer task");
    println!(
        "acknowledged {} records, {} failed sends",
        acks.acked.len(),
        acks.failed
    );
    assert!(!acks.acked.is_empty());
    assert!(c.wait_leaders(&client, "lk", START).await);
    verify_everywhere(&c, "lk", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_replaced_and_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("ps", 1), &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(client.clone(), "ps", stop.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = leader_of(&client, "ps", 0).await.expect("a leader");
    c.node(old).signal(rustix::process::Signal::STOP);
    let deadline = Instant::now() + START;
    let new = loop {
        if let Some(l) = leader_of(&client, "ps", 0).await.filter(|l| *l != old) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader while {old} is paused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let down = until_writable(&client, "ps", 0, "probe-pause").await;
    println!("paused node {old}; node {new} leads; writable after {down:?}");
    c.node(old).signal(rustix::process::Signal::CONT);
    // The old leader learns of the newer term and follows.
    let via_old = connect(&c.node(old).addr()).await;
    let deadline = Instant::now() + START;
    while leader_of(&via_old, "ps", 0).await == Some(old) {
        assert!(
            Instant::now() < deadline,
            "node {old} still claims leadership"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acks = producer.await.expect("producer task");
    assert!(!acks.acked.is_empty());
    verify_everywhere(&c, "ps", &acks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_full_cluster_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("fk", 3), &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(client.clone(), "fk", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        c.node(id).kill9();
    }
    stop.store(true, Ordering::Relaxed);
    let acks = producer.await.expect("producer task");
    println!(
        "acknowledged {} records before the kill, {} failed",
        acks.acked.len(),
        acks.failed
    );
    assert!(!acks.acked.is_empty());
    for id in 1..=3 {
        c.node(id).restart();
    }
    assert!(c.wait_listening(START));
    let client = c.client().await;
    assert!(c.wait_leaders(&client, "fk", START).await, "{}", c.logs());
    verify_everywhere(&c, "fk", &acks).await;
}

/// Trap T6: while node 3 is down the leader rolls and purges segments by retention; node 3 must catch up
/// through the retention snapshot and hold exactly the leader's retained records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_missed_purged_segments_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut topic = rf3("rt", 1);
    // The smallest segments a topic may have (they must hold the largest batch).
    topic.configs = vec![("segment.bytes".into(), (16 * 1024 * 1024).to_string())];
    let (mut c, client) = start(dir.path(), &topic, &[]).await;
    // Node 3 must not lead, or stopping it is a leader kill: move leadership by stopping it only if it
    // follows; otherwise pick the lowest follower.
    let leader = leader_of(&client, "rt", 0).await.expect("leader");
    let victim = (1..=3).rev().find(|n| *n != leader).expect("a follower");
    c.node(victim).kill9();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let payload = vec![b'x'; 1000];
    let mut futures = Vec::new();
    for _ in 0..40_000 {
        futures.push(
            producer
                .enqueue(ProducerRecord::new("rt", &payload))
                .await
                .expect("enqueue"),
        );
    }
    for f in futures {
        f.await.expect("acked with one follower down");
    }
    producer.close().await;
    // Shrink retention: the leader purges its sealed segments at once (snapshot at the boundary).
    runnel_client::Admin::new(client.clone())
        .alter_topic_configs(
            "rt",
            &[("retention.bytes".into(), (16 * 1024 * 1024).to_string())],
        )
        .await
        .expect("alter retention");
    let deadline = Instant::now() + START;
    let start_offset = loop {
        let m = client.refresh_metadata().await.expect("metadata");
        let p = &m.topic("rt").expect("topic").partitions[0];
        if p.log_start_offset > 0 {
            break p.log_start_offset;
        }
        assert!(Instant::now() < deadline, "the leader never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    c.node(victim).restart();
    assert!(c.node(victim).wait_listening(START));
    // Converged: the leader reports every replica caught up.
    let deadline = Instant::now() + START;
    loop {
        let m = client.refresh_metadata().await.expect("metadata");
        let p = &m.topic("rt").expect("topic").partitions[0];
        if p.in_sync.len() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim} never caught up: {p:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Make the returned replica serve: stop the old leader so node `victim` or the other one leads, then
    // read everything retained, densely, from the new leader.
    c.node(leader).kill9();
    assert!(c.wait_leaders(&client, "rt", START).await, "{}", c.logs());
    let via = c.node(victim).addr();
    let client = connect(&via).await;
    let m = client.refresh_metadata().await.expect("metadata");
    let p = m.topic("rt").expect("topic").partitions[0].clone();
    assert!(p.log_start_offset >= start_offset);
    let mut consumer = Consumer::new(client, ConsumerConfig::default());
    consumer.assign("rt", None).await.expect("assign");
    consumer.seek_all(Offset::Earliest);
    let mut next = None;
    let deadline = Instant::now() + START;
    while next.unwrap_or(0) < p.high_watermark {
        assert!(Instant::now() < deadline, "read stuck at {next:?} of {p:?}");
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap_or_default()
        {
            if let Some(n) = next {
                assert_eq!(r.offset, n, "a gap in the retained log");
            }
            next = Some(r.offset + 1);
        }
    }
    println!(
        "node {victim} rejoined after the leader purged to {start_offset}; read {}..{} densely",
        p.log_start_offset, p.high_watermark
    );
}

/// Sends one batch to whoever leads `topic`-0 (following NOT_LEADER / leaderless answers, bounded) and
/// returns its acknowledged base offset.
async fn produce_raw(client: &Client, topic: &str, batch: &bytes::Bytes) -> u64 {
    use runnel_protocol::messages::{
        ProducePartitionData, ProduceRequest, ProduceTopicData, ACKS_ALL,
    };
    use runnel_protocol::{Request, Response};
    let req = Request::Produce(ProduceRequest {
        acks: ACKS_ALL,
        timeout_ms: 10_000,
        topics: vec![ProduceTopicData {
            name: topic.into(),
            partitions: vec![ProducePartitionData {
                partition: 0,
                batch: batch.clone(),
            }],
        }],
    });
    let deadline = Instant::now() + START;
    loop {
        assert!(Instant::now() < deadline, "no leader accepted the batch");
        let Some(leader) = leader_of(client, topic, 0).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(conn) = client.connection(leader).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Ok(Response::Produce(r)) = conn.request(&req, Duration::from_secs(15)).await {
            let p = &r.topics[0].partitions[0];
            if p.error_code == 0 {
                return p.base_offset;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acceptance 5: the same idempotent batch (producer id, sequence) sent again after a leader change is
/// answered with its first offset and not written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotent_batch_is_not_written_twice_across_a_leader_change() {
    use runnel_protocol::batch::RecordBatchBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("idem", 1), &[]).await;
    let batch = |seq: i32| {
        let mut b = RecordBatchBuilder::new(1024).idempotent(4242, 0, seq);
        for i in 0..10 {
            b.push(0, None, format!("r-{}", seq + i).as_bytes(), &[]);
        }
        b.finish()
    };
    let first = batch(0);
    let at = produce_raw(&client, "idem", &first).await;
    assert_eq!(
        produce_raw(&client, "idem", &first).await,
        at,
        "same leader"
    );
    let leader = leader_of(&client, "idem", 0).await.expect("leader");
    c.node(leader).kill9();
    assert_eq!(
        produce_raw(&client, "idem", &first).await,
        at,
        "a retry after the leader change is answered with the first offset"
    );
    let next = produce_raw(&client, "idem", &batch(10)).await;
    assert_eq!(next, at + 10, "the retry wrote nothing");
    // Metadata's high watermark is the answering broker's view (its replica, or the leaders' gossip): it
    // trails the leader by up to a heartbeat or a gossip round. Once it covers both batches it must stop
    // exactly there: nothing more was written.
    let deadline = Instant::now() + START;
    let hwm = loop {
        let m = client.refresh_metadata().await.expect("metadata");
        let h = m.topic("idem").expect("topic").partitions[0].high_watermark;
        if h >= at + 20 || Instant::now() >= deadline {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hwm, at + 20);
}

/// Issue 8 acceptance 3: SIGTERM each broker in turn (it hands its leaderships off, drains, exits 0) and
/// restart it, under a steady `acks=all` producer: no send fails, nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_surfaces_no_error_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("rr", 3), &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = spawn_producer(client.clone(), "rr", stop.clone());
    for id in 1..=3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        c.node(id).signal(rustix::process::Signal::TERM);
        assert_eq!(
            c.node(id).wait_exit(Duration::from_secs(30)),
            Some(0),
            "node {id} did not drain cleanly:\n{}",
            c.logs()
        );
        println!("node {id}: drained and exited 0 in {:?}", t0.elapsed());
        c.node(id).restart();
        assert!(c.node(id).wait_listening(START));
        // Back in sync before the next node goes (what scripts/rolling-restart.sh waits for).
        let deadline = Instant::now() + START;
        loop {
            let m = client.refresh_metadata().await.ok();
            let synced = m
                .as_ref()
                .and_then(|m| m.topic("rr").cloned())
                .is_some_and(|t| t.partitions.iter().all(|p| p.in_sync.len() == 3));
            if synced {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} did not catch up:\n{}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let acks = producer.await.expect("producer task");
    println!(
        "acknowledged {} records, {} failed sends",
        acks.acked.len(),
        acks.failed
    );
    assert_eq!(
        acks.failed, 0,
        "a send failed during the rolling restart: {:?}",
        acks.errors
    );
    verify_everywhere(&c, "rr", &acks).await;
}

/// Asks the broker at `addr` (and only it) for `n` producer ids, one after another. A retriable failure
/// (no controller yet, right after a restart) is retried every 100 ms for up to [`START`] in all.
async fn producer_ids_from(addr: String, n: usize) -> Vec<i64> {
    use runnel_protocol::messages::InitProducerIdRequest;
    use runnel_protocol::{ErrorCode, Request, Response};
    let client = connect(&addr).await;
    let req = Request::InitProducerId(InitProducerIdRequest::default());
    let deadline = Instant::now() + START;
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let r = match client.connection_at(&addr).await {
            Ok(conn) => conn.request(&req, Duration::from_secs(20)).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(Response::InitProducerId(r)) if r.error_code == 0 => {
                assert_eq!(r.producer_epoch, 0);
                ids.push(r.producer_id);
                continue;
            }
            Ok(Response::InitProducerId(r)) => assert!(
                ErrorCode::from_u16(r.error_code).retriable() && Instant::now() < deadline,
                "InitProducerId at {addr}: {r:?}"
            ),
            other => assert!(
                Instant::now() < deadline,
                "InitProducerId at {addr}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids
}

/// Producer ids come from blocks the controller hands out: ids asked of all three brokers at once (more
/// than a block from each, so reservations race for the metadata epoch) never collide; after every broker
/// is killed and restarted, each reserves a fresh block, so every new id is larger than every old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_ids_from_different_brokers_never_collide_nor_repeat_after_a_restart() {
    /// More than a block (1,000 ids) from each broker: two reservations each.
    const IDS_PER_BROKER: usize = 1_200;
    const IDS_AFTER_RESTART: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::start(dir.path(), 3, &[]);
    assert!(c.wait_listening(START), "{}", c.logs());
    let ask_all = |c: &Cluster, n: usize| {
        c.brokers
            .iter()
            .map(|b| tokio::spawn(producer_ids_from(b.addr(), n)))
            .collect::<Vec<_>>()
    };
    let mut old = std::collections::BTreeSet::new();
    for (node, t) in ask_all(&c, IDS_PER_BROKER).into_iter().enumerate() {
        for id in t.await.expect("task") {
            assert!(id >= 0, "node {}: negative id {id}", node + 1);
            assert!(
                old.insert(id),
                "node {}: id {id} handed out twice",
                node + 1
            );
        }
    }
    assert_eq!(old.len(), 3 * IDS_PER_BROKER);
    let max_old = *old.last().expect("ids");
    println!(
        "{} ids from 3 brokers, {}..={max_old}",
        old.len(),
        old.first().expect("ids")
    );
    for id in 1..=3 {
        c.node(id).kill9();
    }
    for id in 1..=3 {
        c.node(id).restart();
    }
    assert!(c.wait_listening(START), "{}", c.logs());
    let mut new = std::collections::BTreeSet::new();
    for (node, t) in ask_all(&c, IDS_AFTER_RESTART).into_iter().enumerate() {
        for id in t.await.expect("task") {
            assert!(
                id > max_old,
                "node {}: id {id} after the restart is not above {max_old}",
                node + 1
            );
            assert!(
                new.insert(id),
                "node {}: id {id} handed out twice",
                node + 1
            );
        }
    }
    println!(
        "after the restart: {} ids, {}..={}",
        new.len(),
        new.first().expect("ids"),
        new.last().expect("ids")
    );
}

/// `topic`-0 as broker `addr` alone sees it (its own Metadata answer, no other broker asked).
async fn partition_seen_by(
    client: &Client,
    addr: &str,
    topic: &str,
) -> Option<runnel_protocol::messages::PartitionMeta> {
    use runnel_protocol::messages::MetadataRequest;
    use runnel_protocol::{Request, Response};
    let req = Request::Metadata(MetadataRequest { topics: None });
    let conn = client.connection_at(addr).await.ok()?;
    match conn.request(&req, Duration::from_secs(5)).await.ok()? {
        Response::Metadata(m) => m
            .topics
            .into_iter()
            .find(|t| t.name == topic)?
            .partitions
            .into_iter()
            .find(|p| p.partition == 0),
        _ => None,
    }
}

/// Broker `addr`'s answer for `topic`-0 to a fetch at `offset` (`read_replica`: from its own replica);
/// `Err` with the request-level code, if any, when there is no partition answer.
async fn fetch_at(
    client: &Client,
    addr: &str,
    topic: &str,
    offset: u64,
    read_replica: bool,
) -> Result<runnel_protocol::messages::FetchPartitionResponse, Option<runnel_protocol::ErrorCode>> {
    use runnel_protocol::messages::{FetchPartition, FetchRequest, FetchTopic};
    use runnel_protocol::{Request, Response};
    let req = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 0,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.to_string(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: offset,
                partition_max_bytes: 1 << 20,
            }],
        }],
        read_replica,
    });
    let conn = client.connection_at(addr).await.map_err(|_| None)?;
    match conn.request(&req, Duration::from_secs(5)).await {
        Ok(Response::Fetch(f)) => f
            .topics
            .into_iter()
            .next()
            .and_then(|t| t.partitions.into_iter().next())
            .ok_or(None),
        Err(e) => Err(e.code()),
        _ => Err(None),
    }
}

/// The error code broker `addr` answers a leader fetch of `topic`-0 at `offset` with (`None`: no answer).
async fn fetch_code_at(
    client: &Client,
    addr: &str,
    topic: &str,
    offset: u64,
) -> Option<runnel_protocol::ErrorCode> {
    match fetch_at(client, addr, topic, offset, false).await {
        Ok(p) => Some(runnel_protocol::ErrorCode::from_u16(p.error_code)),
        Err(code) => code,
    }
}

/// A leader killed and restarted while another replica leads never names itself leader nor serves (and
/// its first Metadata answer already holds the topic: clients wait until its metadata caught up): the
/// vote it kept from before the crash still names it until the current leader reaches it (no leader
/// restore). It used to answer a fetch past its own (stale) log end with OFFSET_OUT_OF_RANGE, and a group
/// consumer resumed at its committed offset then reset to the earliest offset (the chaos run's rewind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_old_leader_never_names_itself_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("ol", 1), &[]).await;
    let old = leader_of(&client, "ol", 0).await.expect("a leader");
    c.node(old).kill9();
    let deadline = Instant::now() + START;
    let new = loop {
        match leader_of(&client, "ol", 0).await {
            Some(l) if l != old => break l,
            _ => assert!(Instant::now() < deadline, "no new leader:\n{}", c.logs()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Records the old leader never saw: a fetch at their end is past its log end.
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut end = 0;
    for i in 0..20 {
        let f = producer
            .enqueue(ProducerRecord::new("ol", value(i).as_bytes()))
            .await
            .expect("enqueue");
        end = f.await.expect("acknowledged").offset + 1;
    }
    c.node(old).restart();
    assert!(c.node(old).wait_listening(START));
    let addr = c.node(old).addr();
    let deadline = Instant::now() + START;
    let mut answers = 0;
    loop {
        let p = partition_seen_by(&client, &addr, "ol").await;
        // It answers clients only once its metadata has caught up: never without the topic.
        assert!(
            p.is_some(),
            "node {old} answered without topic ol after its restart"
        );
        let seen = p.as_ref().and_then(|p| p.leader);
        assert_ne!(
            seen,
            Some(old),
            "node {old} named itself leader after its restart: {p:?}"
        );
        answers += usize::from(seen.is_some());
        let code = fetch_code_at(&client, &addr, "ol", end).await;
        assert_ne!(
            code,
            Some(runnel_protocol::ErrorCode::OffsetOutOfRange),
            "node {old} answered a fetch at {end} from its stale log"
        );
        if seen == Some(new) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {old} never learned of leader {new}:\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("node {old} restarted and named node {new} leader ({answers} answers with a leader)");
}

/// With `read_replica` every replica serves its own copy, followers included, never above its own high
/// watermark, and the three copies agree record by record with what was acknowledged; without it a
/// follower answers NOT_LEADER (consumers read from leaders only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_serves_its_own_copy_when_asked() {
    use runnel_protocol::batch::{records, BatchIter};
    use runnel_protocol::ErrorCode;
    const N: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("rep", 1), &[]).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut futures = Vec::with_capacity(N);
    for i in 0..N {
        let f = producer
            .enqueue(ProducerRecord::new("rep", value(i).as_bytes()))
            .await
            .expect("enqueue");
        futures.push(f);
    }
    let mut acked = BTreeMap::new();
    for (i, f) in futures.into_iter().enumerate() {
        acked.insert(f.await.expect("acknowledged").offset, value(i));
    }
    producer.close().await;
    let end = acked.keys().max().map_or(0, |o| o + 1);
    let leader = leader_of(&client, "rep", 0).await.expect("a leader");
    for id in 1..=3u32 {
        let addr = c.node(id).addr();
        let plain = fetch_at(&client, &addr, "rep", 0, false)
            .await
            .expect("an answer");
        let want = if id == leader {
            ErrorCode::None
        } else {
            ErrorCode::NotLeader
        };
        assert_eq!(ErrorCode::from_u16(plain.error_code), want, "node {id}");
        // Read this replica from 0 to `end`; a follower may trail for a moment (its high watermark moves
        // when the leader's commit index reaches it), so an empty answer below `end` is polled again.
        let deadline = Instant::now() + START;
        let mut copy = BTreeMap::new();
        let mut offset = 0;
        while offset < end {
            let r = fetch_at(&client, &addr, "rep", offset, true)
                .await
                .unwrap_or_else(|e| panic!("node {id}: no answer ({e:?})"));
            assert_eq!(
                ErrorCode::from_u16(r.error_code),
                ErrorCode::None,
                "node {id} at {offset}: {:?}",
                r.error_message
            );
            let before = offset;
            for item in BatchIter::new(r.records.to_contiguous()) {
                let (_, batch) = item.expect("a well-formed batch");
                for rec in records(&batch).expect("records") {
                    assert!(
                        rec.offset < r.high_watermark,
                        "node {id} served offset {} at or above its high watermark {}",
                        rec.offset,
                        r.high_watermark
                    );
                    if rec.offset >= offset {
                        let v = rec.value.as_deref().unwrap_or_default();
                        copy.insert(rec.offset, String::from_utf8_lossy(v).into_owned());
                        offset = rec.offset + 1;
                    }
                }
            }
            if offset == before {
                assert!(
                    Instant::now() < deadline,
                    "node {id} stuck at {offset} (high watermark {}):\n{}",
                    r.high_watermark,
                    c.logs()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert_eq!(
            copy, acked,
            "node {id}'s copy differs from what was acknowledged"
        );
    }
}

/// A SIGTERM'd leader hands its partition over through openraft's TransferLeader RPC: the named replica
/// campaigns at once and the other voter grants it although its lease on the old leader is still running.
/// Without the RPC the hand-off degrades to waiting out that lease: with a 1 s heartbeat no replica may
/// campaign before its 4–8 s election timeout, so a new leader within 3 s proves the transfer path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_hands_leadership_over_without_waiting_out_the_lease() {
    const HANDED_OVER_WITHIN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("tl", 1), &["--raft-heartbeat-ms", "1000"]).await;
    let old = leader_of(&client, "tl", 0).await.expect("a leader");
    let other = (1..=3u32).find(|n| *n != old).expect("another node");
    let other_addr = c.node(other).addr();
    c.node(old).signal(rustix::process::Signal::TERM);
    let t0 = Instant::now();
    let new = loop {
        let seen = partition_seen_by(&client, &other_addr, "tl")
            .await
            .and_then(|p| p.leader);
        match seen {
            Some(l) if l != old => break l,
            _ => assert!(
                t0.elapsed() < HANDED_OVER_WITHIN,
                "node {other} still names no new leader {:?} after node {old}'s SIGTERM:\n{}",
                t0.elapsed(),
                c.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handed_over = t0.elapsed();
    assert_eq!(c.node(old).wait_exit(START), Some(0), "{}", c.logs());
    println!("node {old} handed tl-0 to node {new} in {handed_over:?}");
}

/// A leader that no quorum has acknowledged for twice the election timeout stops counting as leader
/// (CheckQuorum): with both followers SIGSTOP'd it soon names no leader in Metadata and refuses a write at
/// once with NOT_LEADER, instead of accepting writes that cannot commit until the client times out. Once
/// the followers run again the partition takes writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_stops_claiming_leadership() {
    const STEPS_ASIDE_WITHIN: Duration = Duration::from_secs(15);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("cq", 1), &[]).await;
    let leader = leader_of(&client, "cq", 0).await.expect("a leader");
    let addr = c.node(leader).addr();
    let followers: Vec<u32> = (1..=3).filter(|n| *n != leader).collect();
    for f in &followers {
        c.node(*f).signal(rustix::process::Signal::STOP);
    }
    let t0 = Instant::now();
    let seen = loop {
        let p = partition_seen_by(&client, &addr, "cq").await;
        let named = p.as_ref().and_then(|p| p.leader);
        if named != Some(leader) {
            break named;
        }
        if t0.elapsed() > STEPS_ASIDE_WITHIN {
            for f in &followers {
                c.node(*f).signal(rustix::process::Signal::CONT);
            }
            panic!(
                "node {leader} still names itself leader {:?} after its followers stopped",
                t0.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stepped_aside = t0.elapsed();
    // A write to it now is refused at once (not left to time out).
    let code = produce_code_at(&client, &addr, "cq").await;
    for f in &followers {
        c.node(*f).signal(rustix::process::Signal::CONT);
    }
    assert_eq!(
        code,
        Some(runnel_protocol::ErrorCode::NotLeader),
        "{}",
        c.logs()
    );
    let took = until_writable(&client, "cq", 0, "after-cont").await;
    println!(
        "node {leader} named {seen:?} {stepped_aside:?} after its followers stopped; writable {took:?} after they resumed"
    );
}

/// The error code broker `addr` answers a one-record produce to `topic`-0 with (`None`: no answer).
async fn produce_code_at(
    client: &Client,
    addr: &str,
    topic: &str,
) -> Option<runnel_protocol::ErrorCode> {
    use runnel_protocol::batch::RecordBatchBuilder;
    use runnel_protocol::messages::{
        ProducePartitionData, ProduceRequest, ProduceTopicData, ACKS_ALL,
    };
    use runnel_protocol::{ErrorCode, Request, Response};
    let mut b = RecordBatchBuilder::new(1024);
    b.push(0, None, b"probe", &[]);
    let req = Request::Produce(ProduceRequest {
        acks: ACKS_ALL,
        timeout_ms: 5_000,
        topics: vec![ProduceTopicData {
            name: topic.to_string(),
            partitions: vec![ProducePartitionData {
                partition: 0,
                batch: b.finish(),
            }],
        }],
    });
    let conn = client.connection_at(addr).await.ok()?;
    match conn.request(&req, Duration::from_secs(10)).await {
        Ok(Response::Produce(r)) => r
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| ErrorCode::from_u16(p.error_code)),
        Err(e) => e.code(),
        _ => None,
    }
}

/// A broker restarted alone after a full-cluster kill -9 serves the metadata it had applied: topics created
/// back to back just before the crash are there once its start-up wait for the (absent) controller ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_alone_serves_the_metadata_it_had_applied() {
    const SERVED_WITHIN: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(dir.path(), &rf3("m1", 1), &[]).await;
    c.create_topic(&client, &rf3("m2", 1)).await;
    c.create_topic(&client, &rf3("m3", 1)).await;
    let addr = c.node(1).addr();
    let deadline = Instant::now() + START;
    while partition_seen_by(&client, &addr, "m3").await.is_none() {
        assert!(Instant::now() < deadline, "node 1 never applied m3");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in 1..=3 {
        c.node(n).kill9();
    }
    c.node(1).restart();
    assert!(c.node(1).wait_listening(START), "{}", c.logs());
    let t0 = Instant::now();
    for topic in ["m1", "m2", "m3"] {
        while partition_seen_by(&client, &addr, topic).await.is_none() {
            assert!(
                t0.elapsed() < SERVED_WITHIN,
                "node 1, restarted alone, does not serve topic {topic}:\n{}",
                c.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "node 1 restarted alone served m1..m3 after {:?}",
        t0.elapsed()
    );
}

/// Issue 4, "1,000 idle partitions stay cheap": idle partitions quiesce (no heartbeats, no timers) on
/// every broker once their replicas are caught up; when a broker is `kill -9`'d, the partitions it led
/// (quiet ones) elect new leaders and take writes again, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partitions_quiesce_and_still_fail_over_when_a_broker_dies() {
    const PARTITIONS: u32 = 12;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut c, client) = start(
        dir.path(),
        &rf3("qz", PARTITIONS),
        &["--raft-quiesce-ms", "500"],
    )
    .await;
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut acks = Acks::default();
    for i in 0..PARTITIONS as usize * 2 {
        let p = (i % PARTITIONS as usize) as u32;
        let m = producer
            .enqueue(ProducerRecord::new("qz", value(i).as_bytes()).partition(p))
            .await
            .expect("enqueue")
            .await
            .expect("acknowledged");
        acks.acked.insert(i, (m.partition, m.offset));
    }
    producer.close().await;
    // Every broker hosts a replica of every partition: all quiet on all three.
    let deadline = Instant::now() + START;
    loop {
        let quiet: Vec<Option<f64>> = c
            .brokers
            .iter()
            .map(|b| b.metric("runnel_quiet_partitions"))
            .collect();
        if quiet.iter().all(|q| *q == Some(f64::from(PARTITIONS))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions did not quiesce: {quiet:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leaders: Vec<Option<u32>> = {
        let mut v = Vec::new();
        for p in 0..PARTITIONS {
            v.push(leader_of(&client, "qz", p).await);
        }
        v
    };
    let victim = leaders[0].expect("qz-0 has a leader");
    let led: Vec<u32> = (0..PARTITIONS)
        .filter(|p| leaders[*p as usize] == Some(victim))
        .collect();
    c.node(victim).kill9();
    for p in &led {
        let down = until_writable(&client, "qz", *p, &format!("probe-{p}")).await;
        println!("quiet qz-{p}: leader node {victim} killed; writable again after {down:?}");
    }
    c.node(victim).restart();
    assert!(c.node(victim).wait_listening(START));
    assert!(c.wait_leaders(&client, "qz", START).await);
    verify_everywhere(&c, "qz", &acks).await;
}
