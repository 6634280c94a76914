//! The crash harness: `twinflow up` as a real process, a seeded stream of
//! upserts and deletes over HTTP, and SIGKILL at random moments (while
//! batches are being accepted, logged, chunked, embedded, written to Parquet,
//! and the manifest replaced). After each kill the process is started again
//! on the same data directory and the client sends again from its first
//! unacknowledged batch, as any client of an at-least-once API does. At the
//! end every table equals that of a clean run of the same input: no
//! acknowledged change lost, none applied twice, no file of an unfinished
//! commit visible.
//!
//! `TWINFLOW_CRASH_SEEDS=N` runs N seeds (default 4) from `TWINFLOW_CRASH_FIRST`
//! (default 0); each survives several kills.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use twinflow_schemas::rng::SeededRng;

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");

const WORDS: &[&str] = &[
    "harbour", "lantern", "orchard", "glacier", "meadow", "compass", "violin", "granite", "thunder", "willow",
    "beacon", "saffron", "canyon", "ember", "falcon", "tidal", "quarry", "marble", "cobalt", "juniper",
];

/// The input: batches of NDJSON changes over 24 documents (upserts with new
/// text of one to three paragraphs, some deletes).
pub(crate) fn workload(seed: u64, batches: usize) -> Vec<String> {
    let mut rng = SeededRng::new(seed);
    (0..batches)
        .map(|b| {
            let size = 1 + rng.below(6);
            (0..size)
                .map(|_| {
                    let doc = format!("doc-{:02}", rng.below(24));
                    if rng.below(5) == 0 {
                        return serde_json::json!({ "op": "delete", "doc_id": doc }).to_string();
                    }
                    let paragraphs: Vec<String> = (0..1 + rng.below(3))
                        .map(|_| {
                            let words: Vec<&str> =
                                (0..40 + rng.below(40)).map(|_| WORDS[rng.index(WORDS.len())]).collect();
                            words.join(" ") + "."
                        })
                        .collect();
                    serde_json::json!({
                        "op": "upsert", "doc_id": doc, "kind": "article", "author": "Ada",
                        "title": format!("{doc} in batch {b}"), "content": paragraphs.join("\n\n"),
                    })
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn start(config: &Path, log: &Path) -> Child {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("up")
        .env("TWINFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap())
        .spawn()
        .expect("twinflow starts")
}

pub(crate) fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    write_config_with(dir, port, 2)
}

/// [`write_config`] with `workers` timely workers.
pub(crate) fn write_config_with(dir: &Path, port: u16, workers: usize) -> std::path::PathBuf {
    let path = dir.join("twinflow.toml");
    let data = dir.join("data");
    std::fs::write(
        &path,
        format!(
            "[embedder]\ntype = \"hashing\"\n\n[engine]\nworkers = {workers}\ntick = \"15ms\"\n\n\
             [storage]\ndata_dir = \"{}\"\nsnapshot_every = 7\n\n[server]\naddr = \"127.0.0.1:{port}\"\n\n\
             [drift]\nenabled = false\n{}",
            data.display(),
            crate::fixtures::auth_toml(),
        ),
    )
    .unwrap();
    path
}

pub(crate) fn wait_ready(http: &reqwest::blocking::Client, base: &str, child: &mut Child, log: &Path) {
    if !ready_or_killed(http, base, child) {
        panic!("twinflow exited while starting:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }
}

/// Waits until the server answers (true) or the process is gone (false).
fn ready_or_killed(http: &reqwest::blocking::Client, base: &str, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get(format!("{base}/healthz")).send().is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "twinflow did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
}

/// Every table's rows (CSV, sorted), read offline from the committed Parquet files.
pub(crate) fn tables(data: &Path) -> BTreeMap<&'static str, String> {
    [
        // (`version` is the epoch a version entered at: timing, not content; not compared)
        ("documents", "SELECT doc_id, title, content FROM documents ORDER BY doc_id"),
        ("chunks", "SELECT chunk_id, doc_id, ordinal, char_start, char_end, text FROM chunks ORDER BY doc_id, ordinal"),
        ("embeddings", "SELECT chunk_id, model_id, vector FROM embeddings ORDER BY chunk_id"),
        (
            "documents_changes",
            "SELECT doc_id, content_hash, SUM(_diff) AS net FROM documents_changes \
             GROUP BY doc_id, content_hash HAVING SUM(_diff) <> 0 ORDER BY doc_id",
        ),
    ]
    .into_iter()
    .map(|(name, sql)| {
        let out = Command::new(BIN).args(["sql", sql, "--format", "csv", "--data"]).arg(data).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        (name, String::from_utf8(out.stdout).unwrap())
    })
    .collect()
}

/// Sends `batches` from the first; a batch counts once it is acknowledged.
/// With `kill_after`, the process is SIGKILLed that long after it is up,
/// started again, and the client goes on from its first unacknowledged batch.
/// Returns the number of kills.
fn run(dir: &Path, batches: &[String], seed: Option<u64>) -> usize {
    let port = free_port();
    let config = write_config(dir, port);
    let log = dir.join("twinflow.log");
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(30));
    let mut rng = SeededRng::new(seed.unwrap_or(1).wrapping_add(0x5151));
    let mut kills = 0;
    let mut next = 0;
    let mut child = start(&config, &log);
    loop {
        // A killer thread: SIGKILL at a random moment of this incarnation, counted from its start, so
        // some land while it restores and replays the input log (up to 3 kills per seed).
        let killer = (seed.is_some() && kills < 3).then(|| {
            let pid = child.id();
            // One kill in three within 40 ms of the start: opening the store, replaying the log.
            let delay = Duration::from_millis(if rng.below(3) == 0 { rng.below(40) } else { rng.below(400) });
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            })
        });
        let ready = ready_or_killed(&http, &base, &mut child);
        if !ready && killer.is_none() {
            panic!("twinflow exited while starting:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        while ready && next < batches.len() {
            let sent = http
                .post(format!("{base}/v1/documents"))
                .header("content-type", "application/x-ndjson")
                .body(batches[next].clone())
                .send();
            match sent {
                Ok(response) if response.status().is_success() => next += 1,
                Ok(response) if response.status().is_server_error() => break,
                Ok(response) => panic!("batch {next} refused: {}", response.text().unwrap_or_default()),
                Err(_) => break, // the process is gone: not acknowledged
            }
            std::thread::sleep(Duration::from_millis(4));
        }
        if let Some(killer) = killer {
            killer.join().unwrap();
            let status = child.wait().unwrap();
            if status.code().is_none() {
                kills += 1;
                child = start(&config, &log);
                continue;
            }
            panic!("twinflow exited by itself with {status}");
        }
        if next == batches.len() {
            break;
        }
    }
    // Everything acknowledged: wait until it is committed, then stop cleanly.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value = http.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
        if status["pending_changes"] == 0 && status["open_epoch"].as_u64() > status["committed_epoch"].as_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "changes never committed: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(&mut child);
    kills
}

#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let seeds: u64 = std::env::var("TWINFLOW_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let root = tempfile::tempdir().unwrap();
    let root = if std::env::var_os("TWINFLOW_CRASH_KEEP").is_some() {
        Box::leak(Box::new(root)).path().to_path_buf()
    } else {
        root.path().to_path_buf()
    };
    let mut survived = 0;
    let first: u64 = std::env::var("TWINFLOW_CRASH_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in first..first + seeds {
        let batches = workload(seed, 60);
        let ops = |op: &str| batches.iter().flat_map(|b| b.lines()).filter(|l| l.contains(op)).count();
        assert!(ops(r#""op":"upsert""#) > 0 && ops(r#""op":"delete""#) > 0, "seed {seed}: upserts and deletes");
        let clean_dir = root.join(format!("clean-{seed}"));
        std::fs::create_dir_all(&clean_dir).unwrap();
        assert_eq!(run(&clean_dir, &batches, None), 0);
        let clean = tables(&clean_dir.join("data"));
        assert!(clean["documents"].lines().filter(|l| l.starts_with("doc-")).count() > 5, "{}", clean["documents"]);

        let crash_dir = root.join(format!("crash-{seed}"));
        std::fs::create_dir_all(&crash_dir).unwrap();
        let kills = run(&crash_dir, &batches, Some(seed));
        let crashed = tables(&crash_dir.join("data"));
        for (table, rows) in &clean {
            if &crashed[table] != rows {
                let only = |a: &str, b: &str| -> Vec<String> {
                    let b: std::collections::BTreeSet<&str> = b.lines().collect();
                    a.lines().filter(|l| !b.contains(l)).take(6).map(|l| l.chars().take(120).collect()).collect()
                };
                panic!(
                    "seed {seed}, {kills} kills: table {table} differs from the clean run\nonly in the clean run: {:#?}\nonly after the crashes: {:#?}\nlog: {}",
                    only(rows, &crashed[table]),
                    only(&crashed[table], rows),
                    crash_dir.join("twinflow.log").display()
                );
            }
        }
        let documents = clean["documents"].lines().filter(|l| l.starts_with("doc-")).count();
        eprintln!("seed {seed}: {kills} SIGKILLs survived; {documents} documents, every table equal");
        survived += kills;
    }
    eprintln!("{survived} SIGKILLs over {seeds} seeds, every table equal to the clean run");
    assert!(survived >= seeds as usize, "the harness must actually kill: {survived} kills");
}

#[test]
fn a_bad_data_directory_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port());
    let up = |what: &str| {
        let out = Command::new(BIN).arg("--config").arg(&config).arg("up").output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: twinflow up must fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The data directory is a file.
    let data = dir.path().join("data");
    std::fs::write(&data, b"not a directory").unwrap();
    let err = up("a file as data directory");
    assert!(err.contains("cannot create the data directory") && err.contains(&data.display().to_string()), "{err}");

    // A damaged input log segment (not the newest one): named, with what to do.
    std::fs::remove_file(&data).unwrap();
    let log = data.join("_input_log");
    std::fs::create_dir_all(&log).unwrap();
    let bad = log.join("00000000000000000001.log");
    let mut frame = vec![9, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 0, 0, 0, 0, 0, 0, 0];
    frame.extend_from_slice(b"[\"junk\"]!");
    frame.extend_from_slice(&frame.clone());
    std::fs::write(&bad, &frame).unwrap();
    std::fs::write(log.join("00000000000000000002.log"), b"").unwrap();
    let err = up("a corrupt input log");
    assert!(err.contains(&bad.display().to_string()) && err.contains("checksum mismatch"), "{err}");
    assert!(err.contains("move this file out of"), "{err}");
}

/// The persistent embedding cache: a document deleted, then added again
/// after a restart, is not encoded again (its vectors are no longer in the
/// `embeddings` table, but in `_embed_cache`); without the cache it is.
#[test]
fn a_restart_never_encodes_a_text_twice() {
    use twinflow_schemas::{ChangeLimits, parse_change};

    let change = |line: String| parse_change(line.as_bytes(), 1, &ChangeLimits::default()).unwrap();
    let commit = |app: &twinflow_server::App, line: String| {
        let epoch = app.engine().unwrap().submit(vec![change(line)]).unwrap();
        app.engine().unwrap().flush();
        assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    };
    let article = crate::fixtures::article("lanterns", 12);
    let upsert = crate::fixtures::upsert_line("lanterns", "Lanterns", &article);
    let delete = serde_json::json!({ "op": "delete", "doc_id": "lanterns" }).to_string();
    for cache in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let set = |c: &mut twinflow_schemas::config::Config| c.storage.embedding_cache = cache;
        let app = crate::fixtures::app_with(dir.path(), set);
        commit(&app, upsert.clone());
        let encoded = app.engine().unwrap().stats().texts_embedded;
        assert!(encoded >= 2, "the article is encoded: {encoded} texts");
        commit(&app, delete.clone());
        app.shutdown().unwrap();
        drop(app);

        let app = crate::fixtures::app_with(dir.path(), set);
        commit(&app, upsert.clone());
        let again = app.engine().unwrap().stats().texts_embedded;
        if cache {
            assert_eq!(again, 0, "with the cache nothing is encoded again");
        } else {
            assert_eq!(again, encoded, "without the cache every text is encoded again");
        }
        app.shutdown().unwrap();
    }
}

/// A corpus the instruct extractor and the adapter trainer have enough to
/// work with: `docs` documents of four paragraphs of pseudo-words.
fn training_corpus(docs: usize) -> String {
    const SYLLABLES: &[&str] = &["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "in", "pha", "gro", "ste"];
    let mut rng = SeededRng::new(0x7e57_1a1e);
    (0..docs)
        .map(|d| {
            let paragraphs: Vec<String> = (0..4)
                .map(|_| {
                    let words: Vec<String> = (0..40)
                        .map(|_| (0..2 + rng.below(2)).map(|_| SYLLABLES[rng.index(SYLLABLES.len())]).collect())
                        .collect();
                    words.join(" ") + "."
                })
                .collect();
            serde_json::json!({
                "op": "upsert", "doc_id": format!("report-{d:02}"), "kind": "article", "author": "Ada",
                "title": format!("Report {d}"), "content": paragraphs.join("\n\n"),
            })
            .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The registry and the dataset versions as the API shows them, checked
/// for consistency: versions numbered 1..=n, each model's dataset version
/// listed, each dataset version readable, no training run in progress.
/// Returns (model versions, dataset versions).
fn training_state(http: &reqwest::blocking::Client, base: &str) -> (u64, u64) {
    let models: serde_json::Value = http.get(format!("{base}/v1/models")).send().unwrap().json().unwrap();
    assert_eq!(models["training"]["state"], "idle", "{models}");
    let versions: Vec<u64> =
        models["versions"].as_array().unwrap().iter().map(|c| c["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>(), "{models}");
    let datasets: serde_json::Value = http.get(format!("{base}/v1/datasets")).send().unwrap().json().unwrap();
    let dataset_versions: Vec<u64> = datasets["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == "instruct")
        .flat_map(|d| d["versions"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()))
        .collect();
    for v in &dataset_versions {
        let response = http.get(format!("{base}/v1/datasets/instruct/versions/{v}")).send().unwrap();
        assert!(response.status().is_success(), "dataset version {v}: {}", response.text().unwrap_or_default());
    }
    for card in models["versions"].as_array().unwrap() {
        let dataset = card["dataset"]["version"].as_u64().unwrap();
        assert!(dataset_versions.contains(&dataset), "model {card} trained on a dataset version not listed");
    }
    match models["active"].as_str().unwrap().strip_prefix("adapter-v") {
        Some(v) => assert!(versions.contains(&v.parse().unwrap()), "the active adapter is registered: {models}"),
        None => assert_eq!(models["active"], "base"),
    }
    (versions.len() as u64, dataset_versions.iter().copied().max().unwrap_or(0))
}

/// Waits until the current training run has finished; returns its status.
fn trained(http: &reqwest::blocking::Client, base: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let models: serde_json::Value = http.get(format!("{base}/v1/models")).send().unwrap().json().unwrap();
        if models["training"]["state"] == "idle" && models["training"]["runs"].as_u64() >= Some(1) {
            return models["training"].clone();
        }
        assert!(Instant::now() < deadline, "training never finished: {models}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL while the embedding adapter trains (snapshotting the tables,
/// writing the dataset version, training, registering, promoting): after
/// each restart the registry and the datasets are consistent (only whole
/// versions, numbered without gaps, every model's dataset present, the
/// active adapter loadable and searched through), the next run completes,
/// and the tables are those before training.
#[test]
fn sigkill_while_training_leaves_whole_versions_only() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = free_port();
    let config = write_config(dir, port);
    let text = std::fs::read_to_string(&config).unwrap()
        + "\n[training]\nepochs = 20\nbatch_size = 16\nquestions_per_run = 0\n";
    std::fs::write(&config, text).unwrap();
    let log = dir.join("twinflow.log");
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));

    let mut child = start(&config, &log);
    wait_ready(&http, &base, &mut child, &log);
    let response = http
        .post(format!("{base}/v1/documents?wait=true"))
        .header("content-type", "application/x-ndjson")
        .body(training_corpus(80))
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().unwrap_or_default());
    stop(&mut child);
    let before = tables(&dir.join("data"));

    // One whole run, to know how long a run takes.
    let mut child = start(&config, &log);
    wait_ready(&http, &base, &mut child, &log);
    let started = Instant::now();
    assert_eq!(http.post(format!("{base}/v1/models/train")).send().unwrap().status().as_u16(), 202);
    let status = trained(&http, &base);
    let run = started.elapsed();
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(training_state(&http, &base), (1, 1));

    let kills = std::env::var("TWINFLOW_CRASH_TRAINING_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(12u64);
    let mut rng = SeededRng::new(0x7a11);
    let mut phases = Vec::new();
    for kill in 0..kills {
        assert_eq!(http.post(format!("{base}/v1/models/train")).send().unwrap().status().as_u16(), 202);
        // Anywhere in the run, spread over its phases.
        std::thread::sleep(run.mul_f64((kill as f64 + rng.unit()) / kills as f64));
        let models: serde_json::Value = http.get(format!("{base}/v1/models")).send().unwrap().json().unwrap();
        let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        if models["training"]["state"] == "running" {
            phases.push(models["training"]["phase"].as_str().unwrap_or_default().to_owned());
        }
        child.wait().unwrap();
        child = start(&config, &log);
        wait_ready(&http, &base, &mut child, &log);
        let (models, _) = training_state(&http, &base);
        assert!(models >= 1, "the finished version stays");
        let search: serde_json::Value = http
            .get(format!("{base}/v1/search"))
            .query(&[("q", "kalo miren"), ("k", "3")])
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(search["results"].as_array().map(Vec::len), Some(3), "{search}");
    }

    eprintln!("a run took {run:?}; killed during {phases:?}");
    assert!(phases.len() as u64 * 4 >= kills, "kills land while training runs: {phases:?} in {run:?}");
    // After the kills a run completes, numbered after every whole version.
    let (models, datasets) = training_state(&http, &base);
    assert_eq!(http.post(format!("{base}/v1/models/train")).send().unwrap().status().as_u16(), 202);
    let status = trained(&http, &base);
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(training_state(&http, &base), (models + 1, datasets + 1));
    stop(&mut child);
    assert!(tables(&dir.join("data")) == before, "training changed no table");
}
