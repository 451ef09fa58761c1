//! Issue 8 acceptance 2 in a cluster: a broker is not ready (`/health/ready` 503) while it cannot have
//! joined — no controller, the other brokers of `--peers` not up — and becomes ready once they are.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use runnel_cluster_tests::{free_port, Broker};

/// `GET path` on `addr`; the status code and body (None if the endpoint does not answer).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

#[test]
fn a_broker_is_ready_only_once_the_cluster_has_formed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let args = |id: u32| {
        vec![
            "--node-id".to_string(),
            id.to_string(),
            "--advertise".to_string(),
            format!("127.0.0.1:{}", ports[id as usize - 1]),
            "--peers".to_string(),
            peers.clone(),
        ]
    };
    // Node 1 alone, with a known admin port.
    let n1_dir = dir.path().join("n1");
    std::fs::create_dir_all(&n1_dir).expect("dir");
    let mut child = std::process::Command::new(runnel_cluster_tests::binary("runnel-broker"))
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--admin-listen", &admin_addr])
        .arg("--data-dir")
        .arg(n1_dir.join("data"))
        .args(args(1))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn node 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(r) = get(&admin_addr, "/health/ready") {
            break r;
        }
        assert!(Instant::now() < deadline, "admin endpoint never answered");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first.0, 503, "ready without peers: {}", first.1);
    // Still not ready over a couple of election timeouts: alone it can elect nothing.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(500));
        let (code, body) = get(&admin_addr, "/health/ready").expect("answers");
        assert_eq!(code, 503, "{body}");
    }
    for n in ["n2", "n3"] {
        std::fs::create_dir_all(dir.path().join(n)).expect("dir");
    }
    let _n2 = Broker::start_on(
        &dir.path().join("n2"),
        ports[1],
        &args(2).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let _n3 = Broker::start_on(
        &dir.path().join("n3"),
        ports[2],
        &args(3).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, _)) = get(&admin_addr, "/health/ready") {
            break;
        }
        assert!(Instant::now() < deadline, "node 1 never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
