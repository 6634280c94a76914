//! SQL may read, never write: DDL, DML, COPY and SET are refused before
//! anything runs.

use twinflow_schemas::api::ErrorCode;
use twinflow_sinks::{Error, Store};

use crate::fixtures::*;

#[tokio::test]
async fn writes_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    commit_all(&store, &mut oracle, &scenario());
    let before = files_under(dir.path());
    let out = tempfile::tempdir().unwrap();
    let copy_target = out.path().join("stolen.parquet");

    let refused = [
        "CREATE TABLE t AS SELECT * FROM chunks".to_owned(),
        "CREATE VIEW v AS SELECT 1".to_owned(),
        "DROP TABLE chunks".to_owned(),
        "INSERT INTO chunks SELECT * FROM chunks".to_owned(),
        "DELETE FROM documents".to_owned(),
        "UPDATE documents SET title = 'x'".to_owned(),
        format!("COPY (SELECT * FROM chunks) TO '{}'", copy_target.display()),
        format!("COPY chunks TO '{}' STORED AS PARQUET", copy_target.display()),
        format!("EXPLAIN COPY chunks TO '{}'", copy_target.display()),
        format!("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}'", dir.path().display()),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "RESET datafusion.execution.batch_size".to_owned(),
    ];
    for sql in &refused {
        let err = store.sql(sql).await.expect_err(sql);
        assert!(matches!(err, Error::SqlNotReadOnly(_)), "{sql}: {err:?}");
        assert_eq!(err.code(), ErrorCode::SqlNotReadOnly);
        assert!(err.to_string().contains("read-only"), "{sql}: {err}");
    }
    assert!(!copy_target.exists(), "a refused COPY wrote a file");
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    assert_eq!(files_under(dir.path()), before, "a refused statement wrote to the data directory");
    assert_eq!(store.counts(), (5, oracle.counts()));
    assert_eq!(scalar(&store, "SELECT COUNT(*) FROM chunks").await, 5);
}

#[tokio::test]
async fn errors_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();

    for sql in ["SELEC 1", "SELECT * FROM nosuch", "SELECT nosuch FROM chunks", "SELECT 1; SELECT 2"] {
        let err = store.sql(sql).await.expect_err(sql);
        assert!(matches!(err, Error::Sql(_)), "{sql}: {err:?}");
        assert_eq!(err.code(), ErrorCode::SqlError);
    }

    // Before any commit every table exists, empty, with its schema.
    for table in ["documents", "chunks", "embeddings", "instruct"] {
        assert_eq!(scalar(&store, &format!("SELECT COUNT(*) FROM {table}")).await, 0);
        assert_eq!(scalar(&store, &format!("SELECT COUNT(*) FROM {table}_changes")).await, 0);
    }
    let answer = store.sql("SELECT * FROM embeddings_changes").await.unwrap();
    assert_eq!(answer.schema, twinflow_schemas::TableName::Embeddings.change_schema(DIM));
    assert_eq!(answer.epoch, 0);

    commit_all(&store, &mut Oracle::default(), &scenario()[..1]);
    let (_, tables) = query_text(&store, "SHOW TABLES").await;
    for table in ["documents", "chunks_changes", "instruct", "embeddings_changes"] {
        assert!(tables.contains(table), "{tables}");
    }
    let (_, plan) = query_text(&store, "EXPLAIN SELECT COUNT(*) FROM chunks_changes").await;
    assert!(plan.contains("plan"), "{plan}");
    let (_, described) = query_text(&store, "DESCRIBE chunks").await;
    assert!(described.contains("token_estimate"), "{described}");
    let with = scalar(&store, "WITH x AS (SELECT doc_id FROM chunks) SELECT COUNT(DISTINCT doc_id) FROM x").await;
    assert_eq!(with, 2);
}
