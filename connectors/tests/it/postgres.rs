//! The Postgres change-capture source against a real PostgreSQL server
//! (Debian's package, started per test in a temporary directory; `.ci/run`
//! installs it, and a missing one fails the tests unless
//! `TWINFLOW_SKIP_POSTGRES=1`). The test plays the engine: it applies the
//! changes it receives, commits each position (and tells the source), and
//! on a "crash" loses everything after the last commit. Every row's final
//! state must equal the table's, through writes during the snapshot,
//! TOASTed values left unchanged, key changes, a restart of the source
//! mid-stream and an immediate (crash) restart of the server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use twinflow_connectors::postgres::local_server::LocalPostgres;
use twinflow_connectors::{Error, PostgresSource, SourceEvent, SourceHandle};
use twinflow_schemas::api::LagUnit;
use twinflow_schemas::config::PostgresSourceConfig;
use twinflow_schemas::{ChangeLimits, DocumentChange};

fn server() -> Option<LocalPostgres> {
    let Some(server) = LocalPostgres::start().unwrap() else {
        twinflow_schemas::testing::tool_missing("postgres", "apt-get install postgresql (Debian's PostgreSQL server)");
        return None;
    };
    Some(server)
}

/// A plain client of the test's server.
struct Db {
    runtime: Runtime,
    client: Client,
}

impl Db {
    fn connect(server: &LocalPostgres) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&server.url(), NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        });
        Self { runtime, client }
    }

    fn exec(&self, sql: &str) {
        self.runtime.block_on(self.client.batch_execute(sql)).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let messages = self.runtime.block_on(self.client.simple_query(sql)).unwrap();
        messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
                _ => None,
            })
            .collect()
    }

    /// The documents the table holds: `doc_id → (title, content)`.
    fn documents(&self) -> BTreeMap<String, (String, String)> {
        self.rows("SELECT id, title, body FROM notes WHERE body IS NOT NULL")
            .into_iter()
            .map(|r| {
                let id = r[0].clone().unwrap();
                (format!("pg:notes/{id}"), (r[1].clone().unwrap_or_default(), r[2].clone().unwrap()))
            })
            .collect()
    }
}

/// Text that does not compress, so a long one is stored out of line (TOASTed).
fn words(seed: u64, count: usize) -> String {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("w{:x}", x % 1_000_003)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn config(server: &LocalPostgres) -> PostgresSourceConfig {
    PostgresSourceConfig {
        url: server.url(),
        tables: vec!["notes".into()],
        doc_id_column: "id".into(),
        content_column: "body".into(),
        title_column: Some("title".into()),
        batch: 16,
        poll: Duration::from_millis(20),
        ..PostgresSourceConfig::default()
    }
}

fn spawn(config: PostgresSourceConfig, resume: Option<Value>) -> (SourceHandle, Receiver<SourceEvent>) {
    let (tx, rx) = crossbeam_channel::bounded(4);
    let handle = PostgresSource::spawn("postgres-0".into(), config, ChangeLimits::default(), resume, tx).unwrap();
    (handle, rx)
}

/// The test's stand-in for the engine: what is committed, and what came since.
#[derive(Default)]
struct Engine {
    committed: BTreeMap<String, (String, String)>,
    position: Option<Value>,
    /// Received, not committed: lost on a crash.
    pending: Vec<DocumentChange>,
    /// Every change received since the last reset, in order.
    received: Vec<DocumentChange>,
    errors: Vec<String>,
}

impl Engine {
    /// Takes one event; a position commits it and what came before.
    fn take(&mut self, event: SourceEvent, source: &SourceHandle, commit: bool) -> bool {
        match event {
            SourceEvent::Changes { changes, position, .. } => {
                self.received.extend(changes.iter().cloned());
                self.pending.extend(changes);
                match position {
                    Some(position) if commit => {
                        for change in self.pending.drain(..) {
                            match change {
                                DocumentChange::Upsert(doc) => {
                                    self.committed.insert(doc.doc_id, (doc.title, doc.content));
                                }
                                DocumentChange::Delete { doc_id } => {
                                    self.committed.remove(&doc_id);
                                }
                            }
                        }
                        source.committed_sender().send(position.clone()).unwrap();
                        self.position = Some(position);
                        true
                    }
                    _ => false,
                }
            }
            SourceEvent::Error(error) => {
                self.errors.push(error.reason);
                false
            }
        }
    }

    /// Commits what comes until the committed documents equal the table's.
    fn until_equal(&mut self, db: &Db, source: &SourceHandle, rx: &Receiver<SourceEvent>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(event) = rx.recv_timeout(Duration::from_millis(100)) {
                self.take(event, source, true);
            }
            if self.pending.is_empty() && self.committed == db.documents() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the documents never matched the table: {} committed, {} rows; errors {:?}",
                self.committed.len(),
                db.documents().len(),
                self.errors
            );
        }
    }

    /// On a crash, what was not committed is gone.
    fn crash(&mut self) {
        self.pending.clear();
        self.received.clear();
    }
}

fn confirmed_lsn(db: &Db) -> String {
    db.rows("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'twinflow_postgres_0'")[0][0]
        .clone()
        .unwrap()
}

#[test]
fn rows_are_followed_exactly_through_restarts_of_either_side() {
    let Some(mut server) = server() else { return };
    let db = Db::connect(&server);
    db.exec("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)");
    let mut insert = String::new();
    for i in 0..400 {
        // A few long bodies are stored out of line.
        let body = if i % 50 == 0 { words(i, 4000) } else { format!("note {i}: {}", words(i, 12)) };
        insert.push_str(&format!("INSERT INTO notes VALUES ({i}, 'title {i}', '{body}');"));
    }
    db.exec(&insert);

    // The snapshot, with writes going on meanwhile (each its own transaction).
    let (source, rx) = spawn(config(&server), None);
    let writer = {
        let url = server.url();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                tokio::spawn(connection);
                for i in 0..120u64 {
                    let id = (i * 37) % 400;
                    let sql = match i % 4 {
                        0 => format!("UPDATE notes SET body = 'during the snapshot {i}' WHERE id = {id}"),
                        1 => format!("DELETE FROM notes WHERE id = {id}"),
                        2 => format!("INSERT INTO notes VALUES ({}, 'new {i}', 'inserted {i}')", 1000 + i),
                        _ => format!("UPDATE notes SET title = 'retitled {i}' WHERE id = {id}"),
                    };
                    client.batch_execute(&sql).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        })
    };
    let mut engine = Engine::default();
    // Slowly at first, so the writes overlap the snapshot.
    for _ in 0..10 {
        if let Ok(event) = rx.recv_timeout(Duration::from_secs(10)) {
            engine.take(event, &source, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writer.join().unwrap();
    engine.until_equal(&db, &source, &rx);
    assert!(engine.errors.is_empty(), "{:?}", engine.errors);

    // Updates that leave the TOASTed body out, a key change, a NULL body, a delete.
    db.exec(
        "UPDATE notes SET title = 'long, retitled' WHERE id = 50; \
         UPDATE notes SET id = 5000 WHERE id = 100; \
         UPDATE notes SET body = NULL WHERE id = 3; \
         DELETE FROM notes WHERE id = 4; \
         BEGIN; INSERT INTO notes VALUES (7000, 'in a transaction', 'one'); \
         UPDATE notes SET body = 'two' WHERE id = 7000; COMMIT;",
    );
    engine.until_equal(&db, &source, &rx);
    assert_eq!(engine.committed["pg:notes/50"].0, "long, retitled");
    assert_eq!(engine.committed["pg:notes/50"].1, words(50, 4000), "the unchanged TOASTed body was read again");
    assert!(!engine.committed.contains_key("pg:notes/100") && engine.committed.contains_key("pg:notes/5000"));
    // The slot moves only to what was committed, and does so.
    let committed_lsn = engine.position.as_ref().unwrap()["lsn"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while confirmed_lsn(&db) != committed_lsn {
        assert!(Instant::now() < deadline, "the slot stayed at {} (committed {committed_lsn})", confirmed_lsn(&db));
        std::thread::sleep(Duration::from_millis(20));
    }
    let lag = source.lag().get().expect("the source measures its lag");
    assert_eq!(lag.unit, LagUnit::Bytes);

    // twinflow stops mid-stream: one batch received and not committed, more written while it is down.
    db.exec("UPDATE notes SET body = 'before the crash' WHERE id = 8");
    engine.until_equal(&db, &source, &rx);
    db.exec("UPDATE notes SET body = 'received, never committed' WHERE id = 9");
    loop {
        let event = rx.recv_timeout(Duration::from_secs(10)).expect("the update arrives");
        if engine.take(event, &source, false) || !engine.pending.is_empty() {
            break;
        }
    }
    drop(source);
    engine.crash();
    db.exec("UPDATE notes SET body = 'while twinflow was down' WHERE id = 10; DELETE FROM notes WHERE id = 11;");
    let (source, rx) = spawn(config(&server), engine.position.clone());
    engine.until_equal(&db, &source, &rx);
    assert_eq!(engine.committed["pg:notes/9"].1, "received, never committed");
    let resent: Vec<_> = engine.received.iter().filter(|c| c.doc_id() == "pg:notes/8").collect();
    assert!(resent.is_empty(), "a committed change came again: {resent:?}");

    // The server crashes and comes back: the source reconnects and goes on.
    db.exec("UPDATE notes SET body = 'just before the server went' WHERE id = 12");
    server.stop(false).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.resume().unwrap();
    let db = Db::connect(&server);
    db.exec("UPDATE notes SET body = 'after the server came back' WHERE id = 13; INSERT INTO notes VALUES (9000, 't', 'b');");
    engine.until_equal(&db, &source, &rx);
    assert!(engine.errors.iter().any(|e| e.contains("reconnecting")), "the outage was said once: {:?}", engine.errors);
    assert_eq!(engine.committed["pg:notes/13"].1, "after the server came back");
}

#[test]
fn tables_that_cannot_be_followed_are_refused_at_open() {
    let Some(server) = server() else { return };
    let db = Db::connect(&server);
    db.exec("CREATE TABLE notes (id int PRIMARY KEY, title text, body text); CREATE TABLE loose (id int, body text);");
    let open = |config: PostgresSourceConfig| {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        PostgresSource::spawn("postgres-0".into(), config, ChangeLimits::default(), None, tx).map(drop)
    };
    let refused = |config: PostgresSourceConfig| match open(config) {
        Err(Error::Config { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let loose = PostgresSourceConfig { tables: vec!["loose".into()], title_column: None, ..config(&server) };
    let reason = refused(loose.clone());
    assert!(reason.contains("REPLICA IDENTITY FULL"), "{reason}");
    let reason = refused(PostgresSourceConfig { tables: vec!["absent".into()], ..config(&server) });
    assert!(reason.contains("no table"), "{reason}");
    let reason = refused(PostgresSourceConfig { content_column: "text".into(), ..config(&server) });
    assert!(reason.contains("no column \"text\""), "{reason}");
    // With the identity made full, the same table is followed.
    db.exec("ALTER TABLE loose REPLICA IDENTITY FULL");
    open(PostgresSourceConfig { slot: Some("loose".into()), ..loose }).unwrap();
    // A server that is not there is a retryable failure.
    match open(PostgresSourceConfig { url: "host=127.0.0.1 port=1 user=x dbname=y".into(), ..config(&server) }) {
        Err(e @ Error::Postgres { .. }) => assert!(e.is_retryable()),
        other => panic!("expected a connection failure, got {other:?}"),
    }
}

/// A server that takes TCP connections only over TLS, with a certificate
/// from a private CA (the test material of `server/tests/tls`): refused in
/// plain text, refused over TLS without the CA (the certificate is not
/// trusted), read over TLS with it.
#[test]
fn a_server_that_requires_tls_is_followed_over_tls_with_its_ca() {
    let Some(mut server) = server() else { return };
    let db = Db::connect(&server);
    db.exec("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)");
    db.exec("INSERT INTO notes SELECT i, 'Note ' || i, 'Body ' || i FROM generate_series(1, 20) i");
    drop(db);
    let material = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/tests/tls");
    server.require_tls(&material.join("server.crt"), &material.join("server.key")).unwrap();
    let open = |config: PostgresSourceConfig| {
        let (tx, rx) = crossbeam_channel::bounded(64);
        PostgresSource::spawn("postgres-0".into(), config, ChangeLimits::default(), None, tx).map(|h| (h, rx))
    };
    let over_tls = format!("{} sslmode=require", server.url());

    match open(config(&server)) {
        Err(Error::Postgres { reason, .. }) => assert!(reason.contains("no encryption"), "{reason}"),
        other => panic!("a plain connection must be refused, got {other:?}"),
    }
    match open(PostgresSourceConfig { url: over_tls.clone(), ..config(&server) }) {
        Err(Error::Postgres { reason, .. }) => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("an untrusted certificate must be refused, got {other:?}"),
    }
    let with_ca = PostgresSourceConfig { ca: Some(material.join("ca.crt")), ..config(&server) };
    match open(with_ca.clone()) {
        Err(Error::Config { reason, .. }) => assert!(reason.contains("sslmode=require"), "{reason}"),
        other => panic!("a CA without TLS is a configuration error, got {other:?}"),
    }
    let (handle, rx) = open(PostgresSourceConfig { url: over_tls, ..with_ca }).unwrap();
    let mut documents = std::collections::BTreeSet::new();
    while documents.len() < 20 {
        match rx.recv_timeout(Duration::from_secs(30)).expect("the snapshot over TLS") {
            SourceEvent::Changes { changes, .. } => documents.extend(changes.iter().map(|c| c.doc_id().to_owned())),
            SourceEvent::Error(error) => panic!("{error:?}\n{}", server.log()),
        }
    }
    assert!(documents.contains("pg:notes/20"), "{documents:?}");
    handle.stop();
}
