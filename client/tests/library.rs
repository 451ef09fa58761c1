//! End-to-end tests of the client library (Admin, Producer, Consumer) against a real `runnel-broker`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use runnel_client::partitioner::partition_for_key;
use runnel_client::{
    Admin, ClientConfig, Cluster, Consumer, ConsumerConfig, NewTopic, Offset, Producer,
    ProducerConfig, ProducerRecord,
};
use support::Broker;
use tokio::time::Instant;

async fn cluster(b: &Broker) -> Cluster {
    Cluster::connect(ClientConfig::new(&b.addr()).unwrap())
        .await
        .unwrap()
}

/// Polls until `n` records arrived (bounded by 30 s).
async fn read_n(c: &mut Consumer, n: usize) -> Vec<runnel_client::ConsumerRecord> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records in 30 s",
            out.len()
        );
        out.extend(c.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_every_record_exactly_once_in_order() {
    let Some(b) = Broker::start() else { return };
    let cl = cluster(&b).await;
    let admin = Admin::new(cl.clone());
    admin.create_topic(&NewTopic::new("lib", 3)).await.unwrap();
    let producer = Producer::new(cl.clone(), ProducerConfig::default()).unwrap();
    let n = 3000;
    let mut futs = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("k{}", i % 17);
        let value = format!("value-{i}");
        let rec = ProducerRecord::new("lib", value.as_bytes()).key(key.as_bytes());
        futs.push(producer.enqueue(rec).await.unwrap());
    }
    let mut acked: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    for (i, f) in futs.into_iter().enumerate() {
        let m = f.await.unwrap();
        let key = format!("k{}", i % 17);
        assert_eq!(m.partition, partition_for_key(key.as_bytes(), 3));
        assert!(
            acked.insert((m.partition, m.offset), i).is_none(),
            "offset acked twice"
        );
    }
    producer.close().await;
    // Offsets are dense per partition.
    for p in 0..3u32 {
        let offs: Vec<u64> = acked
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(offs, (0..offs.len() as u64).collect::<Vec<_>>());
    }

    let mut c = Consumer::new(cl.clone(), ConsumerConfig::default());
    c.assign("lib", None).await.unwrap();
    c.seek_all(Offset::Earliest);
    let recs = read_n(&mut c, n).await;
    assert_eq!(recs.len(), n);
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &recs {
        let i = acked[&(r.partition, r.offset)];
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        assert_eq!(r.key.as_deref(), Some(format!("k{}", i % 17).as_bytes()));
        if let Some(prev) = last.insert(r.partition, r.offset) {
            assert_eq!(r.offset, prev + 1, "partition {} out of order", r.partition);
        }
    }
    // Nothing more.
    assert!(c.poll(Duration::from_millis(300)).await.unwrap().is_empty());

    // Seek to an absolute offset inside a batch: records before it are skipped.
    c.seek("lib", 0, Offset::At(5)).unwrap();
    let r = c.poll(Duration::from_secs(10)).await.unwrap();
    assert_eq!(r.first().map(|r| (r.partition, r.offset)), Some((0, 5)));

    // Latest: only records produced afterwards.
    let mut c2 = Consumer::new(cl.clone(), ConsumerConfig::default());
    c2.assign("lib", Some(&[1])).await.unwrap();
    assert!(c2.wait_positions(Duration::from_secs(10)).await.unwrap());
    let end = c2.position("lib", 1).unwrap();
    let p2 = Producer::new(cl.clone(), ProducerConfig::default()).unwrap();
    let m = p2.send("lib", None, b"fresh", &[], Some(1)).await.unwrap();
    assert_eq!(m.offset, end);
    let got = read_n(&mut c2, 1).await;
    assert_eq!(got[0].value.as_deref(), Some(&b"fresh"[..]));

    // Timestamp: a time after everything gives the end; a time before everything gives the start.
    let mut c3 = Consumer::new(cl.clone(), ConsumerConfig::default());
    c3.assign("lib", Some(&[1])).await.unwrap();
    c3.seek("lib", 1, Offset::Timestamp(0)).unwrap();
    assert!(c3.wait_positions(Duration::from_secs(10)).await.unwrap());
    assert_eq!(c3.position("lib", 1), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_topics_and_cluster_state() {
    let Some(b) = Broker::start() else { return };
    let cl = cluster(&b).await;
    let admin = Admin::new(cl.clone());
    let info = admin.cluster_info().await.unwrap();
    assert!(
        info.health().healthy,
        "a fresh single node is healthy: {info:?}"
    );
    assert!(!info.brokers.is_empty());
    admin.create_topic(&NewTopic::new("a1", 2)).await.unwrap();
    let e = admin
        .create_topic(&NewTopic::new("a1", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code_name(), "TOPIC_ALREADY_EXISTS");
    assert_eq!(admin.add_partitions("a1", 3).await.unwrap(), 5);
    let t = admin.describe_topic("a1").await.unwrap();
    assert_eq!(t.partitions.len(), 5);
    assert!(admin
        .list_topics()
        .await
        .unwrap()
        .iter()
        .any(|t| t.name == "a1"));
    // Records can go to the new partitions.
    let p = Producer::new(cl.clone(), ProducerConfig::default()).unwrap();
    let m = p.send("a1", None, b"x", &[], Some(4)).await.unwrap();
    assert_eq!((m.partition, m.offset), (4, 0));
    admin.delete_topic("a1").await.unwrap();
    let e = admin.describe_topic("a1").await.unwrap_err();
    assert_eq!(e.code_name(), "UNKNOWN_TOPIC_OR_PARTITION");
    let e = admin
        .create_topic(&NewTopic::new("bad name", 1))
        .await
        .unwrap_err();
    assert_eq!(e.code_name(), "INVALID_TOPIC");
}
