//! A full disk while changes stream in, emulated for one process: its
//! soft `RLIMIT_FSIZE` caps every file it writes at [`LIMIT`] bytes, and
//! with `SIGXFSZ` ignored a write past it fails with `EFBIG`, as a write to
//! a full disk fails with `ENOSPC` (no small filesystem can be mounted
//! here). The test then "frees space" by lifting the limit of the running
//! process and checks that nothing was lost:
//!
//! - a batch whose input-log frame cannot be written answers 507
//!   `storage_error` (the engine holds it; it is committed once space is back);
//! - commits that cannot write their Parquet files are retried, with an
//!   error naming the file, while smaller acknowledged batches still go
//!   through the input log;
//! - once the oldest uncommitted change is older than `engine.max_lag`,
//!   ingest answers 503 `overloaded` with `Retry-After`;
//! - with the limit lifted, the running process commits everything, stops
//!   cleanly, restarts, and its tables equal one clean run's on the same input.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use twinflow_schemas::rng::SeededRng;

use crate::crash::{free_port, stop, tables, wait_ready, workload};
use crate::scale::{post_committed, run};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");
/// The largest file the process may write while the disk is "full".
const LIMIT: u64 = 64 * 1024;

/// `twinflow up` with every file it writes capped at `limit` bytes (when
/// given: `prlimit` of util-linux sets the soft limit, and the shell makes
/// `SIGXFSZ` ignored across the `exec`s); its log goes through a pipe (not a
/// file, which the cap would hit).
fn up(config: &Path, limit: Option<u64>) -> (Child, Arc<Mutex<String>>) {
    let mut command = match limit {
        Some(limit) => {
            let mut command = Command::new("sh");
            command.args(["-c", &format!("trap '' XFSZ; exec prlimit --fsize={limit}: -- \"$0\" \"$@\""), BIN]);
            command
        }
        None => Command::new(BIN),
    };
    command
        .arg("--config")
        .arg(config)
        .arg("up")
        .env("TWINFLOW_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("twinflow starts");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (child, log)
}

/// Lifts the file size cap of a running process (its soft limit up to its hard one).
fn lift_limit(child: &Child) {
    let pid = child.id().to_string();
    let hard = Command::new("prlimit")
        .args(["--pid", &pid, "--fsize", "--raw", "--noheadings", "--output", "HARD"])
        .output()
        .expect("prlimit runs");
    let hard = String::from_utf8(hard.stdout).unwrap();
    let status = Command::new("prlimit").args(["--pid", &pid, &format!("--fsize={}:", hard.trim())]).status().unwrap();
    assert!(status.success());
}

fn post(http: &reqwest::blocking::Client, base: &str, batch: &str, wait: bool) -> reqwest::blocking::Response {
    http.post(format!("{base}/v1/documents?wait={wait}"))
        .header("content-type", "application/x-ndjson")
        .body(batch.to_owned())
        .send()
        .unwrap()
}

fn committed_epoch(http: &reqwest::blocking::Client, base: &str) -> u64 {
    let status: serde_json::Value = http.get(format!("{base}/v1/status")).send().unwrap().json().unwrap();
    status["committed_epoch"].as_u64().unwrap()
}

/// A document of `bytes` of pseudo-random words (Parquet cannot squeeze it under [`LIMIT`]).
fn big_document(bytes: usize) -> String {
    let mut rng = SeededRng::new(0x2545_f491_4f6c_dd1d);
    let mut content = String::new();
    while content.len() < bytes {
        for _ in 0..3 + rng.below(7) {
            content.push((b'a' + rng.below(26) as u8) as char);
        }
        content.push(if rng.chance(1.0 / 11.0) { '\n' } else { ' ' });
    }
    serde_json::json!({ "op": "upsert", "doc_id": "doc-big", "kind": "article", "title": "Big", "content": content })
        .to_string()
}

#[test]
fn a_full_disk_refuses_or_delays_changes_and_loses_none() {
    let root = tempfile::tempdir().unwrap();
    let mut batches = workload(31, 12);
    batches.insert(4, big_document(400_000));
    let (before, big, during, refused, after) = (&batches[..4], &batches[4], &batches[5], &batches[6], &batches[7..]);
    let (expected, _) = run(&root.path().join("clean"), &batches, 1, 1, &[]);

    let dir = root.path().join("full");
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let config = dir.join("twinflow.toml");
    std::fs::write(
        &config,
        format!(
            "[embedder]\ntype = \"hashing\"\n\n[engine]\nworkers = 1\ntick = \"15ms\"\nmax_lag = \"2s\"\n\n\
             [storage]\ndata_dir = \"{}\"\n\n[server]\naddr = \"127.0.0.1:{port}\"\n\n[drift]\nenabled = false\n{}",
            dir.join("data").display(),
            crate::fixtures::auth_toml(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = crate::fixtures::http_with_key(crate::fixtures::ADMIN_KEY, Duration::from_secs(60));

    let (mut child, log) = up(&config, Some(LIMIT));
    let log_file = dir.join("unused.log");
    wait_ready(&http, &base, &mut child, &log_file);
    post_committed(&http, &base, before);
    let epoch_before = committed_epoch(&http, &base);

    // Its input-log frame does not fit: refused as not durable (but the engine holds it).
    let response = post(&http, &base, big, false);
    assert_eq!(response.status().as_u16(), 507);
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["error"]["code"], "storage_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not durable"), "{body}");
    // A small batch still goes through the log (the failed frame was cut off, appends moved on).
    let response = post(&http, &base, during, false);
    assert!(response.status().is_success(), "{}", response.text().unwrap_or_default());
    // The big epoch's Parquet files do not fit: nothing commits, and past max_lag ingest is refused.
    std::thread::sleep(Duration::from_millis(2500));
    let refusal = post(&http, &base, refused, false);
    assert_eq!(refusal.status().as_u16(), 503);
    assert_eq!(refusal.headers()["retry-after"], "1");
    let body: serde_json::Value = refusal.json().unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert_eq!(committed_epoch(&http, &base), epoch_before, "nothing commits while the files do not fit");
    {
        let log = log.lock();
        let failed = log.lines().find(|l| l.contains("commit failed")).unwrap_or_else(|| panic!("{log}"));
        assert!(failed.contains(".parquet") && failed.contains("File too large"), "names the file: {failed}");
    }

    // Space is back: the retried commit goes through without a restart; the refused batch is sent again.
    lift_limit(&child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = post(&http, &base, refused, true);
        if response.status().is_success() {
            break;
        }
        assert_eq!(response.status().as_u16(), 503, "{}", response.text().unwrap_or_default());
        assert!(Instant::now() < deadline, "still refused 60 s after space came back");
        std::thread::sleep(Duration::from_secs(1));
    }
    post_committed(&http, &base, after);
    stop(&mut child);

    let (mut child, _log) = up(&config, None);
    wait_ready(&http, &base, &mut child, &log_file);
    stop(&mut child);
    let tables: String =
        tables(&dir.join("data")).into_iter().map(|(name, rows)| format!("== {name}\n{rows}")).collect();
    assert!(tables == expected, "tables differ from a clean run on the same input");
}
