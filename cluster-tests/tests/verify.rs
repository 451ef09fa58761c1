//! `runnel-verify` end to end, as a user runs it:
//!
//! 1. Against one real broker: `run` for 5 s, then `check` — exit 0, verdict OK, every send acknowledged and
//!    found by the final read.
//! 2. The same with the broker `kill -9`ed and restarted while the producers send: sends that timed out are
//!    recorded as indeterminate, and `check` still finds nothing lost, duplicated or out of order.
//! 3. `check-only` on a hand-written history with a lost value, a duplicate, a reordered pair, a regressed
//!    commit, an inconsistent offset and an unexpected value: exit 1 and each violation named with its count;
//!    the same history without the faults: exit 0; a history that is not JSONL: exit 2.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runnel_cluster_tests::Broker;

/// Bound on one `runnel-verify` invocation (a 5 s run, its drain, and setup).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(120);

fn verify_bin() -> &'static str {
    env!("CARGO_BIN_EXE_runnel-verify")
}

/// Waits for a child with a deadline (killing it if it overruns) and returns its output.
fn wait_output(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + INVOCATION_TIMEOUT;
    loop {
        match child.try_wait().expect("try_wait") {
            Some(_) => return child.wait_with_output().expect("collect output"),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("collect output");
                panic!(
                    "{what} did not finish within {INVOCATION_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(verify_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runnel-verify")
}

fn verify(args: &[&str]) -> (i32, String, String) {
    let out = wait_output(spawn(args), &format!("runnel-verify {}", args.join(" ")));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The count the report's table prints for a check.
fn count(stdout: &str, name: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{stdout}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// The `sends ... N attempted: A ok, F fail, I indeterminate (R read, X absent)` figures.
fn send_figures(stdout: &str) -> Vec<u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sends"))
        .unwrap_or_else(|| panic!("no sends line in:\n{stdout}"));
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("number"))
        .collect()
}

fn start_broker(dir: &Path) -> Broker {
    let b = Broker::start(dir, &[]);
    assert!(
        b.wait_listening(Duration::from_secs(30)),
        "broker did not listen:\n{}",
        b.log_tail()
    );
    b
}

fn run_args<'a>(addr: &'a str, topic: &'a str, history: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--brokers",
        addr,
        "--topic",
        topic,
        "--partitions",
        "3",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--duration-s",
        "5",
        "--rate",
        "200",
        "--history",
        history,
    ]
}

fn assert_clean(stdout: &str) {
    for name in [
        "lost",
        "unexpected",
        "duplicate",
        "inconsistent_offset",
        "producer_order",
        "poll_monotonicity",
        "commit_regression",
    ] {
        assert_eq!(count(stdout, name), 0, "{name}:\n{stdout}");
    }
    assert!(stdout.contains("verdict: OK"), "{stdout}");
}

#[test]
fn run_then_check_against_one_broker_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_broker(dir.path());
    let history = dir.path().join("history.jsonl");
    let history = history.to_str().expect("utf-8 path");
    let addr = broker.addr();

    let (code, out, err) = verify(&run_args(&addr, "verify", history));
    assert_eq!(
        code,
        0,
        "run failed\nstdout:\n{out}\nstderr:\n{err}\nbroker:\n{}",
        broker.log_tail()
    );

    let (code, out, err) = verify(&[
        "check",
        "--brokers",
        &addr,
        "--topic",
        "verify",
        "--history",
        history,
    ]);
    assert_eq!(code, 0, "check failed\nstdout:\n{out}\nstderr:\n{err}");
    assert_clean(&out);
    // 2 producers at 200/s for 5 s: hundreds of sends, all acknowledged by a healthy broker, all read back.
    let f = send_figures(&out);
    let (attempted, ok, fail, info) = (f[0], f[1], f[2], f[3]);
    assert!(attempted >= 100, "{out}");
    assert_eq!((ok, fail, info), (attempted, 0, 0), "{out}");
    assert!(
        out.contains(&format!(
            "final read via {addr}: 3 partitions, {attempted} records"
        )),
        "{out}"
    );
    // A second run into the same history is refused (a history is one run).
    let (code, _, err) = verify(&run_args(&addr, "verify-2", history));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_broker_killed_and_restarted_during_the_run_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = start_broker(dir.path());
    let history = dir.path().join("history.jsonl");
    let history_s = history.to_str().expect("utf-8 path").to_string();
    let addr = broker.addr();

    let mut args = run_args(&addr, "crash", &history_s);
    args.extend(["--op-timeout-ms", "3000", "--request-timeout-ms", "1000"]);
    let run = spawn(&args);
    // Kill once acknowledgements are flowing (the history is flushed every 256 events).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let acked = std::fs::read_to_string(&history)
            .map(|s| s.matches(r#""status":"ok""#).count())
            .unwrap_or(0);
        if acked >= 100 {
            break;
        }
        assert!(Instant::now() < deadline, "no acknowledgements recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker.restart(); // kill -9, then start again on the same port and data dir
    assert!(
        broker.wait_listening(Duration::from_secs(30)),
        "broker did not come back:\n{}",
        broker.log_tail()
    );
    let out = wait_output(run, "runnel-verify run");
    assert!(
        out.status.success(),
        "run failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, out, err) = verify(&[
        "check",
        "--brokers",
        &addr,
        "--topic",
        "crash",
        "--history",
        &history_s,
    ]);
    assert_eq!(
        code,
        0,
        "check failed\nstdout:\n{out}\nstderr:\n{err}\nbroker:\n{}",
        broker.log_tail()
    );
    assert_clean(&out);
    let f = send_figures(&out);
    assert_eq!(f[0], f[1] + f[2] + f[3], "{out}");
    assert!(f[1] >= 100, "{out}");
}

/// A history in which every rule holds: two producers, two partitions, a group member, a final read via b1.
const CLEAN: &str = r#"{"op":"send","t":1,"proc":"p0","seq":0,"value":"p0-000000","status":"ok","partition":0,"offset":0}
{"op":"send","t":2,"proc":"p0","seq":1,"value":"p0-000001","status":"ok","partition":0,"offset":1}
{"op":"send","t":3,"proc":"p1","seq":0,"value":"p1-000000","status":"ok","partition":0,"offset":2}
{"op":"send","t":4,"proc":"p1","seq":1,"value":"p1-000001","status":"ok","partition":1,"offset":0}
{"op":"send","t":5,"proc":"p1","seq":2,"value":"p1-000002","status":"info","err":"timeout"}
{"op":"assign","t":6,"proc":"c0","group":"g","partitions":[0,1]}
{"op":"poll","t":7,"proc":"c0","group":"g","partition":0,"offsets":[0,1,2],"values":["p0-000000","p0-000001","p1-000000"]}
{"op":"commit","t":8,"proc":"c0","group":"g","partition":0,"offset":3,"status":"ok"}
{"op":"final_read","t":9,"broker":"b1","partition":0,"offset":0,"value":"p0-000000"}
{"op":"final_read","t":9,"broker":"b1","partition":0,"offset":1,"value":"p0-000001"}
{"op":"final_read","t":9,"broker":"b1","partition":0,"offset":2,"value":"p1-000000"}
{"op":"final_read_end","t":9,"broker":"b1","partition":0,"log_start":0,"high_watermark":3,"records":3}
{"op":"final_read","t":9,"broker":"b1","partition":1,"offset":0,"value":"p1-000001"}
{"op":"final_read_end","t":9,"broker":"b1","partition":1,"log_start":0,"high_watermark":1,"records":1}
"#;

/// Faults appended to [`CLEAN`], one per class, including a final read via a second broker b2.
const FAULTS: &str = r#"{"op":"send","t":10,"proc":"p0","seq":2,"value":"p0-000002","status":"ok","partition":1,"offset":4}
{"op":"send","t":11,"proc":"p0","seq":3,"value":"p0-000003","status":"ok","partition":1,"offset":2}
{"op":"send","t":12,"proc":"p0","seq":4,"value":"p0-000004","status":"ok","partition":1,"offset":1}
{"op":"commit","t":13,"proc":"c0","group":"g","partition":0,"offset":1,"status":"ok"}
{"op":"poll","t":13,"proc":"c0","group":"g","partition":0,"offsets":[1],"values":["p0-000001"]}
{"op":"final_read","t":14,"broker":"b2","partition":0,"offset":0,"value":"p0-000000"}
{"op":"final_read","t":14,"broker":"b2","partition":0,"offset":1,"value":"p0-000001"}
{"op":"final_read","t":14,"broker":"b2","partition":0,"offset":2,"value":"XX-000009"}
{"op":"final_read_end","t":14,"broker":"b2","partition":0,"log_start":0,"high_watermark":3,"records":3}
{"op":"final_read","t":14,"broker":"b2","partition":1,"offset":0,"value":"p1-000001"}
{"op":"final_read","t":14,"broker":"b2","partition":1,"offset":1,"value":"p0-000004"}
{"op":"final_read","t":14,"broker":"b2","partition":1,"offset":2,"value":"p0-000003"}
{"op":"final_read","t":14,"broker":"b2","partition":1,"offset":3,"value":"p1-000001"}
{"op":"final_read_end","t":14,"broker":"b2","partition":1,"log_start":0,"high_watermark":4,"records":4}
"#;

#[test]
fn check_only_names_each_violation_of_a_bad_history_and_passes_a_clean_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(&clean, CLEAN).expect("write");
    let (code, out, err) = verify(&["check-only", "--history", clean.to_str().expect("path")]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_clean(&out);

    // p0-000002 acknowledged, never read (lost); p1-000001 at 1/0 and 1/3 (duplicate); p0-000004 written
    // before p0-000003 (reordered pair); commit 1 after 3 (regressed); c0 polls offset 1 again in the same
    // assignment (poll monotonicity); 0/2 holds p1-000000 on b1 and XX-000009 on b2 (inconsistent offset),
    // and XX-000009 was never sent (unexpected).
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{CLEAN}{FAULTS}")).expect("write");
    let (code, out, err) = verify(&["check-only", "--history", bad.to_str().expect("path")]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(count(&out, "lost"), 1, "{out}");
    assert_eq!(count(&out, "duplicate"), 1, "{out}");
    assert_eq!(count(&out, "producer_order"), 1, "{out}");
    assert_eq!(count(&out, "commit_regression"), 1, "{out}");
    assert_eq!(count(&out, "unexpected"), 1, "{out}");
    assert_eq!(count(&out, "inconsistent_offset"), 1, "{out}");
    assert_eq!(count(&out, "poll_monotonicity"), 1, "{out}");
    assert!(
        out.contains("p0-000002 (acked at 1/4 to p0) is in no final read"),
        "{out}"
    );
    assert!(out.contains("verdict: 7 VIOLATIONS"), "{out}");

    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "not json\n{}\n").expect("write");
    let (code, _, err) = verify(&["check-only", "--history", junk.to_str().expect("path")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("junk.jsonl:1"), "{err}");
}
