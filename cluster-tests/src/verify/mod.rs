//! `runnel-verify`: a workload that records a history, and a final read that appends to it.
//!
//! Both talk to the cluster only through `runnel-client` (the final read sends `Fetch` requests on the
//! client's connection to one chosen broker, so it sees that broker's own copy of each partition).
//!
//! # Layout
//! - [`workload`]: `run` — producers, group consumers and one reader by assignment, every operation recorded.
//! - [`final_read`]: `check` — waits for the brokers' high watermarks to agree, then reads every partition
//!   from the log start through each broker and records what it found.
//!
//! Invariants: every loop is bounded by a deadline and a named count; every network wait is bounded by a
//! timeout; a timeout is recorded as indeterminate (`info`), never as `fail`.

pub mod final_read;
pub mod workload;

use std::time::Duration;

use runnel_client::{ClientConfig, ClientError, Cluster};
use tokio::time::Instant;

/// Pause between attempts to reach a cluster that is not answering yet.
pub const CONNECT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Bootstraps from `brokers` (a comma-separated list), retrying until `deadline`.
pub async fn connect(
    brokers: &str,
    request_timeout: Duration,
    deadline: Instant,
) -> Result<Cluster, ClientError> {
    let mut config = ClientConfig::new(brokers)?;
    config.client_id = "runnel-verify".into();
    config.request_timeout = request_timeout;
    loop {
        match Cluster::connect(config.clone()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.retriable() && Instant::now() + CONNECT_RETRY_BACKOFF < deadline => {
                tokio::time::sleep(CONNECT_RETRY_BACKOFF).await;
            }
            Err(e) => return Err(e),
        }
    }
}
