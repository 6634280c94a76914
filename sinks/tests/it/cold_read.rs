//! A restarted process serves what was committed, and other readers see the
//! same change log in the Parquet files.

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use twinflow_sinks::{EpochCommit, Store};

use crate::fixtures::*;

const QUERIES: &[&str] = &[
    "SELECT doc_id, kind, title, format, content_hash, fetched_at, version FROM documents ORDER BY doc_id",
    "SELECT chunk_id, doc_id, ordinal, text FROM chunks ORDER BY chunk_id, doc_id",
    "SELECT chunk_id, model_id, vector FROM embeddings ORDER BY chunk_id",
    "SELECT sample_id, doc_id, chunk_ids, split FROM instruct ORDER BY sample_id",
    "SELECT _epoch, SUM(_diff) AS d, COUNT(*) AS n FROM chunks_changes GROUP BY _epoch ORDER BY _epoch",
    "SELECT doc_id, title, _epoch, _diff FROM documents_changes ORDER BY _epoch, doc_id, _diff",
];

#[tokio::test]
async fn reopening_restores_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut oracle = Oracle::default();
    let (counts, searches, answers) = {
        let store = Store::open(dir.path(), DIM).unwrap();
        commit_all(&store, &mut oracle, &scenario());
        let searches: Vec<_> = ["gamma", "alpha two", "delta"].iter().map(|t| store.search(&vector_of(t), 4)).collect();
        let mut answers = Vec::new();
        for sql in QUERIES {
            answers.push(query_text(&store, sql).await);
        }
        (store.counts(), searches, answers)
    };

    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.committed_epoch(), 5);
    assert_eq!(store.counts(), counts);
    assert_eq!(counts.1, oracle.counts());
    assert_eq!(store.current_documents(), oracle.documents());
    assert_eq!(store.current_embeddings(), oracle.embeddings());
    let again: Vec<_> = ["gamma", "alpha two", "delta"].iter().map(|t| store.search(&vector_of(t), 4)).collect();
    assert_eq!(again, searches);
    for (sql, before) in QUERIES.iter().zip(&answers) {
        assert_eq!(&query_text(&store, sql).await, before, "{sql}");
    }
    // The change log really spans the scenario: epochs 1, 2, 3 and 5 wrote chunks.
    assert_eq!(scalar(&store, "SELECT COUNT(DISTINCT _epoch) FROM chunks_changes").await, 4);
}

#[tokio::test]
async fn datafusion_reads_the_part_files_cold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    commit_all(&store, &mut oracle, &scenario());
    let live_sql = "SELECT chunk_id, doc_id, ordinal, text FROM chunks ORDER BY chunk_id, doc_id, ordinal";
    let (_, live) = query_text(&store, live_sql).await;
    let (_, log) = query_text(&store, "SELECT * FROM chunks_changes ORDER BY _epoch, chunk_id, doc_id, _diff").await;
    drop(store);

    // A plain ListingTable over the folder, as any DataFusion user would do.
    let ctx = SessionContext::new();
    let folder = dir.path().join("chunks");
    ctx.register_parquet("c", &format!("{}/", folder.display()), ParquetReadOptions::default()).await.unwrap();
    let cold_log = ctx.sql("SELECT * FROM c ORDER BY _epoch, chunk_id, doc_id, _diff").await.unwrap();
    assert_eq!(pretty(&cold_log.collect().await.unwrap()), log);

    let consolidated = ctx
        .sql(
            "SELECT chunk_id, doc_id, ordinal, text FROM c GROUP BY chunk_id, doc_id, ordinal, text \
             HAVING SUM(_diff) > 0 ORDER BY chunk_id, doc_id, ordinal",
        )
        .await
        .unwrap();
    assert_eq!(pretty(&consolidated.collect().await.unwrap()), live);
    let schema = ctx.table("c").await.unwrap().schema().as_arrow().clone();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(
        names,
        [
            "chunk_id",
            "doc_id",
            "ordinal",
            "text",
            "char_start",
            "char_end",
            "token_estimate",
            "page_start",
            "page_end",
            "_epoch",
            "_diff"
        ]
    );
}

#[test]
fn source_positions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let epochs = scenario();
    {
        let store = Store::open(dir.path(), DIM).unwrap();
        commit_all(&store, &mut Oracle::default(), &epochs[..1]);
        // No updates, but a source position: the manifest is written.
        let sources = [("http".to_owned(), serde_json::json!(17))].into();
        let stats = store.commit(EpochCommit::new(2, vec![]).with_sources(sources)).unwrap();
        assert_eq!(stats.files, 0);
    }
    let store = Store::open(dir.path(), DIM).unwrap();
    assert_eq!(store.committed_epoch(), 2);
    assert_eq!(store.manifest().sources["http"], 17);

    let sources = [("watch".to_owned(), serde_json::json!({"offset": 3}))].into();
    store.commit(EpochCommit::new(3, epochs[1].1.clone()).with_sources(sources)).unwrap();
    drop(store);
    let manifest = Store::open(dir.path(), DIM).unwrap().manifest();
    assert_eq!(manifest.committed_epoch, 3);
    assert_eq!(manifest.sources["http"], 17, "earlier positions are kept");
    assert_eq!(manifest.sources["watch"]["offset"], 3);
}

#[test]
fn store_is_shareable_and_its_sql_future_is_send() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: T) {}
    send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    send(store.sql("SELECT 1"));
}
