//! `runnel topic create | list | describe | delete | add-partitions`.
//!
//! json shapes (one object per line):
//! - create: `{"topic","partitions","replication_factor","created":true}`
//! - list: one `{"topic","partitions","replication_factor","internal"}` per topic
//! - describe: one `{"topic","partition","leader","leader_term","replicas","in_sync","high_watermark",
//!   "log_start_offset","log_end_offset","configs":{..}}` per partition
//! - delete: `{"topic","deleted":true}`
//! - add-partitions: `{"topic","partitions"}` (the new total)
//! - alter-config: `{"topic","configs":{..}}` (the effective configs after the change)
//!
//! `add-partitions NAME --count N` adds N partitions (like `rpk topic add-partitions --num`).
//! `alter-config NAME --config key=value...` sets topic configs; `key=` (empty value) goes back to the
//! broker default.

use std::process::ExitCode;

use serde_json::{json, Map, Value};

use super::output::Out;
use super::{connect, parse_key_value, CliResult};
use crate::admin::{Admin, NewTopic};
use crate::cluster::TopicInfo;

#[derive(Debug, clap::Subcommand)]
pub enum TopicCmd {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u16,
        /// Topic config, key=value; repeatable.
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, leaders, replicas and offsets.
    Describe { name: String },
    /// Delete a topic.
    Delete { name: String },
    /// Add partitions to a topic.
    AddPartitions {
        name: String,
        /// How many partitions to add.
        #[arg(long)]
        count: u32,
    },
    /// Change topic configs (retention.ms, retention.bytes, segment.bytes, segment.ms); `key=` resets a
    /// key to the broker default.
    AlterConfig {
        name: String,
        /// Topic config, key=value; repeatable, at least one.
        #[arg(long = "config", value_parser = parse_key_value, required = true)]
        configs: Vec<(String, String)>,
    },
}

pub async fn run(brokers: &str, out: Out, cmd: TopicCmd) -> CliResult {
    let admin = Admin::new(connect(brokers).await?);
    match cmd {
        TopicCmd::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let t = NewTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs,
            };
            admin.create_topic(&t).await?;
            out.either(
                || format!("created topic {name} ({partitions} partition(s), replication factor {replication_factor})"),
                || json!({"topic": name, "partitions": partitions, "replication_factor": replication_factor, "created": true}),
            )?;
        }
        TopicCmd::List => {
            for t in admin.list_topics().await? {
                out.either(|| t.name.clone(), || list_json(&t))?;
            }
        }
        TopicCmd::Describe { name } => {
            let t = admin.describe_topic(&name).await?;
            if out.json() {
                for row in describe_json(&t) {
                    out.value(&row)?;
                }
            } else {
                for l in describe_text(&t) {
                    out.line(&l)?;
                }
            }
        }
        TopicCmd::Delete { name } => {
            admin.delete_topic(&name).await?;
            out.either(
                || format!("deleted topic {name}"),
                || json!({"topic": name, "deleted": true}),
            )?;
        }
        TopicCmd::AlterConfig { name, configs } => {
            admin.alter_topic_configs(&name, &configs).await?;
            let t = admin.describe_topic(&name).await?;
            out.either(
                || {
                    let c: Vec<String> =
                        t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("altered topic {name}: {}", c.join(" "))
                },
                || json!({"topic": name, "configs": configs_json(&t)}),
            )?;
        }
        TopicCmd::AddPartitions { name, count } => {
            let total = admin.add_partitions(&name, count).await?;
            out.either(
                || format!("topic {name} now has {total} partitions"),
                || json!({"topic": name, "partitions": total}),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list_json(t: &TopicInfo) -> Value {
    json!({
        "topic": t.name,
        "partitions": t.partitions.len(),
        "replication_factor": t.replication_factor(),
        "internal": t.internal,
    })
}

fn configs_json(t: &TopicInfo) -> Map<String, Value> {
    t.configs
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect()
}

pub fn describe_json(t: &TopicInfo) -> Vec<Value> {
    let configs = configs_json(t);
    t.partitions
        .iter()
        .map(|p| {
            json!({
                "topic": t.name,
                "partition": p.partition,
                "leader": p.leader,
                "leader_term": p.leader_term,
                "replicas": p.replicas,
                "in_sync": p.in_sync,
                "high_watermark": p.high_watermark,
                "log_start_offset": p.log_start_offset,
                "log_end_offset": p.log_end_offset,
                "configs": configs,
            })
        })
        .collect()
}

pub fn describe_text(t: &TopicInfo) -> Vec<String> {
    let mut v = vec![format!(
        "topic: {}  partitions: {}  replication factor: {}{}",
        t.name,
        t.partitions.len(),
        t.replication_factor(),
        if t.internal { "  (internal)" } else { "" }
    )];
    if !t.configs.is_empty() {
        let c: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        v.push(format!("configs: {}", c.join(" ")));
    }
    v.push("partition  leader  term  replicas  in-sync  log-start  high-watermark  log-end".into());
    for p in &t.partitions {
        let ids = |x: &[u32]| {
            x.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        v.push(format!(
            "{:<9}  {:<6}  {:<4}  {:<8}  {:<7}  {:<9}  {:<14}  {}",
            p.partition,
            p.leader.map_or_else(|| "none".into(), |l| l.to_string()),
            p.leader_term,
            ids(&p.replicas),
            ids(&p.in_sync),
            p.log_start_offset,
            p.high_watermark,
            p.log_end_offset
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::PartitionInfo;
    use runnel_protocol::ErrorCode;

    #[test]
    fn json_shapes() {
        let t = TopicInfo {
            name: "t".into(),
            error: ErrorCode::None,
            internal: false,
            partitions: vec![PartitionInfo {
                partition: 0,
                error: ErrorCode::None,
                leader: Some(1),
                leader_term: 2,
                replicas: vec![1, 2],
                in_sync: vec![1],
                high_watermark: 5,
                log_start_offset: 1,
                log_end_offset: 6,
            }],
            configs: vec![("retention.ms".into(), "10".into())],
        };
        assert_eq!(
            list_json(&t),
            json!({"topic":"t","partitions":1,"replication_factor":2,"internal":false})
        );
        assert_eq!(
            describe_json(&t),
            vec![
                json!({"topic":"t","partition":0,"leader":1,"leader_term":2,"replicas":[1,2],"in_sync":[1],
                        "high_watermark":5,"log_start_offset":1,"log_end_offset":6,"configs":{"retention.ms":"10"}})
            ]
        );
        let text = describe_text(&t);
        assert_eq!(text.len(), 4);
        assert!(text[2].starts_with("partition  leader  term  replicas"));
        let row: Vec<&str> = text[3].split_whitespace().collect();
        assert_eq!(row, ["0", "1", "2", "1,2", "1", "1", "5", "6"]);
    }
}
