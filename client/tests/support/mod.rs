//! Shared harness for the client's end-to-end tests: a real `runnel-broker` process on a free loopback port
//! with a temporary data dir, and helpers to run the `runnel` CLI against it.
//!
//! The broker binary is `$RUNNEL_BROKER_BIN` if set, else `target/debug/runnel-broker` of this workspace
//! (built with `cargo build -p runnel-broker` when missing). A broker that exits or never becomes healthy
//! fails the test.
//! Every wait is bounded; the process is killed and reaped on drop.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
}

pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RUNNEL_BROKER_BIN") {
        return PathBuf::from(p);
    }
    let path = target_dir().join("debug").join("runnel-broker");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "runnel-broker"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p runnel-broker failed");
    }
    assert!(path.exists(), "{} missing after building", path.display());
    path
}

pub fn cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_runnel"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub struct Broker {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker and waits (≤ 30 s) until `runnel cluster health` passes; panics otherwise. (Always
    /// `Some`: the `Option` remains from before the broker existed.)
    pub fn start() -> Option<Broker> {
        let mut b = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        b.spawn();
        b.wait_ready().then_some(b)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("log file");
        let child = Command::new(broker_bin())
            .arg("--listen")
            .arg(self.addr())
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runnel-broker");
        self.child = Some(child);
    }

    /// Polls until the broker is healthy; panics if it exits or the deadline passes.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("runnel-broker exited with {status}; log:\n{}", self.log());
            }
            if TcpStream::connect(self.addr()).is_ok() {
                let o = self.cli(&["cluster", "health"], None);
                if o.status.success() {
                    return true;
                }
            }
            assert!(
                Instant::now() < deadline,
                "broker not healthy within 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and data dir and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        assert!(self.wait_ready(), "restarted broker exited at once");
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// Runs `runnel --brokers <this> ARGS` with `stdin`, bounded by 60 s.
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_cli(&self.addr(), args, stdin)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the CLI with a 60 s bound (killed past it, so a hang fails the test instead of stalling it). Stdin is
/// written from its own thread and stdout/stderr drained concurrently, so large inputs cannot deadlock.
pub fn run_cli(brokers: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(cli_bin())
        .arg("--brokers")
        .arg(brokers)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runnel");
    let mut si = child.stdin.take().expect("stdin");
    let data = stdin.map(<[u8]>::to_vec).unwrap_or_default();
    let writer = std::thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o.expect("wait for runnel"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("runnel {args:?} did not finish within 60 s");
        }
    };
    let _ = writer.join();
    out
}

pub fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout_lines(o)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

pub fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}): stderr: {} stdout: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
}
