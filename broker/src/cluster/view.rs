//! [`PartitionView`]: one partition as this broker knows it, whether it hosts a replica or not — the
//! single source for Metadata, `/v1/partitions`, `/v1/cluster` and metrics.
//!
//! Precedence: this broker's own replica when it leads (it knows its followers' progress); else the
//! highest-term leader that gossip reports, unless the local replica has seen a newer term; else the local
//! replica's view of the leader (offsets only, caught-up replicas unknown).

use std::sync::Arc;

use crate::metadata::Topic;
use crate::partition::Partition;
use crate::server::Broker;

/// One partition's leader, replicas and offsets.
#[derive(Clone, Debug, Default)]
pub struct PartitionView {
    pub partition: u32,
    pub leader: Option<u32>,
    pub term: u64,
    pub replicas: Vec<u32>,
    /// Replicas holding every entry of the leader's log (the leader included); empty when unknown.
    pub caught_up: Vec<u32>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    /// This broker's replica, if it hosts one.
    pub local: Option<Arc<Partition>>,
}

impl PartitionView {
    /// A leader is known and some replica is not caught up with it.
    pub fn under_replicated(&self) -> bool {
        self.leader.is_some() && self.caught_up.len() < self.replicas.len()
    }
}

/// The view of partition `i` of `t`.
pub fn partition_view(broker: &Broker, t: &Topic, i: usize) -> PartitionView {
    let replicas = t.record.assignments.get(i).cloned().unwrap_or_default();
    let local = t.partitions.get(i).cloned().flatten();
    let mut v = PartitionView {
        partition: i as u32,
        replicas,
        local: local.clone(),
        ..PartitionView::default()
    };
    if let Some(p) = &local {
        v.term = p.term();
        v.high_watermark = p.high_watermark();
        v.log_start_offset = p.log_start_offset();
        v.log_end_offset = p.log_end_offset();
        if p.is_leader() {
            v.leader = Some(broker.registry.node_id());
            v.caught_up = match p.replica_lag() {
                Some(lag) => lag
                    .into_iter()
                    .filter(|(_, l)| *l == 0)
                    .map(|(n, _)| n)
                    .collect(),
                None => v.replicas.clone(),
            };
            return v;
        }
        v.leader = p.leader();
    }
    if let Some(h) = broker.leaders.get(&t.record.name, i as u32) {
        if local.is_none() || h.led.term >= v.term {
            v.leader = Some(h.leader);
            v.term = h.led.term;
            v.caught_up = h.led.caught_up;
            v.high_watermark = h.led.high_watermark;
            v.log_start_offset = h.led.log_start_offset;
            v.log_end_offset = h.led.log_end_offset;
        }
    }
    v
}

/// Every partition of `t`.
pub fn topic_views(broker: &Broker, t: &Topic) -> Vec<PartitionView> {
    (0..t.record.assignments.len())
        .map(|i| partition_view(broker, t, i))
        .collect()
}
