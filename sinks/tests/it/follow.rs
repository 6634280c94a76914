//! A follower (a read replica's store) applies another process's commits
//! from the files alone: after each epoch it answers as the primary does,
//! and a follower opened later starts from the snapshot and catches up.

use std::sync::Arc;

use twinflow_schemas::api::{SearchFilter, SearchMode};
use twinflow_schemas::config::AnnConfig;
use twinflow_sinks::{EpochCommit, Error, Store};

use crate::fixtures::*;

fn same_answers(primary: &Store, follower: &Store) {
    assert_eq!(follower.committed_epoch(), primary.committed_epoch());
    assert_eq!(follower.counts(), primary.counts());
    assert_eq!(follower.current_documents(), primary.current_documents());
    assert_eq!(follower.current_chunks(), primary.current_chunks());
    assert_eq!(follower.current_embeddings(), primary.current_embeddings());
    for text in ["alpha two", "gamma", "delta", "beta"] {
        assert_eq!(follower.search(&vector_of(text), 3), primary.search(&vector_of(text), 3), "{text}");
        let mode = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 0.5, lead_weight: 0.0, rrf_k: 10.0 };
        let hybrid =
            |s: &Store| s.search_mode(text, &vector_of(text), 3, &SearchFilter::default(), mode, false).unwrap();
        assert_eq!(hybrid(follower), hybrid(primary), "{text}");
    }
}

#[tokio::test]
async fn a_follower_applies_each_commit_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = scenario();
    let mut oracle = Oracle::default();
    let primary = Arc::new(Store::open(dir.path(), DIM).unwrap());
    commit_all(&primary, &mut oracle, &epochs[..1]);
    let follower = Store::open_follower(dir.path(), DIM, &AnnConfig::default(), 1).unwrap();
    assert!(follower.is_follower());
    same_answers(&primary, &follower);

    for (epoch, parts) in &epochs[1..] {
        primary.commit(EpochCommit::new(*epoch, parts.clone())).unwrap();
        oracle.apply(*epoch, parts);
        let followed = follower.follow().unwrap();
        assert!(followed.to <= primary.committed_epoch());
        // An epoch that wrote nothing reaches the follower with the next write.
        if !parts.iter().all(|(_, u)| u.is_empty()) {
            assert_eq!(followed.applied.iter().map(|(e, _)| *e).collect::<Vec<_>>(), vec![*epoch]);
            same_answers(&primary, &follower);
            assert_eq!(
                query_text(&follower, "SELECT * FROM chunks ORDER BY chunk_id, doc_id").await,
                query_text(&primary, "SELECT * FROM chunks ORDER BY chunk_id, doc_id").await
            );
        }
    }
    assert_eq!(follower.current_documents(), oracle.documents());
    assert_eq!(follower.follow().unwrap().applied, vec![], "nothing new: nothing applied");

    // A follower's store is read-only.
    assert!(matches!(follower.commit(EpochCommit::new(9, Vec::new())), Err(Error::ReadOnly)));
    assert!(matches!(follower.snapshot(), Err(Error::ReadOnly)));
    assert!(matches!(primary.follow(), Err(Error::ReadOnly)));

    // Opened after a snapshot and more commits, a follower starts from the snapshot and catches up.
    primary.snapshot().unwrap();
    let late = Arc::new(Store::open_follower(dir.path(), DIM, &AnnConfig::default(), 1).unwrap());
    same_answers(&primary, &late);
    let more = vec![(
        0,
        twinflow_schemas::EpochUpdates {
            documents: vec![(doc("e", "E", 6), 1)],
            chunks: vec![(chunk("e", 0, "beta"), 1)],
            embeddings: vec![(emb("beta"), 1)],
            ..Default::default()
        },
    )];
    primary.commit(EpochCommit::new(6, more)).unwrap();
    assert_eq!(late.follow().unwrap().applied.len(), 1);
    assert_eq!(follower.follow().unwrap().applied.len(), 1);
    same_answers(&primary, &late);
    same_answers(&primary, &follower);
    assert_eq!(late.as_of(3).unwrap().current_documents(), primary.as_of(3).unwrap().current_documents());
}
