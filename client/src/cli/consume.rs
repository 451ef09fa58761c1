//! `runnel consume TOPIC`: prints one record per line — text: the value; json:
//! `{"topic","partition","offset","timestamp","key","value"}` (key/value `null` when absent).
//!
//! Start: `--from-beginning` (earliest), `--offset N` (needs `--partition P`), otherwise the end (only new
//! records). Stop: after `--max-messages N` records, or after `--timeout-ms T` with no record — that clock
//! starts once every partition has its position and restarts at every record; without either it runs until
//! killed. Exit 0 in both cases. `--value-encoding base64` prints values (and json keys) as base64.
//! With `--group G` the partitions come from the consumer group instead (see [`super::group::consume`]).

use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::output::Out;
use super::produce::Encoding;
use super::{connect, CliError, CliResult};
use crate::consumer::{Consumer, ConsumerConfig, ConsumerRecord, Offset};

/// Longest single wait of the poll loop when no `--timeout-ms` is given.
const POLL_SLICE: Duration = Duration::from_secs(1);

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Consume as a member of this consumer group (commits what it printed, leaves on exit).
    #[arg(long)]
    pub group: Option<String>,
    /// With --group: do not commit offsets.
    #[arg(long, requires = "group")]
    pub no_commit: bool,
    /// With --group: the member's session timeout (how long until a silent member's partitions move).
    #[arg(long, requires = "group")]
    pub session_timeout_ms: Option<u64>,
    /// Start at the earliest offset of each partition.
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long)]
    pub offset: Option<u64>,
    /// Read only this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    /// Exit after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Exit after this many milliseconds without a record.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Print values as text or base64.
    #[arg(long, value_enum, default_value = "text")]
    pub value_encoding: Encoding,
}

pub async fn run(brokers: &str, out: Out, args: ConsumeArgs) -> CliResult {
    if let Some(group) = args.group.clone() {
        return super::group::consume(brokers, out, args, &group).await;
    }
    if args.offset.is_some() && args.partition.is_none() {
        return Err(CliError("--offset needs --partition".into()));
    }
    if args.max_messages == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let cluster = connect(brokers).await?;
    let start = match (args.from_beginning, args.offset) {
        (true, _) => Offset::Earliest,
        (_, Some(n)) => Offset::At(n),
        _ => Offset::Latest,
    };
    let mut consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig {
            initial_offset: start,
            ..ConsumerConfig::default()
        },
    );
    let only = args.partition.map(|p| [p]);
    consumer
        .assign(&args.topic, only.as_ref().map(|p| &p[..]))
        .await?;
    // Positions first: the --timeout-ms clock starts once the consumer has its partitions.
    if !consumer.wait_positions(cluster.request_timeout()).await? {
        return Err(CliError(format!(
            "could not find start offsets for {} within {:?} (no partition leader?)",
            args.topic,
            cluster.request_timeout()
        )));
    }
    let timeout = args.timeout_ms.map(Duration::from_millis);
    let mut deadline = timeout.map(|t| Instant::now() + t);
    let mut printed: u64 = 0;
    loop {
        let wait = match deadline {
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    break;
                }
                d - now
            }
            None => POLL_SLICE,
        };
        let records = consumer.poll(wait).await?;
        for r in &records {
            print_record(&out, args.value_encoding, r)?;
            printed += 1;
            if args.max_messages == Some(printed) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if !records.is_empty() {
            deadline = timeout.map(|t| Instant::now() + t);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn print_record(out: &Out, enc: Encoding, r: &ConsumerRecord) -> std::io::Result<()> {
    if out.json() {
        return out.value(&record_json(r, enc));
    }
    let v = r.value.as_deref().unwrap_or_default();
    match enc {
        Encoding::Text => out.raw(v),
        Encoding::Base64 => out.line(&base64::engine::general_purpose::STANDARD.encode(v)),
    }
}

fn text_value(b: &Option<bytes::Bytes>, enc: Encoding) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(match enc {
            Encoding::Text => String::from_utf8_lossy(b).into_owned(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
        }),
    }
}

pub fn record_json(r: &ConsumerRecord, enc: Encoding) -> Value {
    json!({
        "topic": &*r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": text_value(&r.key, enc),
        "value": text_value(&r.value, enc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn json_shape() {
        let r = ConsumerRecord {
            topic: Arc::from("t"),
            partition: 1,
            offset: 9,
            timestamp: 1700,
            key: None,
            value: Some(Bytes::from_static(b"hi")),
            headers: vec![],
        };
        assert_eq!(
            record_json(&r, Encoding::Text),
            json!({"topic":"t","partition":1,"offset":9,"timestamp":1700,"key":null,"value":"hi"})
        );
        assert_eq!(record_json(&r, Encoding::Base64)["value"], json!("aGk="));
    }
}
