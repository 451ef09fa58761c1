//! `runnel dev` end to end: the real `runnel` binary starts real `runnel-broker` processes; the cluster serves an
//! RF=3 topic through the printed `--brokers` list; SIGTERM or SIGINT to `runnel dev` stops every broker and
//! exits 0.
//!
//! Every wait is bounded by a deadline; a `runnel dev` left running by a failed test is stopped (SIGTERM, then
//! SIGKILL to it and to every broker pid it printed) when its guard drops.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};
use support::{assert_ok, broker_bin, cli_bin, run_cli, stdout_lines};

/// Bound for `runnel dev` to print `ready` (its own readiness bound is 60 s).
const READY_DEADLINE: Duration = Duration::from_secs(90);
/// Bound for `runnel dev` to exit after the signal (its own stop bound is 30 s).
const EXIT_DEADLINE: Duration = Duration::from_secs(60);

/// A running `runnel dev` and what it printed so far.
struct Dev {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    broker_pids: Vec<i32>,
    stderr: PathBuf,
}

impl Dev {
    fn start(args: &[&str], stderr: &Path) -> Dev {
        let mut cmd = Command::new(cli_bin());
        cmd.arg("dev").args(args);
        let bin = broker_bin();
        let beside = cli_bin().with_file_name("runnel-broker");
        if bin != beside {
            cmd.arg("--broker-bin").arg(&bin);
        }
        let mut child = cmd
            .env_remove("RUNNEL_BROKER_BIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).expect("stderr file"))
            .spawn()
            .expect("spawn runnel dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child,
            lines: rx,
            seen: Vec::new(),
            broker_pids: Vec::new(),
            stderr: stderr.to_path_buf(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Reads lines until `ready`; panics past the deadline or if `runnel dev` exits first.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => panic!(
                    "no `ready` within {READY_DEADLINE:?}; stdout {:?}; stderr {}",
                    self.seen,
                    self.stderr()
                ),
            };
            if let Some(pid) = line
                .strip_prefix("node ")
                .and_then(|r| r.split(" pid ").nth(1))
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse().ok())
            {
                self.broker_pids.push(pid);
            }
            self.seen.push(line.clone());
            if line == "ready" {
                return;
            }
        }
    }

    /// The printed `--brokers` list.
    fn brokers(&self) -> String {
        self.seen
            .iter()
            .find_map(|l| l.strip_prefix("--brokers "))
            .unwrap_or_else(|| panic!("no --brokers line in {:?}", self.seen))
            .to_string()
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("pid");
        kill_process(pid, sig).expect("signal runnel dev");
    }

    /// Waits for `runnel dev` to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + EXIT_DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(l);
                }
                return s.code();
            }
            assert!(
                Instant::now() < deadline,
                "runnel dev still running {EXIT_DEADLINE:?} after the signal; stderr {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(Signal::TERM);
            let deadline = Instant::now() + EXIT_DEADLINE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for &p in &self.broker_pids {
            if let Some(pid) = Pid::from_raw(p) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| test_kill_process(p).is_ok())
}

/// The brief's scenario: 3 nodes, an RF=3 topic, produce and consume through the printed list, SIGTERM.
#[test]
fn dev_three_nodes_serve_rf3_and_sigterm_stops_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    let mut dev = Dev::start(
        &[
            "--nodes",
            "3",
            "--data-dir",
            data.to_str().unwrap(),
            "--base-port",
            "0",
        ],
        &tmp.path().join("dev.stderr"),
    );
    dev.wait_ready();
    assert_eq!(dev.broker_pids.len(), 3, "{:?}", dev.seen);
    assert!(dev.broker_pids.iter().all(|&p| alive(p)));
    let brokers = dev.brokers();
    let addrs: Vec<String> = brokers.split(',').map(str::to_string).collect();
    assert_eq!(addrs.len(), 3);

    assert_ok(
        &run_cli(
            &brokers,
            &[
                "topic",
                "create",
                "t",
                "--partitions",
                "2",
                "--replication-factor",
                "3",
            ],
            None,
        ),
        "topic create",
    );
    let o = run_cli(
        &brokers,
        &["produce", "t", "--acks", "all"],
        Some(b"a\nb\nc\n"),
    );
    assert_ok(&o, "produce");
    assert_eq!(stdout_lines(&o).len(), 3, "{:?}", stdout_lines(&o));
    let o = run_cli(
        &brokers,
        &[
            "consume",
            "t",
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

    dev.signal(Signal::TERM);
    assert_eq!(dev.wait_exit(), Some(0), "stderr {}", dev.stderr());
    assert_eq!(dev.seen.last().map(String::as_str), Some("stopped"));
    for &p in &dev.broker_pids {
        assert!(!alive(p), "broker pid {p} still alive");
    }
    for a in &addrs {
        assert!(
            std::net::TcpStream::connect(a).is_err(),
            "{a} still listening"
        );
    }
    // A given data dir is kept, with each node's data and log in it.
    for id in 1..=3 {
        let node = data.join(format!("node-{id}"));
        assert!(node.join("broker.log").is_file(), "{}", node.display());
        assert!(node.join("partitions").is_dir(), "{}", node.display());
        // Stopped by SIGTERM (a clean drain), not killed.
        let log = std::fs::read_to_string(node.join("broker.log")).unwrap();
        assert!(log.contains("drained"), "node {id} did not drain: {log}");
    }
}

/// Ctrl-C (SIGINT) stops a one-node cluster too, and a temporary data dir is removed.
#[test]
fn dev_sigint_stops_and_removes_a_temporary_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(
        &["--nodes", "1", "--base-port", "0"],
        &tmp.path().join("dev.stderr"),
    );
    dev.wait_ready();
    let root = dev
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("data dir: "))
        .and_then(|l| l.strip_suffix(" (temporary, removed at exit)"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no temporary data dir line in {:?}", dev.seen));
    assert!(root.join("node-1").is_dir());
    let o = run_cli(&dev.brokers(), &["cluster", "health"], None);
    assert_ok(&o, "cluster health");
    dev.signal(Signal::INT);
    assert_eq!(dev.wait_exit(), Some(0), "stderr {}", dev.stderr());
    assert!(dev.broker_pids.iter().all(|&p| !alive(p)));
    assert!(!root.exists(), "{} not removed", root.display());
}

/// A broker executable that does not exist is a one-line error and exit 1, before anything starts.
#[test]
fn dev_without_a_broker_binary_fails_clearly() {
    let o = Command::new(cli_bin())
        .args(["dev", "--broker-bin", "/nonexistent/runnel-broker"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/runnel-broker"), "{err}");
    assert!(o.stdout.is_empty());
}
