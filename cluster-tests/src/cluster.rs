//! [`Cluster`]: N real `runnel-broker` processes on loopback forming one cluster (`--node-id`, `--peers`),
//! each with its own data dir, port and log; node `i` (1-based) is `brokers[i - 1]`.
//!
//! Invariants: as for [`Broker`]: every process dies with the harness; waits are bounded by deadlines.

use std::path::Path;
use std::time::{Duration, Instant};

use runnel_client::{Admin, ClientConfig, Cluster as Client};

use crate::{free_port, Broker};

/// A multi-node cluster of broker processes.
pub struct Cluster {
    pub brokers: Vec<Broker>,
}

impl Cluster {
    /// Starts `n` brokers under `dir` (`dir/n1`, `dir/n2`, ...) with `extra_args` each.
    pub fn start(dir: &Path, n: usize, extra_args: &[&str]) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peers = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let brokers = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let node_dir = dir.join(format!("n{}", i + 1));
                let _ = std::fs::create_dir_all(&node_dir);
                let id = (i + 1).to_string();
                let advertise = format!("127.0.0.1:{port}");
                let mut args: Vec<&str> = vec![
                    "--node-id",
                    &id,
                    "--advertise",
                    &advertise,
                    "--peers",
                    &peers,
                ];
                args.extend_from_slice(extra_args);
                Broker::start_on(&node_dir, *port, &args)
            })
            .collect();
        Cluster { brokers }
    }

    /// The broker with node id `id`.
    pub fn node(&mut self, id: u32) -> &mut Broker {
        &mut self.brokers[id as usize - 1]
    }

    /// Every broker's address, comma-separated (a bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.addr())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every broker listens.
    pub fn wait_listening(&self, timeout: Duration) -> bool {
        self.brokers.iter().all(|b| b.wait_listening(timeout))
    }

    /// The last lines of every broker's log (for failure messages).
    pub fn logs(&self) -> String {
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, b)| format!("--- node {} ---\n{}", i + 1, b.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A client bootstrapped from every broker.
    pub async fn client(&self) -> Client {
        connect(&self.bootstrap()).await
    }

    /// Waits until the cluster has a controller and every partition of `topic` a leader (as `via` sees
    /// it), up to `timeout`; true if so.
    pub async fn wait_leaders(&self, via: &Client, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(m) = via.refresh_metadata().await {
                if let Some(t) = m.topic(topic) {
                    if t.partitions.iter().all(|p| p.leader.is_some()) {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Creates `topic` (retrying while the cluster elects its controller) unless it exists.
    pub async fn create_topic(&self, via: &Client, topic: &runnel_client::NewTopic) {
        let admin = Admin::new(via.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match admin.create_topic(topic).await {
                Ok(()) => return,
                Err(e) if e.code() == Some(runnel_protocol::ErrorCode::TopicAlreadyExists) => {
                    return
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "create topic: {e}\n{}",
                    self.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Connects a client to `bootstrap`, retrying for up to 30 s (brokers may still be starting).
pub async fn connect(bootstrap: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(ClientConfig::new(bootstrap).expect("valid broker list")).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "connect {bootstrap}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
