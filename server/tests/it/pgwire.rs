//! The Postgres wire protocol endpoint, with real clients: Debian's `psql`
//! (simple query protocol; `.ci/run` installs it, elsewhere that part is
//! skipped without it) and `tokio-postgres` (extended protocol, binary
//! results). Queries over the live tables, a change log, and a versioned
//! dataset; writes refused with SQLSTATE 25006.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use twinflow_schemas::{ChangeLimits, parse_change};
use twinflow_server::App;
use twinflow_server::pgwire::PgServer;

use crate::fixtures::{app, article, upsert_line};

/// An app with three documents and one dataset version.
fn app_with_data(dir: &std::path::Path) -> Arc<App> {
    let app = app(dir);
    let lines = [
        upsert_line("rivers", "Rivers", &article("rivers and boats", 8)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 8)),
        upsert_line("roads", "Roads", &article("roads and bridges", 8)),
    ];
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = app.engine.submit(changes).unwrap();
    app.engine.flush();
    assert!(app.engine.wait_committed(epoch, Duration::from_secs(60)));
    let version = app.training.datasets.snapshot(&app.store).unwrap();
    assert_eq!(version.version, 1);
    app
}

fn psql(port: u16, sql: &str) -> Option<std::process::Output> {
    psql_with(port, crate::fixtures::READ_KEY, sql)
}

/// `psql` logging in with `key` as its password.
fn psql_with(port: u16, key: &str, sql: &str) -> Option<std::process::Output> {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "twinflow", "-d", "twinflow"])
        .args(["-X", "-A", "-t", "-F", "|", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGPASSWORD", key)
        .output()
        .ok()
}

#[test]
fn psql_and_a_driver_query_tables_change_logs_and_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_data(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(PgServer::new(app.store.clone(), Duration::from_secs(30), app.gate.clone()).serve(listener));

    // psql: the simple query protocol, text results.
    match psql(port, "SELECT doc_id, title FROM documents ORDER BY doc_id") {
        None => {
            twinflow_schemas::testing::tool_missing("psql", "apt-get install postgresql-client");
        }
        Some(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(stdout.trim(), "rivers|Rivers\nroads|Roads\ntaxes|Taxes");
            let out = psql(port, "SELECT COUNT(*) > 0 FROM instruct_dataset WHERE dataset_version = 1").unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t", "{}", String::from_utf8_lossy(&out.stderr));
            // A key is the password: one that is not a key, or has no `read` scope, logs nobody in.
            for key in ["tfk_not-a-key", crate::fixtures::WRITE_KEY] {
                let out = psql_with(port, key, "SELECT 1").unwrap();
                assert!(!out.status.success());
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.to_lowercase().contains("password authentication failed"), "{stderr}");
            }
            let out = psql(port, "DELETE FROM documents").unwrap();
            assert!(!out.status.success());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("read-only"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    // tokio-postgres: the extended protocol (parse, describe, bind, execute), binary results.
    runtime.block_on(async {
        let login = |key: &str| format!("host=127.0.0.1 port={port} user=twinflow dbname=twinflow password={key}");
        let refused = tokio_postgres::connect(&login("tfk_not-a-key"), tokio_postgres::NoTls).await;
        assert!(refused.is_err(), "a password that is no key is refused");
        let (client, connection) =
            tokio_postgres::connect(&login(crate::fixtures::READ_KEY), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let rows = client.query("SELECT doc_id, version FROM documents ORDER BY doc_id", &[]).await.unwrap();
        let docs: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(docs, [("rivers".into(), 1), ("roads".into(), 1), ("taxes".into(), 1)]);

        // A versioned dataset: its samples, by split, from the version's Parquet files.
        let rows = client
            .query(
                "SELECT split, COUNT(*) AS n FROM instruct_dataset WHERE dataset_version = 1 GROUP BY split ORDER BY split",
                &[],
            )
            .await
            .unwrap();
        let total: i64 = rows.iter().map(|r| r.get::<_, i64>("n")).sum();
        assert!(total > 0, "the dataset version has samples");

        // The change log: every row of epoch 1's documents inserted once.
        let row = client
            .query_one("SELECT SUM(_diff), MIN(_epoch) = MAX(_epoch), AVG(CAST(_diff AS DOUBLE)) FROM documents_changes", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 3);
        assert!(row.get::<_, bool>(1));
        assert_eq!(row.get::<_, f64>(2), 1.0);

        let error = client.query("INSERT INTO documents VALUES (1)", &[]).await.unwrap_err();
        assert_eq!(error.code(), Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION), "{error}");
        let error = client.query("SELECT * FROM no_such_table", &[]).await.unwrap_err();
        assert!(error.as_db_error().unwrap().message().contains("no_such_table"), "{error}");
    });
    app.shutdown().unwrap();
}
