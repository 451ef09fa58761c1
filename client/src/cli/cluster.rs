//! `runnel cluster info | health`.
//!
//! `info` text: the cluster id, the controller, one line per broker, then partition counts; json: one object
//! `{"cluster_id","controller_id","brokers":[{"node_id","host","port"}],"topics","partitions",
//! "under_replicated_partitions","leaderless_partitions"}`.
//! `health` prints the verdict, then every leaderless partition (`leaderless: TOPIC PARTITION`, these make it
//! fail) and every under-replicated one (`under-replicated: TOPIC PARTITION`, reported only), and exits 0
//! when healthy (DESIGN §6), 1 otherwise; json: `{"healthy","problems":[..],"controller_id","brokers","partitions",
//! "under_replicated":[{"topic","partition"}],"leaderless":[{"topic","partition"}]}`.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::output::Out;
use super::{connect, CliResult};
use crate::admin::{Admin, ClusterInfo, PartitionRef};

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Brokers, controller, partition counts, under-replicated partitions.
    Info,
    /// Exit 0 when a controller is elected and every partition has a leader.
    Health,
}

pub async fn run(brokers: &str, out: Out, cmd: ClusterCmd) -> CliResult {
    let admin = Admin::new(connect(brokers).await?);
    let info = admin.cluster_info().await?;
    match cmd {
        ClusterCmd::Info => {
            if out.json() {
                out.value(&info_json(&info))?;
            } else {
                for l in info_text(&info) {
                    out.line(&l)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCmd::Health => {
            let h = info.health();
            if out.json() {
                out.value(&health_json(&info))?;
            } else {
                for l in health_text(&info) {
                    out.line(&l)?;
                }
            }
            Ok(if h.healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn refs(v: &[PartitionRef]) -> Value {
    Value::Array(
        v.iter()
            .map(|p| json!({"topic": p.topic, "partition": p.partition}))
            .collect(),
    )
}

pub fn info_json(info: &ClusterInfo) -> Value {
    json!({
        "cluster_id": info.cluster_id,
        "controller_id": info.controller_id,
        "brokers": info.brokers.iter().map(|b| json!({"node_id": b.node_id, "host": b.host, "port": b.port})).collect::<Vec<_>>(),
        "topics": info.topics,
        "partitions": info.partitions,
        "under_replicated_partitions": info.under_replicated.len(),
        "leaderless_partitions": info.leaderless.len(),
    })
}

pub fn info_text(info: &ClusterInfo) -> Vec<String> {
    let mut v = vec![
        format!("cluster: {}", info.cluster_id),
        format!("controller: {}", opt(info.controller_id)),
        format!("brokers: {}", info.brokers.len()),
    ];
    for b in &info.brokers {
        v.push(format!("  {} {}:{}", b.node_id, b.host, b.port));
    }
    v.push(format!(
        "topics: {}  partitions: {}  under-replicated: {}  leaderless: {}",
        info.topics,
        info.partitions,
        info.under_replicated.len(),
        info.leaderless.len()
    ));
    v
}

pub fn health_text(info: &ClusterInfo) -> Vec<String> {
    let h = info.health();
    let mut v = vec![if h.healthy {
        format!(
            "healthy: controller {}, {} broker(s), {} partition(s), {} under-replicated",
            opt(info.controller_id),
            info.brokers.len(),
            info.partitions,
            info.under_replicated.len()
        )
    } else {
        format!("unhealthy: {}", h.problems.join("; "))
    }];
    for p in &info.leaderless {
        v.push(format!("leaderless: {} {}", p.topic, p.partition));
    }
    for p in &info.under_replicated {
        v.push(format!("under-replicated: {} {}", p.topic, p.partition));
    }
    v
}

pub fn health_json(info: &ClusterInfo) -> Value {
    let h = info.health();
    json!({
        "healthy": h.healthy,
        "problems": h.problems,
        "controller_id": info.controller_id,
        "brokers": info.brokers.len(),
        "partitions": info.partitions,
        "under_replicated": refs(&info.under_replicated),
        "leaderless": refs(&info.leaderless),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BrokerInfo;

    #[test]
    fn json_shapes() {
        let info = ClusterInfo {
            cluster_id: "c".into(),
            controller_id: Some(1),
            brokers: vec![BrokerInfo {
                node_id: 1,
                host: "h".into(),
                port: 9,
            }],
            topics: 1,
            partitions: 3,
            under_replicated: vec![PartitionRef {
                topic: "t".into(),
                partition: 2,
            }],
            leaderless: vec![],
        };
        assert_eq!(
            info_json(&info),
            json!({"cluster_id":"c","controller_id":1,"brokers":[{"node_id":1,"host":"h","port":9}],
                   "topics":1,"partitions":3,"under_replicated_partitions":1,"leaderless_partitions":0})
        );
        assert_eq!(
            health_json(&info),
            json!({"healthy":true,"problems":[],"controller_id":1,"brokers":1,"partitions":3,
                   "under_replicated":[{"topic":"t","partition":2}],"leaderless":[]})
        );
        assert_eq!(info_text(&info)[3], "  1 h:9");
        assert_eq!(
            health_text(&info),
            vec![
                "healthy: controller 1, 1 broker(s), 3 partition(s), 1 under-replicated",
                "under-replicated: t 2"
            ]
        );
        let sick = ClusterInfo {
            leaderless: vec![PartitionRef {
                topic: "t".into(),
                partition: 0,
            }],
            ..info
        };
        assert_eq!(
            health_text(&sick),
            vec![
                "unhealthy: 1 partition(s) without a leader",
                "leaderless: t 0",
                "under-replicated: t 2"
            ]
        );
    }
}
