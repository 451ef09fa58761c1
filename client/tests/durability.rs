//! Issue 3, acceptance 2, through the client library: 100,000 records produced with `acks=all`, the broker
//! killed with SIGKILL and restarted on the same data dir, then everything read back from the beginning: every
//! acknowledged record is there exactly once, with its value, and offsets are dense per partition.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use runnel_client::{
    Acks, Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Offset, Producer,
    ProducerConfig, ProducerRecord,
};
use support::Broker;
use tokio::time::Instant;

const RECORDS: usize = 100_000;
const PARTITIONS: u32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_records_survive_kill_9_exactly_once() {
    let Some(mut b) = Broker::start() else { return };
    let cl = Cluster::connect(ClientConfig::new(&b.addr()).unwrap())
        .await
        .unwrap();
    Admin::new(cl.clone())
        .create_topic(&NewTopic::new("dur", PARTITIONS))
        .await
        .unwrap();
    let producer = Producer::new(
        cl,
        ProducerConfig {
            acks: Acks::All,
            ..Default::default()
        },
    )
    .unwrap();
    let mut futs = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let v = format!("r-{i}");
        futs.push(
            producer
                .enqueue(ProducerRecord::new("dur", v.as_bytes()))
                .await
                .unwrap(),
        );
    }
    let mut acked: HashMap<(u32, u64), usize> = HashMap::with_capacity(RECORDS);
    for (i, f) in futs.into_iter().enumerate() {
        let m = f.await.expect("every record is acknowledged");
        assert!(
            acked.insert((m.partition, m.offset), i).is_none(),
            "offset acked twice"
        );
    }
    producer.close().await;
    drop(producer);

    b.restart();

    let cl = Cluster::connect(ClientConfig::new(&b.addr()).unwrap())
        .await
        .unwrap();
    let mut c = Consumer::new(
        cl,
        ConsumerConfig {
            initial_offset: Offset::Earliest,
            ..Default::default()
        },
    );
    c.assign("dur", None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: HashMap<(u32, u64), usize> = HashMap::with_capacity(RECORDS);
    let mut next: HashMap<u32, u64> = HashMap::new();
    while seen.len() < RECORDS {
        assert!(
            Instant::now() < deadline,
            "read back {} of {RECORDS} in 60 s",
            seen.len()
        );
        for r in c.poll(Duration::from_millis(500)).await.unwrap() {
            let want = next.entry(r.partition).or_insert(0);
            assert_eq!(
                r.offset, *want,
                "offsets not dense in partition {}",
                r.partition
            );
            *want += 1;
            let i = *acked
                .get(&(r.partition, r.offset))
                .unwrap_or_else(|| panic!("unacknowledged record at {}/{}", r.partition, r.offset));
            assert_eq!(r.value.as_deref(), Some(format!("r-{i}").as_bytes()));
            assert!(
                seen.insert((r.partition, r.offset), i).is_none(),
                "record read twice"
            );
        }
    }
    assert_eq!(seen.len(), RECORDS);
    // Nothing beyond what was acknowledged.
    assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());
}
