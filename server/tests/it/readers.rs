//! The Parquet files are readable by other readers: DataFusion cold (in
//! `sinks`' tests) and DuckDB here, when its Python package is installed.
//! A missing DuckDB fails the test unless `TWINFLOW_SKIP_DUCKDB=1`; `.ci/run`
//! installs it.

use std::process::Command;

use crate::fixtures::{app, article, upsert_line};

fn duckdb_available() -> bool {
    Command::new("python3").args(["-c", "import duckdb"]).output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn duckdb_reads_the_change_logs() {
    if !duckdb_available() {
        twinflow_schemas::testing::tool_missing("duckdb", "python3 -m pip install duckdb");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let lines =
        (0..5).map(|i| upsert_line(&format!("d{i}"), "T", &article(&format!("topic{i}"), 5))).collect::<Vec<_>>();
    let epoch = app
        .engine()
        .unwrap()
        .submit(
            lines
                .iter()
                .map(|l| twinflow_schemas::parse_change(l.as_bytes(), 1, &Default::default()).unwrap())
                .collect(),
        )
        .unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, std::time::Duration::from_secs(30)));
    app.engine().unwrap().submit(vec![twinflow_schemas::DocumentChange::Delete { doc_id: "d0".into() }]).unwrap();
    let epoch = app.engine().unwrap().flush().unwrap();
    assert!(app.engine().unwrap().wait_committed(epoch, std::time::Duration::from_secs(30)));
    let (_, counts) = app.store.counts();
    app.shutdown().unwrap();

    let script = r#"
import duckdb, sys
root = sys.argv[1]
def q(sql): return duckdb.sql(sql).fetchall()
chunks = q(f"SELECT SUM(_diff) FROM read_parquet('{root}/chunks/epoch=*/part-*.parquet')")[0][0]
docs = q(f"SELECT SUM(_diff) FROM read_parquet('{root}/documents/epoch=*/part-*.parquet', hive_partitioning=true)")[0][0]
epochs = q(f"SELECT COUNT(DISTINCT epoch) FROM read_parquet('{root}/documents/epoch=*/part-*.parquet', hive_partitioning=true)")[0][0]
dim = q(f"SELECT len(vector) FROM read_parquet('{root}/embeddings/epoch=*/part-*.parquet') LIMIT 1")[0][0]
print(chunks, docs, epochs, dim)
"#;
    let out = Command::new("python3").args(["-c", script, dir.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<u64> = text.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields[0], counts["chunks"], "chunks per DuckDB vs live");
    assert_eq!(fields[1], 4, "documents alive per DuckDB");
    assert_eq!(fields[2], 2, "two committed epochs with document changes");
    assert_eq!(fields[3], 384, "vectors are fixed-size lists of 384 floats");
}
