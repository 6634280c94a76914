//! Commit the scenario and compare every read path with the oracle.

use std::sync::Arc;

use twinflow_schemas::{EpochUpdates, Hash128};
use twinflow_sinks::{EpochCommit, Store};

use crate::fixtures::*;

#[tokio::test]
async fn every_epoch_matches_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.committed_epoch(), 0);
    let mut oracle = Oracle::default();
    for epoch in scenario() {
        commit_all(&store, &mut oracle, std::slice::from_ref(&epoch));
        assert_eq!(store.committed_epoch(), epoch.0);
        assert_eq!(store.counts(), (epoch.0, oracle.counts()), "counts after epoch {}", epoch.0);
        assert_eq!(store.current_documents(), oracle.documents());
        assert_eq!(store.current_embeddings(), oracle.embeddings());

        // SQL over the live table equals the oracle's rows.
        let sql = "SELECT chunk_id, doc_id, ordinal, text, char_start, char_end, token_estimate FROM chunks";
        let answer = store.sql(&format!("{sql} ORDER BY chunk_id, doc_id, ordinal")).await.unwrap();
        assert_eq!(answer.epoch, epoch.0);
        let batch = arrow::compute::concat_batches(&answer.schema, &answer.batches).unwrap();
        let rows = twinflow_sinks::convert::batch_to_updates::<twinflow_schemas::ChunkRow>(&batch, DIM).unwrap();
        let mut expected = oracle.chunks();
        expected.sort_by(|a, b| (a.chunk_id, &a.doc_id, a.ordinal).cmp(&(b.chunk_id, &b.doc_id, b.ordinal)));
        assert_eq!(rows.into_iter().map(|(r, _)| r).collect::<Vec<_>>(), expected, "chunks after epoch {}", epoch.0);

        // The change log sums to the live state, table by table.
        for (table, count) in oracle.counts() {
            let sum = scalar(&store, &format!("SELECT SUM(_diff) FROM {table}_changes")).await;
            assert_eq!(sum as u64, count, "{table}_changes after epoch {}", epoch.0);
            let live = scalar(&store, &format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(live as u64, count, "{table} after epoch {}", epoch.0);
        }

        // Search ranks like the brute-force oracle, with the same scores.
        for text in ["alpha two", "shared text", "gamma", "delta"] {
            let query = vector_of(text);
            let (as_of, hits) = store.search(&query, 3);
            assert_eq!(as_of, epoch.0);
            let got: Vec<(Hash128, f32)> = hits.iter().map(|h| (h.chunk_id, h.score)).collect();
            let want = oracle.search(&query, 3);
            assert_eq!(got.len(), want.len());
            for ((g, gs), (w, ws)) in got.iter().zip(&want) {
                assert_eq!(g, w, "ranking for {text:?} after epoch {}", epoch.0);
                assert!((gs - ws).abs() < 1e-6);
            }
        }
    }
    let final_counts = oracle.counts();
    assert_eq!(final_counts["documents"], 3);
    assert_eq!(final_counts["chunks"], 5);
    assert_eq!(final_counts["embeddings"], 4);
    assert_eq!(final_counts["instruct"], 1);
    // The deleted document's chunk is gone; the updated one shows its new text.
    let texts = scalar(&store, "SELECT COUNT(*) FROM chunks WHERE text IN ('beta', 'alpha one')").await;
    assert_eq!(texts, 0);
    let title = store.sql("SELECT title FROM documents WHERE doc_id = 'c'").await.unwrap();
    assert!(pretty(&title.batches).contains("C two"));
}

#[tokio::test]
async fn search_returns_text_and_every_live_occurrence_with_document_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    commit_all(&store, &mut oracle, &scenario());

    let (as_of, hits) = store.search(&vector_of("gamma"), 1);
    assert_eq!(as_of, 5);
    let hit = &hits[0];
    assert_eq!(hit.chunk_id, Hash128::of(b"gamma"));
    assert!((hit.score - 1.0).abs() < 1e-6);
    assert_eq!(hit.text, "gamma");
    let sources: Vec<(&str, u32, &str)> =
        hit.sources.iter().map(|s| (s.doc_id.as_str(), s.ordinal, s.title.as_str())).collect();
    assert_eq!(sources, [("c", 0, "C two"), ("d", 1, "D")]);
    assert_eq!(hit.sources[1].url, "https://example.com/d");
    assert_eq!(hit.sources[1].author, "ada");

    // "shared text" was in a and b; b is deleted, so only a remains.
    let (_, hits) = store.search(&vector_of("shared text"), 1);
    assert_eq!(hits[0].sources.len(), 1);
    assert_eq!(hits[0].sources[0].doc_id, "a");
    assert_eq!(hits[0].sources[0].title, "A two");

    assert!(store.search(&vector_of("gamma"), 0).1.is_empty());
    assert_eq!(store.search(&vector_of("gamma"), 100).1.len(), 4, "k above the live count gives every chunk");
}

#[tokio::test]
async fn a_documents_lead_is_its_first_live_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    let query = vector_of("gamma");
    let epochs = scenario();
    commit_all(&store, &mut oracle, &epochs[..2]);
    // "alpha one" was a's lead until epoch 2 replaced it with "alpha two".
    let leads = store.lead_similarities(&vector_of("alpha two"), &["a", "b", "nobody"]);
    assert!((leads[0].unwrap() - 1.0).abs() < 1e-6, "{leads:?}");
    assert!(leads[1].unwrap() < 0.99 && leads[2].is_none(), "{leads:?}");

    commit_all(&store, &mut oracle, &epochs[2..]);
    // "gamma" is c's first chunk and d's second: d's lead is "delta"; b is gone.
    let leads = store.lead_similarities(&query, &["c", "d", "b", "c"]);
    let delta = store.similarities(&query, &[Hash128::of(b"delta")])[0];
    assert!((leads[0].unwrap() - 1.0).abs() < 1e-6, "{leads:?}");
    assert_eq!((leads[1], leads[2], leads[3]), (delta, None, leads[0]));

    // A reopened store reads the same leads from its files.
    drop(store);
    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.lead_similarities(&query, &["c", "d", "b", "c"]), leads);
}

#[tokio::test]
async fn hybrid_adds_each_candidates_document_ranked_by_its_lead() {
    use std::collections::HashMap;
    use twinflow_schemas::api::{SearchFilter, SearchMode};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    commit_all(&store, &mut Oracle::default(), &scenario());
    let all = SearchFilter::default();
    let mut reordered = 0;
    for text in ["alpha two", "shared text", "gamma", "delta"] {
        let query = vector_of(text);
        let plain = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 0.5, lead_weight: 0.0, rrf_k: 1.0 };
        let led = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 0.5, lead_weight: 2.0, rrf_k: 1.0 };
        let before = store.search_ranked(text, &query, 10, &all, plain, true, true).unwrap();
        let after = store.search_ranked(text, &query, 10, &all, led, true, true).unwrap();
        assert!(before.documents_chunks.is_empty(), "without a lead weight no document is looked at");

        // By hand: the two lists fused, then each candidate's best document by its lead's cosine.
        let vector: Vec<Hash128> = after.by_vector.iter().map(|(_, id)| *id).collect();
        let bm25: Vec<Hash128> = after.by_bm25.iter().map(|(id, _)| *id).collect();
        let fused = twinflow_sinks::reciprocal_rank(&[(1.0, &vector[..]), (0.5, &bm25[..])], 1.0);
        assert_eq!(before.hits.len(), fused.len(), "every live chunk is a candidate here");
        let docs_of: HashMap<Hash128, Vec<String>> =
            before.hits.iter().map(|h| (h.chunk_id, h.sources.iter().map(|s| s.doc_id.clone()).collect())).collect();
        let mut docs: Vec<&str> = docs_of.values().flatten().map(String::as_str).collect();
        docs.sort_unstable();
        docs.dedup();
        let similarities = store.lead_similarities(&query, &docs);
        let mut by_lead: Vec<(f32, &str)> = similarities.iter().zip(&docs).map(|(s, d)| (s.unwrap(), *d)).collect();
        by_lead.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let place = |doc: &str| by_lead.iter().position(|(_, d)| *d == doc).unwrap() + 1;
        // The scenario's leads; a candidate's share is scaled by its cosine with its document's.
        let lead_of = |doc: &str| match doc {
            "a" => "alpha two",
            "c" => "gamma",
            "d" => "delta",
            other => panic!("no lead known for {other}"),
        };
        let agreement = |id: Hash128, doc: &str| {
            let lead = Hash128::of(lead_of(doc).as_bytes());
            if lead == id { 1.0 } else { store.similarities(&vector_of(lead_of(doc)), &[id])[0].unwrap().max(0.0) }
        };
        // A document's coherence: the mean agreement of its chunks with its lead.
        let coherence = |doc: &str| {
            let texts: &[&str] = match doc {
                "a" => &["alpha two", "shared text"],
                "c" => &["gamma"],
                _ => &["delta", "gamma"],
            };
            let ids: Vec<Hash128> = texts.iter().map(|t| Hash128::of(t.as_bytes())).collect();
            let cosines = store.similarities(&vector_of(lead_of(doc)), &ids);
            cosines.iter().map(|c| c.unwrap().max(0.0)).sum::<f32>() / texts.len() as f32
        };
        let mut want: Vec<(Hash128, f32)> = fused
            .iter()
            .map(|(id, score)| {
                let share = docs_of[id]
                    .iter()
                    .map(|d| 2.0 * coherence(d) * agreement(*id, d) / (1.0 + place(d) as f32))
                    .max_by(f32::total_cmp)
                    .unwrap();
                (*id, score + share)
            })
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let got: Vec<(Hash128, f32)> = after.hits.iter().map(|h| (h.chunk_id, h.score)).collect();
        assert_eq!(got, want, "{text:?}");
        let mut consulted: Vec<Hash128> = docs_of.keys().copied().collect();
        consulted.sort_unstable();
        assert_eq!(after.documents_chunks, consulted, "every chunk of the candidates' documents: {text:?}");
        let order = |r: &twinflow_sinks::Ranked| r.hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>();
        reordered += usize::from(order(&before) != order(&after));
    }
    assert!(reordered > 0, "the leads moved no ranking: the test shows nothing");
}

/// Stretches the second component: cosines between chunks change under it
/// (a permutation would keep them), so a document's lead must be weighed again.
#[derive(Debug)]
struct Stretch;

impl twinflow_sinks::VectorProjection for Stretch {
    fn id(&self) -> &str {
        "stretch"
    }
    fn project(&self, vector: &[f32]) -> Vec<f32> {
        let mut out = vector.to_vec();
        out[1] *= 3.0;
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-9);
        out.iter().map(|v| v / norm).collect()
    }
}

/// Documents' leads are cached between searches: a store that searched
/// after every epoch (and then switched projection) answers exactly as one
/// that committed the same epochs and searches for the first time.
#[tokio::test]
async fn cached_leads_follow_every_epoch_and_projection() {
    use twinflow_schemas::api::{SearchFilter, SearchMode};

    let led = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 0.5, lead_weight: 2.0, rrf_k: 1.0 };
    let texts = ["alpha two", "shared text", "gamma", "delta", "beta"];
    let answers = |store: &Store| -> Vec<(Vec<(Hash128, f32)>, Vec<Hash128>)> {
        texts
            .iter()
            .map(|text| {
                let ranked =
                    store.search_ranked(text, &vector_of(text), 10, &SearchFilter::default(), led, true, true).unwrap();
                (ranked.hits.iter().map(|h| (h.chunk_id, h.score)).collect(), ranked.documents_chunks)
            })
            .collect()
    };
    let epochs = scenario();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut differed = 0;
    let mut before = answers(&store);
    for upto in 1..=epochs.len() {
        let (epoch, parts) = &epochs[upto - 1];
        store.commit(EpochCommit::new(*epoch, parts.clone())).unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path(), DIM).unwrap();
        commit_all(&fresh, &mut Oracle::default(), &epochs[..upto]);
        let now = answers(&store);
        assert_eq!(now, answers(&fresh), "after epoch {epoch}");
        differed += usize::from(now != before);
        before = now;
    }
    assert!(differed >= 3, "the epochs moved the answers only {differed} times: the test shows nothing");

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path(), DIM).unwrap();
    commit_all(&fresh, &mut Oracle::default(), &epochs);
    for store in [&store, &fresh] {
        store.set_projection(Some(Arc::new(Stretch))).unwrap();
    }
    let projected = answers(&store);
    assert_ne!(projected, before, "the projection moved nothing: the test shows nothing");
    assert_eq!(projected, answers(&fresh), "after the projection switch");
}

#[tokio::test]
async fn ties_are_broken_by_chunk_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    // Three chunk texts with the same vector.
    let texts = ["t1", "t2", "t3"];
    let mut updates = EpochUpdates::default();
    for (i, text) in texts.iter().enumerate() {
        updates.chunks.push((chunk("x", i as u32, text), 1));
        let mut e = emb("delta");
        e.chunk_id = Hash128::of(text.as_bytes());
        updates.embeddings.push((e, 1));
    }
    store.commit(EpochCommit::new(1, vec![(0, updates)])).unwrap();
    let (_, hits) = store.search(&vector_of("delta"), 2);
    let mut ids: Vec<Hash128> = texts.iter().map(|t| Hash128::of(t.as_bytes())).collect();
    ids.sort();
    assert_eq!(hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), ids[..2]);
}

#[tokio::test]
async fn recommitting_and_empty_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    let epochs = scenario();
    commit_all(&store, &mut oracle, &epochs[..2]);
    let files = files_under(dir.path());
    let manifest = store.manifest();

    // Re-committing epoch 2 (even with other data) changes nothing.
    let stats = store.commit(EpochCommit::new(2, epochs[0].1.clone())).unwrap();
    assert_eq!(stats.files, 0);
    assert_eq!(store.counts(), (2, oracle.counts()));
    assert_eq!(files_under(dir.path()), files);
    assert_eq!(store.manifest(), manifest);

    // An empty epoch advances the committed epoch and writes no file.
    let stats = store.commit(EpochCommit::new(3, vec![(0, EpochUpdates::default())])).unwrap();
    assert_eq!((stats.epoch, stats.files, stats.bytes), (3, 0, 0));
    assert_eq!(store.committed_epoch(), 3);
    assert_eq!(files_under(dir.path()), files);
    assert_eq!(store.sql("SELECT 1").await.unwrap().epoch, 3);

    // A non-empty one reports what it wrote.
    let stats = store.commit(EpochCommit::new(4, epochs[2].1.clone())).unwrap();
    assert_eq!(stats.files, 3, "documents, chunks and embeddings of worker 1");
    assert_eq!(stats.rows["chunks"], 2);
    assert!(stats.bytes > 0);
    assert!(dir.path().join("chunks/epoch=4/part-1.parquet").exists());
}

#[tokio::test]
async fn readers_see_whole_epochs_while_commits_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), DIM).unwrap());
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for epoch in 1..=40u64 {
                let text = format!("chunk {epoch}");
                let updates = EpochUpdates {
                    documents: vec![(doc(&format!("d{epoch}"), "T", epoch), 1)],
                    chunks: vec![(chunk(&format!("d{epoch}"), 0, &text), 1)],
                    ..EpochUpdates::default()
                };
                store.commit(EpochCommit::new(epoch, vec![(0, updates)])).unwrap();
            }
        })
    };
    let sql = "SELECT (SELECT COUNT(*) FROM chunks) - (SELECT SUM(_diff) FROM chunks_changes) \
               + (SELECT COUNT(*) FROM documents) - (SELECT COUNT(*) FROM chunks)";
    let mut last = 0;
    while !writer.is_finished() {
        let (epoch, counts) = store.counts();
        assert_eq!(counts["chunks"], epoch);
        assert_eq!(counts["documents"], epoch);
        assert_eq!(scalar(&store, sql).await, 0);
        let answer = store.sql("SELECT COUNT(*) FROM chunks").await.unwrap();
        assert!(answer.epoch >= last);
        last = answer.epoch;
    }
    writer.join().unwrap();
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks_changes").await, 40);
}
