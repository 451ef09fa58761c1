//! Operability commands of the `runnel` CLI end to end: `cluster health` against a scripted broker whose
//! metadata shows leaderless and under-replicated partitions (a single real broker never has either), and
//! `topic alter-config` against a real `runnel-broker`.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use bytes::Bytes;
use runnel_protocol::frame::{concat, decode_request, encode_response};
use runnel_protocol::messages::*;
use runnel_protocol::{ApiKey, Request, Response};
use support::{assert_ok, json_lines, run_cli, stdout_lines, Broker};

/// A blocking fake broker on loopback answering ApiVersions and Metadata (from `meta(port)`); it serves
/// until the test process exits.
fn fake_broker(meta: impl Fn(u16) -> MetadataResponse + Send + Sync + 'static) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let meta = Arc::new(meta);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            let meta = meta.clone();
            std::thread::spawn(move || serve(s, &*meta, port));
        }
    });
    format!("127.0.0.1:{port}")
}

fn serve(mut s: TcpStream, meta: &dyn Fn(u16) -> MetadataResponse, port: u16) {
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut frame).is_err() {
            return;
        }
        let Ok((h, Ok(req))) = decode_request(Bytes::from(frame)) else {
            return;
        };
        let resp = match req {
            Request::ApiVersions(_) => Response::ApiVersions(ApiVersionsResponse {
                apis: ApiKey::ALL
                    .iter()
                    .map(|a| ApiVersionRange {
                        api_key: *a as u16,
                        min_version: a.versions().0,
                        max_version: a.versions().1,
                    })
                    .collect(),
                broker_version: "fake".into(),
            }),
            Request::Metadata(_) => Response::Metadata(meta(port)),
            other => panic!("the fake broker does not serve {other:?}"),
        };
        if s.write_all(&concat(&encode_response(h.correlation_id, Ok(&resp))))
            .is_err()
        {
            return;
        }
    }
}

/// One broker (node 1, controller), topic `t`: partition 0 under-replicated (replicas 1,2,3; in sync 1,2),
/// partition 1 with a leader or not.
fn metadata(port: u16, p1_leader: Option<u32>) -> MetadataResponse {
    MetadataResponse {
        metadata_epoch: 0,
        cluster_id: "fake".into(),
        controller_id: Some(1),
        brokers: vec![BrokerMeta {
            node_id: 1,
            host: "127.0.0.1".into(),
            port,
        }],
        topics: vec![TopicMeta {
            name: "t".into(),
            partitions: vec![
                PartitionMeta {
                    partition: 0,
                    leader: Some(1),
                    replicas: vec![1, 2, 3],
                    in_sync: vec![1, 2],
                    ..Default::default()
                },
                PartitionMeta {
                    partition: 1,
                    leader: p1_leader,
                    replicas: vec![1],
                    in_sync: p1_leader.map(|_| vec![1]).unwrap_or_default(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    }
}

#[test]
fn cluster_health_fails_on_leaderless_partitions_and_only_reports_under_replicated() {
    let sick = fake_broker(|port| metadata(port, None));
    let o = run_cli(&sick, &["cluster", "health"], None);
    assert_eq!(o.status.code(), Some(1), "leaderless fails health");
    assert_eq!(
        stdout_lines(&o),
        vec![
            "unhealthy: 1 partition(s) without a leader",
            "leaderless: t 1",
            "under-replicated: t 0",
            "under-replicated: t 1",
        ]
    );
    let o = run_cli(&sick, &["--output", "json", "cluster", "health"], None);
    assert_eq!(o.status.code(), Some(1));
    let v = &json_lines(&o)[0];
    assert_eq!(v["healthy"], false);
    assert_eq!(
        v["leaderless"],
        serde_json::json!([{"topic": "t", "partition": 1}])
    );
    assert_eq!(
        v["under_replicated"],
        serde_json::json!([{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}])
    );

    // Under-replicated alone is reported but healthy.
    let ok = fake_broker(|port| metadata(port, Some(1)));
    let o = run_cli(&ok, &["cluster", "health"], None);
    assert_ok(&o, "under-replicated alone");
    assert_eq!(
        stdout_lines(&o),
        vec![
            "healthy: controller 1, 1 broker(s), 2 partition(s), 1 under-replicated",
            "under-replicated: t 0",
        ]
    );
}

#[test]
fn topic_alter_config_sets_and_resets_configs() {
    let Some(b) = Broker::start() else { return };
    assert_ok(
        &b.cli(&["topic", "create", "ac", "--partitions", "2"], None),
        "create",
    );
    let o = b.cli(
        &[
            "topic",
            "alter-config",
            "ac",
            "--config",
            "retention.ms=3600000",
            "--config",
            "segment.bytes=33554432",
        ],
        None,
    );
    assert_ok(&o, "alter-config");
    let line = &stdout_lines(&o)[0];
    assert!(line.starts_with("altered topic ac: "), "{line}");
    assert!(line.contains("retention.ms=3600000") && line.contains("segment.bytes=33554432"));
    let o = b.cli(&["--output", "json", "topic", "describe", "ac"], None);
    assert_ok(&o, "describe");
    for row in json_lines(&o) {
        assert_eq!(row["configs"]["retention.ms"], "3600000");
    }
    // Refused with the key named, and nothing changes.
    let o = b.cli(
        &[
            "topic",
            "alter-config",
            "ac",
            "--config",
            "segment.bytes=4096",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("INVALID_CONFIG") && err.contains("segment.bytes"),
        "{err}"
    );
    // `key=` goes back to the default; json prints the effective configs.
    let o = b.cli(
        &[
            "--output",
            "json",
            "topic",
            "alter-config",
            "ac",
            "--config",
            "retention.ms=",
        ],
        None,
    );
    assert_ok(&o, "reset");
    let v = &json_lines(&o)[0];
    assert_eq!(v["topic"], "ac");
    assert_eq!(v["configs"]["retention.ms"], "604800000");
    assert_eq!(v["configs"]["segment.bytes"], "33554432");
    let o = b.cli(
        &[
            "topic",
            "alter-config",
            "missing",
            "--config",
            "retention.ms=1",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("UNKNOWN_TOPIC_OR_PARTITION"));
}
