//! Byte-level protocol tests against an in-process broker: the happy path (produce, fetch, list offsets,
//! metadata) and hostile input (framing errors, unknown api/version, corrupt batches, unknown partitions,
//! out-of-range fetches). Every hostile case also checks that the broker still serves other connections.

mod common;

use bytes::{BufMut, BytesMut};
use common::*;
use runnel_protocol::limits::BATCH_SIZE_BYTES_MAX;
use runnel_protocol::messages::*;
use runnel_protocol::{ApiKey, ErrorCode, Request, Response};

/// Asserts the broker answers ApiVersions on a fresh connection.
async fn still_serves(b: &TestBroker) {
    let mut c = Client::connect(b.addr()).await;
    match c.call(Request::ApiVersions(ApiVersionsRequest {})).await {
        Ok(Response::ApiVersions(r)) => assert_eq!(r.apis.len(), ApiKey::ALL.len()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn produce_fetch_list_offsets_and_metadata_round_trip() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 2).await;
    let p = c.produce("t", 0, batch(&["a", "b", "c"], 1000)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");
    let p = c.produce("t", 0, batch(&["d", "e"], 2000)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 3), "{p:?}");
    let p = c.produce("t", 1, batch(&["x"], 3000)).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0), "{p:?}");

    let f = c.fetch("t", 0, 0, 0, 0).await;
    assert_eq!(f.error_code, 0);
    assert_eq!(f.high_watermark, 5);
    let got = values(&f.records);
    let want: Vec<(u64, String)> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.to_string()))
        .collect();
    assert_eq!(got, want);
    // Fetching from the middle of a batch returns that whole batch.
    let f = c.fetch("t", 0, 4, 0, 0).await;
    assert_eq!(values(&f.records).first().map(|x| x.0), Some(3));
    // At the high watermark: nothing, no error.
    let f = c.fetch("t", 0, 5, 0, 0).await;
    assert_eq!((f.error_code, f.records.len()), (0, 0));

    let r = c
        .call(Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![
                    ListOffsetsPartition {
                        partition: 0,
                        timestamp: EARLIEST,
                    },
                    ListOffsetsPartition {
                        partition: 0,
                        timestamp: LATEST,
                    },
                    ListOffsetsPartition {
                        partition: 0,
                        timestamp: 2000,
                    },
                    ListOffsetsPartition {
                        partition: 0,
                        timestamp: 99_999,
                    },
                ],
            }],
        }))
        .await;
    let Ok(Response::ListOffsets(r)) = r else {
        panic!("{r:?}")
    };
    let offsets: Vec<u64> = r.topics[0].partitions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [0, 5, 3, 5]);

    let r = c
        .call(Request::Metadata(MetadataRequest { topics: None }))
        .await;
    let Ok(Response::Metadata(m)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(m.controller_id, Some(1));
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].port, b.addr().port());
    assert_eq!(m.topics.len(), 1);
    let t = &m.topics[0];
    assert_eq!(t.partitions.len(), 2);
    let p0 = &t.partitions[0];
    assert_eq!(p0.leader, Some(1));
    assert_eq!(p0.replicas, [1]);
    assert_eq!(p0.in_sync, [1]);
    assert_eq!(
        (p0.high_watermark, p0.log_start_offset, p0.log_end_offset),
        (5, 0, 5)
    );
    assert!(t.configs.iter().any(|(k, _)| k == "retention.ms"));
    let r = c
        .call(Request::Metadata(MetadataRequest {
            topics: Some(vec!["nope".into()]),
        }))
        .await;
    let Ok(Response::Metadata(m)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        code(m.topics[0].error_code),
        ErrorCode::UnknownTopicOrPartition
    );
}

#[tokio::test]
async fn admin_apis_create_grow_and_delete_topics() {
    let b = start_with(|c| c.default_partitions = 3).await;
    let mut c = Client::connect(b.addr()).await;
    let r = c
        .call(Request::CreateTopics(CreateTopicsRequest {
            topics: vec![
                CreatableTopic {
                    name: "d".into(),
                    ..Default::default()
                },
                CreatableTopic {
                    name: "bad/name".into(),
                    partitions: 1,
                    ..Default::default()
                },
                CreatableTopic {
                    name: "rf".into(),
                    partitions: 1,
                    replication_factor: 3,
                    configs: vec![],
                },
                CreatableTopic {
                    name: "cfg".into(),
                    partitions: 1,
                    replication_factor: 1,
                    configs: vec![("cleanup.policy".into(), "compact".into())],
                },
                CreatableTopic {
                    name: "d".into(),
                    partitions: 1,
                    ..Default::default()
                },
            ],
            timeout_ms: 1000,
            validate_only: false,
        }))
        .await;
    let Ok(Response::CreateTopics(r)) = r else {
        panic!("{r:?}")
    };
    let codes: Vec<ErrorCode> = r.topics.iter().map(|t| code(t.error_code)).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::None,
            ErrorCode::InvalidTopic,
            ErrorCode::InvalidReplicationFactor,
            ErrorCode::InvalidConfig,
            ErrorCode::InvalidRequest
        ]
    );
    assert!(r.topics[3]
        .error_message
        .as_deref()
        .unwrap_or("")
        .contains("cleanup.policy"));
    let grow = |total| {
        Request::CreatePartitions(CreatePartitionsRequest {
            topic: "d".into(),
            new_total: total,
            timeout_ms: 1000,
        })
    };
    let Ok(Response::CreatePartitions(r)) = c.call(grow(5)).await else {
        panic!()
    };
    assert_eq!(r.result.error_code, 0, "{r:?}");
    let Ok(Response::CreatePartitions(r)) = c.call(grow(4)).await else {
        panic!()
    };
    assert_eq!(code(r.result.error_code), ErrorCode::InvalidPartitions);
    let p = c.produce("d", 4, batch(&["v"], 1)).await;
    assert_eq!(p.error_code, 0);
    let del = Request::DeleteTopics(DeleteTopicsRequest {
        names: vec!["d".into(), "d".into()],
        timeout_ms: 1000,
    });
    let Ok(Response::DeleteTopics(r)) = c.call(del).await else {
        panic!()
    };
    assert_eq!(code(r.topics[0].error_code), ErrorCode::None);
    assert_eq!(
        code(r.topics[1].error_code),
        ErrorCode::UnknownTopicOrPartition
    );
    let p = c.produce("d", 0, batch(&["v"], 1)).await;
    assert_eq!(code(p.error_code), ErrorCode::UnknownTopicOrPartition);
}

#[tokio::test]
async fn oversized_length_prefix_closes_only_that_connection() {
    let b = start().await;
    let mut other = Client::connect(b.addr()).await;
    let mut bad = Client::connect(b.addr()).await;
    let mut bytes = vec![0x7f, 0xff, 0xff, 0xff];
    bytes.extend_from_slice(&[b'x'; 64]);
    bad.send_raw(&bytes).await;
    assert!(bad.is_closed_by_broker().await);
    // The connection opened before keeps working, and so do new ones.
    let r = other
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await;
    assert!(r.is_ok(), "{r:?}");
    still_serves(&b).await;
}

#[tokio::test]
async fn truncated_frame_then_close_does_no_harm() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let (_, frame) = c.encode(&produce_req("t", 0, batch(&["lost"], 1)));
    c.send_raw(&frame[..frame.len() / 2]).await;
    c.shutdown_write().await;
    assert!(c.is_closed_by_broker().await);
    let mut c = Client::connect(b.addr()).await;
    let f = c.fetch("t", 0, 0, 0, 0).await;
    assert_eq!(
        (f.error_code, f.high_watermark),
        (0, 0),
        "nothing was appended"
    );
    still_serves(&b).await;
}

#[tokio::test]
async fn a_header_too_short_for_a_correlation_id_closes_the_connection() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.send_raw(&[0, 0, 0, 3, 0, 1, 0]).await;
    assert!(c.is_closed_by_broker().await);
    // With a correlation id but a cut client id, the broker answers INVALID_REQUEST and keeps the connection.
    let mut c = Client::connect(b.addr()).await;
    c.send_raw(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 42, 0]).await;
    let f = c.recv_frame().await.expect("an error response");
    let (cid, r) = runnel_protocol::frame::decode_response(ApiKey::ApiVersions, f).unwrap();
    assert_eq!(cid, 42);
    assert_eq!(r.unwrap_err().code, ErrorCode::InvalidRequest);
    assert!(c
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
}

/// A request frame with a hand-written header: api key, version, correlation id, empty client id, body.
fn raw_request(api: u16, version: u16, cid: u32, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32((2 + 2 + 4 + 2 + body.len()) as u32);
    b.put_u16(api);
    b.put_u16(version);
    b.put_u32(cid);
    b.put_u16(0);
    b.put_slice(body);
    b.to_vec()
}

#[tokio::test]
async fn unknown_api_key_gets_unsupported_api_and_the_connection_stays_up() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.send_raw(&raw_request(999, 0, 7, b"junk")).await;
    let f = c.recv_frame().await.expect("an error response");
    let (cid, r) = runnel_protocol::frame::decode_response(ApiKey::ApiVersions, f).unwrap();
    assert_eq!(cid, 7);
    let e = r.unwrap_err();
    assert_eq!(e.code, ErrorCode::UnsupportedApi);
    assert!(e.message.contains("999"), "{}", e.message);
    assert!(c
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
}

#[tokio::test]
async fn unknown_version_gets_unsupported_version() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.send_raw(&raw_request(ApiKey::Fetch as u16, 42, 8, &[]))
        .await;
    let f = c.recv_frame().await.expect("an error response");
    let (cid, r) = runnel_protocol::frame::decode_response(ApiKey::Fetch, f).unwrap();
    assert_eq!(cid, 8);
    assert_eq!(r.unwrap_err().code, ErrorCode::UnsupportedVersion);
    assert!(c
        .call(Request::ApiVersions(ApiVersionsRequest {}))
        .await
        .is_ok());
}

#[tokio::test]
async fn malformed_body_gets_invalid_request() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    // A Metadata body whose option tag is 7, then trailing bytes.
    c.send_raw(&raw_request(ApiKey::Metadata as u16, 0, 9, &[7, 1, 2]))
        .await;
    let f = c.recv_frame().await.expect("an error response");
    let (cid, r) = runnel_protocol::frame::decode_response(ApiKey::Metadata, f).unwrap();
    assert_eq!(cid, 9);
    assert_eq!(r.unwrap_err().code, ErrorCode::InvalidRequest);
    // An array length far beyond the limit is rejected before anything is allocated for it.
    c.send_raw(&raw_request(
        ApiKey::Metadata as u16,
        0,
        10,
        &[1, 0xff, 0xff, 0xff, 0xff],
    ))
    .await;
    let f = c.recv_frame().await.expect("an error response");
    let (_, r) = runnel_protocol::frame::decode_response(ApiKey::Metadata, f).unwrap();
    assert_eq!(r.unwrap_err().code, ErrorCode::InvalidRequest);
    still_serves(&b).await;
}

#[tokio::test]
async fn batch_with_bad_crc_is_corrupt_message_and_not_appended() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let mut v = batch(&["a", "b"], 1).to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x40;
    let p = c.produce("t", 0, v.into()).await;
    assert_eq!(code(p.error_code), ErrorCode::CorruptMessage);
    assert!(p.error_message.unwrap_or_default().contains("CRC"));
    let f = c.fetch("t", 0, 0, 0, 0).await;
    assert_eq!(f.high_watermark, 0);
    // The connection is still fine for a good batch.
    assert_eq!(c.produce("t", 0, batch(&["ok"], 1)).await.error_code, 0);
}

#[tokio::test]
async fn record_count_lying_about_the_size_is_rejected() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    // Claim 3 records where 2 are encoded, with a CRC that matches the lie.
    let mut v = batch(&["a", "b"], 1).to_vec();
    v[57..61].copy_from_slice(&3u32.to_be_bytes());
    v[23..27].copy_from_slice(&2u32.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    let p = c.produce("t", 0, v.into()).await;
    let ec = code(p.error_code);
    assert!(
        ec == ErrorCode::CorruptMessage || ec == ErrorCode::InvalidRecord,
        "{ec:?}"
    );
    // A batch_length that disagrees with the bytes sent.
    let mut v = batch(&["a"], 1).to_vec();
    v[8..12].copy_from_slice(&1_000_000u32.to_be_bytes());
    let p = c.produce("t", 0, v.into()).await;
    assert_eq!(code(p.error_code), ErrorCode::CorruptMessage);
    let f = c.fetch("t", 0, 0, 0, 0).await;
    assert_eq!(f.high_watermark, 0);
}

#[tokio::test]
async fn batch_over_the_size_limit_is_message_too_large() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let big = "x".repeat(BATCH_SIZE_BYTES_MAX);
    let p = c.produce("t", 0, batch(&[&big], 1)).await;
    assert_eq!(code(p.error_code), ErrorCode::MessageTooLarge);
    still_serves(&b).await;
}

#[tokio::test]
async fn unknown_topic_or_partition_everywhere() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    for (topic, partition) in [("nope", 0), ("t", 1), ("t", u32::MAX)] {
        let p = c.produce(topic, partition, batch(&["a"], 1)).await;
        assert_eq!(code(p.error_code), ErrorCode::UnknownTopicOrPartition);
        let f = c.fetch(topic, partition, 0, 0, 0).await;
        assert_eq!(code(f.error_code), ErrorCode::UnknownTopicOrPartition);
        let r = c
            .call(Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: topic.into(),
                    partitions: vec![ListOffsetsPartition {
                        partition,
                        timestamp: LATEST,
                    }],
                }],
            }))
            .await;
        let Ok(Response::ListOffsets(r)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            code(r.topics[0].partitions[0].error_code),
            ErrorCode::UnknownTopicOrPartition
        );
    }
}

#[tokio::test]
async fn fetch_beyond_the_log_end_is_offset_out_of_range() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    c.produce("t", 0, batch(&["a", "b"], 1)).await;
    // Even with a long max_wait the error comes back at once.
    let started = std::time::Instant::now();
    let f = c.fetch("t", 0, 3, 30_000, 1).await;
    assert!(started.elapsed() < DEADLINE);
    assert_eq!(code(f.error_code), ErrorCode::OffsetOutOfRange);
    assert_eq!((f.high_watermark, f.log_start_offset), (2, 0));
    assert!(f.records.is_empty());
    let f = c.fetch("t", 0, u64::MAX, 0, 0).await;
    assert_eq!(code(f.error_code), ErrorCode::OffsetOutOfRange);
}

#[tokio::test]
async fn invalid_acks_is_a_request_error() {
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    c.create_topic("t", 1).await;
    let r = c
        .call(Request::Produce(ProduceRequest {
            acks: 5,
            timeout_ms: 1000,
            topics: vec![],
        }))
        .await;
    assert_eq!(r.unwrap_err().code, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn raft_rpc_for_an_unknown_group_is_a_clear_error() {
    use runnel_protocol::messages::raft_rpc::{RaftRpcRequest, RAFT_RPC_VOTE};
    let b = start().await;
    let mut c = Client::connect(b.addr()).await;
    let r = c
        .call(Request::RaftRpc(RaftRpcRequest {
            group: "nope-0".into(),
            kind: RAFT_RPC_VOTE,
            payload: bytes::Bytes::from_static(b"whatever"),
        }))
        .await;
    match r {
        Ok(Response::RaftRpc(r)) => {
            assert_eq!(
                r.error_code,
                runnel_protocol::ErrorCode::UnknownTopicOrPartition.as_u16()
            );
            assert!(
                r.error_message.as_deref().unwrap_or("").contains("nope-0"),
                "{r:?}"
            );
            assert!(r.payload.is_empty());
        }
        other => panic!("{other:?}"),
    }
    still_serves(&b).await;
}
