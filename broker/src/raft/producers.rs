//! [`ProducerTable`]: per partition, what each idempotent producer last wrote, folded from the committed
//! log by the state machine (so every replica, and every new leader, holds the same table).
//!
//! A batch carries `producer_id ≥ 0`, `producer_epoch` and `base_sequence`; its records take the sequences
//! `base_sequence ..= base_sequence + record_count - 1`. For each producer the table keeps the last
//! [`BATCHES_KEPT`] batches (sequence range → base offset), like Kafka.
//!
//! Invariants:
//! - Only committed batches enter the table, in log order.
//! - At most [`PRODUCERS_MAX`] producers per partition; beyond that the one that wrote least recently is
//!   forgotten (its next batch is then accepted as new: a retry that old is not deduplicated).
//! - A sequence at or below a producer's last one is a duplicate: answered with the original offset if the
//!   batch is among the kept ones, refused with DUPLICATE_SEQUENCE otherwise.
//! - Sequences of one producer epoch are contiguous: a batch that does not start right after the last one
//!   is OUT_OF_ORDER (retriable: an earlier batch is still on its way, or failed and will be re-sent
//!   first). A producer that gave up on a batch starts a new epoch (any sequence is accepted then), so
//!   no gap is ever written. An unknown producer (new, or forgotten) may start anywhere.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer.
pub const BATCHES_KEPT: usize = 5;
/// Producers remembered per partition.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Debug, Clone, Default)]
struct ProducerState {
    epoch: i16,
    /// (first sequence, last sequence, base offset), oldest first.
    batches: VecDeque<(i32, i32, u64)>,
    /// Log offset of the producer's last batch (for eviction order).
    last_offset: u64,
}

/// What to do with an incoming idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New: append it.
    Append,
    /// Already written at this base offset: answer with it, write nothing.
    Duplicate { base_offset: u64 },
    /// At or below the last sequence but no longer remembered (or overlapping another batch).
    DuplicateUnknown,
    /// An older epoch of this producer id.
    Fenced,
    /// Past the next expected sequence: an earlier batch has not been written.
    OutOfOrder { expected: i32 },
}

/// The idempotence state of one partition.
#[derive(Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerState>,
}

impl ProducerTable {
    /// Folds one committed batch in.
    pub fn record(&mut self, pid: i64, epoch: i16, first_seq: i32, count: u32, base_offset: u64) {
        if pid < 0 || count == 0 {
            return;
        }
        if !self.producers.contains_key(&pid) && self.producers.len() >= PRODUCERS_MAX {
            if let Some(oldest) = self
                .producers
                .iter()
                .min_by_key(|(_, s)| s.last_offset)
                .map(|(k, _)| *k)
            {
                self.producers.remove(&oldest);
            }
        }
        let s = self.producers.entry(pid).or_default();
        if epoch > s.epoch {
            s.batches.clear();
        }
        s.epoch = s.epoch.max(epoch);
        let last_seq = first_seq.saturating_add(count as i32 - 1);
        s.batches.push_back((first_seq, last_seq, base_offset));
        while s.batches.len() > BATCHES_KEPT {
            s.batches.pop_front();
        }
        s.last_offset = base_offset;
    }

    /// Checks a batch against what is committed.
    pub fn check(&self, pid: i64, epoch: i16, first_seq: i32, count: u32) -> SequenceCheck {
        let Some(s) = self.producers.get(&pid) else {
            return SequenceCheck::Append;
        };
        if epoch < s.epoch {
            return SequenceCheck::Fenced;
        }
        if epoch > s.epoch {
            return SequenceCheck::Append;
        }
        let last_seq = first_seq.saturating_add(count.max(1) as i32 - 1);
        if let Some(&(_, _, off)) = s
            .batches
            .iter()
            .find(|(f, l, _)| *f == first_seq && *l == last_seq)
        {
            return SequenceCheck::Duplicate { base_offset: off };
        }
        match s.batches.back() {
            Some(&(_, last, _)) if first_seq <= last => SequenceCheck::DuplicateUnknown,
            Some(&(_, last, _)) if first_seq != last.wrapping_add(1) => SequenceCheck::OutOfOrder {
                expected: last.wrapping_add(1),
            },
            _ => SequenceCheck::Append,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retried_batch_is_answered_with_its_first_offset() {
        let mut t = ProducerTable::default();
        assert_eq!(t.check(7, 0, 0, 10), SequenceCheck::Append);
        t.record(7, 0, 0, 10, 100);
        assert_eq!(
            t.check(7, 0, 0, 10),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(t.check(7, 0, 10, 5), SequenceCheck::Append);
        t.record(7, 0, 10, 5, 110);
        assert_eq!(
            t.check(7, 0, 0, 10),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
        assert_eq!(t.check(7, 0, 3, 2), SequenceCheck::DuplicateUnknown);
        // Other producers are independent; an unknown one may start anywhere.
        assert_eq!(t.check(8, 0, 0, 10), SequenceCheck::Append);
        assert_eq!(t.check(9, 0, 40, 1), SequenceCheck::Append);
    }

    #[test]
    fn a_gap_is_out_of_order_until_a_new_epoch() {
        let mut t = ProducerTable::default();
        t.record(7, 0, 0, 10, 100);
        assert_eq!(t.check(7, 0, 10, 1), SequenceCheck::Append);
        assert_eq!(
            t.check(7, 0, 11, 1),
            SequenceCheck::OutOfOrder { expected: 10 }
        );
        // A producer that gave up on a batch restarts its sequence in a new epoch.
        assert_eq!(t.check(7, 1, 0, 1), SequenceCheck::Append);
        t.record(7, 1, 0, 1, 110);
        assert_eq!(t.check(7, 0, 10, 1), SequenceCheck::Fenced);
        assert_eq!(t.check(7, 1, 1, 3), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_batches_are_kept_and_old_epochs_are_fenced() {
        let mut t = ProducerTable::default();
        for i in 0..(BATCHES_KEPT as i32 + 2) {
            t.record(1, 0, i * 2, 2, i as u64 * 2);
        }
        assert_eq!(t.check(1, 0, 0, 2), SequenceCheck::DuplicateUnknown);
        assert_eq!(
            t.check(1, 0, 12, 2),
            SequenceCheck::Duplicate { base_offset: 12 }
        );
        t.record(1, 1, 0, 1, 100);
        assert_eq!(t.check(1, 0, 50, 1), SequenceCheck::Fenced);
        assert_eq!(
            t.check(1, 1, 0, 1),
            SequenceCheck::Duplicate { base_offset: 100 }
        );
    }

    #[test]
    fn producers_are_bounded() {
        let mut t = ProducerTable::default();
        for pid in 0..(PRODUCERS_MAX as i64 + 5) {
            t.record(pid, 0, 0, 1, pid as u64);
        }
        assert_eq!(t.len(), PRODUCERS_MAX);
        // The least recently written were forgotten.
        assert_eq!(t.check(0, 0, 0, 1), SequenceCheck::Append);
        assert_eq!(
            t.check(PRODUCERS_MAX as i64 + 4, 0, 0, 1),
            SequenceCheck::Duplicate {
                base_offset: PRODUCERS_MAX as u64 + 4
            }
        );
    }
}
