//! `runnel produce TOPIC`: one record per stdin line; one output line per record, in input order, printed as
//! soon as that record's ack arrives (records batch for `linger` milliseconds, never until end of input).
//!
//! Output: text `"<partition> <offset>"`, json `{"topic","partition","offset"}`; a failed record prints
//! `{"topic","error":"<ERROR_CODE_NAME>","message"}` (text: `error <ERROR_CODE_NAME>: <message>`) and the rest go
//! on. With `--acks none` successes print nothing. Exit 0 when every record was acknowledged, 1 otherwise.
//!
//! Line handling: the trailing `\n` (and a `\r` before it) is removed; `--key-separator SEP` splits each line
//! at the first SEP into key and value (a line without SEP fails as `INVALID_RECORD`); `--key` gives every
//! record the same key; `--value-encoding base64` decodes the value (a bad line fails as `INVALID_RECORD`).
//! The line buffer and the decode buffer are reused: no allocation per record.

use std::collections::VecDeque;
use std::process::ExitCode;

use base64::Engine;
use runnel_protocol::ErrorCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::output::Out;
use super::{connect, CliResult};
use crate::error::ClientError;
use crate::producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};

/// How values (and `--key-separator` keys) on stdin are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    Text,
    Base64,
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// The key of every record.
    #[arg(long)]
    pub key: Option<String>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, conflicts_with = "key")]
    pub key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    pub partition: Option<u32>,
    #[arg(long, default_value = "all")]
    pub acks: Acks,
    /// Encoding of the values on stdin.
    #[arg(long, value_enum, default_value = "text")]
    pub value_encoding: Encoding,
    /// Batch linger, milliseconds.
    #[arg(long, default_value_t = crate::producer::LINGER_MS_DEFAULT)]
    pub linger_ms: u64,
}

enum Pending {
    Delivery(DeliveryFuture),
    Failed(ClientError),
}

enum Event {
    Acked(Result<RecordMetadata, ClientError>),
    Read(std::io::Result<usize>),
}

pub async fn run(brokers: &str, out: Out, args: ProduceArgs) -> CliResult {
    let cluster = connect(brokers).await?;
    let config = ProducerConfig {
        acks: args.acks,
        linger: std::time::Duration::from_millis(args.linger_ms),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(cluster, config)?;
    let mut reader = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut line: Vec<u8> = Vec::with_capacity(4096);
    let mut decoded: Vec<u8> = Vec::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut eof = false;
    let mut failed = false;
    loop {
        // Print every finished record at the head, in input order.
        while let Some(front) = pending.front() {
            let r = match front {
                Pending::Failed(e) => Err(e.clone()),
                Pending::Delivery(f) => match f.try_result() {
                    Some(r) => r,
                    None => break,
                },
            };
            pending.pop_front();
            failed |= r.is_err();
            print_result(&out, &args, r)?;
        }
        if eof && pending.is_empty() {
            break;
        }
        let event = {
            let head = async {
                match pending.front_mut() {
                    Some(Pending::Delivery(f)) => f.await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                r = head => Event::Acked(r),
                // Cancel-safe: bytes read before cancellation stay in `line`, and reading resumes there.
                n = reader.read_until(b'\n', &mut line), if !eof => Event::Read(n),
            }
        };
        match event {
            Event::Acked(r) => {
                pending.pop_front();
                failed |= r.is_err();
                print_result(&out, &args, r)?;
            }
            Event::Read(n) => {
                if n? == 0 {
                    eof = true;
                    continue;
                }
                let p = match split_line(&line, &args, &mut decoded) {
                    Ok((key, value)) => {
                        let rec = ProducerRecord {
                            topic: &args.topic,
                            partition: args.partition,
                            key,
                            value,
                            headers: &[],
                            timestamp: None,
                        };
                        match producer.enqueue(rec).await {
                            Ok(f) => Pending::Delivery(f),
                            Err(e) => Pending::Failed(e),
                        }
                    }
                    Err(e) => Pending::Failed(e),
                };
                pending.push_back(p);
                line.clear();
            }
        }
    }
    producer.close().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Splits one input line into key and value per the arguments. `decoded` is a reused buffer for base64.
pub fn split_line<'a>(
    raw: &'a [u8],
    args: &'a ProduceArgs,
    decoded: &'a mut Vec<u8>,
) -> Result<(Option<&'a [u8]>, &'a [u8]), ClientError> {
    let mut l = raw.strip_suffix(b"\n").unwrap_or(raw);
    l = l.strip_suffix(b"\r").unwrap_or(l);
    let invalid = |m: String| ClientError::broker(ErrorCode::InvalidRecord, Some(m));
    let (key, value): (Option<&[u8]>, &[u8]) = match (&args.key, &args.key_separator) {
        (Some(k), _) => (Some(k.as_bytes()), l),
        (None, Some(sep)) if !sep.is_empty() => {
            let sep = sep.as_bytes();
            match l.windows(sep.len()).position(|w| w == sep) {
                Some(i) => (Some(&l[..i]), &l[i + sep.len()..]),
                None => return Err(invalid("line has no key separator".into())),
            }
        }
        _ => (None, l),
    };
    match args.value_encoding {
        Encoding::Text => Ok((key, value)),
        Encoding::Base64 => {
            decoded.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(value, decoded)
                .map_err(|e| invalid(format!("value is not base64: {e}")))?;
            Ok((key, decoded.as_slice()))
        }
    }
}

fn print_result(
    out: &Out,
    args: &ProduceArgs,
    r: Result<RecordMetadata, ClientError>,
) -> std::io::Result<()> {
    match r {
        Ok(m) => {
            if args.acks == Acks::None {
                return Ok(());
            }
            out.either(|| format!("{} {}", m.partition, m.offset), || ack_json(&m))
        }
        Err(e) => out.either(
            || format!("error {}: {}", e.code_name(), e.message()),
            || error_json(&args.topic, &e),
        ),
    }
}

pub fn ack_json(m: &RecordMetadata) -> serde_json::Value {
    json!({"topic": &*m.topic, "partition": m.partition, "offset": m.offset})
}

pub fn error_json(topic: &str, e: &ClientError) -> serde_json::Value {
    json!({"topic": topic, "error": e.code_name(), "message": e.message()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn args(key: Option<&str>, sep: Option<&str>, enc: Encoding) -> ProduceArgs {
        ProduceArgs {
            topic: "t".into(),
            key: key.map(str::to_string),
            key_separator: sep.map(str::to_string),
            partition: None,
            acks: Acks::All,
            value_encoding: enc,
            linger_ms: 5,
        }
    }

    #[test]
    fn lines_split_into_key_and_value() {
        let mut buf = Vec::new();
        let a = args(None, None, Encoding::Text);
        assert_eq!(
            split_line(b"abc\r\n", &a, &mut buf).unwrap(),
            (None, &b"abc"[..])
        );
        assert_eq!(split_line(b"", &a, &mut buf).unwrap(), (None, &b""[..]));
        let a = args(Some("k"), None, Encoding::Text);
        assert_eq!(
            split_line(b"v\n", &a, &mut buf).unwrap(),
            (Some(&b"k"[..]), &b"v"[..])
        );
        let a = args(None, Some("::"), Encoding::Text);
        assert_eq!(
            split_line(b"user1::hello::x\n", &a, &mut buf).unwrap(),
            (Some(&b"user1"[..]), &b"hello::x"[..])
        );
        let e = split_line(b"nosep\n", &a, &mut buf).unwrap_err();
        assert_eq!(e.code_name(), "INVALID_RECORD");
        let a = args(None, None, Encoding::Base64);
        assert_eq!(
            split_line(b"aGk=\n", &a, &mut buf).unwrap(),
            (None, &b"hi"[..])
        );
        assert!(split_line(b"!!\n", &a, &mut buf).is_err());
    }

    #[test]
    fn json_shapes() {
        let m = RecordMetadata {
            topic: Arc::from("t"),
            partition: 2,
            offset: 7,
            timestamp: 1,
        };
        assert_eq!(ack_json(&m), json!({"topic":"t","partition":2,"offset":7}));
        let e = ClientError::broker(
            ErrorCode::UnknownTopicOrPartition,
            Some("no such topic".into()),
        );
        assert_eq!(
            error_json("t", &e),
            json!({"topic":"t","error":"UNKNOWN_TOPIC_OR_PARTITION","message":"no such topic"})
        );
    }
}
