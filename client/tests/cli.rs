//! End-to-end tests of the `runnel` CLI against a real `runnel-broker` process (DESIGN §6 contract).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{assert_ok, json_lines, run_cli, stdout_lines, Broker};

macro_rules! broker_or_skip {
    () => {
        match Broker::start() {
            Some(b) => b,
            None => return,
        }
    };
}

/// Issue 3, acceptance 1: three acks for three lines, and a, b, c read back from the beginning.
#[test]
fn acceptance_produce_three_then_consume_them() {
    let b = broker_or_skip!();
    assert_ok(
        &b.cli(&["topic", "create", "t1", "--partitions", "3"], None),
        "topic create",
    );
    let o = b.cli(&["produce", "t1"], Some(b"a\nb\nc\n"));
    assert_ok(&o, "produce");
    let acks = stdout_lines(&o);
    assert_eq!(acks.len(), 3, "{acks:?}");
    for a in &acks {
        let parts: Vec<&str> = a.split(' ').collect();
        assert_eq!(parts.len(), 2, "ack {a:?}");
        assert!(parts[0].parse::<u32>().unwrap() < 3, "ack {a:?}");
        parts[1].parse::<u64>().unwrap();
    }
    let o = b.cli(
        &[
            "consume",
            "t1",
            "--from-beginning",
            "--max-messages",
            "3",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_ok(&o, "consume");
    let mut got = stdout_lines(&o);
    got.sort();
    assert_eq!(got, vec!["a", "b", "c"]);
}

/// JSON shapes of produce and consume, keyed partitioning, explicit partitions, dense offsets.
#[test]
fn json_produce_and_consume_round_trip() {
    let b = broker_or_skip!();
    assert_ok(
        &b.cli(&["topic", "create", "j", "--partitions", "4"], None),
        "create",
    );
    let input: String = (0..200).map(|i| format!("v-{i}\n")).collect();
    let o = b.cli(
        &["--output", "json", "produce", "j"],
        Some(input.as_bytes()),
    );
    assert_ok(&o, "produce");
    let acks = json_lines(&o);
    assert_eq!(acks.len(), 200);
    let mut per_part: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for a in &acks {
        assert_eq!(a.as_object().unwrap().len(), 3, "{a}");
        assert_eq!(a["topic"], "j");
        per_part
            .entry(a["partition"].as_u64().unwrap())
            .or_default()
            .push(a["offset"].as_u64().unwrap());
    }
    for offs in per_part.values() {
        // Acks come back in input order; within a partition offsets are dense from 0.
        assert_eq!(*offs, (0..offs.len() as u64).collect::<Vec<_>>());
    }
    // Keyed records all land on hash(key) % partitions.
    let o = b.cli(
        &["--output", "json", "produce", "j", "--key", "user-7"],
        Some(b"k1\nk2\n"),
    );
    assert_ok(&o, "keyed produce");
    let ks = json_lines(&o);
    let want = runnel_client::partitioner::partition_for_key(b"user-7", 4) as u64;
    assert!(ks.iter().all(|a| a["partition"] == want), "{ks:?}");
    // Explicit partition.
    let o = b.cli(
        &["--output", "json", "produce", "j", "--partition", "3"],
        Some(b"p3\n"),
    );
    assert_ok(&o, "partition produce");
    assert_eq!(json_lines(&o)[0]["partition"], 3);

    let o = b.cli(
        &[
            "--output",
            "json",
            "consume",
            "j",
            "--from-beginning",
            "--max-messages",
            "203",
            "--timeout-ms",
            "20000",
        ],
        None,
    );
    assert_ok(&o, "consume");
    let recs = json_lines(&o);
    assert_eq!(recs.len(), 203);
    let mut values: Vec<String> = recs
        .iter()
        .map(|r| r["value"].as_str().unwrap().to_string())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 203);
    let keyed = recs.iter().find(|r| r["value"] == "k1").unwrap();
    assert_eq!(keyed["key"], "user-7");
    assert_eq!(keyed["partition"], want);
    for r in &recs {
        let o = r.as_object().unwrap();
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 6, "{r}");
        for k in ["topic", "partition", "offset", "timestamp", "key", "value"] {
            assert!(o.contains_key(k), "{k} missing in {r}");
        }
        assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
    // --offset N with --partition P starts exactly there.
    let (&p, _) = per_part.iter().find(|(_, o)| o.len() >= 2).unwrap();
    let ps = p.to_string();
    let args = [
        "--output",
        "json",
        "consume",
        "j",
        "--partition",
        &ps,
        "--offset",
        "1",
        "--max-messages",
        "1",
        "--timeout-ms",
        "10000",
    ];
    let o = b.cli(&args, None);
    assert_ok(&o, "consume --offset");
    let r = &json_lines(&o)[0];
    assert_eq!(
        (r["partition"].as_u64(), r["offset"].as_u64()),
        (Some(p), Some(1))
    );
}

/// A record that fails prints an error object, the rest go on, and the exit code is 1.
#[test]
fn failures_print_error_lines_and_exit_1() {
    let b = broker_or_skip!();
    let o = b.cli(
        &["--output", "json", "produce", "no-such-topic"],
        Some(b"x\ny\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["topic"], "no-such-topic");
        assert_eq!(l["error"], "UNKNOWN_TOPIC_OR_PARTITION");
        assert!(l["message"].is_string());
    }
    // A bad line among good ones: only that one fails.
    assert_ok(
        &b.cli(&["topic", "create", "sep", "--partitions", "1"], None),
        "create",
    );
    let o = b.cli(
        &["--output", "json", "produce", "sep", "--key-separator", ":"],
        Some(b"k:v\nnosep\nk2:v2\n"),
    );
    assert_eq!(o.status.code(), Some(1));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["offset"], 0);
    assert_eq!(lines[1]["error"], "INVALID_RECORD");
    assert_eq!(lines[2]["offset"], 1);
    // Errors: one line on stderr, non-zero exit.
    let o = b.cli(&["topic", "describe", "nope"], None);
    assert!(!o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    let o = b.cli(&["topic", "create", "sep"], None);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("TOPIC_ALREADY_EXISTS"));
    // --acks none prints nothing per record.
    let o = b.cli(&["produce", "sep", "--acks", "none"], Some(b"q\nr\n"));
    assert_ok(&o, "acks none");
    assert!(o.stdout.is_empty());
}

/// Topic admin commands and cluster info/health, text and json; a dead first bootstrap entry is skipped.
#[test]
fn topic_admin_and_cluster_commands() {
    let b = broker_or_skip!();
    let dead = format!("127.0.0.1:{}", support::free_port());
    let both = format!("{dead},{}", b.addr());
    let o = run_cli(&both, &["cluster", "health"], None);
    assert_ok(&o, "health via a dead first entry");
    assert!(stdout_lines(&o)[0].starts_with("healthy"));
    let o = run_cli(&both, &["--output", "json", "cluster", "info"], None);
    assert_ok(&o, "info");
    let info = &json_lines(&o)[0];
    assert!(info["brokers"].as_array().is_some_and(|b| !b.is_empty()));
    assert!(info["controller_id"].is_u64());

    let o = b.cli(
        &[
            "--output",
            "json",
            "topic",
            "create",
            "adm",
            "--partitions",
            "2",
            "--config",
            "retention.ms=60000",
        ],
        None,
    );
    assert_ok(&o, "create");
    assert_eq!(json_lines(&o)[0]["partitions"], 2);
    let o = b.cli(&["--output", "json", "topic", "list"], None);
    assert_ok(&o, "list");
    assert!(json_lines(&o)
        .iter()
        .any(|t| t["topic"] == "adm" && t["partitions"] == 2));
    let o = b.cli(
        &[
            "--output",
            "json",
            "topic",
            "add-partitions",
            "adm",
            "--count",
            "2",
        ],
        None,
    );
    assert_ok(&o, "add-partitions");
    assert_eq!(json_lines(&o)[0]["partitions"], 4);
    let o = b.cli(&["--output", "json", "topic", "describe", "adm"], None);
    assert_ok(&o, "describe");
    let rows = json_lines(&o);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["leader"].is_u64()));
    assert_ok(&b.cli(&["topic", "describe", "adm"], None), "describe text");
    let o = b.cli(&["--output", "json", "cluster", "health"], None);
    assert_ok(&o, "health json");
    assert_eq!(json_lines(&o)[0]["healthy"], true);
    assert_ok(&b.cli(&["topic", "delete", "adm"], None), "delete");
    let o = b.cli(&["topic", "list"], None);
    assert!(!stdout_lines(&o).iter().any(|t| t == "adm"));
}

/// Acks are printed as they arrive, before end of input; consume starts at the end by default and
/// `--timeout-ms` ends a consume that gets nothing.
#[test]
fn acks_stream_live_and_consume_defaults_to_the_end() {
    let b = broker_or_skip!();
    assert_ok(
        &b.cli(&["topic", "create", "live", "--partitions", "1"], None),
        "create",
    );
    assert_ok(&b.cli(&["produce", "live"], Some(b"old\n")), "produce old");

    let mut consumer = Command::new(support::cli_bin())
        .args([
            "--brokers",
            &b.addr(),
            "consume",
            "live",
            "--max-messages",
            "2",
            "--timeout-ms",
            "30000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut producer = Command::new(support::cli_bin())
        .args(["--brokers", &b.addr(), "produce", "live"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = producer.stdin.take().unwrap();
    let mut acks = BufReader::new(producer.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        while acks.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
            let _ = tx.send(std::mem::take(&mut l));
        }
    });
    // The consumer may still be resolving its start offset: produce until it has printed two records.
    let mut out = BufReader::new(consumer.stdout.take().unwrap());
    let (ctx, crx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut l = String::new();
        while out.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
            let _ = ctx.send(std::mem::take(&mut l));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = vec![];
    let mut n = 0;
    while got.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "consumer printed {got:?} within 30 s"
        );
        writeln!(stdin, "new-{n}").unwrap();
        stdin.flush().unwrap();
        n += 1;
        // The ack for this line arrives while stdin is still open.
        let ack = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("no ack before end of input");
        assert!(ack.trim().starts_with("0 "), "{ack:?}");
        while let Ok(l) = crx.recv_timeout(Duration::from_millis(200)) {
            got.push(l.trim().to_string());
        }
    }
    drop(stdin);
    assert!(producer.wait().unwrap().success());
    assert!(consumer.wait().unwrap().success());
    assert!(
        got.iter().all(|v| v.starts_with("new-")),
        "the consumer read old records: {got:?}"
    );

    let t0 = Instant::now();
    let o = b.cli(&["consume", "live", "--timeout-ms", "300"], None);
    assert_ok(&o, "idle consume");
    assert!(o.stdout.is_empty());
    assert!(t0.elapsed() < Duration::from_secs(20));
}

/// `runnel bench produce --output json` prints exactly one object with the contract's fields.
#[test]
fn bench_produce_json_summary() {
    let b = broker_or_skip!();
    let o = b.cli(
        &[
            "--output",
            "json",
            "bench",
            "produce",
            "--topic",
            "bench-t",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--quiet",
        ],
        None,
    );
    assert_ok(&o, "bench produce");
    let v = json_lines(&o);
    assert_eq!(v.len(), 1);
    for k in [
        "records",
        "seconds",
        "records_per_s",
        "mb_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
    ] {
        assert!(v[0][k].is_number(), "{k} in {}", v[0]);
    }
    assert_eq!(v[0]["records"], 2000);
    let o = b.cli(
        &[
            "--output",
            "json",
            "bench",
            "e2e",
            "--topic",
            "bench-t",
            "--records",
            "500",
            "--record-size",
            "64",
            "--quiet",
        ],
        None,
    );
    assert_ok(&o, "bench e2e");
    assert_eq!(json_lines(&o)[0]["records"], 500);
    let o = b.cli(
        &[
            "--output",
            "json",
            "bench",
            "consume",
            "--topic",
            "bench-t",
            "--records",
            "2500",
            "--quiet",
        ],
        None,
    );
    assert_ok(&o, "bench consume");
    assert_eq!(json_lines(&o)[0]["records"], 2500);
}
