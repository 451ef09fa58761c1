//! The `runnel-broker` binary as a process, for what only a process shows: JSON logs end to end (one line
//! per partition leadership at open, rate-limited client error lines), and SIGTERM under a running
//! pipelined acks=all producer (exit 0 within a bound; every acknowledged record is there after a restart).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use runnel_broker::server::metrics::ERROR_LOG_INTERVAL;
use runnel_protocol::{ErrorCode, Response};

const BIN: &str = env!("CARGO_BIN_EXE_runnel-broker");
/// How long a drain may take before the test fails (the broker's own bound is DRAIN_TIMEOUT +
/// CONNECTION_FLUSH_TIMEOUT).
const EXIT_BOUND: Duration = Duration::from_secs(20);

/// A broker process with JSON logs on a pipe read by a thread.
struct Proc {
    child: Child,
    lines: Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Proc {
    fn start(data_dir: &Path) -> Proc {
        let mut c = Command::new(BIN);
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNNEL_") {
                c.env_remove(k);
            }
        }
        // RUST_LOG unset: the default filter applies.
        let mut child = c
            .env_remove("RUST_LOG")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            child,
            lines,
            seen: Vec::new(),
            listen: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
        };
        let serving = p.wait_line("the broker to serve", |v| {
            v["fields"]["message"] == "broker serving"
        });
        p.listen = serving["fields"]["listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        p.admin = serving["fields"]["admin"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        p
    }

    /// Waits (bounded) for a log line matching `pred`; every line read is kept in `seen`.
    fn wait_line(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line for {what}; saw {:#?}", self.seen));
            self.seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit code and the time it took. The
    /// remaining log lines are collected into `seen`.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        // SAFETY: sending a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < EXIT_BOUND,
                "broker did not exit within {EXIT_BOUND:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        while let Ok(v) = self.lines.recv_timeout(DEADLINE) {
            self.seen.push(v);
        }
        (status.code(), took)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_show_leadership_and_rate_limited_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(&dir.path().join("data"));
    let mut c = Client::connect(p.listen).await;
    c.create_topic("lg", 2).await;
    for partition in [0, 1] {
        // The single node usually leads by the time the partition opens; when its election ends just
        // after, the leadership comes in the first "partition leadership changed" line instead.
        let line = p.wait_line("the partition's first leadership", |v| {
            (v["fields"]["message"] == "partition open"
                || v["fields"]["message"] == "partition leadership changed")
                && v["fields"]["topic"] == "lg"
                && v["fields"]["partition"] == partition
                && v["fields"]["leader"] != "None"
        });
        assert_eq!(line["fields"]["leader"], "Some(1)", "{line}");
        assert!(line["fields"]["term"].as_u64().unwrap() >= 1, "{line}");
        assert_eq!(line["level"], "INFO");
    }
    // Fifty errors of one code, two of another: one line per code within the interval.
    let first_error = Instant::now();
    for i in 0..50 {
        let r = c.produce("lg", 9, batch(&["x"], i)).await;
        assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);
    }
    for _ in 0..2 {
        let r = c.produce("nope", 0, batch(&["x"], 1)).await;
        assert_eq!(code(r.error_code), ErrorCode::UnknownTopicOrPartition);
    }
    let r = c.call(fetch_req("lg", 0, 99, 0, 0)).await.map(|r| match r {
        Response::Fetch(mut f) => f.topics.remove(0).partitions.remove(0).error_code,
        other => panic!("{other:?}"),
    });
    assert_eq!(code(r.unwrap()), ErrorCode::OffsetOutOfRange);
    let elapsed = first_error.elapsed();
    let (status, took) = p.terminate();
    assert_eq!(status, Some(0), "exit status after SIGTERM ({took:?})");
    let error_lines = |code: &str| {
        p.seen
            .iter()
            .filter(|v| v["fields"]["message"] == "client error" && v["fields"]["code"] == code)
            .count()
    };
    let allowed = 1 + (elapsed.as_millis() / ERROR_LOG_INTERVAL.as_millis()) as usize;
    let unknown = error_lines("UNKNOWN_TOPIC_OR_PARTITION");
    assert!(
        (1..=allowed).contains(&unknown),
        "{unknown} lines for 52 errors in {elapsed:?}"
    );
    assert_eq!(error_lines("OFFSET_OUT_OF_RANGE"), 1);
    let line = p
        .seen
        .iter()
        .find(|v| v["fields"]["code"] == "UNKNOWN_TOPIC_OR_PARTITION")
        .unwrap();
    assert_eq!(line["fields"]["api"], "produce");
    assert!(
        line["fields"]["detail"].as_str().unwrap().contains("lg"),
        "{line}"
    );
    assert!(p
        .seen
        .iter()
        .any(|v| v["fields"]["message"] == "drained; broker stopped"));
    // Nothing changed leader after the partitions opened, so no leadership-change line; and the default
    // filter keeps openraft's per-election chatter out.
    assert!(
        !p.seen
            .iter()
            .any(|v| v["fields"]["message"] == "partition leadership changed"),
        "{:#?}",
        p.seen
    );
    assert!(
        !p.seen.iter().any(|v| v["level"] == "INFO"
            && v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("openraft"))),
        "openraft info lines under the default filter"
    );
}

/// The records a producer saw acknowledged: offset → value.
type Acked = BTreeMap<u64, String>;

/// Produces to `t`-0 with up to `window` requests in flight until the broker refuses or closes; returns
/// what was acknowledged, whether a refusal was BROKER_SHUTTING_DOWN, and any other error code seen.
async fn produce_until_refused(
    addr: SocketAddr,
    window: usize,
    acked_before_signal: tokio::sync::oneshot::Sender<()>,
) -> (Acked, Vec<ErrorCode>) {
    let mut c = Client::connect(addr).await;
    let mut acked = Acked::new();
    let mut other = Vec::new();
    let mut pending: BTreeMap<u32, String> = BTreeMap::new();
    let mut signal = Some(acked_before_signal);
    let mut i = 0u64;
    let mut open = true;
    loop {
        while open && pending.len() < window {
            let v = format!("v{i}");
            i += 1;
            match c
                .try_send(&produce_req("t", 0, batch(&[&v], i as i64)))
                .await
            {
                Some(cid) => {
                    pending.insert(cid, v);
                }
                None => open = false,
            }
        }
        if pending.is_empty() {
            break;
        }
        let Some((cid, r)) = c.try_recv().await else {
            break;
        };
        let v = pending.remove(&cid).expect("a response to a request sent");
        match r {
            Ok(Response::Produce(mut p)) => {
                let p = p.topics.remove(0).partitions.remove(0);
                match code(p.error_code) {
                    ErrorCode::None => {
                        assert!(
                            acked.insert(p.base_offset, v).is_none(),
                            "offset acked twice"
                        );
                    }
                    ErrorCode::BrokerShuttingDown => open = false,
                    e => other.push(e),
                }
            }
            Err(e) if e.code == ErrorCode::BrokerShuttingDown => open = false,
            Err(e) => other.push(e.code),
            Ok(r) => panic!("{r:?}"),
        }
        if acked.len() >= 200 {
            if let Some(s) = signal.take() {
                let _ = s.send(());
            }
        }
    }
    (acked, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_a_running_producer_exits_zero_and_keeps_every_acked_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut p = Proc::start(&data);
    let mut c = Client::connect(p.listen).await;
    c.create_topic("t", 1).await;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let producer = tokio::spawn(produce_until_refused(p.listen, 16, ready_tx));
    tokio::time::timeout(DEADLINE, ready_rx)
        .await
        .expect("200 records acknowledged before the signal")
        .unwrap();
    let (status, took) = tokio::task::spawn_blocking(move || {
        let r = p.terminate();
        drop(p);
        r
    })
    .await
    .unwrap();
    assert_eq!(status, Some(0), "exit status after SIGTERM");
    assert!(took < EXIT_BOUND, "{took:?}");
    let (acked, other) = tokio::time::timeout(DEADLINE, producer)
        .await
        .expect("the producer stops once the broker refuses or closes")
        .unwrap();
    assert!(other.is_empty(), "unexpected errors: {other:?}");
    assert!(acked.len() >= 200);

    // Restart on the same data: every acknowledged record is there, at its offset, with its value.
    let p = Proc::start(&data);
    let mut c = Client::connect(p.listen).await;
    let mut stored = Acked::new();
    let mut next = 0u64;
    loop {
        let r = c.fetch("t", 0, next, 0, 0).await;
        assert_eq!(r.error_code, 0, "{r:?}");
        let got = values(&r.records);
        if got.is_empty() {
            break;
        }
        for (offset, v) in got {
            assert_eq!(offset, next, "dense offsets");
            stored.insert(offset, v);
            next += 1;
        }
    }
    for (offset, v) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(v),
            "acked record at offset {offset}"
        );
    }
    drop(p);
}
