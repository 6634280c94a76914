//! After any sequence of inserts, updates, deletes and re-inserts, every
//! table equals a from-scratch recomputation over the live documents — after
//! every epoch, on 1 worker, on 4 workers, and on timely's cluster mode with
//! 2 processes × 2 workers (over loopback TCP).

use proptest::prelude::*;

use twinflow_dataflow::reference::{ReferenceDocs, drift_of};
use twinflow_dataflow::{DriftFeatures, Embedder, HashingEmbedder};
use twinflow_schemas::{DocumentChange, DocumentKind, DriftStats, EpochUpdates};

use crate::harness::{Harness, delete, drift_config, prose, small_chunks, upsert};

#[derive(Clone, Debug)]
enum Op {
    Upsert { doc: usize, content: usize, title: usize, kind: usize },
    Delete { doc: usize },
}

/// A pool of contents that share paragraphs, so identical chunk texts occur
/// in different documents and in different versions of one document.
fn contents() -> Vec<String> {
    let a = prose(1, 12);
    let b = prose(2, 9);
    let c = prose(3, 15);
    vec![
        a.clone(),
        format!("{a}\n\n{b}"),
        format!("{b}\n\n{a}"),
        c.clone(),
        format!("{c}\n\nA short closing line."),
        "Tiny.".to_owned(),
        String::new(),
        "<html><body><h1>Title</h1><p>First paragraph of the page with several words in it.</p><p>Second.</p><script>x()</script></body></html>".to_owned(),
    ]
}

fn to_changes(ops: &[Op], pool: &[String]) -> Vec<DocumentChange> {
    const KINDS: [DocumentKind; 3] = [DocumentKind::Article, DocumentKind::Post, DocumentKind::Repository];
    ops.iter()
        .map(|op| match op {
            Op::Upsert { doc, content, title, kind } => {
                upsert(&format!("doc-{doc}"), KINDS[*kind], &format!("Title {title}"), &pool[*content])
            }
            Op::Delete { doc } => delete(&format!("doc-{doc}")),
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..8usize, 0..2usize, 0..3usize)
            .prop_map(|(doc, content, title, kind)| Op::Upsert { doc, content, title, kind }),
        1 => (0..6usize).prop_map(|doc| Op::Delete { doc }),
    ]
}

fn assert_tables_eq(actual: &EpochUpdates, expected: &EpochUpdates, context: &str) {
    assert_eq!(actual.documents, expected.documents, "documents differ {context}");
    assert_eq!(actual.chunks, expected.chunks, "chunks differ {context}");
    assert_eq!(actual.embeddings, expected.embeddings, "embeddings differ {context}");
    assert_eq!(actual.instruct, expected.instruct, "instruct differ {context}");
}

/// The drift buckets, summed over epochs and workers, are exactly the
/// statistics of the live chunks (integer sums: no rounding drift).
fn assert_drift_eq(actual: &EpochUpdates, expected: &DriftStats, context: &str) {
    let mut total = DriftStats::default();
    for (_, stats) in &actual.drift {
        assert!(stats.vectors >= 0 && stats.texts >= 0, "a bucket counts negative chunks {context}");
        total.add(stats, 1);
    }
    let mut expected = expected.clone();
    // An empty set may keep zero-filled sums: compare values, not lengths.
    for v in [&mut total.vector_sum, &mut total.feature_sum, &mut expected.vector_sum, &mut expected.feature_sum] {
        while v.last() == Some(&0) {
            v.pop();
        }
    }
    assert_eq!(total, expected, "drift statistics differ {context}");
}

fn check(epochs: &[Vec<Op>]) {
    let pool = contents();
    let chunking = small_chunks();
    let embedder = HashingEmbedder::new(32);
    let features = DriftFeatures::new(embedder.dim(), &drift_config());
    let mut one = Harness::new(1, chunking.clone());
    let mut four = Harness::new(4, chunking.clone());
    let mut cluster = Harness::cluster(2, 2, chunking.clone());
    let mut reference = ReferenceDocs::default();
    for (i, ops) in epochs.iter().enumerate() {
        let changes = to_changes(ops, &pool);
        let e1 = one.epoch(changes.clone());
        let e4 = four.epoch(changes.clone());
        let ec = cluster.epoch(changes.clone());
        assert_eq!((e1, e1), (e4, ec));
        reference.apply(e1, &changes);
        let expected = reference.tables(&chunking, &embedder);
        assert_tables_eq(&one.state, &expected, &format!("on 1 worker after epoch {i}"));
        assert_tables_eq(&four.state, &expected, &format!("on 4 workers after epoch {i}"));
        assert_tables_eq(&cluster.state, &expected, &format!("on 2 processes × 2 workers after epoch {i}"));
        let drift = drift_of(&expected, &features);
        assert_drift_eq(&one.state, &drift, &format!("on 1 worker after epoch {i}"));
        assert_drift_eq(&four.state, &drift, &format!("on 4 workers after epoch {i}"));
        assert_drift_eq(&cluster.state, &drift, &format!("on 2 processes × 2 workers after epoch {i}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn tables_equal_recomputation_after_every_epoch(epochs in prop::collection::vec(prop::collection::vec(op(), 0..8), 1..8)) {
        check(&epochs);
    }
}

#[test]
fn insert_update_delete_reinsert_and_duplicates() {
    let up = |doc, content| Op::Upsert { doc, content, title: 0, kind: 0 };
    check(&[
        vec![up(0, 0), up(1, 0)],                        // identical content under two ids
        vec![up(0, 0)],                                  // no-op update
        vec![up(0, 1)],                                  // append paragraphs
        vec![Op::Delete { doc: 0 }],                     // delete
        vec![up(0, 1), Op::Delete { doc: 0 }, up(0, 2)], // several changes in one epoch
        vec![Op::Delete { doc: 9 }],                     // delete of an unknown id
        vec![up(1, 3), up(1, 0)],                        // update undone within the epoch
    ]);
}
