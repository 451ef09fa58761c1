//! Issue 5 acceptance on a single real `runnel-broker` process: consumer groups with `runnel consume --group`
//! child processes (so `kill -9` is real) and in-process members where the test needs to see each commit's
//! acknowledgement.
//!
//! 1. Three members on six partitions: each partition owned by exactly one member; together they read
//!    exactly what was produced.
//! 2. `kill -9` of one member: its partitions move to the others within the session timeout; nothing is
//!    skipped; the redelivery count is reported.
//! 3. `kill -9` of the broker while members commit: after recovery every partition's committed offset is ≥ the
//!    last commit acknowledged before the kill, and the members finish the topic.
//! 4. A member frozen past its session timeout (a GC pause, SIGSTOP) is fenced: its commit is refused with
//!    `UNKNOWN_MEMBER_ID` and the new owner's progress stays.
//! 5. `group describe` shows the right lag while a producer runs; `reset-offsets --to-earliest` changes nothing
//!    without `--execute`, is refused while a member lives, and with `--execute` on an empty group makes the
//!    next member re-read from the start.

use rustix::process::Signal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_client::group::GroupAdmin;
use runnel_client::{
    Admin, ClientConfig, Cluster, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord,
};
use runnel_cluster_tests::{binary, Broker};
use runnel_protocol::messages::LATEST;
use runnel_protocol::ErrorCode;
use serde_json::Value;
use tokio::time::Instant;

async fn connect(b: &Broker) -> Cluster {
    assert!(
        b.wait_listening(Duration::from_secs(30)),
        "broker did not listen:\n{}",
        b.log_tail()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Cluster::connect(ClientConfig::new(&b.addr()).expect("broker list")).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "connect: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn create(cl: &Cluster, topic: &str, partitions: u32) {
    Admin::new(cl.clone())
        .create_topic(&NewTopic::new(topic, partitions))
        .await
        .expect("create topic");
}

/// Produces `per_partition` records into every partition (values `<tag>-<p>-<i>`); returns the values.
async fn produce(
    cl: &Cluster,
    topic: &str,
    partitions: u32,
    per_partition: usize,
    tag: &str,
) -> BTreeSet<String> {
    let p = Producer::new(cl.clone(), ProducerConfig::default()).expect("producer");
    let mut futs = Vec::new();
    let mut values = BTreeSet::new();
    for part in 0..partitions {
        for i in 0..per_partition {
            let v = format!("{tag}-{part}-{i}");
            futs.push(
                p.enqueue(ProducerRecord::new(topic, v.as_bytes()).partition(part))
                    .await
                    .expect("enqueue"),
            );
            values.insert(v);
        }
    }
    for f in futs {
        f.await.expect("acknowledged");
    }
    p.close().await;
    values
}

/// Runs the CLI to completion (bounded by 60 s).
fn cli(addr: &str, args: &[&str]) -> Output {
    let mut child = Command::new(binary("runnel"))
        .arg("--brokers")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runnel");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let t = std::thread::spawn(move || {
            let _ = std::io::Read::read_to_end(&mut BufReader::new(stderr), &mut err);
            err
        });
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stdout), &mut out);
        let status = child.wait().expect("wait runnel");
        let _ = tx.send(Output {
            status,
            stdout: out,
            stderr: t.join().unwrap_or_default(),
        });
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(o) => o,
        Err(_) => {
            send_signal(pid, Signal::KILL);
            panic!("runnel {args:?} did not finish within 60 s");
        }
    }
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn assert_ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `runnel --output json consume TOPIC --group G ...` child whose records are collected as they arrive.
struct Member {
    child: Child,
    records: Arc<Mutex<Vec<(u32, u64, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Member {
    fn spawn(addr: &str, topic: &str, group: &str, extra: &[&str]) -> Member {
        let mut child = Command::new(binary("runnel"))
            .args([
                "--brokers",
                addr,
                "--output",
                "json",
                "consume",
                topic,
                "--group",
                group,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn runnel consume");
        let out = child.stdout.take().expect("stdout");
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).expect("a JSON record per line");
                let rec = (
                    v["partition"].as_u64().expect("partition") as u32,
                    v["offset"].as_u64().expect("offset"),
                    v["value"].as_str().expect("value").to_string(),
                );
                sink.lock().expect("records").push(rec);
            }
        });
        Member {
            child,
            records,
            reader: Some(reader),
        }
    }

    fn records(&self) -> Vec<(u32, u64, String)> {
        self.records.lock().expect("records").clone()
    }

    fn signal(&self, sig: Signal) {
        send_signal(self.child.id(), sig);
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Who owns which partition, from `group describe` (via the library).
async fn owners(admin: &GroupAdmin, group: &str) -> BTreeMap<u32, String> {
    match admin.lag(group).await {
        Ok(rows) => rows
            .into_iter()
            .filter_map(|r| r.member.map(|m| (r.partition, m)))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn by_member(owners: &BTreeMap<u32, String>) -> BTreeMap<String, BTreeSet<u32>> {
    let mut m: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for (p, o) in owners {
        m.entry(o.clone()).or_default().insert(*p);
    }
    m
}

/// Acceptance 1 and 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_split_six_partitions_and_a_killed_member_loses_nothing() {
    const SESSION_MS: u64 = 3_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), &[]);
    let cl = connect(&broker).await;
    create(&cl, "acc", 6).await;
    let admin = GroupAdmin::new(cl.clone());
    let session = SESSION_MS.to_string();
    let extra = ["--from-beginning", "--session-timeout-ms", session.as_str()];
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::spawn(&broker.addr(), "acc", "g3", &extra))
        .collect();

    // 1. Each partition owned by exactly one member, two each.
    let deadline = Instant::now() + Duration::from_secs(30);
    let split = loop {
        let o = owners(&admin, "g3").await;
        let m = by_member(&o);
        if o.len() == 6 && m.len() == 3 && m.values().all(|ps| ps.len() == 2) {
            break m;
        }
        assert!(Instant::now() < deadline, "no 2/2/2 split: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut produced = produce(&cl, "acc", 6, 100, "one").await;
    wait_read(&members, &produced, "phase one").await;
    // Every partition was read by one member only, and each member read two partitions.
    let mut readers: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for (p, _, _) in m.records() {
            readers.entry(p).or_default().insert(i);
        }
    }
    assert_eq!(readers.len(), 6);
    assert!(
        readers.values().all(|r| r.len() == 1),
        "a partition read by two members: {readers:?}"
    );
    let total: usize = members.iter().map(|m| m.records().len()).sum();
    assert_eq!(
        total,
        produced.len(),
        "a record was read twice before any failure"
    );

    // 2. Let every member commit phase one (automatic commit, every 5 s), read phase two, then kill -9 one:
    // its partitions move to the others within the session timeout, and only what it read since its last
    // commit is delivered again.
    let victim_parts: BTreeSet<u32> = readers
        .iter()
        .filter(|(_, r)| r.contains(&2))
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(victim_parts.len(), 2, "split was {split:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = admin.committed_offsets("g3").await.unwrap_or_default();
        if c.len() == 6 && c.values().all(|&o| o == 100) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "phase one never committed: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produced.extend(produce(&cl, "acc", 6, 100, "two").await);
    wait_read(&members, &produced, "phase two").await;
    members[2].signal(Signal::KILL);
    let status = members[2]
        .wait(Duration::from_secs(10))
        .expect("killed member exits");
    assert_eq!(status.signal(), Some(Signal::KILL.as_raw()));
    let killed = Instant::now();
    let committed_at_kill = admin.committed_offsets("g3").await.expect("offsets");
    produced.extend(produce(&cl, "acc", 6, 100, "three").await);
    let moved = loop {
        let m = by_member(&owners(&admin, "g3").await);
        if m.len() == 2 && m.values().map(|ps| ps.len()).sum::<usize>() == 6 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_millis(SESSION_MS) + Duration::from_secs(3),
            "partitions did not move within the session timeout: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "partitions of the killed member moved after {moved:?} (session timeout {SESSION_MS} ms)"
    );
    wait_read(&members, &produced, "after the kill").await;
    let total: usize = members.iter().map(|m| m.records().len()).sum();
    let redelivered = total - produced.len();
    eprintln!(
        "redelivery after kill -9 of one of three members: {redelivered} of {} records read twice \
         (the victim had committed {:?})",
        produced.len(),
        victim_parts
            .iter()
            .map(|p| committed_at_kill.get(&("acc".to_string(), *p)))
            .collect::<Vec<_>>()
    );
    // Only records of the victim's partitions at or after its last commit are read again.
    let mut count: HashMap<(u32, u64), usize> = HashMap::new();
    for (p, o, _) in members.iter().flat_map(|m| m.records()) {
        *count.entry((p, o)).or_default() += 1;
    }
    for ((p, o), n) in &count {
        let since = committed_at_kill
            .get(&("acc".to_string(), *p))
            .copied()
            .unwrap_or(0);
        assert!(
            *n == 1 || (victim_parts.contains(p) && *o >= since),
            "{p}/{o} read {n} times without a failure behind it"
        );
    }

    // The survivors exit cleanly on SIGTERM, committing what they printed and leaving.
    for m in &members[..2] {
        m.signal(Signal::TERM);
    }
    for m in &mut members[..2] {
        let status = m
            .wait(Duration::from_secs(15))
            .expect("member exits on SIGTERM");
        assert_eq!(status.code(), Some(0), "member did not exit 0 on SIGTERM");
    }
    let rows = admin.lag("g3").await.expect("describe");
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert_eq!(
            (r.committed_offset, r.lag, r.member),
            (Some(300), Some(0), None),
            "{}",
            r.partition
        );
    }
}

/// Waits (≤ 30 s) until the members together have read exactly the produced values (nothing skipped,
/// nothing invented).
async fn wait_read(members: &[Member], produced: &BTreeSet<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read: BTreeSet<String> = members
            .iter()
            .flat_map(|m| m.records())
            .map(|r| r.2)
            .collect();
        if read == *produced {
            return;
        }
        assert!(
            read.is_subset(produced),
            "{what}: read something never produced"
        );
        assert!(
            Instant::now() < deadline,
            "{what}: read {} of {}",
            read.len(),
            produced.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acceptance 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_broker_kill_9_and_never_go_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Broker::start(dir.path(), &[]);
    let cl = connect(&broker).await;
    create(&cl, "dur", 4).await;

    // A producer keeps writing (errors while the broker is down are retried; only acks are counted).
    let stop = Arc::new(AtomicBool::new(false));
    let stop_members = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let producer = {
        let (cl, stop, acked) = (cl.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let p = Producer::new(cl, ProducerConfig::default()).expect("producer");
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // Windows of 20 in flight, about a thousand records a second.
                let mut window = Vec::with_capacity(20);
                for _ in 0..20 {
                    let v = format!("r-{i}");
                    let rec = ProducerRecord::new("dur", v.as_bytes()).partition((i % 4) as u32);
                    i += 1;
                    match p.enqueue(rec).await {
                        Ok(f) => window.push((v, f)),
                        Err(_) => break,
                    }
                }
                let mut failed = window.is_empty();
                for (v, f) in window {
                    match f.await {
                        Ok(_) => {
                            acked.lock().expect("acked").insert(v);
                        }
                        Err(_) => failed = true,
                    }
                }
                let pause = if failed { 50 } else { 20 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            p.close().await;
        })
    };

    // Two members commit after every small poll; each acknowledged commit raises the floor.
    let floor: Arc<Mutex<BTreeMap<u32, u64>>> = Arc::default();
    let read: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let commits = Arc::new(AtomicUsize::new(0));
    let members: Vec<_> = (0..2)
        .map(|_| {
            let (cl, stop, floor, read, commits) = (
                cl.clone(),
                stop_members.clone(),
                floor.clone(),
                read.clone(),
                commits.clone(),
            );
            tokio::spawn(async move {
                let mut cfg = GroupConfig::new("dg");
                cfg.offset_reset = OffsetReset::Earliest;
                cfg.auto_commit = false;
                cfg.session_timeout = Duration::from_secs(3);
                let mut gc = GroupConsumer::subscribe(cl, &["dur"], cfg)
                    .await
                    .expect("subscribe");
                gc.set_max_poll_records(20);
                while !stop.load(Ordering::SeqCst) {
                    let recs = gc.poll(Duration::from_millis(100)).await.expect("poll");
                    {
                        let mut r = read.lock().expect("read");
                        for rec in &recs {
                            r.insert(
                                String::from_utf8_lossy(rec.value.as_deref().unwrap_or_default())
                                    .into(),
                            );
                        }
                    }
                    let positions: Vec<(u32, u64)> = gc
                        .assignment()
                        .iter()
                        .filter_map(|(t, p)| gc.position(t, *p).map(|o| (*p, o)))
                        .collect();
                    if gc.commit().await.is_ok() {
                        commits.fetch_add(1, Ordering::SeqCst);
                        let mut f = floor.lock().expect("floor");
                        for (p, o) in positions {
                            let e = f.entry(p).or_insert(0);
                            *e = (*e).max(o);
                        }
                    }
                }
                gc.close().await.expect("close");
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    // Kill while commits are flowing: at least 30 acknowledged and every partition past offset 200.
    while commits.load(Ordering::SeqCst) < 30 || {
        let f = floor.lock().expect("floor");
        f.len() < 4 || f.values().any(|&o| o < 200)
    } {
        assert!(Instant::now() < deadline, "members are not committing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.kill9();
    // Whatever was acknowledged up to now (including answers already on the wire) must survive.
    let before: BTreeMap<u32, u64> = floor.lock().expect("floor").clone();
    broker.restart();
    let _ = connect(&broker).await;
    let admin = GroupAdmin::new(cl.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match admin.committed_offsets("dg").await {
            Ok(c) if c.len() == 4 => break c,
            other => assert!(
                Instant::now() < deadline,
                "offsets after restart: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (p, o) in &before {
        let now = after[&("dur".to_string(), *p)];
        assert!(
            now >= *o,
            "partition {p}: committed {now} after recovery < {o} acknowledged before the kill"
        );
    }
    eprintln!("committed before kill -9: {before:?}; after recovery: {after:?}");

    // The members rejoin and finish: every acknowledged record is read, commits reach the end.
    stop.store(true, Ordering::SeqCst);
    producer.await.expect("producer task");
    let hwm = admin.topic_offsets("dur", LATEST).await.expect("hwm");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let r = read.lock().expect("read");
            acked
                .lock()
                .expect("acked")
                .iter()
                .filter(|v| !r.contains(*v))
                .count()
        };
        let committed = admin.committed_offsets("dg").await.unwrap_or_default();
        let done = (0..4).all(|p| committed.get(&("dur".to_string(), p)) == hwm.get(&p));
        if missing == 0 && done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after recovery: {missing} acknowledged records unread, committed {committed:?} vs {hwm:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_members.store(true, Ordering::SeqCst);
    for m in members {
        m.await.expect("member task");
    }
}

/// Acceptance 4: a member frozen past its session timeout is fenced; its commit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_from_a_fenced_member_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), &[]);
    let cl = connect(&broker).await;
    create(&cl, "fz", 2).await;
    produce(&cl, "fz", 2, 10, "a").await;

    // Member A runs on its own single-threaded runtime, so blocking that thread freezes A entirely
    // (heartbeats included), like a long GC pause or SIGSTOP.
    let (frozen_tx, frozen_rx) = std::sync::mpsc::channel::<()>();
    let (resume_tx, resume_rx) = std::sync::mpsc::channel::<()>();
    let addr = broker.addr();
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cl = Cluster::connect(ClientConfig::new(&addr).expect("list"))
                .await
                .expect("connect");
            let mut cfg = GroupConfig::new("fg");
            cfg.offset_reset = OffsetReset::Earliest;
            cfg.auto_commit = false;
            cfg.session_timeout = Duration::from_secs(1);
            let mut a = GroupConsumer::subscribe(cl, &["fz"], cfg)
                .await
                .expect("subscribe");
            let mut n = 0;
            let deadline = Instant::now() + Duration::from_secs(20);
            while n < 20 {
                assert!(Instant::now() < deadline, "A read {n} of 20");
                n += a
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll")
                    .len();
            }
            // Committed: 5 per partition; read (and about to commit): 10.
            a.commit_offsets(&[("fz", 0, 5), ("fz", 1, 5)])
                .await
                .expect("commit 5");
            frozen_tx.send(()).expect("main waits");
            resume_rx.recv().expect("main resumes us"); // blocks the runtime: A is frozen
            let refused = a.commit().await;
            let _ = a.close().await;
            refused
        })
    });
    frozen_rx.recv().expect("A froze");

    // B takes over after A's session expires, reads on from A's commit and commits further.
    produce(&cl, "fz", 2, 10, "b").await;
    let mut cfg = GroupConfig::new("fg");
    cfg.auto_commit = false;
    let mut b = GroupConsumer::subscribe(cl.clone(), &["fz"], cfg)
        .await
        .expect("subscribe B");
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while n < 30 {
        assert!(
            Instant::now() < deadline,
            "B read {n} of 30 (A's partitions never moved?)"
        );
        let recs = b.poll(Duration::from_millis(100)).await.expect("poll B");
        assert!(
            recs.iter().all(|r| r.offset >= 5),
            "B started below A's commit"
        );
        n += recs.len();
    }
    b.commit().await.expect("B commits");
    let admin = GroupAdmin::new(cl.clone());
    let want: BTreeMap<(String, u32), u64> = (0..2).map(|p| (("fz".to_string(), p), 20)).collect();
    assert_eq!(admin.committed_offsets("fg").await.expect("offsets"), want);

    // A wakes up and commits its stale positions (10): refused, and B's progress stays.
    resume_tx.send(()).expect("A waits");
    let refused = a.join().expect("A's thread");
    let e = refused.expect_err("a fenced member's commit must be refused");
    assert_eq!(e.code(), Some(ErrorCode::UnknownMemberId), "{e}");
    assert!(e.to_string().contains("commit refused"), "{e}");
    eprintln!("fenced commit: {e}");
    assert_eq!(admin.committed_offsets("fg").await.expect("offsets"), want);
    b.close().await.expect("close B");
}

/// Acceptance 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_lag_under_load_and_reset_offsets_re_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path(), &[]);
    let cl = connect(&broker).await;
    create(&cl, "lag", 3).await;
    produce(&cl, "lag", 3, 10, "x").await;
    let addr = broker.addr();
    let o = cli(
        &addr,
        &[
            "consume",
            "lag",
            "--group",
            "lg",
            "--from-beginning",
            "--max-messages",
            "15",
            "--timeout-ms",
            "20000",
        ],
    );
    assert_ok(&o, "consume 15");
    let admin = GroupAdmin::new(cl.clone());
    let committed = admin.committed_offsets("lg").await.expect("offsets");
    assert_eq!(
        committed.values().sum::<u64>(),
        15,
        "commits what it printed: {committed:?}"
    );

    // A producer runs while we describe.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (cl, stop) = (cl.clone(), stop.clone());
        tokio::spawn(async move {
            let p = Producer::new(cl, ProducerConfig::default()).expect("producer");
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let v = format!("y-{i}");
                p.send("lag", None, v.as_bytes(), &[], Some(i % 3))
                    .await
                    .expect("ack");
                i += 1;
            }
            p.close().await;
        })
    };
    let mut grew = false;
    for _ in 0..5 {
        let lo = admin.topic_offsets("lag", LATEST).await.expect("hwm");
        let o = cli(&addr, &["--output", "json", "group", "describe", "lg"]);
        let hi = admin.topic_offsets("lag", LATEST).await.expect("hwm");
        assert_ok(&o, "describe");
        let rows = json_lines(&o);
        assert_eq!(rows.len(), 3, "{rows:?}");
        for r in &rows {
            let p = r["partition"].as_u64().expect("partition") as u32;
            let c = committed.get(&("lag".to_string(), p)).copied();
            let end = r["log_end_offset"].as_u64().expect("log end");
            assert_eq!(r["committed_offset"].as_u64(), c);
            assert!(
                lo[&p] <= end && end <= hi[&p],
                "log end {end} outside [{}, {}]",
                lo[&p],
                hi[&p]
            );
            assert_eq!(r["lag"].as_u64(), c.map(|c| end - c));
            assert!(r["member"].is_null());
            grew |= hi[&p] > lo[&p];
        }
    }
    assert!(
        grew,
        "the producer never advanced a log end during a describe"
    );
    stop.store(true, Ordering::SeqCst);
    producer.await.expect("producer");
    let hwm = admin.topic_offsets("lag", LATEST).await.expect("hwm");
    let rows = json_lines(&cli(
        &addr,
        &["--output", "json", "group", "describe", "lg"],
    ));
    for r in &rows {
        let p = r["partition"].as_u64().expect("partition") as u32;
        let c = committed.get(&("lag".to_string(), p)).copied();
        assert_eq!(r["lag"].as_u64(), c.map(|c| hwm[&p] - c));
    }

    // A live member: it owns every partition; --execute is refused, nothing changes.
    let mut m = Member::spawn(&addr, "lag", "lg", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while owners(&admin, "lg").await.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "member never owned the partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = cli(
        &addr,
        &[
            "group",
            "reset-offsets",
            "lg",
            "--topic",
            "lag",
            "--to-earliest",
            "--execute",
        ],
    );
    assert!(!o.status.success(), "reset executed while a member lives");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("GROUP_NOT_EMPTY"), "{err}");
    // The member reads the rest, commits it on SIGTERM and leaves.
    let total: u64 = hwm.values().sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (m.records().len() as u64) < total - 15 {
        assert!(
            Instant::now() < deadline,
            "member read {} of {}",
            m.records().len(),
            total - 15
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    m.signal(Signal::TERM);
    let status = m
        .wait(Duration::from_secs(15))
        .expect("member exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let at_end: BTreeMap<(String, u32), u64> = hwm
        .iter()
        .map(|(p, o)| (("lag".to_string(), *p), *o))
        .collect();
    assert_eq!(
        admin.committed_offsets("lg").await.expect("offsets"),
        at_end
    );

    // Dry run: the plan, and no change.
    let o = cli(
        &addr,
        &[
            "--output",
            "json",
            "group",
            "reset-offsets",
            "lg",
            "--topic",
            "lag",
            "--to-earliest",
        ],
    );
    assert_ok(&o, "dry run");
    for r in json_lines(&o) {
        let p = r["partition"].as_u64().expect("partition") as u32;
        assert_eq!(r["current_offset"].as_u64(), Some(hwm[&p]));
        assert_eq!(r["new_offset"].as_u64(), Some(0));
        assert_eq!(r["executed"], false);
    }
    assert_eq!(
        admin.committed_offsets("lg").await.expect("offsets"),
        at_end
    );
    // Execute on the empty group: the next member re-reads everything from offset 0.
    assert_ok(
        &cli(
            &addr,
            &[
                "group",
                "reset-offsets",
                "lg",
                "--topic",
                "lag",
                "--to-earliest",
                "--execute",
            ],
        ),
        "reset --execute",
    );
    let o = cli(
        &addr,
        &[
            "--output",
            "json",
            "consume",
            "lag",
            "--group",
            "lg",
            "--timeout-ms",
            "3000",
        ],
    );
    assert_ok(&o, "re-read");
    let recs = json_lines(&o);
    assert_eq!(recs.len() as u64, total);
    let mut next: BTreeMap<u64, u64> = BTreeMap::new();
    for r in &recs {
        let p = r["partition"].as_u64().expect("partition");
        let e = next.entry(p).or_insert(0);
        assert_eq!(
            r["offset"].as_u64(),
            Some(*e),
            "partition {p} not re-read from the start in order"
        );
        *e += 1;
    }
}

/// Sends `sig` to a child process we spawned (a no-op if it is already gone).
fn send_signal(pid: u32, sig: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
