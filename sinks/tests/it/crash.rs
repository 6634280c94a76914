//! A crash after part files are written but before the manifest is replaced
//! leaves the previous committed state; committing again counts once.

use twinflow_schemas::EpochUpdates;
use twinflow_sinks::{EpochCommit, Store, parquet_io};

use crate::fixtures::*;

#[tokio::test]
async fn stray_part_files_are_invisible_and_the_epoch_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = scenario();
    let mut oracle = Oracle::default();
    {
        let store = Store::open(dir.path(), DIM).unwrap();
        commit_all(&store, &mut oracle, &epochs[..2]);
    }
    // Simulated crash in epoch 3: part files written (plus one from a worker
    // the retried commit will not have, and a torn temporary), no manifest.
    let (epoch, parts) = epochs[2].clone();
    let mut crashed = parts.clone();
    crashed.push((7, EpochUpdates { chunks: vec![(chunk("zz", 0, "delta"), 1)], ..EpochUpdates::default() }));
    let written = parquet_io::write_epoch(dir.path(), DIM, epoch, &crashed).unwrap();
    assert!(written.iter().any(|p| p.path == "chunks/epoch=3/part-7.parquet"));
    std::fs::write(dir.path().join("chunks/epoch=3/.part-1.parquet.tmp"), b"torn").unwrap();

    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.committed_epoch(), 2);
    assert_eq!(store.counts(), (2, oracle.counts()));
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks_changes WHERE _epoch = 3").await, 0);
    assert_eq!(scalar(&store, "SELECT SUM(_diff) FROM chunks_changes").await as u64, oracle.counts()["chunks"]);

    // The retried commit overwrites the parts it has and ignores the stray one.
    let stats = store.commit(EpochCommit::new(epoch, parts.clone())).unwrap();
    assert_eq!(stats.files, 3);
    oracle.apply(epoch, &parts);
    assert_eq!(store.counts(), (3, oracle.counts()));
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks_changes WHERE _epoch = 3").await, 2);
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks WHERE doc_id = 'zz'").await, 0);
    assert_eq!(scalar(&store, "SELECT SUM(_diff) FROM chunks_changes").await as u64, oracle.counts()["chunks"]);
    assert!(!store.manifest().epochs.iter().flat_map(|e| e.files.values().flatten()).any(|f| f.contains("part-7")));

    // Committing epoch 3 again, before or after a restart, is harmless.
    assert_eq!(store.commit(EpochCommit::new(epoch, parts.clone())).unwrap().files, 0);
    drop(store);
    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.commit(EpochCommit::new(epoch, parts)).unwrap().files, 0);
    assert_eq!(store.counts(), (3, oracle.counts()));
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks_changes WHERE _epoch = 3").await, 2);
}
