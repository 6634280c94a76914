//! Snapshots: consolidated tables a restart starts from.

use twinflow_schemas::TableName;
use twinflow_sinks::{Store, convert, parquet_io};

use crate::fixtures::*;

#[tokio::test]
async fn restart_from_snapshot_plus_later_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = scenario();
    let mut oracle = Oracle::default();
    let store = Store::open(dir.path(), DIM).unwrap();
    commit_all(&store, &mut oracle, &epochs[..3]);

    let info = store.snapshot().unwrap();
    assert_eq!((info.version, info.epoch), (1, 3));
    assert_eq!(info.rows, oracle.counts());
    assert_eq!(info.files.len(), 4);
    assert!(info.files.contains(&"chunks/_snapshots/v1/part-0.parquet".to_owned()));

    // The snapshot file is the consolidated table: _epoch = 3, diffs sum to the count.
    let batches = parquet_io::read_parquet(&dir.path().join("chunks/_snapshots/v1/part-0.parquet")).unwrap();
    let mut total = 0;
    for batch in &batches {
        assert_eq!(batch.schema(), TableName::Chunks.change_schema(DIM));
        assert!(convert::batch_epochs(batch, TableName::Chunks).unwrap().iter().all(|e| *e == 3));
        total += convert::batch_to_updates::<twinflow_schemas::ChunkRow>(batch, DIM)
            .unwrap()
            .iter()
            .map(|(_, d)| d)
            .sum::<i64>();
    }
    assert_eq!(total as u64, oracle.counts()["chunks"]);

    commit_all(&store, &mut oracle, &epochs[3..]);
    let search = store.search(&vector_of("gamma"), 4);
    let (_, live_sql) = query_text(&store, "SELECT * FROM chunks ORDER BY chunk_id, doc_id").await;
    drop(store);

    // Epochs up to the snapshot are no longer needed to restore: move them aside.
    for table in ["documents", "chunks", "embeddings", "instruct"] {
        for epoch in 1..=3 {
            let folder = dir.path().join(format!("{table}/epoch={epoch}"));
            if folder.exists() {
                std::fs::rename(&folder, dir.path().join(format!("{table}/moved-{epoch}"))).unwrap();
            }
        }
    }
    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.counts(), (5, oracle.counts()));
    assert_eq!(store.current_documents(), oracle.documents());
    assert_eq!(store.current_embeddings(), oracle.embeddings());
    assert_eq!(store.search(&vector_of("gamma"), 4), search);
    assert_eq!(query_text(&store, "SELECT * FROM chunks ORDER BY chunk_id, doc_id").await.1, live_sql);

    let second = store.snapshot().unwrap();
    assert_eq!((second.version, second.epoch), (2, 5));
    assert_eq!(store.manifest().snapshots.len(), 2);
}

/// Retention: past the newest `keep`, old snapshots leave the manifest and
/// the disk, except the pinned and the held ones; a restart starts from the newest.
#[tokio::test]
async fn old_snapshots_are_removed_except_the_pinned_and_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = scenario();
    let mut oracle = Oracle::default();
    let store = Store::open(dir.path(), DIM).unwrap();
    store.set_snapshot_retention(twinflow_sinks::SnapshotRetention { keep: 2, pinned: vec![1] });
    store.hold_snapshots(vec![2]);
    for (i, epoch) in epochs.iter().enumerate().take(5) {
        commit_all(&store, &mut oracle, std::slice::from_ref(epoch));
        assert_eq!(store.snapshot().unwrap().version, i as u64 + 1);
    }
    let folder = |v: u64| dir.path().join(format!("chunks/_snapshots/v{v}"));
    let kept: Vec<bool> = (1..=5).map(|v| folder(v).exists()).collect();
    assert_eq!(kept, [true, true, false, true, true], "pinned v1, held v2 and the newest two");
    drop(store);
    let store = Store::open(dir.path(), DIM).unwrap();
    let last = epochs[4].0;
    assert_eq!(store.committed_epoch(), last);
    let answer = store.sql("SELECT COUNT(*) AS n FROM chunks").await.unwrap();
    assert_eq!(answer.epoch, last);
}
