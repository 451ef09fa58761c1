//! Issue 5 acceptance 3 on a real 3-broker cluster: `kill -9` the broker coordinating a group while its
//! consumer commits; a new coordinator (the new leader of the group's offsets partition) takes over, and every
//! partition's committed offset afterwards is at least the last one acknowledged before the kill.

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_client::{
    GroupAdmin, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord,
};
use runnel_cluster_tests::cluster::connect;
use runnel_cluster_tests::Cluster;
use runnel_protocol::messages::FindCoordinatorRequest;
use runnel_protocol::{Request, Response};
use tokio::time::Instant;

const RECORDS: usize = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_coordinators_death() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::start(dir.path(), 3, &[]);
    assert!(c.wait_listening(Duration::from_secs(60)), "{}", c.logs());
    let client = c.client().await;
    let mut topic = NewTopic::new("gt", 6);
    topic.replication_factor = 3;
    c.create_topic(&client, &topic).await;
    assert!(c.wait_leaders(&client, "gt", Duration::from_secs(60)).await);
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        acks.push(
            producer
                .enqueue(ProducerRecord::new("gt", format!("g-{i}").as_bytes()))
                .await
                .expect("enqueue"),
        );
    }
    for a in acks {
        a.await.expect("acked");
    }
    producer.close().await;

    let mut cfg = GroupConfig::new("g1");
    cfg.auto_commit = false;
    cfg.offset_reset = OffsetReset::Earliest;
    let mut consumer = GroupConsumer::subscribe(client.clone(), &["gt"], cfg)
        .await
        .expect("subscribe");
    // Small polls: commits keep coming before, during and after the kill.
    consumer.set_max_poll_records(100);
    let mut read = 0usize;
    let mut commits_after_kill = 0usize;
    let mut acked_commits: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut killed: Option<u32> = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while read < RECORDS {
        assert!(
            Instant::now() < deadline,
            "read {read} of {RECORDS}:\n{}",
            c.logs()
        );
        let recs = consumer
            .poll(Duration::from_millis(500))
            .await
            .unwrap_or_default();
        read += recs.len();
        if recs.is_empty() {
            continue;
        }
        if consumer.commit().await.is_ok() {
            if killed.is_some() {
                commits_after_kill += 1;
            }
            for (t, p) in consumer.assignment() {
                if let Some(pos) = consumer.position(&t, p) {
                    let e = acked_commits.entry((t.to_string(), p)).or_insert(0);
                    *e = (*e).max(pos);
                }
            }
        }
        if killed.is_none() && read >= RECORDS / 2 {
            let r = client
                .request_any(&Request::FindCoordinator(FindCoordinatorRequest {
                    group_id: "g1".into(),
                }))
                .await
                .expect("find coordinator");
            let Response::FindCoordinator(f) = r else {
                panic!("unexpected answer {r:?}")
            };
            assert_eq!(f.error_code, 0, "{f:?}");
            println!(
                "killing node {} (coordinator of g1) after {read} records",
                f.node_id
            );
            c.node(f.node_id).kill9();
            killed = Some(f.node_id);
        }
    }
    // The new coordinator must take the group's commits (the member rejoins it first).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_err = None;
    while commits_after_kill == 0 {
        assert!(
            Instant::now() < deadline,
            "no commit succeeded after the failover: {last_err:?}\n{}",
            c.logs()
        );
        let _ = consumer.poll(Duration::from_millis(200)).await;
        match consumer.commit().await {
            Ok(()) => {
                commits_after_kill += 1;
                for (t, p) in consumer.assignment() {
                    if let Some(pos) = consumer.position(&t, p) {
                        let e = acked_commits.entry((t.to_string(), p)).or_insert(0);
                        *e = (*e).max(pos);
                    }
                }
            }
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    println!("{commits_after_kill} commits acknowledged by the new coordinator");
    let before = acked_commits.clone();
    consumer.close().await.ok();
    let killed = killed.expect("the coordinator was killed");
    // Read the committed offsets through a broker that stayed up.
    let alive = (1..=3).find(|n| *n != killed).expect("a live broker");
    let admin = GroupAdmin::new(connect(&c.node(alive).addr()).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        match admin.committed_offsets("g1").await {
            Ok(m) if !m.is_empty() => break m,
            r => assert!(Instant::now() < deadline, "offsets not readable: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (tp, off) in &before {
        let now = committed.get(tp).copied().unwrap_or(0);
        assert!(now >= *off, "{tp:?}: committed {now} < acknowledged {off}");
    }
    println!("committed after failover: {committed:?}");
}

/// Kill -9 every broker right after a run of acknowledged commits, restart them all: the restarted
/// coordinator must serve the last acknowledged commit of every partition, not an older one (a restarted
/// Raft leader that resumed its old term used to replay its offsets partition only up to a stale commit
/// point, so a consumer resumed below an acknowledged commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_full_cluster_crash() {
    const PARTITIONS: u32 = 3;
    const COMMIT_ROUNDS: u64 = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Cluster::start(dir.path(), 3, &[]);
    assert!(c.wait_listening(Duration::from_secs(60)), "{}", c.logs());
    let client = c.client().await;
    let mut topic = NewTopic::new("fc", PARTITIONS);
    topic.replication_factor = 3;
    c.create_topic(&client, &topic).await;
    assert!(c.wait_leaders(&client, "fc", Duration::from_secs(60)).await);
    let producer = Producer::new(client.clone(), ProducerConfig::default()).expect("producer");
    let mut acks = Vec::new();
    for i in 0..COMMIT_ROUNDS * u64::from(PARTITIONS) {
        let value = format!("f-{i}");
        let mut r = ProducerRecord::new("fc", value.as_bytes());
        r.partition = Some((i % u64::from(PARTITIONS)) as u32);
        acks.push(producer.enqueue(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("acked");
    }
    producer.close().await;

    let mut cfg = GroupConfig::new("fcg");
    cfg.auto_commit = false;
    cfg.offset_reset = OffsetReset::Earliest;
    let mut consumer = GroupConsumer::subscribe(client.clone(), &["fc"], cfg)
        .await
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    while consumer.assignment().len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "never got every partition");
        let _ = consumer.poll(Duration::from_millis(200)).await;
    }
    // One commit per round, every partition one offset further.
    for round in 1..=COMMIT_ROUNDS {
        let offsets: Vec<(&str, u32, u64)> = (0..PARTITIONS).map(|p| ("fc", p, round)).collect();
        consumer
            .commit_offsets(&offsets)
            .await
            .unwrap_or_else(|e| panic!("commit round {round}: {e}"));
    }
    for n in 1..=3 {
        c.node(n).kill9();
    }
    drop(consumer);
    for n in 1..=3 {
        c.node(n).restart();
    }
    assert!(c.wait_listening(Duration::from_secs(60)), "{}", c.logs());
    let admin = GroupAdmin::new(connect(&c.bootstrap()).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        match admin.committed_offsets("fcg").await {
            Ok(m) if !m.is_empty() => break m,
            r => assert!(
                Instant::now() < deadline,
                "offsets not readable: {r:?}\n{}",
                c.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for p in 0..PARTITIONS {
        assert_eq!(
            committed.get(&("fc".to_string(), p)).copied(),
            Some(COMMIT_ROUNDS),
            "partition {p} after the restart: {committed:?}"
        );
    }
}
