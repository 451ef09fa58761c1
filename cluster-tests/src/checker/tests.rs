//! The checker on hand-written histories: a clean one reports nothing; each injected fault is reported in
//! exactly its class (and the others stay at 0), alone and all together.

use super::*;
use crate::history::{AssignEvent, CommitEvent, FinalReadEvent, PollEvent, ResetEvent, SendEvent};

const BROKERS: [&str; 2] = ["b1", "b2"];
/// Sends recorded as indeterminate: the first is in the log, the second is not.
const INFO: [&str; 2] = ["p0-000004", "p1-000003"];
/// A send refused before it reached a broker.
const FAILED: &str = "p1-000004";

/// The logs of the clean history: partition -> values in offset order.
fn clean_logs() -> Vec<Vec<&'static str>> {
    vec![
        vec!["p0-000000", "p1-000000", "p0-000001", "p1-000001"],
        vec!["p0-000002", "p1-000002", "p0-000003", "p0-000004"],
    ]
}

fn proc_seq(v: &str) -> (String, u64) {
    let (p, s) = v.split_once('-').unwrap();
    (p.to_string(), s.parse().unwrap())
}

fn send(v: &str, status: Status, at: Option<(u32, u64)>) -> Event {
    let (proc, seq) = proc_seq(v);
    Event::Send(SendEvent {
        t: 0,
        proc,
        seq,
        value: v.to_string(),
        status,
        partition: at.map(|a| a.0),
        offset: at.map(|a| a.1),
        err: (status != Status::Ok).then(|| "timeout".to_string()),
    })
}

fn poll(proc: &str, group: Option<&str>, p: u32, recs: &[(u64, &str)]) -> Event {
    Event::Poll(PollEvent {
        t: 0,
        proc: proc.into(),
        group: group.map(str::to_string),
        partition: p,
        offsets: recs.iter().map(|r| r.0).collect(),
        values: recs.iter().map(|r| r.1.to_string()).collect(),
    })
}

fn assign(proc: &str, group: Option<&str>, ps: &[u32]) -> Event {
    Event::Assign(AssignEvent {
        t: 0,
        proc: proc.into(),
        group: group.map(str::to_string),
        partitions: ps.to_vec(),
    })
}

fn revoke(proc: &str, group: &str, ps: &[u32]) -> Event {
    Event::Revoke(AssignEvent {
        t: 0,
        proc: proc.into(),
        group: Some(group.into()),
        partitions: ps.to_vec(),
    })
}

fn commit(proc: &str, p: u32, offset: u64, status: Status) -> Event {
    Event::Commit(CommitEvent {
        t: 0,
        proc: proc.into(),
        group: "g".into(),
        partition: p,
        offset,
        status,
        err: None,
    })
}

fn read(broker: &str, p: u32, o: u64, v: &str) -> Event {
    Event::FinalRead(FinalReadEvent {
        t: 0,
        broker: broker.into(),
        partition: p,
        offset: o,
        value: v.into(),
    })
}

fn end(broker: &str, p: u32, hwm: u64) -> Event {
    Event::FinalReadEnd(FinalReadEnd {
        t: 0,
        broker: broker.into(),
        partition: p,
        log_start: 0,
        high_watermark: hwm,
        records: hwm,
        err: None,
    })
}

fn recs<'a>(log: &[&'a str], from: usize) -> Vec<(u64, &'a str)> {
    log.iter()
        .enumerate()
        .skip(from)
        .map(|(o, v)| (o as u64, *v))
        .collect()
}

/// A whole history over `logs` that breaks no rule: acks, polls and final reads (two brokers) agree with
/// the logs; group `g` goes through a rebalance where the new owner re-reads from the committed offset
/// (below what the old owner polled); a reader by assignment polls everything in two chunks.
fn history(logs: &[Vec<&str>]) -> Vec<Event> {
    let mut h = Vec::new();
    for (p, log) in logs.iter().enumerate() {
        for (o, v) in log.iter().enumerate() {
            h.push(if INFO.contains(v) {
                send(v, Status::Info, None)
            } else {
                send(v, Status::Ok, Some((p as u32, o as u64)))
            });
        }
    }
    h.push(send(INFO[1], Status::Info, None));
    h.push(send(FAILED, Status::Fail, None));
    let all: Vec<u32> = (0..logs.len() as u32).collect();
    // c0 holds everything, commits partition 0 only halfway, then gives partition 0 to c1.
    h.push(assign("c0", Some("g"), &all));
    for (p, log) in logs.iter().enumerate() {
        let p = p as u32;
        h.push(poll("c0", Some("g"), p, &recs(log, 0)));
        let upto = if p == 0 { 2 } else { log.len() as u64 };
        h.push(commit("c0", p, upto, Status::Ok));
    }
    h.push(commit("c0", 0, 3, Status::Info));
    h.push(revoke("c0", "g", &[0]));
    h.push(assign("c1", Some("g"), &[0]));
    h.push(poll("c1", Some("g"), 0, &recs(&logs[0], 2)));
    h.push(commit("c1", 0, logs[0].len() as u64, Status::Ok));
    h.push(assign("r0", None, &all));
    for (p, log) in logs.iter().enumerate() {
        let all = recs(log, 0);
        let (a, b) = all.split_at(2);
        h.push(poll("r0", None, p as u32, a));
        h.push(poll("r0", None, p as u32, b));
    }
    for b in BROKERS {
        for (p, log) in logs.iter().enumerate() {
            for (o, v) in log.iter().enumerate() {
                h.push(read(b, p as u32, o as u64, v));
            }
            h.push(end(b, p as u32, log.len() as u64));
        }
    }
    h
}

/// Asserts that exactly the given classes have the given counts and every other class is 0.
fn assert_only(r: &Report, want: &[(Violation, u64)]) {
    for v in Violation::ALL {
        let n = want.iter().find(|w| w.0 == v).map_or(0, |w| w.1);
        assert_eq!(r.count(v), n, "{}: got {:?}\n{r}", v.name(), r.class(v));
    }
}

fn first_example(r: &Report, v: Violation) -> &str {
    r.class(v).examples.first().map_or("", String::as_str)
}

/// Drops final reads of `value` (through `broker`, or every broker when `None`).
fn drop_reads(h: &mut Vec<Event>, value: &str, broker: Option<&str>) {
    h.retain(|e| {
        !matches!(e, Event::FinalRead(fr) if fr.value == value && broker.is_none_or(|b| fr.broker == b))
    });
}

fn set_hwm(h: &mut [Event], p: u32, hwm: u64) {
    for e in h.iter_mut() {
        if let Event::FinalReadEnd(x) = e {
            if x.partition == p {
                x.high_watermark = hwm;
            }
        }
    }
}

#[test]
fn a_clean_history_reports_nothing() {
    let r = check(&history(&clean_logs()));
    assert!(r.ok(), "{r}");
    assert_only(&r, &[]);
    assert_eq!(r.stats.sends, 10);
    assert_eq!(
        (r.stats.sends_ok, r.stats.sends_info, r.stats.sends_fail),
        (7, 2, 1)
    );
    assert_eq!((r.stats.info_read, r.stats.info_absent), (1, 1));
    assert_eq!(r.stats.final_brokers, 2);
    assert_eq!(r.stats.final_partition_reads, 4);
    assert_eq!(r.stats.final_values, 8);
    assert_eq!((r.stats.commits_ok, r.stats.commits_not_ok), (3, 1));
    assert!(r.notes.is_empty(), "{:?}", r.notes);
    let table = r.to_string();
    assert!(table.contains("verdict: OK"), "{table}");
}

#[test]
fn an_acknowledged_value_missing_from_every_final_read_is_lost() {
    let mut h = history(&clean_logs());
    drop_reads(&mut h, "p1-000001", None);
    let r = check(&h);
    assert_only(&r, &[(Violation::Lost, 1)]);
    assert!(
        first_example(&r, Violation::Lost).starts_with("p1-000001"),
        "{r}"
    );
    assert!(!r.ok());
}

#[test]
fn an_acknowledged_value_missing_from_one_broker_that_covered_it_is_lost() {
    let mut h = history(&clean_logs());
    drop_reads(&mut h, "p1-000001", Some("b2"));
    let r = check(&h);
    assert_only(&r, &[(Violation::Lost, 1)]);
    assert!(
        first_example(&r, Violation::Lost).contains("broker b2"),
        "{r}"
    );
}

#[test]
fn a_broker_that_has_not_caught_up_is_a_note_not_a_loss() {
    let mut h = history(&clean_logs());
    drop_reads(&mut h, "p1-000001", Some("b2"));
    for e in h.iter_mut() {
        if let Event::FinalReadEnd(x) = e {
            if x.broker == "b2" && x.partition == 0 {
                x.high_watermark = 3;
            }
        }
    }
    let r = check(&h);
    assert_only(&r, &[]);
    assert!(
        r.notes.iter().any(|n| n.contains("disagree")),
        "{:?}",
        r.notes
    );
}

#[test]
fn a_polled_value_missing_from_the_final_read_is_lost_even_if_its_send_was_indeterminate() {
    let mut h = history(&clean_logs());
    drop_reads(&mut h, "p0-000004", None);
    set_hwm(&mut h, 1, 3);
    let r = check(&h);
    assert_only(&r, &[(Violation::Lost, 1)]);
    assert!(first_example(&r, Violation::Lost).contains("polled"), "{r}");
}

#[test]
fn a_value_at_two_offsets_is_a_duplicate() {
    let mut h = history(&clean_logs());
    for b in BROKERS {
        h.push(read(b, 1, 4, "p0-000000"));
    }
    set_hwm(&mut h, 1, 5);
    let r = check(&h);
    assert_only(&r, &[(Violation::Duplicate, 1)]);
    assert_eq!(
        first_example(&r, Violation::Duplicate),
        "p0-000000 at 0/0, 1/4"
    );
}

#[test]
fn a_reordered_pair_of_one_producer_breaks_producer_order() {
    let mut logs = clean_logs();
    logs[1].swap(0, 2); // p0-000003 now precedes p0-000002
    let r = check(&history(&logs));
    assert_only(&r, &[(Violation::ProducerOrder, 1)]);
    assert!(
        first_example(&r, Violation::ProducerOrder).starts_with("partition 1: p0-000002"),
        "{r}"
    );
}

#[test]
fn a_regressed_commit_is_reported_unless_a_reset_came_first() {
    let mut h = history(&clean_logs());
    h.push(commit("c1", 0, 1, Status::Ok));
    let r = check(&h);
    assert_only(&r, &[(Violation::CommitRegression, 1)]);
    assert!(
        first_example(&r, Violation::CommitRegression).contains("committed 1 after 4"),
        "{r}"
    );

    let mut h = history(&clean_logs());
    h.push(Event::Reset(ResetEvent {
        t: 0,
        proc: "admin".into(),
        group: "g".into(),
        partition: 0,
        offset: 0,
    }));
    h.push(commit("c1", 0, 1, Status::Ok));
    assert_only(&check(&h), &[]);

    // A lower commit that did not succeed is no regression.
    let mut h = history(&clean_logs());
    h.push(commit("c1", 0, 1, Status::Info));
    h.push(commit("c1", 0, 1, Status::Fail));
    assert_only(&check(&h), &[]);
}

#[test]
fn two_values_at_one_offset_are_inconsistent() {
    let mut h = history(&clean_logs());
    for e in h.iter_mut() {
        if let Event::FinalRead(fr) = e {
            if fr.broker == "b2" && fr.partition == 1 && fr.offset == 1 {
                fr.value = INFO[1].into();
            }
        }
    }
    let r = check(&h);
    assert_only(&r, &[(Violation::InconsistentOffset, 1)]);
    assert!(
        first_example(&r, Violation::InconsistentOffset).starts_with("1/1 holds"),
        "{r}"
    );
}

#[test]
fn an_ack_offset_other_than_the_read_offset_is_inconsistent() {
    let mut h = history(&clean_logs());
    for e in h.iter_mut() {
        if let Event::Send(s) = e {
            if s.value == "p0-000001" {
                s.offset = Some(9);
            }
        }
    }
    let r = check(&h);
    assert_only(&r, &[(Violation::InconsistentOffset, 1)]);
    assert_eq!(
        first_example(&r, Violation::InconsistentOffset),
        "p0-000001 acked at 0/9 but read at 0/2"
    );
}

#[test]
fn values_never_sent_or_definitely_failed_are_unexpected() {
    let mut h = history(&clean_logs());
    for b in BROKERS {
        h.push(read(b, 1, 4, "zz-000001"));
        h.push(read(b, 1, 5, FAILED));
    }
    set_hwm(&mut h, 1, 6);
    let r = check(&h);
    assert_only(&r, &[(Violation::Unexpected, 2)]);
    let ex = &r.class(Violation::Unexpected).examples;
    assert!(ex.iter().any(|e| e.contains("definitely failed")), "{r}");
    assert!(
        ex.iter()
            .any(|e| e.contains("zz-000001 at 1/4 was never sent")),
        "{r}"
    );
}

#[test]
fn polls_going_back_within_an_assignment_or_below_the_commit_break_monotonicity() {
    // The reader polls offset 1 again without a new assignment.
    let mut h = history(&clean_logs());
    h.push(poll("r0", None, 0, &[(1, "p1-000000")]));
    let r = check(&h);
    assert_only(&r, &[(Violation::PollMonotonicity, 1)]);
    assert!(
        first_example(&r, Violation::PollMonotonicity).contains("offset 1 after 3"),
        "{r}"
    );

    // A new owner of partition 1 starts below the group's committed offset (4).
    let mut h = history(&clean_logs());
    h.push(revoke("c0", "g", &[1]));
    h.push(assign("c2", Some("g"), &[1]));
    h.push(poll(
        "c2",
        Some("g"),
        1,
        &[(2, "p0-000003"), (3, "p0-000004")],
    ));
    let r = check(&h);
    assert_only(&r, &[(Violation::PollMonotonicity, 1)]);
    assert!(
        first_example(&r, Violation::PollMonotonicity).contains("below the committed offset 4"),
        "{r}"
    );

    // A consumer assigned a partition again may not start below the group's committed offset (4) either...
    let mut h = history(&clean_logs());
    h.push(revoke("c1", "g", &[0]));
    h.push(assign("c1", Some("g"), &[0]));
    h.push(poll("c1", Some("g"), 0, &[(3, "p1-000001")]));
    assert_only(&check(&h), &[(Violation::PollMonotonicity, 1)]);

    // ...but after an explicit reset it may re-read from there, below what it polled before.
    let mut h = history(&clean_logs());
    h.push(revoke("c1", "g", &[0]));
    h.push(Event::Reset(ResetEvent {
        t: 0,
        proc: "admin".into(),
        group: "g".into(),
        partition: 0,
        offset: 2,
    }));
    h.push(assign("c0", Some("g"), &[0]));
    h.push(poll(
        "c0",
        Some("g"),
        0,
        &[(2, "p0-000001"), (3, "p1-000001")],
    ));
    assert_only(&check(&h), &[]);
}

#[test]
fn a_history_with_every_fault_reports_each_in_its_class() {
    let mut logs = clean_logs();
    logs[1].swap(0, 2); // reordered pair
    let mut h = history(&logs);
    drop_reads(&mut h, "p1-000001", None); // lost
    for b in BROKERS {
        h.push(read(b, 1, 4, "p0-000000")); // duplicate
        h.push(read(b, 1, 5, "zz-000001")); // unexpected
    }
    h.push(read("b2", 1, 6, "zz-000002")); // inconsistent with b1 at 1/6
    h.push(read("b1", 1, 6, "p1-000003"));
    set_hwm(&mut h, 1, 7);
    h.push(commit("c1", 0, 1, Status::Ok)); // regressed commit
    h.push(poll("r0", None, 0, &[(0, "p0-000000")])); // poll going back
    let r = check(&h);
    assert_only(
        &r,
        &[
            (Violation::Lost, 1),
            (Violation::Unexpected, 2),
            (Violation::Duplicate, 1),
            (Violation::InconsistentOffset, 1),
            (Violation::ProducerOrder, 1),
            (Violation::PollMonotonicity, 1),
            (Violation::CommitRegression, 1),
        ],
    );
    let table = r.to_string();
    for v in Violation::ALL {
        assert!(table.contains(v.name()), "{table}");
    }
    assert!(table.contains("verdict: 8 VIOLATIONS"), "{table}");
}

#[test]
fn examples_are_bounded_but_counts_are_not() {
    let mut h = history(&clean_logs());
    for i in 0..(EXAMPLES_MAX as u64 + 7) {
        for b in BROKERS {
            h.push(read(b, 1, 4 + i, &format!("zz-{i:06}")));
        }
    }
    set_hwm(&mut h, 1, 4 + EXAMPLES_MAX as u64 + 7);
    let r = check(&h);
    assert_eq!(r.count(Violation::Unexpected), EXAMPLES_MAX as u64 + 7);
    assert_eq!(r.class(Violation::Unexpected).examples.len(), EXAMPLES_MAX);
}

#[test]
fn without_a_final_read_every_acknowledged_value_is_lost() {
    let mut h = history(&clean_logs());
    h.retain(|e| !matches!(e, Event::FinalRead(_) | Event::FinalReadEnd(_)));
    let r = check(&h);
    // 7 acknowledged + the indeterminate value the consumers polled.
    assert_only(&r, &[(Violation::Lost, 8)]);
    assert!(
        r.notes.iter().any(|n| n.contains("no final read")),
        "{:?}",
        r.notes
    );
}

fn timed(v: &str, t: i64, status: Status, at: Option<(u32, u64)>) -> Event {
    let mut e = send(v, status, at);
    if let Event::Send(s) = &mut e {
        s.t = t;
    }
    e
}

#[test]
fn max_unavailability_is_the_longest_gap_between_acks_within_the_send_window() {
    // Acks at 1000, 1010, then nothing acknowledged until 4010 (an indeterminate send completes in
    // between), then 4020; an indeterminate send completes last at 6020.
    let h = vec![
        timed("p0-000000", 1000, Status::Ok, Some((0, 0))),
        timed("p0-000001", 1010, Status::Ok, Some((0, 1))),
        timed("p0-000002", 3000, Status::Info, None),
        timed("p0-000003", 4010, Status::Ok, Some((0, 2))),
        timed("p0-000004", 4020, Status::Ok, Some((0, 3))),
    ];
    assert_eq!(check(&h).stats.max_unavailability_ms, 3000);
    let mut tail = h.clone();
    tail.push(timed("p0-000005", 8020, Status::Info, None));
    assert_eq!(check(&tail).stats.max_unavailability_ms, 4000);
    let none_ok = vec![
        timed("p0-000000", 500, Status::Fail, None),
        timed("p0-000001", 2500, Status::Info, None),
    ];
    assert_eq!(check(&none_ok).stats.max_unavailability_ms, 2000);
    assert_eq!(check(&[]).stats.max_unavailability_ms, 0);
    let r = check(&tail);
    assert!(
        r.figures().ends_with("max_unavailability_s=4.0"),
        "{}",
        r.figures()
    );
    assert!(r
        .figures()
        .starts_with("figures: attempted=6 acked=4 lost="));
}
