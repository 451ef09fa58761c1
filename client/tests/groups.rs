//! Consumer groups end to end against a real `runnel-broker`: the library's [`GroupConsumer`] (cooperative
//! hand-over, commits, reset policy, static membership) and the `runnel consume --group` / `runnel group`
//! command lines.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_client::group::GroupAdmin;
use runnel_client::{
    Admin, ClientConfig, Cluster, GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener, TopicPartition,
};
use support::{assert_ok, json_lines, stdout_lines, Broker};
use tokio::time::Instant;

async fn cluster(b: &Broker) -> Cluster {
    Cluster::connect(ClientConfig::new(&b.addr()).unwrap())
        .await
        .unwrap()
}

async fn create(cl: &Cluster, topic: &str, partitions: u32) {
    Admin::new(cl.clone())
        .create_topic(&NewTopic::new(topic, partitions))
        .await
        .unwrap();
}

/// Produces `n` records into each of `partitions`, values `<tag>-<p>-<i>`.
async fn produce(cl: &Cluster, topic: &str, partitions: u32, n: usize, tag: &str) {
    let p = Producer::new(cl.clone(), ProducerConfig::default()).unwrap();
    let mut futs = Vec::new();
    for part in 0..partitions {
        for i in 0..n {
            let v = format!("{tag}-{part}-{i}");
            futs.push(
                p.enqueue(ProducerRecord::new(topic, v.as_bytes()).partition(part))
                    .await
                    .unwrap(),
            );
        }
    }
    for f in futs {
        f.await.unwrap();
    }
    p.close().await;
}

/// Listener calls in order: ("assigned" | "revoked" | "lost", partitions).
type Events = Vec<(String, Vec<u32>)>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Events>>);

impl Recorder {
    fn events(&self) -> Events {
        self.0.lock().unwrap().clone()
    }
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, tps: &[TopicPartition]) {
        let ps = tps.iter().map(|(_, p)| *p).collect();
        self.0.lock().unwrap().push(("assigned".into(), ps));
    }
    fn on_revoked(&mut self, tps: &[TopicPartition]) {
        let ps = tps.iter().map(|(_, p)| *p).collect();
        self.0.lock().unwrap().push(("revoked".into(), ps));
    }
    fn on_lost(&mut self, tps: &[TopicPartition]) {
        let ps = tps.iter().map(|(_, p)| *p).collect();
        self.0.lock().unwrap().push(("lost".into(), ps));
    }
}

fn held(c: &GroupConsumer) -> BTreeSet<u32> {
    c.assignment().into_iter().map(|(_, p)| p).collect()
}

type Seen = BTreeMap<(u32, u64), usize>;

/// Polls once and counts every record by (partition, offset).
async fn poll_into(c: &mut GroupConsumer, seen: &mut Seen) {
    for r in c.poll(Duration::from_millis(50)).await.unwrap() {
        *seen.entry((r.partition, r.offset)).or_default() += 1;
    }
}

fn config(group: &str, reset: OffsetReset) -> GroupConfig {
    let mut c = GroupConfig::new(group);
    c.offset_reset = reset;
    c
}

/// Two members split four partitions cooperatively: their holdings never overlap, a hand-over commits on
/// revoke so nothing is read twice, and `close` hands everything to the survivor at once (well inside the
/// 10 s session timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_cooperatively_and_close_hands_over_at_once() {
    let Some(b) = Broker::start() else { return };
    let cl = cluster(&b).await;
    create(&cl, "coop", 4).await;
    produce(&cl, "coop", 4, 25, "old").await;

    let rec_a = Recorder::default();
    let mut a = GroupConsumer::subscribe(
        cl.clone(),
        &["coop"],
        config("coop-g", OffsetReset::Earliest),
    )
    .await
    .unwrap();
    a.set_listener(rec_a.clone());
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(&a).len() < 4 || seen.is_empty() {
        assert!(Instant::now() < deadline, "first member never got going");
        poll_into(&mut a, &mut seen).await;
    }

    let rec_b = Recorder::default();
    let mut b2 = GroupConsumer::subscribe(
        cl.clone(),
        &["coop"],
        config("coop-g", OffsetReset::Earliest),
    )
    .await
    .unwrap();
    b2.set_listener(rec_b.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(&a).len() != 2 || held(&b2).len() != 2 || seen.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "no 2/2 split reading all 100: a {:?} b {:?}, read {}",
            held(&a),
            held(&b2),
            seen.len()
        );
        poll_into(&mut a, &mut seen).await;
        assert!(held(&a).is_disjoint(&held(&b2)), "a partition held twice");
        poll_into(&mut b2, &mut seen).await;
        assert!(
            held(&a).is_disjoint(&held(&b2)),
            "a partition held twice: a {:?} {:?} b {:?} {:?}",
            held(&a),
            rec_a.events(),
            held(&b2),
            rec_b.events()
        );
    }
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(
        dups, 0,
        "commit on revoke: the new owner starts where the old one stopped"
    );
    let revoked: Vec<u32> = rec_a
        .events()
        .iter()
        .filter(|(k, _)| k == "revoked")
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert_eq!(revoked.len(), 2, "{:?}", rec_a.events());
    assert!(rec_b
        .events()
        .iter()
        .any(|(k, p)| k == "assigned" && p.iter().all(|x| revoked.contains(x))));

    // A leaves: B owns all four long before a session timeout could have moved them.
    let left = Instant::now();
    a.close().await.unwrap();
    while held(&b2).len() < 4 {
        assert!(
            left.elapsed() < Duration::from_secs(3),
            "hand-over after close took too long"
        );
        poll_into(&mut b2, &mut seen).await;
    }
    // B continues exactly where A committed.
    produce(&cl, "coop", 4, 10, "new").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 140 {
        assert!(Instant::now() < deadline, "read {} of 140", seen.len());
        poll_into(&mut b2, &mut seen).await;
    }
    assert!(seen.values().all(|&n| n == 1), "a record was read twice");
    b2.close().await.unwrap();
    let committed = GroupAdmin::new(cl.clone())
        .committed_offsets("coop-g")
        .await
        .unwrap();
    let want: BTreeMap<(String, u32), u64> =
        (0..4).map(|p| (("coop".to_string(), p), 35)).collect();
    assert_eq!(committed, want);
}

/// Manual commit commits exactly what poll returned; without auto-commit nothing else is committed; the reset
/// policy applies only where nothing is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_commits_and_the_reset_policy() {
    let Some(b) = Broker::start() else { return };
    let cl = cluster(&b).await;
    create(&cl, "man", 2).await;
    produce(&cl, "man", 2, 5, "old").await;
    let admin = GroupAdmin::new(cl.clone());

    let mut cfg = config("late", OffsetReset::Latest);
    cfg.auto_commit = false;
    let mut c = GroupConsumer::subscribe(cl.clone(), &["man"], cfg.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(&c).len() < 2 || c.position("man", 0).is_none() || c.position("man", 1).is_none() {
        assert!(Instant::now() < deadline, "no positions");
        c.poll(Duration::from_millis(50)).await.unwrap();
    }
    assert_eq!(
        (c.position("man", 0), c.position("man", 1)),
        (Some(5), Some(5))
    );
    produce(&cl, "man", 2, 3, "new").await;
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 6 {
        assert!(Instant::now() < deadline, "read {} of 6 new", seen.len());
        poll_into(&mut c, &mut seen).await;
    }
    assert!(
        seen.keys().all(|(_, o)| *o >= 5),
        "latest reset read old records"
    );
    assert!(admin.committed_offsets("late").await.unwrap().is_empty());
    c.commit().await.unwrap();
    let want: BTreeMap<(String, u32), u64> = (0..2).map(|p| (("man".to_string(), p), 8)).collect();
    assert_eq!(admin.committed_offsets("late").await.unwrap(), want);
    // Explicit offsets: only for held partitions.
    c.commit_offsets(&[("man", 1, 6)]).await.unwrap();
    assert_eq!(
        admin.committed_offsets("late").await.unwrap()[&("man".to_string(), 1)],
        6
    );
    assert!(c.commit_offsets(&[("man", 9, 1)]).await.is_err());
    // Close without auto-commit commits nothing more.
    c.close().await.unwrap();
    assert_eq!(
        admin.committed_offsets("late").await.unwrap()[&("man".to_string(), 1)],
        6
    );
    // A rejoin resumes at the committed offsets (8 and 6), not at the reset policy.
    let mut c = GroupConsumer::subscribe(cl.clone(), &["man"], cfg)
        .await
        .unwrap();
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.position("man", 0) != Some(8) || c.position("man", 1) != Some(8) {
        assert!(
            Instant::now() < deadline,
            "rejoined member did not catch up"
        );
        poll_into(&mut c, &mut seen).await;
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![(1, 6), (1, 7)]
    );
    c.close().await.unwrap();

    // Earliest: a new group reads everything.
    let mut e =
        GroupConsumer::subscribe(cl.clone(), &["man"], config("early", OffsetReset::Earliest))
            .await
            .unwrap();
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 16 {
        assert!(Instant::now() < deadline, "read {} of 16", seen.len());
        poll_into(&mut e, &mut seen).await;
    }
    e.close().await.unwrap();
    let want: BTreeMap<(String, u32), u64> = (0..2).map(|p| (("man".to_string(), p), 8)).collect();
    assert_eq!(admin.committed_offsets("early").await.unwrap(), want);
}

/// Static membership: a member that crashes and comes back with the same instance id within the session
/// timeout gets its own partitions back, and the other member keeps its own throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_rejoins_with_its_partitions() {
    let Some(b) = Broker::start() else { return };
    let cl = cluster(&b).await;
    create(&cl, "stat", 4).await;
    let with_id = |id: &str| {
        let mut c = config("stat-g", OffsetReset::Latest);
        c.instance_id = Some(id.to_string());
        c
    };
    let mut a = GroupConsumer::subscribe(cl.clone(), &["stat"], with_id("host-a"))
        .await
        .unwrap();
    let mut b2 = GroupConsumer::subscribe(cl.clone(), &["stat"], with_id("host-b"))
        .await
        .unwrap();
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(&a).len() != 2 || held(&b2).len() != 2 {
        assert!(Instant::now() < deadline, "no split");
        poll_into(&mut a, &mut seen).await;
        poll_into(&mut b2, &mut seen).await;
    }
    let (a_parts, b_parts) = (held(&a), held(&b2));
    let member = a.member_id().to_string();
    drop(a); // a crash: no leave
    let mut a2 = GroupConsumer::subscribe(cl.clone(), &["stat"], with_id("host-a"))
        .await
        .unwrap();
    let back = Instant::now();
    while held(&a2) != a_parts {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the static member did not get its partitions back: {:?}",
            held(&a2)
        );
        poll_into(&mut a2, &mut seen).await;
        poll_into(&mut b2, &mut seen).await;
        assert_eq!(held(&b2), b_parts, "the other member was rebalanced");
    }
    assert_eq!(a2.member_id(), member, "same member id after the restart");
    a2.close().await.unwrap();
    b2.close().await.unwrap();
}

// ---------------------------------------------------------------- CLI ----------------------------------------

fn err_line(o: &std::process::Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "one stderr line: {e:?}");
    e
}

/// `--offset`/`--partition` with `--group`, `--no-commit` without it, unknown groups and topics: non-zero exit
/// with one line on stderr.
#[test]
fn cli_group_misuse_is_a_one_line_error() {
    let Some(b) = Broker::start() else { return };
    assert_ok(&b.cli(&["topic", "create", "m"], None), "create");
    for args in [
        &["consume", "m", "--group", "g", "--offset", "1"][..],
        &["consume", "m", "--group", "g", "--partition", "0"],
        &["consume", "m", "--no-commit"],
        &[
            "consume",
            "no-such-topic",
            "--group",
            "g",
            "--timeout-ms",
            "100",
        ],
        &["group", "describe", "never-seen"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "nope",
            "--to-earliest",
        ],
        &["group", "reset-offsets", "g", "--topic", "m"],
    ] {
        let o = b.cli(args, None);
        assert!(!o.status.success(), "{args:?} succeeded");
        err_line(&o);
    }
    let o = b.cli(&["group", "describe", "never-seen"], None);
    assert!(err_line(&o).contains("GROUP_ID_NOT_FOUND"));
}

/// `--no-commit` leaves no offsets; a committing member commits exactly what it printed (`--max-messages`
/// below what one poll returns) and the next member resumes there; `group list` and `describe` show it.
#[test]
fn cli_commits_what_it_printed_and_resumes() {
    let Some(b) = Broker::start() else { return };
    assert_ok(&b.cli(&["topic", "create", "one"], None), "create");
    assert_ok(
        &b.cli(&["produce", "one"], Some(b"1\n2\n3\n4\n5\n")),
        "produce",
    );
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "one", "--group", "c", "--timeout-ms", "3000"];
        args.extend_from_slice(extra);
        b.cli(&args, None)
    };
    let o = consume(&["--no-commit", "--from-beginning", "--max-messages", "5"]);
    assert_ok(&o, "consume --no-commit");
    assert_eq!(stdout_lines(&o), vec!["1", "2", "3", "4", "5"]);
    let o = b.cli(&["--output", "json", "group", "describe", "c"], None);
    assert_ok(&o, "describe");
    let rows = json_lines(&o);
    // The group exists (it had a member) but has no committed offsets and no members: nothing to show.
    assert!(rows.is_empty(), "{rows:?}");

    let o = consume(&["--from-beginning", "--max-messages", "3"]);
    assert_ok(&o, "consume 3");
    assert_eq!(stdout_lines(&o), vec!["1", "2", "3"]);
    let o = b.cli(&["--output", "json", "group", "describe", "c"], None);
    let rows = json_lines(&o);
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"group":"c","topic":"one","partition":0,"committed_offset":3,
            "log_end_offset":5,"lag":2,"member":null})
        ]
    );
    let o = b.cli(&["group", "describe", "c"], None);
    assert_ok(&o, "describe text");
    let text = stdout_lines(&o);
    assert_eq!(text.len(), 2, "{text:?}");
    assert!(text[0].starts_with("GROUP") && text[0].contains("LAG"));
    assert_eq!(
        text[1].split_whitespace().collect::<Vec<_>>(),
        vec!["c", "one", "0", "3", "5", "2", "-"]
    );

    // Resumes at 3 (the reset policy does not apply: there is a commit).
    let o = consume(&["--from-beginning"]);
    assert_ok(&o, "resume");
    assert_eq!(stdout_lines(&o), vec!["4", "5"]);

    let o = b.cli(&["--output", "json", "group", "list"], None);
    assert_ok(&o, "list");
    assert!(json_lines(&o).contains(&serde_json::json!({"group":"c","state":"empty","members":0})));
    let o = b.cli(&["group", "list"], None);
    let text = stdout_lines(&o);
    assert!(text[0].starts_with("GROUP"));
    assert!(text
        .iter()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["c", "empty", "0"]));
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// reset-offsets: a dry run changes nothing; `--to-offset` is clamped into the log; `--to-time` finds the first
/// record at or after the time; `--execute` is refused while a member lives.
#[test]
fn cli_reset_offsets_plans_clamps_and_refuses_live_groups() {
    let Some(b) = Broker::start() else { return };
    assert_ok(&b.cli(&["topic", "create", "r"], None), "create");
    assert_ok(
        &b.cli(&["produce", "r"], Some(b"a\nb\nc\nd\ne\n")),
        "produce 1",
    );
    // Every record of the second batch is stamped after `t`, every one of the first before it.
    let t = now_ms() + 1;
    while now_ms() <= t {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_ok(&b.cli(&["produce", "r"], Some(b"f\ng\n")), "produce 2");
    let reset = |to: &[&str], execute: bool| {
        let mut args = vec![
            "--output",
            "json",
            "group",
            "reset-offsets",
            "rg",
            "--topic",
            "r",
        ];
        args.extend_from_slice(to);
        if execute {
            args.push("--execute");
        }
        b.cli(&args, None)
    };
    let row = |o: &std::process::Output| {
        assert_ok(o, "reset-offsets");
        let rows = json_lines(o);
        assert_eq!(rows.len(), 1, "{rows:?}");
        rows[0].clone()
    };
    let r = row(&reset(&["--to-offset", "100"], false));
    assert_eq!(
        r,
        serde_json::json!({"group":"rg","topic":"r","partition":0,"current_offset":null,"new_offset":7,
            "executed":false})
    );
    // The dry run changed nothing.
    let o = b.cli(&["--output", "json", "group", "describe", "rg"], None);
    assert!(!o.status.success(), "a dry run created the group");
    assert_eq!(row(&reset(&["--to-offset", "3"], true))["new_offset"], 3);
    let t_arg = t.to_string();
    let r = row(&reset(&["--to-time", &t_arg], true));
    assert_eq!(
        (r["current_offset"].clone(), r["new_offset"].clone()),
        (3.into(), 5.into())
    );
    let r = row(&reset(&["--to-earliest"], false));
    assert_eq!(
        (r["current_offset"].clone(), r["new_offset"].clone()),
        (5.into(), 0.into())
    );
    let r = row(&reset(&["--to-latest"], false));
    assert_eq!(r["new_offset"], 7);

    // A live member: --execute is refused, the dry run still works.
    let mut member = std::process::Command::new(support::cli_bin())
        .args(["--brokers", &b.addr(), "consume", "r", "--group", "rg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = b.cli(&["--output", "json", "group", "list"], None);
        if json_lines(&o)
            .iter()
            .any(|g| g["group"] == "rg" && g["members"] == 1)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "member never joined");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = reset(&["--to-earliest"], true);
    let _ = member.kill();
    let _ = member.wait();
    assert!(!o.status.success(), "reset executed while a member lives");
    assert!(err_line(&o).contains("GROUP_NOT_EMPTY"));
}
