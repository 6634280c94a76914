//! The Postgres wire protocol endpoint, with real clients: Debian's `psql`
//! (simple query protocol; `.ci/run` installs it, elsewhere that part is
//! skipped without it) and `tokio-postgres` (extended protocol, binary
//! results). Queries over the live tables, a change log, and a versioned
//! dataset; writes refused with SQLSTATE 25006. Logins with a key as the
//! password, and with SCRAM-SHA-256 as a key's name.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use twinflow_schemas::{ChangeLimits, parse_change};
use twinflow_server::App;
use twinflow_server::pgwire::PgServer;

use crate::fixtures::{READ_KEY, WRITE_KEY, app_with, article, give_scram_verifiers, upsert_line};

/// An app with three documents and one dataset version; its keys have SCRAM verifiers.
fn app_with_data(dir: &std::path::Path) -> Arc<App> {
    let app = app_with(dir, give_scram_verifiers);
    let lines = [
        upsert_line("rivers", "Rivers", &article("rivers and boats", 8)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 8)),
        upsert_line("roads", "Roads", &article("roads and bridges", 8)),
    ];
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    let version = app.training.datasets.snapshot(&app.store).unwrap();
    assert_eq!(version.version, 1);
    app
}

fn psql(port: u16, sql: &str) -> Option<std::process::Output> {
    psql_with(port, "twinflow", READ_KEY, sql)
}

/// `psql` logging in as `user` with `key` as its password.
fn psql_with(port: u16, user: &str, key: &str, sql: &str) -> Option<std::process::Output> {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "twinflow"])
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
            // As a key's name, the login is SCRAM (see `logins_by_key_name_use_scram`): the same rules hold.
            for (user, key) in [
                ("twinflow", "tfk_not-a-key"),
                ("twinflow", WRITE_KEY),
                ("reader", "tfk_not-a-key"),
                ("reader", WRITE_KEY),
                ("writer", WRITE_KEY),
            ] {
                let out = psql_with(port, user, key, "SELECT 1").unwrap();
                assert!(!out.status.success(), "{user} with {key} logged in");
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(stderr.to_lowercase().contains("password authentication failed"), "{stderr}");
            }
            let out = psql_with(port, "reader", READ_KEY, "SELECT COUNT(*) FROM documents").unwrap();
            assert!(out.status.success(), "SCRAM login: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
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
        let login = |user: &str, key: &str| format!("host=127.0.0.1 port={port} user={user} dbname=twinflow password={key}");
        for user in ["twinflow", "reader"] {
            let refused = tokio_postgres::connect(&login(user, "tfk_not-a-key"), tokio_postgres::NoTls).await;
            assert!(refused.is_err(), "a password that is no key is refused");
        }
        let (scram, connection) = tokio_postgres::connect(&login("reader", READ_KEY), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(scram.query_one("SELECT 6 * 7", &[]).await.unwrap().get::<_, i64>(0), 42);
        let (client, connection) = tokio_postgres::connect(&login("twinflow", READ_KEY), tokio_postgres::NoTls).await.unwrap();
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

/// What the server asks a client that starts up as `user` for: the
/// authentication request's code (3: a password, 10: SASL) and its body.
fn auth_request(port: u16, user: &str) -> (u32, Vec<u8>) {
    use std::io::{Read, Write};

    let body = [b"\x00\x03\x00\x00user\x00".as_slice(), user.as_bytes(), b"\x00database\x00twinflow\x00\x00"].concat();
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(&[&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat()).unwrap();
    let mut head = [0u8; 9];
    socket.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'R', "an authentication request");
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len - 8];
    socket.read_exact(&mut rest).unwrap();
    (u32::from_be_bytes(head[5..9].try_into().unwrap()), rest)
}

/// A key with a verifier logs in by its name with SCRAM-SHA-256, so the key
/// never crosses the network; any other user name is asked for the key as
/// a password. (No channel binding without TLS: `tls.rs` checks `-PLUS`.)
#[test]
fn logins_by_key_name_use_scram() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |config| {
        give_scram_verifiers(config);
        config.auth.keys.retain(|k| k.name != "writer");
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(PgServer::new(app.store.clone(), Duration::from_secs(30), app.gate.clone()).serve(listener));
    for user in ["reader", "admin"] {
        assert_eq!(auth_request(port, user), (10, b"SCRAM-SHA-256\0\0".to_vec()), "{user}: SASL, SCRAM-SHA-256 only");
    }
    for user in ["twinflow", "writer", "Reader"] {
        assert_eq!(auth_request(port, user).0, 3, "{user}: no key of that name, so a password");
    }
    app.shutdown().unwrap();
}

/// Hostile bytes on the Postgres port: random and mutated startup,
/// password, SCRAM and query messages, before and after a login. Each connection
/// ends or is refused; none panics a connection task; and a real client
/// still logs in and queries afterwards.
#[test]
fn hostile_messages_leave_the_endpoint_serving() {
    use std::io::{Read, Write};

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), give_scram_verifiers);
    // Its own thread names, so the panic count sees this endpoint's connection tasks only.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("pgwire-hostile")
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(PgServer::new(app.store.clone(), Duration::from_secs(30), app.gate.clone()).serve(listener));
    let panics = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = std::panic::take_hook();
    let counted = panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name().is_some_and(|n| n == "pgwire-hostile") {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        hook(info);
    }));

    // Two conversations: a password login (user twinflow, the read key) and a
    // SCRAM one (user reader: client-first, then a client-final whose proof is wrong).
    let startup = |user: &str| {
        let body =
            [b"\x00\x03\x00\x00user\x00".as_slice(), user.as_bytes(), b"\x00database\x00twinflow\x00\x00"].concat();
        [&((body.len() + 4) as u32).to_be_bytes()[..], &body].concat()
    };
    let password_message = |body: &[u8]| [b"p".as_slice(), &((body.len() + 4) as u32).to_be_bytes(), body].concat();
    let password = password_message(format!("{READ_KEY}\0").as_bytes());
    let client_first = b"n,,n=,r=fyko+d2lbbFgONRv9qkxdawL";
    let scram_first = password_message(
        &[b"SCRAM-SHA-256\0".as_slice(), &(client_first.len() as u32).to_be_bytes(), client_first].concat(),
    );
    let scram_final = password_message(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=dHpbWHJlYWxseW5vdHByb29m");
    let query = [b"Q".as_slice(), &13u32.to_be_bytes(), b"SELECT 1\0"].concat();
    // The extended protocol as a driver speaks it: Parse, Bind (one text
    // parameter), Describe, Execute, Sync, mutated as one message.
    let typed = |kind: u8, body: &[u8]| [&[kind][..], &(body.len() as u32 + 4).to_be_bytes(), body].concat();
    let bind = [b"\0s1\0".as_slice(), &0u16.to_be_bytes(), &1u16.to_be_bytes(), &2i32.to_be_bytes(), b"41"]
        .into_iter()
        .chain([0u16.to_be_bytes().as_slice()])
        .flatten()
        .copied()
        .collect::<Vec<u8>>();
    let extended = [
        typed(b'P', &[b"s1\0SELECT $1::bigint + 1\0".as_slice(), &0u16.to_be_bytes()].concat()),
        typed(b'B', &bind),
        typed(b'D', b"P\0"),
        typed(b'E', &[b"\0".as_slice(), &0i32.to_be_bytes()].concat()),
        typed(b'S', b""),
    ]
    .concat();
    let conversations: [[Vec<u8>; 3]; 3] = [
        [startup("twinflow"), password.clone(), query],
        [startup("reader"), scram_first, scram_final],
        [startup("twinflow"), password, extended],
    ];
    let answered = std::sync::atomic::AtomicUsize::new(0);
    // A fixed seed: the same 300 conversations every run, so a failure reproduces.
    let config = Config { cases: 300, failure_persistence: None, ..Config::default() };
    let rng = proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        0usize..3,
        0u8..4,
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&strategy, |(conversation, stage, edits, tail)| {
            // A prefix of a good conversation, then a mutated message, then random bytes.
            let mut bytes = Vec::new();
            let good = &conversations[conversation];
            for message in good.iter().take(stage as usize) {
                bytes.extend_from_slice(message);
            }
            let mut message = good[(stage as usize).min(2)].to_vec();
            twinflow_schemas::testing::mutate(&mut message, &edits);
            bytes.extend(message);
            bytes.extend(tail);
            let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let _ = socket.write_all(&bytes);
            let _ = socket.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = socket.read_to_end(&mut answer);
            if !answer.is_empty() {
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let answered = answered.into_inner();
    eprintln!("300 hostile connections, {answered} answered (an error, a login challenge or rows)");
    assert!(answered > 0, "the endpoint answered none of them");
    assert_eq!(panics.load(std::sync::atomic::Ordering::SeqCst), 0, "a connection task panicked");
    let _ = std::panic::take_hook();
    runtime.block_on(async {
        let login = format!("host=127.0.0.1 port={port} user=twinflow dbname=twinflow password={READ_KEY}");
        let (client, connection) = tokio_postgres::connect(&login, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client.query_one("SELECT 41 + 1 AS n", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 42);
        let scram = format!("host=127.0.0.1 port={port} user=reader dbname=twinflow password={READ_KEY}");
        let (client, connection) = tokio_postgres::connect(&scram, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(client.query_one("SELECT 1", &[]).await.unwrap().get::<_, i64>(0), 1);
    });
    app.shutdown().unwrap();
}

/// `app`'s wire-protocol server as `serve` sets it up (search functions
/// included), on a loopback port, and a tokio-postgres client of it with the read key.
fn serve_and_connect(runtime: &tokio::runtime::Runtime, app: &Arc<App>) -> tokio_postgres::Client {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(twinflow_server::listen::pg_server(app).unwrap().serve(listener));
    let login = format!("host=127.0.0.1 port={port} user=twinflow dbname=twinflow password={READ_KEY}");
    let (client, connection) = runtime.block_on(tokio_postgres::connect(&login, tokio_postgres::NoTls)).unwrap();
    runtime.spawn(connection);
    client
}

/// Search inside SQL: `hybrid`, `knn` and `bm25` as tables joined with
/// `documents`, and `embed(text)`, over HTTP and over the wire protocol,
/// at the statement's epoch; a deleted document leaves the search's rows.
#[test]
fn search_functions_join_the_tables_over_http_and_pgwire() {
    use axum::http::StatusCode;
    use twinflow_schemas::api::SqlResponse;

    use crate::router::{post, send};

    let dir = tempfile::tempdir().unwrap();
    let app = app_with_data(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sql = |statement: &str| {
        let (status, bytes) = runtime.block_on(send(&app, post("/v1/sql", "application/sql", statement.to_owned())));
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    let join = "SELECT d.doc_id, d.title, s.score, s.rank FROM hybrid('rivers and boats', 20) s \
                JOIN documents d USING (doc_id) ORDER BY s.rank";
    let (status, body) = sql(join);
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: SqlResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.rows[0]["doc_id"], "rivers", "{body}");
    assert_eq!(answer.rows[0]["title"], "Rivers");
    assert_eq!(answer.rows[0]["rank"], 1);
    let docs: std::collections::BTreeSet<_> = answer.rows.iter().map(|r| r["doc_id"].as_str().unwrap()).collect();
    assert_eq!(docs.len(), 3, "every document has a chunk among 20: {body}");
    for function in ["knn", "bm25"] {
        let (status, body) = sql(&format!(
            "SELECT doc_id, chunk_id, score FROM {function}('taxes and budgets', 3) ORDER BY rank LIMIT 1"
        ));
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: SqlResponse = serde_json::from_str(&body).unwrap();
        assert_eq!(answer.rows[0]["doc_id"], "taxes", "{function}: {body}");
    }
    // The hits are chunks of the same epoch's `chunks` table.
    let (_, body) = sql("SELECT COUNT(*) AS n, SUM(CASE WHEN c.chunk_id IS NULL THEN 1 ELSE 0 END) AS missing \
         FROM knn('roads', 10) s LEFT JOIN chunks c ON c.chunk_id = s.chunk_id AND c.doc_id = s.doc_id");
    let answer: SqlResponse = serde_json::from_str(&body).unwrap();
    assert!(answer.rows[0]["n"].as_i64().unwrap() > 0, "{body}");
    assert_eq!(answer.rows[0]["missing"], 0, "{body}");
    // `embed` gives the encoder's vector: the same as the stored one for a chunk's text.
    let (status, body) = sql("SELECT array_length(embed('rivers and boats')) AS dim");
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: SqlResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.rows[0]["dim"], app.store.dim() as i64, "{body}");
    // Bad arguments are the statement's error, not a crash.
    for bad in ["SELECT * FROM knn('rivers')", "SELECT * FROM knn('rivers', 0)", "SELECT * FROM bm25(3, 'x')"] {
        let (status, body) = sql(bad);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("sql_error"), "{bad}: {body}");
    }

    // The same join over the wire protocol.
    let client = serve_and_connect(&runtime, &app);
    let rows = runtime.block_on(client.query(join, &[])).unwrap();
    assert_eq!(rows[0].get::<_, String>("doc_id"), "rivers");
    assert_eq!(rows[0].get::<_, String>("title"), "Rivers");

    // Deleted: no row of the search names it, in either protocol.
    let line = r#"{"op":"delete","doc_id":"rivers"}"#;
    let changes = vec![parse_change(line.as_bytes(), 1, &ChangeLimits::default()).unwrap()];
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    let rows = runtime.block_on(client.query(join, &[])).unwrap();
    assert!(rows.iter().all(|r| r.get::<_, String>("doc_id") != "rivers"));
    assert_eq!(rows.len(), 2, "the other two documents' chunks");
    let (_, body) = sql(join);
    let answer: SqlResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.as_of, epoch, "{body}");
    assert!(answer.rows.iter().all(|r| r["doc_id"] != "rivers"), "{body}");
    app.shutdown().unwrap();
}

/// Time travel: `<table> AS OF EPOCH n` reads a live table as it was when
/// epoch `n` committed, after edits and deletes, over HTTP and the wire
/// protocol; a later epoch is refused, naming the newest.
#[test]
fn as_of_epoch_reads_the_tables_as_they_were() {
    use axum::http::StatusCode;
    use twinflow_schemas::api::SqlResponse;

    use crate::router::{post, send};

    let dir = tempfile::tempdir().unwrap();
    let app = app_with_data(dir.path());
    let first = app.store.committed_epoch();
    let commit = |line: String| {
        let changes = vec![parse_change(line.as_bytes(), 1, &ChangeLimits::default()).unwrap()];
        let epoch = app.engine().unwrap().submit(changes).unwrap();
        app.engine().unwrap().flush();
        assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
        epoch
    };
    let edited = commit(upsert_line("rivers", "Rivers", &article("canals and barges", 6)));
    let deleted = commit(r#"{"op":"delete","doc_id":"taxes"}"#.to_owned());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = |statement: String| -> Vec<serde_json::Map<String, serde_json::Value>> {
        let (status, bytes) = runtime.block_on(send(&app, post("/v1/sql", "application/sql", statement)));
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice::<SqlResponse>(&bytes).unwrap().rows
    };
    let versions = |epoch: Option<u64>| -> Vec<(String, u64)> {
        let table = epoch.map_or("documents".to_owned(), |e| format!("documents AS OF EPOCH {e}"));
        rows(format!("SELECT doc_id, version FROM {table} ORDER BY doc_id"))
            .iter()
            .map(|r| (r["doc_id"].as_str().unwrap().to_owned(), r["version"].as_u64().unwrap()))
            .collect()
    };
    let pairs = |v: &[(&str, u64)]| v.iter().map(|(d, n)| (d.to_string(), *n)).collect::<Vec<_>>();
    assert_eq!(versions(Some(first)), pairs(&[("rivers", 1), ("roads", 1), ("taxes", 1)]));
    assert_eq!(versions(Some(edited)), pairs(&[("rivers", 2), ("roads", 1), ("taxes", 1)]));
    assert_eq!(versions(Some(deleted)), versions(None));
    assert_eq!(versions(None), pairs(&[("rivers", 2), ("roads", 1)]));

    // The old text is back, chunks and vectors included, and joins across tables read one epoch.
    let count = |sql: String| rows(sql)[0]["n"].as_u64().unwrap();
    let taxes_then = count(format!("SELECT COUNT(*) AS n FROM chunks AS OF EPOCH {first} WHERE doc_id = 'taxes'"));
    assert!(taxes_then > 0);
    assert_eq!(count(format!("SELECT COUNT(*) AS n FROM chunks AS OF EPOCH {deleted} WHERE doc_id = 'taxes'")), 0);
    let chunks_then = count(format!("SELECT COUNT(DISTINCT chunk_id) AS n FROM chunks AS OF EPOCH {first}"));
    assert_eq!(count(format!("SELECT COUNT(*) AS n FROM embeddings AS OF EPOCH {first}")), chunks_then);
    assert_eq!(
        count(format!(
            "SELECT COUNT(*) AS n FROM documents AS OF EPOCH {first} d JOIN chunks AS OF EPOCH {first} c \
             USING (doc_id) WHERE d.doc_id = 'taxes'"
        )),
        taxes_then
    );
    let old = rows(format!("SELECT content FROM documents AS OF EPOCH {first} WHERE doc_id = 'rivers'"));
    assert!(old[0]["content"].as_str().unwrap().contains("rivers and boats"));

    // Not yet committed: refused, naming the newest epoch.
    let (status, bytes) = runtime.block_on(send(
        &app,
        post("/v1/sql", "application/sql", format!("SELECT * FROM chunks AS OF EPOCH {}", deleted + 1000)),
    ));
    let body = String::from_utf8_lossy(&bytes);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains(&format!("the newest committed epoch is {deleted}")), "{body}");

    // Over the wire protocol.
    let client = serve_and_connect(&runtime, &app);
    let sql = format!("SELECT doc_id FROM documents AS OF EPOCH {first} ORDER BY doc_id");
    let rows = runtime.block_on(client.query(&sql, &[])).unwrap();
    let docs: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(docs, ["rivers", "roads", "taxes"]);
    app.shutdown().unwrap();
}
