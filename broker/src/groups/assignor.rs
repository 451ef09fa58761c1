//! The broker-side assignor: sticky and balanced, topic by topic.
//!
//! For each topic, the members subscribed to it split its partitions so that counts differ by at most one.
//! A member keeps every partition it already holds unless it holds more than its quota; only the excess moves.
//! Invariants (tested): every partition of a subscribed topic is assigned to exactly one subscribed member;
//! nothing is assigned for topics nobody subscribes to; per topic, member counts differ by at most one; a
//! member's kept partitions are a subset of its previous ones when its quota allows.

use std::collections::{BTreeMap, BTreeSet};

/// A (topic, partition) pair.
pub type TopicPartition = (String, u32);

/// Computes the target assignment.
///
/// `subscriptions`: member id → topics it subscribes to. `partitions`: topic → partition count (topics missing
/// here are unknown and get nothing). `current`: member id → what it holds now (stickiness input).
pub fn assign(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    current: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut out: BTreeMap<String, BTreeSet<TopicPartition>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    let topics: BTreeSet<&String> = subscriptions.values().flatten().collect();
    for topic in topics {
        let Some(&count) = partitions.get(topic) else {
            continue;
        };
        let members: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, t)| t.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() || count == 0 {
            continue;
        }
        // What each member keeps from before: valid partitions of this topic, first claimant wins.
        let mut taken = BTreeSet::new();
        let mut kept: BTreeMap<&String, Vec<u32>> = BTreeMap::new();
        for m in &members {
            let mut mine: Vec<u32> = current
                .get(*m)
                .into_iter()
                .flatten()
                .filter(|(t, p)| t == topic && *p < count)
                .map(|(_, p)| *p)
                .filter(|p| taken.insert(*p))
                .collect();
            mine.sort_unstable();
            kept.insert(m, mine);
        }
        // Quotas: base each, and one extra for the `extra` members that already hold the most (stickiness).
        let n = count as usize;
        let base = n / members.len();
        let extra = n % members.len();
        let mut by_load: Vec<&String> = members.clone();
        by_load.sort_by(|a, b| kept[b].len().cmp(&kept[a].len()).then(a.cmp(b)));
        let quota: BTreeMap<&String, usize> = by_load
            .iter()
            .enumerate()
            .map(|(i, m)| (*m, base + usize::from(i < extra)))
            .collect();
        let mut pool: BTreeSet<u32> = (0..count).filter(|p| !taken.contains(p)).collect();
        for m in &members {
            let (Some(k), Some(&q)) = (kept.get_mut(m), quota.get(m)) else {
                continue;
            };
            while k.len() > q {
                if let Some(p) = k.pop() {
                    pool.insert(p);
                }
            }
        }
        for m in &by_load {
            let (Some(k), Some(&q)) = (kept.get_mut(m), quota.get(m)) else {
                continue;
            };
            while k.len() < q {
                let Some(p) = pool.pop_first() else { break };
                k.push(p);
            }
        }
        for (m, ps) in kept {
            let set = out.entry(m.clone()).or_default();
            set.extend(ps.into_iter().map(|p| (topic.clone(), p)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subs(ms: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        ms.iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    #[test]
    fn splits_evenly_and_sticks() {
        let parts: BTreeMap<String, u32> = [("t".to_string(), 6)].into();
        let one = assign(&subs(&[("a", &["t"])]), &parts, &BTreeMap::new());
        assert_eq!(one["a"].len(), 6);
        let two = assign(&subs(&[("a", &["t"]), ("b", &["t"])]), &parts, &one);
        assert_eq!(two["a"].len(), 3);
        assert_eq!(two["b"].len(), 3);
        assert!(two["a"].is_subset(&one["a"]));
        let three = assign(
            &subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]),
            &parts,
            &two,
        );
        assert!(three["a"].is_subset(&two["a"]) && three["b"].is_subset(&two["b"]));
        assert_eq!(
            three.values().map(|s| s.len()).collect::<Vec<_>>(),
            vec![2, 2, 2]
        );
    }

    proptest! {
        #[test]
        fn every_partition_exactly_once_and_balanced(
            members in proptest::collection::btree_map("[a-e]", proptest::collection::btree_set("[xyz]", 1..3), 1..5),
            counts in proptest::collection::btree_map("[xyz]", 0u32..12, 0..3),
            seed_owner in proptest::collection::vec((0usize..5, "[xyz]", 0u32..12), 0..20),
        ) {
            let names: Vec<&String> = members.keys().collect();
            let mut current: BTreeMap<String, BTreeSet<TopicPartition>> = BTreeMap::new();
            for (i, t, p) in seed_owner {
                current.entry(names[i % names.len()].clone()).or_default().insert((t, p));
            }
            let out = assign(&members, &counts, &current);
            for (topic, &count) in &counts {
                let subscribers: Vec<&String> = members.iter().filter(|(_, ts)| ts.contains(topic)).map(|(m, _)| m).collect();
                let mut seen = BTreeSet::new();
                for m in members.keys() {
                    let mine: Vec<u32> = out[m].iter().filter(|(t, _)| t == topic).map(|(_, p)| *p).collect();
                    if !subscribers.contains(&m) { prop_assert!(mine.is_empty()); }
                    for p in mine { prop_assert!(p < count); prop_assert!(seen.insert(p), "partition {} twice", p); }
                }
                if !subscribers.is_empty() { prop_assert_eq!(seen.len() as u32, count); }
                let loads: Vec<usize> = subscribers.iter().map(|m| out[*m].iter().filter(|(t, _)| t == topic).count()).collect();
                if let (Some(min), Some(max)) = (loads.iter().min(), loads.iter().max()) { prop_assert!(max - min <= 1); }
            }
        }
    }
}
