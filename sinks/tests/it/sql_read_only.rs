//! SQL may read, never write: DDL, DML, COPY and SET are refused before
//! anything runs.

use twinflow_schemas::api::ErrorCode;
use twinflow_sinks::{Error, SqlLimits, Store};

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

/// A cross join of 4,000 × 4,000 generated rows: 16 million rows, ordered.
const HUGE: &str = "SELECT a, b FROM (SELECT unnest(range(0, 4000)) AS a) x \
                    CROSS JOIN (SELECT unnest(range(0, 4000)) AS b) y ORDER BY a * b DESC, a";

#[tokio::test]
async fn a_query_over_its_limits_fails_with_a_limit_error_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    let mut oracle = Oracle::default();
    commit_all(&store, &mut oracle, &scenario());

    // Rows: the answer is refused once it passes the limit, not collected whole.
    store.set_sql_limits(SqlLimits { max_rows: 10_000, ..SqlLimits::default() }).unwrap();
    let err = store
        .sql(
            "SELECT a, b FROM (SELECT unnest(range(0, 4000)) AS a) x CROSS JOIN (SELECT unnest(range(0, 4000)) AS b) y",
        )
        .await
        .expect_err("too many rows");
    assert!(matches!(err, Error::SqlLimit(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ResourceLimit);
    assert!(err.to_string().contains("10000 rows"), "{err}");

    // Memory: a sort of 16 million rows in an 8 MiB pool with no room to spill.
    store.set_sql_limits(SqlLimits { memory: 8 << 20, spill: 0, ..SqlLimits::default() }).unwrap();
    let err = store.sql(HUGE).await.expect_err("over the memory pool");
    assert!(matches!(err, Error::SqlLimit(_)), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ResourceLimit);

    // The pool is free again: a small statement runs.
    let answer = store.sql("SELECT COUNT(*) AS n FROM documents").await.unwrap();
    assert_eq!(answer.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}
