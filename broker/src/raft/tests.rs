//! openraft's own storage conformance suite against the segment log store and the high-watermark state
//! machine, plus our checks of what the suite cannot build (normal entries) and of the retention snapshot.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{RaftLogReader, RaftSnapshotBuilder, StorageError};
use tempfile::TempDir;

use super::log_store::SegLogStore;
use super::state_machine::{HwmStateMachine, PartitionShared};
use super::types::{log_id, Entry, PartitionRaft, RecordBatch};
use crate::storage::{LogConfig, PartitionLog, StorageContext};

struct SegBuilder {
    ctx: StorageContext,
}

fn suite_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

impl StoreBuilder<PartitionRaft, SegLogStore, HwmStateMachine, TempDir> for SegBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, SegLogStore, HwmStateMachine), StorageError<PartitionRaft>> {
        let td =
            TempDir::new().map_err(|e| StorageError::read(PartitionRaft::err_from_error(&e)))?;
        let log = PartitionLog::open(td.path(), suite_config(), self.ctx.clone()).map_err(|e| {
            StorageError::read(PartitionRaft::err_from_error(&std::io::Error::from(e)))
        })?;
        let shared = PartitionShared::new(log.clone());
        Ok((
            td,
            SegLogStore::new(log, false),
            HwmStateMachine::new(shared),
        ))
    }
}

#[test]
fn openraft_storage_suite() {
    PartitionRaft::run(async {
        let b = SegBuilder {
            ctx: StorageContext::new(),
        };
        Suite::test_all(b).await.expect("openraft storage suite");
    });
}

fn batch_entry(term: u64, index: u64, records: usize, ts: i64) -> Entry {
    let mut b = runnel_protocol::batch::RecordBatchBuilder::new(256);
    for i in 0..records {
        b.push(ts + i as i64, None, b"value", &[]);
    }
    let payload = b.finish();
    Entry {
        log_id: log_id(term, index),
        payload: openraft::EntryPayload::Normal(RecordBatch {
            payload,
            record_count: records as u32,
            max_timestamp: ts + records as i64 - 1,
            base_offset: 0,
        }),
    }
}

async fn append(store: &mut SegLogStore, entries: Vec<Entry>) {
    let (tx, rx) = PartitionRaft::oneshot();
    store
        .append(entries, openraft::storage::IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
}

/// Normal entries (which the suite cannot build) round-trip with their stamped offsets, move the high
/// watermark, and a snapshot never covers a retained data entry (trap T6).
#[test]
fn normal_entries_apply_and_snapshot_stays_at_the_retention_boundary() {
    PartitionRaft::run(async {
        let td = TempDir::new().unwrap();
        let log = PartitionLog::open(td.path(), suite_config(), StorageContext::new()).unwrap();
        let shared = PartitionShared::new(log.clone());
        let mut store = SegLogStore::new(log.clone(), false);
        let mut sm = HwmStateMachine::new(shared.clone());
        append(
            &mut store,
            vec![
                openraft::entry::RaftEntry::new_blank(log_id(1, 1)),
                batch_entry(1, 2, 3, 100),
                batch_entry(1, 3, 2, 200),
            ],
        )
        .await;
        let mut reader = store.get_log_reader().await;
        let es = reader.try_get_log_entries(1..4).await.unwrap();
        let offsets: Vec<u64> = es
            .iter()
            .filter_map(|e| match &e.payload {
                openraft::EntryPayload::Normal(b) => Some(b.base_offset),
                _ => None,
            })
            .collect();
        assert_eq!(offsets, vec![0, 3]);
        let stream = futures::stream::iter(es.into_iter().map(|e| Ok((e, None))));
        sm.apply(stream).await.unwrap();
        assert_eq!(*shared.hwm.borrow(), 5);
        // No retention expiry: the snapshot may cover only what precedes the first data entry.
        let snap = sm
            .try_create_snapshot_builder(true)
            .await
            .unwrap()
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1)));
        // Nothing moved: a non-forced request is declined.
        assert!(sm.try_create_snapshot_builder(false).await.is_none());
        // A byte-budgeted replication read returns a non-empty prefix.
        let mut reader = store.get_log_reader().await;
        assert!(!reader
            .limited_get_log_entries(1, 4)
            .await
            .unwrap()
            .is_empty());
        drop(Arc::clone(&shared));
    });
}
