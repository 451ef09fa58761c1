//! Shared harness for the client's end-to-end tests: a real `runnel-broker` process on a free loopback port
//! with a temporary data dir, and helpers to run the `runnel` CLI against it.
//!
//! The broker binary is `$RUNNEL_BROKER_BIN` if set, else `target/debug/runnel-broker` of this workspace
//! (built with `cargo build -p runnel-broker` when missing). A broker binary that exits 0 at once without
//! listening is a skeleton without a server: the tests then skip with a message instead of failing.
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
    child: Child,
}

impl Broker {
    /// Starts a broker and waits (≤ 30 s) until `runnel cluster health` passes. `None`: the binary is a
    /// skeleton that exits at once (the test should skip).
    pub fn start() -> Option<Broker> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("log file");
        let child = Command::new(broker_bin())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runnel-broker");
        let mut b = Broker { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = b.child.try_wait() {
                if status.success() && TcpStream::connect(b.addr()).is_err() {
                    eprintln!("SKIP: runnel-broker exited at once without serving (no server yet)");
                    return None;
                }
                panic!("runnel-broker exited with {status}; log:\n{}", b.log());
            }
            if TcpStream::connect(b.addr()).is_ok() {
                let o = b.cli(&["cluster", "health"], None);
                if o.status.success() {
                    return Some(b);
                }
            }
            assert!(
                Instant::now() < deadline,
                "broker not healthy within 30 s; log:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
