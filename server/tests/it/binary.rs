//! The `twinflow` binary as a process: `up` with a watched directory,
//! `sql`/`search`/`status` against it, SIGTERM commits and exits 0, and a
//! restart serves the committed state.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(data: &Path, watch: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args(["up", "--workers", "2", "--tick", "20ms", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(data)
        .arg("--watch")
        .arg(watch)
        .env("TWINFLOW_LOG", "info")
        .env("TWINFLOW_LOG_FORMAT", "json")
        .env("TWINFLOW_LOG_SPANS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
        .spawn()
        .expect("twinflow starts")
}

/// A CLI verb against the server on `port`, which finds the admin key in `data` as a user's would.
fn cli(port: u16, data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("TWINFLOW_SERVER", format!("http://127.0.0.1:{port}"))
        .env("TWINFLOW__STORAGE__DATA_DIR", data)
        .output()
        .unwrap();
    assert!(out.status.success(), "twinflow {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `twinflow sql … --format csv` until the single value equals `want`.
fn wait_for(port: u16, data: &Path, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = Command::new(BIN)
            .args(["sql", sql, "--format", "csv"])
            .env("TWINFLOW_SERVER", format!("http://127.0.0.1:{port}"))
            .env("TWINFLOW__STORAGE__DATA_DIR", data)
            .output()
            .unwrap();
        if out.status.success() {
            last = String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap_or("").trim_matches('"').to_owned();
            if last == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("`{sql}` never returned {want} (last: {last:?})");
}

fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "twinflow did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn up_watch_query_stop_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let watch = dir.path().join("notes");
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::write(
        watch.join("one.md"),
        "# Lighthouses\n\nLighthouses guide ships along rocky coasts at night.\n\nKeepers once lived in them.",
    )
    .unwrap();
    std::fs::write(
        watch.join("two.txt"),
        "Bread rises because yeast makes gas. Bakers knead the dough to build gluten.",
    )
    .unwrap();
    let port = free_port();
    let mut child = start(&data, &watch, port);
    wait_for(port, &data, "SELECT COUNT(*) FROM documents", "2");
    // The first start made the admin key, private to its owner; nothing is served without a key.
    let key_file = twinflow_schemas::auth::admin_key_path(&data);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let anonymous = reqwest::blocking::get(format!("http://127.0.0.1:{port}/v1/status")).unwrap();
    assert_eq!(anonymous.status(), 401);
    let healthz = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).unwrap();
    assert_eq!(healthz.status(), 200);

    std::fs::write(
        watch.join("three.html"),
        "<html><head><title>Kites</title></head><body><p>Kites fly in steady wind.</p></body></html>",
    )
    .unwrap();
    std::fs::remove_file(watch.join("two.txt")).unwrap();
    wait_for(
        port,
        &data,
        "SELECT string_agg(doc_id, ',' ORDER BY doc_id) FROM documents",
        "file:one.md,file:three.html",
    );
    let search = cli(port, &data, &["search", "ships on rocky coasts", "-k", "1"]);
    assert!(search.contains("file:one.md"), "{search}");
    // Piped output is plain; colours only where asked for (a terminal, or CLICOLOR_FORCE).
    assert!(!search.contains('\x1b'), "escape codes in piped output: {search:?}");
    let coloured = Command::new(BIN)
        .args(["search", "ships on rocky coasts", "-k", "1"])
        .env("TWINFLOW_SERVER", format!("http://127.0.0.1:{port}"))
        .env("TWINFLOW__STORAGE__DATA_DIR", &data)
        .env("CLICOLOR_FORCE", "1")
        .output()
        .unwrap();
    let coloured = String::from_utf8(coloured.stdout).unwrap();
    assert!(coloured.contains("\x1b[36mfile:one.md\x1b[0m"), "the document id in cyan: {coloured:?}");
    // Parquet out of SQL: a real Parquet file.
    let parquet = Command::new(BIN)
        .args(["sql", "SELECT doc_id, title FROM documents ORDER BY doc_id", "--format", "parquet"])
        .env("TWINFLOW_SERVER", format!("http://127.0.0.1:{port}"))
        .env("TWINFLOW__STORAGE__DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(parquet.status.success(), "{}", String::from_utf8_lossy(&parquet.stderr));
    let rows =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(axum::body::Bytes::from(parquet.stdout))
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum::<usize>();
    assert_eq!(rows, 2);
    let status = cli(port, &data, &["status"]);
    assert!(status.contains("\"committed_epoch\""), "{status}");

    let code = sigterm(&mut child);
    assert!(code.success(), "SIGTERM exits 0, got {code:?}");
    spans_closed(&std::fs::read_to_string(data.with_extension("log")).unwrap());

    // Restart on the same data: committed state is served before anything new arrives.
    let port = free_port();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut child = start(&data, &empty, port);
    wait_for(
        port,
        &data,
        "SELECT string_agg(doc_id, ',' ORDER BY doc_id) FROM documents",
        "file:one.md,file:three.html",
    );
    let offline = Command::new(BIN)
        .args(["sql", "SELECT COUNT(*) FROM chunks", "--format", "csv", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    assert!(sigterm(&mut child).success());

    // TWINFLOW_LOG_FORMAT=json: stderr is one JSON object per line, the server's own messages included.
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(events.iter().all(|e| e["level"].is_string() && e["fields"].is_object()), "{log}");
    let said = |text: &str| events.iter().any(|e| e["fields"]["message"].as_str().is_some_and(|m| m.contains(text)));
    assert!(said("twinflow serving on") && said("stopped at epoch"), "{log}");
}

/// TWINFLOW_LOG_SPANS=1: a change's path as spans (the watch source's
/// batches, the epochs' commits), each closing with its busy time.
fn spans_closed(log: &str) {
    let events: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let closed = |name: &str| {
        events.iter().any(|e| {
            e["fields"]["message"] == "close" && e["span"]["name"] == name && e["fields"]["time.busy"].is_string()
        })
    };
    assert!(closed("source_batch") && closed("epoch_commit"), "{log}");
    assert!(
        events.iter().any(|e| e["span"]["name"] == "source_batch"
            && e["span"]["source"] == "watch-0"
            && e["span"]["epoch"].is_u64()),
        "{log}"
    );
}

/// A log that goes to a file or a pipe is plain text: no colour codes in it
/// (they are for a person at a terminal).
#[test]
fn a_redirected_log_has_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("up.log");
    let mut child = Command::new(BIN)
        .args(["up", "--addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--data")
        .arg(dir.path().join("data"))
        .env("TWINFLOW_LOG", "info")
        .env_remove("TWINFLOW_LOG_FORMAT")
        .env_remove("CLICOLOR_FORCE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("twinflow starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("serving on") {
        assert!(Instant::now() < deadline, "never served: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sigterm(&mut child).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" INFO "), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a redirected log: {text:?}");
}
