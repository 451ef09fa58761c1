//! Issue acceptance: 100,000 records produced with `acks=all` to a real `runnel-broker`, `kill -9`, restart
//! on the same data dir, then read from the beginning: every acknowledged record is there exactly once, at
//! the offset it was acknowledged with, and offsets are dense per partition.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use runnel_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Offset, Producer,
    ProducerConfig, ProducerRecord,
};
use runnel_cluster_tests::Broker;
use tokio::time::Instant;

const RECORDS: usize = 100_000;
const PARTITIONS: u32 = 3;

async fn connect(b: &Broker) -> Cluster {
    Cluster::connect(ClientConfig::new(&b.addr()).expect("valid broker list"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_kill_9_exactly_once_with_dense_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), &[]);
    assert!(
        broker.wait_listening(Duration::from_secs(30)),
        "broker did not listen:\n{}",
        broker.log_tail()
    );
    let cluster = connect(&broker).await;
    Admin::new(cluster.clone())
        .create_topic(&NewTopic::new("dur", PARTITIONS))
        .await
        .expect("create topic");

    let producer = Producer::new(cluster.clone(), ProducerConfig::default()).expect("producer");
    let mut pending = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let value = format!("v-{i:06}");
        pending.push(
            producer
                .enqueue(ProducerRecord::new("dur", value.as_bytes()))
                .await
                .expect("enqueue"),
        );
    }
    let mut acked: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for (i, f) in pending.into_iter().enumerate() {
        let m = f
            .await
            .expect("every record is acknowledged by a healthy broker");
        assert!(
            acked.insert((m.partition, m.offset), i).is_none(),
            "offset {}/{} acknowledged twice",
            m.partition,
            m.offset
        );
    }
    producer.close().await;
    drop(cluster);

    broker.kill9();
    broker.restart();
    assert!(
        broker.wait_listening(Duration::from_secs(30)),
        "broker did not come back:\n{}",
        broker.log_tail()
    );

    let cluster = connect(&broker).await;
    let mut consumer = Consumer::new(cluster, ConsumerConfig::default());
    // Right after a restart the partitions may still be electing their (single) leader: retry assign.
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assign("dur", None).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "topic not available after restart:\n{}",
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.seek_all(Offset::Earliest);
    let mut seen: HashMap<(u32, u64), String> = HashMap::with_capacity(RECORDS);
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "read {} of {} acknowledged records",
            seen.len(),
            acked.len()
        );
        for r in consumer
            .poll(Duration::from_millis(500))
            .await
            .expect("poll")
        {
            let expect = next.entry(r.partition).or_insert(0);
            assert_eq!(
                r.offset, *expect,
                "partition {} offsets are not dense",
                r.partition
            );
            *expect += 1;
            let v = String::from_utf8(r.value.map(|v| v.to_vec()).unwrap_or_default())
                .expect("utf-8 value");
            assert!(
                seen.insert((r.partition, r.offset), v).is_none(),
                "offset read twice"
            );
        }
    }
    for ((p, o), i) in &acked {
        assert_eq!(
            seen.get(&(*p, *o)).map(String::as_str),
            Some(format!("v-{i:06}").as_str()),
            "acked record {p}/{o}"
        );
    }
    // Exactly once: nothing beyond the acknowledged records.
    assert!(consumer
        .poll(Duration::from_millis(300))
        .await
        .expect("poll")
        .is_empty());
    assert_eq!(seen.len(), RECORDS);
}
