//! The `runnel-broker` binary as a process: configuration precedence (flag > env > file > default, observed
//! through `--print-config`), rejection of invalid settings, `--help`, SIGTERM → drain → exit 0, and
//! `runnel-broker dump` of a stopped broker's data dir.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_runnel-broker");

/// A command with no `RUNNEL_*` variables inherited from the test environment.
fn broker() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNEL_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG");
    c
}

fn printed(c: &mut Command) -> toml::Table {
    let out = c.arg("--print-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

fn get<'a>(t: &'a toml::Table, k: &str) -> &'a toml::Value {
    t.get(k)
        .unwrap_or_else(|| panic!("--print-config lacks {k}: {t:?}"))
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nnode-id = 5\nmax-connections = 77\nretention-ms = 1234\n",
    )
    .unwrap();

    // Default only.
    let t = printed(&mut broker());
    assert_eq!(get(&t, "listen").as_str(), Some("127.0.0.1:9292"));
    assert_eq!(get(&t, "advertise").as_str(), Some("127.0.0.1:9292"));
    assert_eq!(get(&t, "admin-listen").as_str(), Some("127.0.0.1:9644"));
    assert_eq!(get(&t, "data-dir").as_str(), Some("./runnel-data"));
    assert_eq!(get(&t, "node-id").as_integer(), Some(1));
    assert_eq!(get(&t, "max-connections").as_integer(), Some(10_000));
    assert_eq!(
        get(&t, "max-inflight-per-connection").as_integer(),
        Some(256)
    );

    // File beats default.
    let t = printed(broker().arg("--config").arg(&file));
    assert_eq!(get(&t, "listen").as_str(), Some("127.0.0.1:1111"));
    assert_eq!(get(&t, "node-id").as_integer(), Some(5));
    assert_eq!(get(&t, "retention-ms").as_integer(), Some(1234));

    // Env beats file (the file itself named through the environment too).
    let t = printed(
        broker()
            .env("RUNNEL_CONFIG", &file)
            .env("RUNNEL_LISTEN", "127.0.0.1:2222")
            .env("RUNNEL_RETENTION_MS", "-1"),
    );
    assert_eq!(get(&t, "listen").as_str(), Some("127.0.0.1:2222"));
    assert_eq!(get(&t, "retention-ms").as_integer(), Some(-1));
    assert_eq!(
        get(&t, "node-id").as_integer(),
        Some(5),
        "file still fills the rest"
    );

    // Flag beats env.
    let t = printed(
        broker()
            .env("RUNNEL_CONFIG", &file)
            .env("RUNNEL_LISTEN", "127.0.0.1:2222")
            .env("RUNNEL_MAX_CONNECTIONS", "88")
            .args(["--listen", "127.0.0.1:3333", "--max-connections", "99"]),
    );
    assert_eq!(get(&t, "listen").as_str(), Some("127.0.0.1:3333"));
    assert_eq!(get(&t, "max-connections").as_integer(), Some(99));
    assert_eq!(get(&t, "node-id").as_integer(), Some(5));
}

#[test]
fn invalid_settings_exit_2_naming_the_key() {
    for (args, env, key) in [
        (
            vec!["--max-inflight-per-connection", "0"],
            None,
            "max-inflight-per-connection",
        ),
        (
            vec![],
            Some(("RUNNEL_SEGMENT_BYTES", "12")),
            "segment-bytes",
        ),
        (vec!["--peers", "2@h:1"], None, "peers"),
        (vec!["--listen", "nowhere"], None, "listen"),
    ] {
        let mut c = broker();
        c.args(&args).arg("--print-config");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{args:?}: {err}");
    }
    // A clap-level error (not a number) also exits 2.
    let out = broker().args(["--node-id", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_every_setting() {
    let out = broker().arg("--help").output().unwrap();
    assert!(out.status.success());
    let h = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--data-dir",
        "--listen",
        "--advertise",
        "--admin-listen",
        "--node-id",
        "--peers",
        "--config",
        "--log-format",
        "--print-config",
        "--max-connections",
        "--max-inflight-per-connection",
        "--default-partitions",
        "--segment-bytes",
        "--retention-ms",
        "--retention-bytes",
    ] {
        assert!(h.contains(flag), "--help lacks {flag}");
    }
    assert!(h.contains("  dump "), "--help lacks the dump subcommand");
}

#[test]
fn peers_without_this_node_exit_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = broker()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--node-id",
            "3",
            "--peers",
        ])
        .arg("1@127.0.0.1:9292,2@127.0.0.1:9293")
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    // Configuration errors exit 2, naming the key.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must include this node (node-id 3)"), "{err}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = broker()
        .current_dir(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read log lines on a thread so a stuck broker fails the deadline instead of hanging the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listen = None;
    while listen.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("broker never logged that it serves");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log lines");
        if v["fields"]["message"] == "broker serving" {
            listen = v["fields"]["listen"].as_str().map(str::to_string);
        }
    }
    let addr: std::net::SocketAddr = listen.unwrap().parse().unwrap();
    // It serves, with its data in ./runnel-data of its working directory.
    assert!(std::net::TcpStream::connect(addr).is_ok());
    assert!(dir.path().join("runnel-data/metadata.json").is_file());
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The log pipe closes with the process; gather what was left in it.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.contains("drained")), "{rest:?}");
}

/// Issue 8, acceptance 4: `--print-config` output read back with `--config` prints the same configuration.
#[test]
fn print_config_round_trips_through_config() {
    let dir = tempfile::tempdir().unwrap();
    let first = broker()
        .args([
            "--listen",
            "127.0.0.1:7301",
            "--admin-listen",
            "127.0.0.1:7302",
            "--advertise",
            "broker-1.example:7301",
            "--node-id",
            "3",
            "--peers",
            "3@broker-1.example:7301",
            "--log-format",
            "json",
            "--max-connections",
            "123",
            "--max-inflight-per-connection",
            "17",
            "--default-partitions",
            "6",
            "--segment-bytes",
            "33554432",
            "--retention-ms",
            "-1",
            "--retention-bytes",
            "1073741824",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let file = dir.path().join("printed.toml");
    std::fs::write(&file, &first.stdout).unwrap();
    let second = broker()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(
        String::from_utf8(second.stdout).unwrap(),
        String::from_utf8(first.stdout).unwrap()
    );
    // The defaults round-trip too.
    let d1 = broker().arg("--print-config").output().unwrap();
    std::fs::write(&file, &d1.stdout).unwrap();
    let d2 = broker()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert_eq!(d1.stdout, d2.stdout);
}

/// Issue 8, acceptance 4: a segment size below the batch limit, or an unknown key in the file, is refused
/// at start with the key named.
#[test]
fn invalid_combinations_and_unknown_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let below = (runnel_protocol::limits::BATCH_SIZE_BYTES_MAX - 1).to_string();
    let out = broker()
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--segment-bytes", &below])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segment-bytes") && err.contains("batch limit"),
        "{err}"
    );
    assert!(!data.exists(), "refused before touching the data dir");

    let file = dir.path().join("b.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nsegment-size = 99999999\n").unwrap();
    let out = broker().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("segment-size"), "{err}");

    // A combination across sources: the file's retention is smaller than the flag's segment size.
    std::fs::write(&file, "retention-bytes = 20000000\n").unwrap();
    let out = broker()
        .arg("--config")
        .arg(&file)
        .args(["--segment-bytes", "30000000", "--print-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention-bytes"));
}

/// Every file under `dir` with its bytes (to prove `dump` writes nothing).
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn dump_cmd(data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    broker()
        .arg("dump")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .output()
        .unwrap()
}

fn dump_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Produces records into a real broker process, stops it with SIGTERM, and checks that `dump` prints
/// exactly those records (text and base64 fields, offsets, timestamps, a term), honours `--topic` /
/// `--partition`, refuses while the broker runs, and leaves every byte of the data dir as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_prints_the_records_of_a_stopped_broker() {
    use runnel_protocol::batch::RecordBatchBuilder;
    use runnel_protocol::messages::{CreatableTopic, CreateTopicsRequest};
    use runnel_protocol::{ErrorCode, Request, Response};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::fs::File::create(dir.path().join("broker.log")).unwrap();
    let mut child = broker()
        .args([
            "--listen",
            &addr.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let broker_log = || std::fs::read_to_string(dir.path().join("broker.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "broker exited: {}",
            broker_log()
        );
        assert!(
            Instant::now() < deadline,
            "broker never listened: {}",
            broker_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = common::Client::connect(addr).await;
    loop {
        let r = c
            .call(Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreatableTopic {
                    name: "dump-t".into(),
                    partitions: 2,
                    replication_factor: 1,
                    configs: vec![],
                }],
                timeout_ms: 5000,
                validate_only: false,
            }))
            .await;
        match r {
            Ok(Response::CreateTopics(r))
                if r.topics[0].error_code == 0
                    || common::code(r.topics[0].error_code) == ErrorCode::TopicAlreadyExists =>
            {
                break
            }
            other => assert!(Instant::now() < deadline, "create topic: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = RecordBatchBuilder::new(256);
    b.push(1000, Some(b"k1"), b"a", &[]);
    b.push(1001, None, b"b", &[]);
    let first = b.finish();
    let mut b = RecordBatchBuilder::new(256);
    b.push(2000, Some(b"k2"), b"c", &[]);
    let second = b.finish();
    let mut b = RecordBatchBuilder::new(256);
    b.push(3000, Some(&[0xff, 0xfe]), &[0x00, 0x9f], &[]);
    let binary = b.finish();
    for (partition, batch) in [(0, first), (0, second), (1, binary)] {
        loop {
            let r = c.produce("dump-t", partition, batch.clone()).await;
            if r.error_code == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "produce: {r:?}\n{}",
                broker_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(c);

    // While the broker runs, its data dir is locked: dump refuses, with a clear message.
    let out = dump_cmd(&data, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("running broker"), "{err}");
    assert!(out.stdout.is_empty());

    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("child pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(
                status.code(),
                Some(0),
                "exit after SIGTERM: {}",
                broker_log()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let before = snapshot(&data);
    let lines = dump_lines(&dump_cmd(&data, &[]));
    assert_eq!(snapshot(&data), before, "dump changed the data dir");
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert!(l["term"].as_u64().is_some_and(|t| t >= 1), "{l}");
    }
    let strip = |l: &serde_json::Value| {
        let mut l = l.clone();
        l.as_object_mut().unwrap().remove("term");
        l
    };
    let got: Vec<serde_json::Value> = lines.iter().map(strip).collect();
    let expected = vec![
        serde_json::json!({"topic":"dump-t","partition":0,"offset":0,"timestamp":1000,"key":"k1","value":"a"}),
        serde_json::json!({"topic":"dump-t","partition":0,"offset":1,"timestamp":1001,"key":null,"value":"b"}),
        serde_json::json!({"topic":"dump-t","partition":0,"offset":2,"timestamp":2000,"key":"k2","value":"c"}),
        serde_json::json!({"topic":"dump-t","partition":1,"offset":0,"timestamp":3000,"key_b64":"//4=","value_b64":"AJ8="}),
    ];
    assert_eq!(got, expected);

    // Filters.
    let only = dump_lines(&dump_cmd(&data, &["--topic", "dump-t", "--partition", "1"]));
    assert_eq!(only.iter().map(strip).collect::<Vec<_>>(), expected[3..]);
    let only = dump_lines(&dump_cmd(&data, &["--partition", "0"]));
    assert_eq!(only.iter().map(strip).collect::<Vec<_>>(), expected[..3]);
    let out = dump_cmd(&data, &["--topic", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    assert_eq!(snapshot(&data), before, "dump changed the data dir");
}
