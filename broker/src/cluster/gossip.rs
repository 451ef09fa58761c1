//! Leader gossip: every [`GOSSIP_INTERVAL`] a broker asks each peer (RaftRpc kind `LEADERS`, over the
//! shared peer connection) which partitions it leads, with their term, caught-up replicas and offsets. The
//! answers let Metadata name the leader of a partition this broker does not host, and `topic describe`
//! show replication state from any broker.
//!
//! Invariants: a peer's report replaces its previous one whole; an unreachable peer's report is dropped
//! (never a stale leader for longer than one round); where two peers claim a partition the higher term wins.
//! Each round is bounded by [`GOSSIP_TTL`] per peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use runnel_protocol::messages::raft_rpc::{RaftRpcRequest, RaftRpcResponse, RAFT_RPC_LEADERS};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::controller::METADATA_GROUP_TOPIC;
use crate::partition::Partition;
use crate::server::Broker;

/// How often each peer is asked.
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(500);
/// Longest one ask may take.
pub const GOSSIP_TTL: Duration = Duration::from_secs(1);
/// Largest leader report decoded.
pub const REPORT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// One partition a broker leads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Led {
    pub topic: String,
    pub partition: u32,
    pub term: u64,
    /// Replicas with every entry the leader has (lag 0), the leader included.
    pub caught_up: Vec<u32>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// What this broker knows of partitions led elsewhere.
#[derive(Debug, Default)]
pub struct LeaderHints {
    by_peer: Mutex<HashMap<u32, Vec<Led>>>,
}

/// The leader of a partition as gossip reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub leader: u32,
    pub led: Led,
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<REPORT_BYTES_MAX>()
}

impl LeaderHints {
    /// The leader of `topic`-`partition` with the highest term any peer reports.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Hint> {
        let m = self.by_peer.lock().ok()?;
        m.iter()
            .flat_map(|(peer, led)| {
                led.iter()
                    .filter(|l| l.topic == topic && l.partition == partition)
                    .map(move |l| Hint {
                        leader: *peer,
                        led: l.clone(),
                    })
            })
            .max_by_key(|h| h.led.term)
    }

    fn set(&self, peer: u32, led: Option<Vec<Led>>) {
        if let Ok(mut m) = self.by_peer.lock() {
            match led {
                Some(l) => m.insert(peer, l),
                None => m.remove(&peer),
            };
        }
    }
}

/// The partitions this broker leads now.
pub fn local_report(broker: &Broker) -> Vec<Led> {
    let mut report: Vec<Led> = broker
        .registry
        .topics()
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .flatten()
                .filter(|p| p.is_leader())
                .map(|p| led(&t.record.name, p))
                .collect::<Vec<_>>()
        })
        .collect();
    // The metadata group too, when this broker is the controller: a starting broker waits until it has
    // applied the controller's high watermark before it serves clients.
    if let Some(c) = broker.registry.cluster() {
        let p = c.controller.partition();
        if p.is_leader() {
            report.push(led(METADATA_GROUP_TOPIC, p));
        }
    }
    report
}

fn led(topic: &str, p: &Partition) -> Led {
    Led {
        topic: topic.to_string(),
        partition: p.id().partition,
        term: p.term(),
        caught_up: p
            .replica_lag()
            .map(|v| {
                v.into_iter()
                    .filter(|(_, lag)| *lag == 0)
                    .map(|(n, _)| n)
                    .collect()
            })
            .unwrap_or_default(),
        high_watermark: p.high_watermark(),
        log_start_offset: p.log_start_offset(),
        log_end_offset: p.log_end_offset(),
    }
}

/// Answers a peer's `LEADERS` ask.
pub fn handle_leaders(broker: &Broker) -> RaftRpcResponse {
    match bincode::serde::encode_to_vec(local_report(broker), cfg()) {
        Ok(v) => RaftRpcResponse {
            error_code: 0,
            error_message: None,
            payload: Bytes::from(v),
        },
        Err(e) => RaftRpcResponse {
            error_code: runnel_protocol::ErrorCode::Unknown.as_u16(),
            error_message: Some(e.to_string()),
            payload: Bytes::new(),
        },
    }
}

async fn ask(broker: &Broker, peer: u32) -> Option<Vec<Led>> {
    let client = broker.raft.peer(u64::from(peer)).ok()?;
    let resp = client
        .call(
            RaftRpcRequest {
                group: String::new(),
                kind: RAFT_RPC_LEADERS,
                payload: Bytes::new(),
            },
            GOSSIP_TTL,
        )
        .await
        .ok()?;
    if resp.error_code != 0 {
        return None;
    }
    bincode::serde::decode_from_slice::<Vec<Led>, _>(&resp.payload, cfg())
        .ok()
        .map(|(v, _)| v)
}

/// Asks every peer in turn, forever (until `stop`).
pub async fn run(broker: Arc<Broker>, peers: Vec<u32>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(GOSSIP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let asks = peers.iter().map(|&p| {
            let b = broker.clone();
            async move { (p, ask(&b, p).await) }
        });
        for (p, led) in futures::future::join_all(asks).await {
            broker.leaders.set(p, led);
        }
    }
}
