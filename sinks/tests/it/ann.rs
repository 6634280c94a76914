//! The HNSW index through the store: it follows inserts and deletes epoch by
//! epoch, agrees with the exact scan, applies filters inside the search, and
//! comes back after a reopen.

use twinflow_schemas::api::{SearchFilter, SearchMode};
use twinflow_schemas::config::AnnConfig;
use twinflow_schemas::rng::SeededRng;
use twinflow_schemas::{EmbeddingRow, EpochUpdates, Hash128, Vector};
use twinflow_sinks::{EpochCommit, Store};

use crate::fixtures::{chunk, doc};

const D: usize = 32;

/// A seeded unit vector near one of 20 cluster centres (so neighbours are meaningful).
fn vector(i: u64) -> Vec<f32> {
    let (mut centre, mut noise) = (SeededRng::new(i / 50), SeededRng::new(!i));
    let v: Vec<f32> = (0..D).map(|_| centre.unit() as f32 - 0.5 + 0.3 * (noise.unit() as f32 - 0.5)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn text(i: u64) -> String {
    format!("chunk number {i}")
}

/// Documents `d0..d9`, chunk `i` in document `i % 10`, with its vector.
fn updates(ids: impl Iterator<Item = u64>, diff: i64, with_docs: bool) -> EpochUpdates {
    let mut u = EpochUpdates::default();
    if with_docs {
        for d in 0..10 {
            u.documents.push((doc(&format!("d{d}"), "t", 1), 1));
        }
    }
    for i in ids {
        let c = chunk(&format!("d{}", i % 10), i as u32, &text(i));
        u.embeddings
            .push((EmbeddingRow { chunk_id: c.chunk_id, model_id: "m".into(), vector: Vector(vector(i)) }, diff));
        u.chunks.push((c, diff));
    }
    u
}

fn ids(store: &Store, query: &[f32], k: usize, filter: &SearchFilter, exact: bool) -> Vec<Hash128> {
    let (_, hits) = store.search_mode("", query, k, filter, SearchMode::Vector, exact).unwrap();
    hits.into_iter().map(|h| h.chunk_id).collect()
}

fn recall(approximate: &[Hash128], exact: &[Hash128]) -> f64 {
    approximate.iter().filter(|id| exact.contains(id)).count() as f64 / exact.len() as f64
}

#[test]
fn hnsw_follows_epochs_agrees_with_exact_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = AnnConfig { exact_below: 0, ..AnnConfig::default() };
    let store = Store::open_with(dir.path(), D, &config).unwrap();
    store.commit(EpochCommit::new(1, vec![(0, updates(0..2000, 1, true))])).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 2000);

    let all = SearchFilter::default();
    let queries: Vec<u64> = (0..2000).step_by(97).collect();
    let mean_recall = |store: &Store| {
        let total: f64 = queries
            .iter()
            .map(|q| recall(&ids(store, &vector(*q), 10, &all, false), &ids(store, &vector(*q), 10, &all, true)))
            .sum();
        total / queries.len() as f64
    };
    let r = mean_recall(&store);
    assert!(r >= 0.95, "recall@10 {r}");

    // Delete every third chunk: none is returned after the epoch that deleted it.
    store.commit(EpochCommit::new(2, vec![(0, updates((0..2000).filter(|i| i % 3 == 0), -1, false))])).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 2000 - 667);
    for q in &queries {
        for id in ids(&store, &vector(*q), 20, &all, false) {
            let i: u64 = (0..2000).find(|i| Hash128::of(text(*i).as_bytes()) == id).unwrap();
            assert_ne!(i % 3, 0, "deleted chunk {i} returned");
        }
    }
    assert!(mean_recall(&store) >= 0.95);

    // Filters apply inside the HNSW search: k hits, all from the allowed document.
    let one_doc = SearchFilter { doc_id: Some("d4".into()), ..SearchFilter::default() };
    let hits = ids(&store, &vector(5), 10, &one_doc, false);
    assert_eq!(hits.len(), 10);
    for id in &hits {
        let i: u64 = (0..2000).find(|i| Hash128::of(text(*i).as_bytes()) == *id).unwrap();
        assert_eq!(i % 10, 4);
    }
    assert!(recall(&hits, &ids(&store, &vector(5), 10, &one_doc, true)) >= 0.9);

    // Re-inserted chunks come back (their keys are reused).
    store.commit(EpochCommit::new(3, vec![(0, updates((0..2000).filter(|i| i % 3 == 0), 1, false))])).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 2000);
    assert_eq!(ids(&store, &vector(3), 1, &all, false), vec![Hash128::of(text(3).as_bytes())]);

    // Reopen: the index is rebuilt from the stored embeddings.
    let expected = ids(&store, &vector(42), 10, &all, true);
    drop(store);
    let store = Store::open_with(dir.path(), D, &config).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 2000);
    assert!(recall(&ids(&store, &vector(42), 10, &all, false), &expected) >= 0.9);
}

#[test]
fn small_indexes_and_selective_filters_scan_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Default: under 20,000 candidates the scan is exact, so results equal the exact ones.
    let store = Store::open(dir.path(), D).unwrap();
    store.commit(EpochCommit::new(1, vec![(0, updates(0..500, 1, true))])).unwrap();
    let all = SearchFilter::default();
    for q in [1, 77, 350] {
        assert_eq!(ids(&store, &vector(q), 10, &all, false), ids(&store, &vector(q), 10, &all, true));
    }
}

#[test]
fn the_graph_saved_with_a_snapshot_is_loaded_and_brought_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let config = AnnConfig { exact_below: 0, ..AnnConfig::default() };
    let store = Store::open_with(dir.path(), D, &config).unwrap();
    store.commit(EpochCommit::new(1, vec![(0, updates(0..1500, 1, true))])).unwrap();
    store.snapshot().unwrap();
    assert!(dir.path().join("_index/vectors-v1.usearch").is_file());
    // After the snapshot: 100 deleted, 200 added.
    store.commit(EpochCommit::new(2, vec![(0, updates(0..100, -1, false))])).unwrap();
    store.commit(EpochCommit::new(3, vec![(0, updates(1500..1700, 1, false))])).unwrap();
    let all = SearchFilter::default();
    let expected: Vec<Vec<Hash128>> =
        [3u64, 150, 1600].iter().map(|q| ids(&store, &vector(*q), 10, &all, true)).collect();
    drop(store);

    let store = Store::open_with(dir.path(), D, &config).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 1600);
    assert_eq!(store.vector_index_stats().restored_from, Some(1), "loaded, not rebuilt");
    for (q, want) in [3u64, 150, 1600].iter().zip(&expected) {
        let got = ids(&store, &vector(*q), 10, &all, false);
        assert!(recall(&got, want) >= 0.9, "query {q}");
        assert!(
            got.iter().all(|id| (0..100).all(|i| Hash128::of(text(i).as_bytes()) != *id)),
            "a deleted chunk came back"
        );
    }

    // A damaged saved graph means a rebuild, not an error.
    drop(store);
    std::fs::write(dir.path().join("_index/vectors-v1.usearch"), b"not a graph").unwrap();
    let store = Store::open_with(dir.path(), D, &config).unwrap();
    assert_eq!(store.vector_index_stats().vectors, 1600);
    assert_eq!(store.vector_index_stats().restored_from, None, "rebuilt");
}

/// Reverses a vector's components: a projection whose neighbours differ
/// from the base vectors' (in a way the test can compute).
#[derive(Debug)]
struct Reverse;

impl twinflow_sinks::VectorProjection for Reverse {
    fn id(&self) -> &str {
        "reverse"
    }
    fn project(&self, vector: &[f32]) -> Vec<f32> {
        vector.iter().rev().copied().collect()
    }
}

/// With a projection active, the graph and the exact scan both answer with
/// projected vectors (stored vectors projected, the query projected), new
/// epochs are projected as they commit, and the `embeddings` table keeps the
/// base vectors; switching back restores the base answers.
#[test]
fn a_projection_switches_both_searches_and_follows_commits() {
    let dir = tempfile::tempdir().unwrap();
    let config = AnnConfig { exact_below: 0, ..AnnConfig::default() };
    let store = Store::open_with(dir.path(), D, &config).unwrap();
    store.commit(EpochCommit::new(1, vec![(0, updates(0..1000, 1, true))])).unwrap();
    let all = SearchFilter::default();
    // A query equal to chunk 7's reversed vector: chunk 7 under the projection, not before.
    let query: Vec<f32> = vector(7).into_iter().rev().collect();
    let chunk7 = chunk("d7", 7, &text(7)).chunk_id;
    assert_ne!(ids(&store, &query, 1, &all, true)[0], chunk7);

    let switch = store.set_projection(Some(std::sync::Arc::new(Reverse))).unwrap();
    assert_eq!((switch.epoch, switch.vectors), (1, 1000));
    assert_eq!(store.projection().as_deref(), Some("reverse"));
    // The query is projected too: reversed twice, it is chunk 7's own vector against reversed vectors.
    let projected_query = vector(7);
    for exact in [true, false] {
        assert_eq!(ids(&store, &projected_query, 1, &all, exact)[0], chunk7, "exact = {exact}");
    }
    // A chunk committed after the switch is projected on the way in.
    store.commit(EpochCommit::new(2, vec![(0, updates(1000..1001, 1, false))])).unwrap();
    let chunk1000 = chunk("d0", 1000, &text(1000)).chunk_id;
    for exact in [true, false] {
        assert_eq!(ids(&store, &vector(1000), 1, &all, exact)[0], chunk1000, "exact = {exact}");
    }
    let stored = store.current_embeddings().into_iter().find(|e| e.chunk_id == chunk1000).unwrap();
    assert_eq!(stored.vector.0, vector(1000), "the table keeps the base vector");
    // A snapshot does not save a projected graph; a reopened store starts from the base vectors.
    store.snapshot().unwrap();
    store.set_projection(None).unwrap();
    assert_eq!(ids(&store, &vector(7), 1, &all, true)[0], chunk7, "back to the base vectors");
    drop(store);
    let reopened = Store::open_with(dir.path(), D, &config).unwrap();
    assert_eq!(reopened.projection(), None);
    assert_eq!(ids(&reopened, &vector(7), 1, &all, false)[0], chunk7);
}

/// Both live indexes split into shards answer as one index: the same chunks
/// and scores in every mode (BM25 with the whole live corpus's statistics,
/// vectors exactly; HNSW over sharded graphs keeps its recall), through
/// inserts and deletes, and after a reopen that loads every shard's saved graph.
#[test]
fn sharded_indexes_answer_as_one() {
    let config = AnnConfig { exact_below: 0, ..AnnConfig::default() };
    let words = ["harbour", "lantern", "orchard", "glacier", "meadow", "compass", "violin", "granite"];
    let with_words = |ids: std::ops::Range<u64>, diff: i64, with_docs: bool| {
        let mut u = updates(ids.clone(), diff, with_docs);
        for ((c, _), i) in u.chunks.iter_mut().zip(ids) {
            let text = format!("{} {} {} number {i}", words[(i % 8) as usize], words[(i % 5) as usize], text(i));
            let old = c.chunk_id;
            *c = chunk(&c.doc_id, c.ordinal, &text);
            let e = u.embeddings.iter_mut().find(|(e, _)| e.chunk_id == old).unwrap();
            e.0.chunk_id = c.chunk_id;
        }
        u
    };
    let mut answers = Vec::new();
    let mut exact_vectors = Vec::new();
    for shards in [1, 4] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sharded(dir.path(), D, &config, shards).unwrap();
        store.commit(EpochCommit::new(1, vec![(0, with_words(0..1200, 1, true))])).unwrap();
        store.commit(EpochCommit::new(2, vec![(0, with_words(0..300, -1, false))])).unwrap();
        store.commit(EpochCommit::new(3, vec![(0, with_words(1200..1500, 1, false))])).unwrap();
        store.snapshot().unwrap();
        drop(store);
        let store = Store::open_sharded(dir.path(), D, &config, shards).unwrap();
        let stats = store.vector_index_stats();
        assert_eq!((stats.shards, stats.vectors, stats.restored_from), (shards, 1200, Some(1)));
        let all = SearchFilter::default();
        let mut answer = Vec::new();
        let mut recalls = Vec::new();
        // Vector 0's cluster is deleted: its neighbours are near-ties, so recall is judged on the mean.
        for (q, query) in [(0u64, "harbour violin"), (1333, "glacier number"), (777, "meadow compass lantern")] {
            for mode in [
                SearchMode::Bm25,
                SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 1.0, lead_weight: 0.0, rrf_k: 60.0 },
            ] {
                let (_, hits) = store.search_mode(query, &vector(q), 10, &all, mode, true).unwrap();
                assert_eq!(hits.len(), 10);
                answer.push(hits.iter().map(|h| format!("{} {:.5}", h.chunk_id, h.score)).collect::<Vec<_>>());
            }
            let exact = ids(&store, &vector(q), 10, &all, true);
            recalls.push(recall(&ids(&store, &vector(q), 10, &all, false), &exact));
            exact_vectors.push(exact);
        }
        let mean = recalls.iter().sum::<f64>() / recalls.len() as f64;
        assert!(mean >= 0.8, "{shards} shards: recall@10 {recalls:?}");
        answers.push(answer);
    }
    assert_eq!(answers[0], answers[1], "BM25 and hybrid answers on 1 and 4 shards");
    let (one, four) = exact_vectors.split_at(exact_vectors.len() / 2);
    assert_eq!(one, four, "exact vector answers on 1 and 4 shards");
}
