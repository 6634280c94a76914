//! A read replica (`twinflow serve --follow DIR`, a process of its own)
//! serves the primary's reads: with `min_as_of` (read your writes) it
//! answers an ingest's epoch as the primary does — a new document found, a
//! deleted one gone, SQL and answers equal to the primary's at that epoch —
//! refuses writes naming the primary, says how far behind it is, and after
//! a SIGKILL and restart catches up without encoding a document.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash::free_port;
use crate::fixtures::{app_with, article, http, http_with_key, upsert_line};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");

fn start_replica(data: &Path, port: u16, primary: &str, log: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--primary", primary])
        .arg("--follow")
        .arg(data)
        .env("TWINFLOW__EMBEDDER__TYPE", "hashing")
        .env("TWINFLOW__REPLICA__POLL", "20ms")
        .env("TWINFLOW__REPLICA__MAX_WAIT", "2s")
        .env("TWINFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("twinflow serve starts")
}

/// Waits for `/readyz` to answer 200 (a failure shows the end of `log`).
fn ready(http: &reqwest::blocking::Client, base: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            panic!("the replica exited: {}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        if http.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status() == 200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the replica was not ready within 120 s");
}

/// Registers, in `app`'s registry, an adapter that keeps 8 of the 384
/// dimensions (so vector scores move), and returns its version.
fn register_adapter(app: &twinflow_server::App) -> u64 {
    let card = crate::fixtures::adapter_card(384, crate::fixtures::first_dataset(), "a test of replicas");
    app.training.registry.register_adapter(card, &crate::fixtures::keep_eight(384), &[]).unwrap().version
}

fn kill(child: &mut Child) {
    let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
}

#[test]
fn a_replica_reads_the_primarys_writes_and_survives_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let primary = app_with(&data, |_| {});
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let primary_url = format!("http://{}", listener.local_addr().unwrap());
    let router = twinflow_server::router(primary.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    let to_primary = http();
    let ingest = |lines: &[String]| -> u64 {
        let response = to_primary
            .post(format!("{primary_url}/v1/documents"))
            .header("content-type", "application/x-ndjson")
            .body(lines.join("\n"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().unwrap()["epoch"].as_u64().unwrap()
    };
    ingest(&[
        upsert_line("rivers", "Rivers", &article("rivers and boats", 6)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 6)),
    ]);
    let first = ingest(&[upsert_line("bridges", "Bridges", &article("bridges and arches", 4))]);
    assert!(primary.engine().unwrap().wait_committed(first, Duration::from_secs(60)));
    primary.store.snapshot().unwrap();

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = dir.path().join("replica.log");
    let mut replica = start_replica(&data, port, &primary_url, &log);
    // The replica's keys are the primary's: here the admin key the data directory keeps.
    let key_file = data.join("_auth").join("admin.key");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !key_file.is_file() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = std::fs::read_to_string(&key_file).unwrap();
    let to_replica = http_with_key(key.trim(), Duration::from_secs(60));
    ready(&to_replica, &base, &mut replica, &log);
    assert_eq!(reqwest::blocking::Client::new().get(format!("{base}/readyz")).send().unwrap().status(), 401);

    let search = |client: &reqwest::blocking::Client, base: &str, q: &str, params: &str| -> Value {
        let response = client.get(format!("{base}/v1/search?q={q}&k=5&{params}")).send().unwrap();
        let status = response.status();
        let body: Value = response.json().unwrap();
        assert_eq!(status, 200, "{body}");
        body
    };
    let docs = |answer: &Value| -> Vec<String> {
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["sources"][0]["doc_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let sql = |client: &reqwest::blocking::Client, base: &str, min_as_of: u64| -> Value {
        let body = json!({ "sql": "SELECT doc_id, title FROM documents ORDER BY doc_id", "min_as_of": min_as_of });
        let response = client.post(format!("{base}/v1/sql")).json(&body).send().unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };

    // Read your writes: the replica waits for the ingest's epoch, then answers as the primary does.
    let added = ingest(&[upsert_line("canals", "Canals", &article("canals and locks", 5))]);
    let read = search(&to_replica, &base, "canals%20and%20locks", &format!("min_as_of={added}"));
    assert!(read["as_of"].as_u64().unwrap() >= added);
    assert_eq!(docs(&read)[0], "canals", "{read}");
    let epoch = read["as_of"].as_u64().unwrap();
    let at = format!("min_as_of={epoch}&as_of={epoch}");
    assert_eq!(search(&to_primary, &primary_url, "canals%20and%20locks", &at)["results"], read["results"]);
    for q in ["rivers%20and%20boats", "taxes", "bridges%20arches"] {
        assert_eq!(
            search(&to_replica, &base, q, &at)["results"],
            search(&to_primary, &primary_url, q, &at)["results"],
            "{q}"
        );
    }
    assert_eq!(sql(&to_replica, &base, epoch)["rows"], sql(&to_primary, &primary_url, epoch)["rows"]);
    let ask = json!({ "query": "What do the canals have?", "k": 3, "answer": "extractive", "as_of": epoch, "min_as_of": epoch });
    let answer = |client: &reqwest::blocking::Client, base: &str| -> Value {
        let response = client.post(format!("{base}/v1/rag")).json(&ask).send().unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };
    let (here, there) = (answer(&to_replica, &base), answer(&to_primary, &primary_url));
    assert_eq!((&here["answer"], &here["citations"]), (&there["answer"], &there["citations"]));

    // A delete: gone from the replica at its epoch.
    let deleted = ingest(&[json!({ "op": "delete", "doc_id": "canals" }).to_string()]);
    let read = search(&to_replica, &base, "canals%20and%20locks", &format!("min_as_of={deleted}"));
    assert!(!docs(&read).contains(&"canals".to_owned()), "{read}");
    assert!(!sql(&to_replica, &base, deleted)["rows"].to_string().contains("canals"));

    // Writes are the primary's; an epoch it has not committed is a 503 saying how far behind.
    let refused = to_replica
        .post(format!("{base}/v1/documents"))
        .header("content-type", "application/x-ndjson")
        .body(upsert_line("x", "X", "x"))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 409);
    let refused: Value = refused.json().unwrap();
    assert_eq!(refused["error"]["code"], "read_replica");
    assert!(refused["error"]["message"].as_str().unwrap().contains(&primary_url), "{refused}");
    let late = to_replica.get(format!("{base}/v1/search?q=rivers&min_as_of={}", deleted + 1000)).send().unwrap();
    assert_eq!(late.status(), 503);
    let late: Value = late.json().unwrap();
    assert_eq!(late["error"]["code"], "not_caught_up");
    assert!(late["error"]["message"].as_str().unwrap().contains("behind the primary"), "{late}");
    let status: Value = to_replica.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
    assert_eq!(status["role"], "replica");
    assert!(status["replica"]["epochs_applied"].as_u64().unwrap() >= 2, "{status}");
    assert_eq!(status["replica"]["ready"], true);

    // An adapter the primary promotes is the replica's too, within its registry poll (2 s).
    let at = format!("as_of={deleted}&mode=vector");
    let base_model = search(&to_replica, &base, "rivers%20and%20boats", &at);
    let version = register_adapter(&primary);
    primary.training.activate(version, "a test of replicas").unwrap();
    let follows = |projection: Value| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status: Value = to_replica.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
            if status["models"]["search_projection"] == projection {
                break;
            }
            assert!(Instant::now() < deadline, "the replica never followed the registry to {projection}: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    follows(json!(format!("adapter-v{version}")));
    let projected = search(&to_replica, &base, "rivers%20and%20boats", &at);
    assert_eq!(projected["results"], search(&to_primary, &primary_url, "rivers%20and%20boats", &at)["results"]);
    assert_ne!(projected["results"], base_model["results"], "the adapter moved the scores");
    primary.training.rollback().unwrap();
    follows(Value::Null);
    assert_eq!(search(&to_replica, &base, "rivers%20and%20boats", &at)["results"], base_model["results"]);

    // SIGKILL; the primary goes on; a restarted replica catches up from the files, encoding nothing.
    kill(&mut replica);
    let after = ingest(&[upsert_line("dams", "Dams", &article("dams and reservoirs", 4))]);
    assert!(primary.engine().unwrap().wait_committed(after, Duration::from_secs(60)));
    let log = log.with_extension("2.log");
    let mut replica = start_replica(&data, port, &primary_url, &log);
    ready(&to_replica, &base, &mut replica, &log);
    let metrics = |client: &reqwest::blocking::Client| -> String {
        client.get(format!("{base}/metrics")).send().unwrap().text().unwrap()
    };
    let embedded = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("twinflow_embedded_texts_total"))
            .map_or(0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
    };
    assert_eq!(embedded(&metrics(&to_replica)), 0, "restoring and catching up encodes nothing");
    let read = search(&to_replica, &base, "dams%20and%20reservoirs", &format!("min_as_of={after}"));
    assert_eq!(docs(&read)[0], "dams");
    assert_eq!(embedded(&metrics(&to_replica)), 1, "only the query was encoded");
    let epoch = read["as_of"].as_u64().unwrap();
    let at = format!("as_of={epoch}");
    assert_eq!(search(&to_primary, &primary_url, "dams%20and%20reservoirs", &at)["results"], read["results"]);
    kill(&mut replica);
    primary.shutdown().unwrap();
}

/// The S3-compatible server the object-store test writes to: s3s-fs (a
/// real S3 API over a folder), `$TWINFLOW_S3S_FS`, else where `.ci/run`
/// installs it, else on the `PATH`.
fn s3s_fs() -> Option<std::path::PathBuf> {
    let installed = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/twinflow-tools/bin/s3s-fs"));
    std::env::var_os("TWINFLOW_S3S_FS")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(installed)
        .find(|p| p.is_file())
        .or_else(|| {
            let found = Command::new("s3s-fs").arg("--version").output().is_ok_and(|o| o.status.success());
            found.then(|| "s3s-fs".into())
        })
}

#[test]
fn a_replica_follows_the_commits_a_primary_ships_to_an_object_store() {
    let Some(server) = s3s_fs() else {
        return twinflow_schemas::testing::tool_missing(
            "s3s-fs",
            "cargo install s3s-fs --version 0.14.1 --features binary --locked --root ~/.cache/twinflow-tools",
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("twinflow")).unwrap();
    let s3_port = free_port();
    let mut s3 = Command::new(server)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &s3_port.to_string(),
            "--access-key",
            "AKTEST",
            "--secret-key",
            "SKTEST",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("s3.log")).unwrap())
        .spawn()
        .expect("s3s-fs starts");
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let options: std::collections::BTreeMap<String, String> = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "AKTEST"),
        ("aws_secret_access_key", "SKTEST"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let url = "s3://twinflow/tables";

    let data = dir.path().join("data");
    let primary = app_with(&data, |c| {
        c.storage.object_store = Some(url.to_owned());
        c.storage.object_store_options = options.clone();
    });
    let shipped_to = |epoch: u64| {
        let shipping = primary.primary().unwrap().shipping.clone().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while shipping.status().shipped_epoch.is_none_or(|e| e < epoch) {
            assert!(Instant::now() < deadline, "never shipped epoch {epoch}: {:?}", shipping.status());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let submit = |lines: &[String]| -> u64 {
        let changes = lines
            .iter()
            .map(|l| twinflow_schemas::parse_change(l.as_bytes(), 1, &Default::default()).unwrap())
            .collect();
        let engine = primary.engine().unwrap();
        let epoch = engine.submit(changes).unwrap();
        engine.flush();
        assert!(engine.wait_committed(epoch, Duration::from_secs(60)));
        epoch
    };
    let first = submit(&[
        upsert_line("rivers", "Rivers", &article("rivers and boats", 6)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 6)),
    ]);
    primary.store.snapshot().unwrap();
    shipped_to(first);
    // The bucket holds the tables under the directory's layout, and none of the process's secrets.
    let bucket = root.join("twinflow").join("tables");
    assert!(bucket.join("_manifest.json").is_file());
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let shipped = listing(&bucket);
    for name in ["chunks", "documents", "embeddings"] {
        assert!(shipped.contains(&name.to_owned()), "{name} not in {shipped:?} (local: {:?})", listing(&data));
    }
    assert!(!bucket.join("_auth").exists() && !bucket.join("_input_log").exists());

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let cache = dir.path().join("replica");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--follow", url, "--addr", &format!("127.0.0.1:{port}")])
        .env("TWINFLOW__EMBEDDER__TYPE", "hashing")
        .env("TWINFLOW__REPLICA__POLL", "20ms")
        .env("TWINFLOW__REPLICA__CACHE", &cache)
        .env("TWINFLOW_LOG", "info");
    for (key, value) in &options {
        command.env(key.to_ascii_uppercase(), value);
    }
    let mut replica = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("replica.log")).unwrap())
        .spawn()
        .expect("twinflow serve starts");
    let log = dir.path().join("replica.log");
    // Its keys: a first start writes an admin key into its own folder (nothing secret comes from the bucket).
    let key_file = cache.join("_auth").join("admin.key");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !key_file.is_file() {
        assert!(
            Instant::now() < deadline && replica.try_wait().unwrap().is_none(),
            "the replica did not start: {}",
            std::fs::read_to_string(dir.path().join("replica.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let to_replica = http_with_key(std::fs::read_to_string(&key_file).unwrap().trim(), Duration::from_secs(60));
    ready(&to_replica, &base, &mut replica, &log);

    let search = |min_as_of: u64| -> Value {
        let response = to_replica
            .get(format!("{base}/v1/search?q=canals%20and%20locks&k=5&min_as_of={min_as_of}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };
    let found = |answer: &Value| answer["results"].to_string().contains("\"canals\"");
    let added = submit(&[upsert_line("canals", "Canals", &article("canals and locks", 5))]);
    let read = search(added);
    assert!(found(&read), "{read}");
    let status: Value = to_replica.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
    assert_eq!(status["replica"]["following"], url);
    let deleted = submit(&[json!({ "op": "delete", "doc_id": "canals" }).to_string()]);
    assert!(!found(&search(deleted)));
    let sql = json!({ "sql": "SELECT doc_id FROM documents ORDER BY doc_id", "min_as_of": deleted });
    let rows: Value = to_replica.post(format!("{base}/v1/sql")).json(&sql).send().unwrap().json().unwrap();
    assert_eq!(rows["rows"], json!([{ "doc_id": "rivers" }, { "doc_id": "taxes" }]));
    kill(&mut replica);
    primary.shutdown().unwrap();
    let _ = s3.kill();
    let _ = s3.wait();
}
