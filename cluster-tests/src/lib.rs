//! Multi-process test harness: real `runnel-broker` processes on loopback ports with their own data dirs,
//! which tests can `kill -9`, SIGSTOP/SIGCONT and restart.
//!
//! # Layout
//! - this file: the process harness ([`Broker`], [`binary`], [`free_port`]).
//! - [`history`]: the JSONL history of operations `runnel-verify` records (events, writer, reader).
//! - [`checker`]: the pure history checker ([`checker::check`] → [`checker::Report`]).
//! - [`verify`]: the `runnel-verify` workload (`run`) and the final read through each broker (`check`).
//!
//! Invariants: every spawned process is killed and reaped when its [`Broker`] is dropped, so a failing test
//! never leaks brokers; every wait is bounded by an explicit deadline.

pub mod checker;
pub mod history;
pub mod verify;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod cluster;
pub use cluster::Cluster;

/// The workspace's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
}

/// Path of a workspace binary in the debug profile, building the workspace's binaries once if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins"])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the workspace binaries failed");
    }
    assert!(path.exists(), "{} not found after building", path.display());
    path
}

/// A free loopback port (bound then released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// One broker process.
pub struct Broker {
    pub port: u16,
    /// The admin HTTP port (`/metrics`, `/health/*`).
    pub admin_port: u16,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl Broker {
    /// Starts a single-node broker on a free port with its data under `dir`.
    pub fn start(dir: &Path, extra_args: &[&str]) -> Broker {
        Broker::start_on(dir, free_port(), extra_args)
    }

    /// Starts a broker on `port` with its data under `dir`.
    pub fn start_on(dir: &Path, port: u16, extra_args: &[&str]) -> Broker {
        let mut b = Broker {
            port,
            admin_port: free_port(),
            data_dir: dir.join("data"),
            log_path: dir.join("broker.log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open broker log");
        let child = Command::new(binary("runnel-broker"))
            .arg("--listen")
            .arg(self.addr())
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{}", self.admin_port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn runnel-broker");
        self.child = Some(child);
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The value of the unlabelled Prometheus metric `name` on the broker's admin endpoint, if it answers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (TERM, STOP, CONT, ...) to the running process.
    pub fn signal(&self, sig: rustix::process::Signal) {
        if let Some(pid) = self
            .pid()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, sig);
        }
    }

    /// Waits for the process to exit on its own, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return status.code();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts the process again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits until the broker accepts TCP connections, up to `timeout`.
    pub fn wait_listening(&self, timeout: Duration) -> bool {
        let addr: SocketAddr = self.addr().parse().expect("valid addr");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// The broker's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let keep = std::env::var("RUNNEL_TEST_LOG_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        lines[lines.len().saturating_sub(keep)..].join("\n")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}
