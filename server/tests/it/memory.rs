//! One hostile SQL statement cannot take the process's memory: a 900-million-
//! row ordered cross join against `twinflow up` with a 64 MiB SQL pool is
//! refused with a JSON error, the process's peak resident memory stays within
//! the pool plus a margin, and the next statement is answered.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twinflow_schemas::api::{ErrorBody, ErrorCode};

use crate::crash::{free_port, stop, wait_ready};
use crate::fixtures::{ADMIN_KEY, auth_toml, http_with_key};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in {status}"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[cfg(target_os = "linux")]
#[test]
fn a_huge_query_is_refused_within_the_pool_and_the_server_keeps_serving() {
    const POOL: u64 = 64 << 20;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("twinflow.toml");
    std::fs::write(
        &config,
        format!(
            "[embedder]\ntype = \"hashing\"\n\n[storage]\ndata_dir = \"{}\"\n\n\
             [server]\naddr = \"127.0.0.1:{port}\"\nsql_memory = \"64MiB\"\nsql_spill = \"0B\"\n\n\
             [drift]\nenabled = false\n{}",
            dir.path().join("data").display(),
            auth_toml(),
        ),
    )
    .unwrap();
    let log = dir.path().join("twinflow.log");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("up")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = http_with_key(ADMIN_KEY, Duration::from_secs(300));
    wait_ready(&http, &base, &mut child, &log);
    let sql = |statement: &str| {
        http.post(format!("{base}/v1/sql"))
            .json(&serde_json::json!({ "sql": statement, "format": "json" }))
            .send()
            .unwrap()
    };
    assert!(sql("SELECT 1 AS one").status().is_success());
    let before = proc_status_bytes(child.id(), "VmRSS:");

    let started = Instant::now();
    let huge = sql("SELECT a, b FROM (SELECT unnest(range(0, 30000)) AS a) x \
                    CROSS JOIN (SELECT unnest(range(0, 30000)) AS b) y ORDER BY a * b DESC, a");
    let took = started.elapsed();
    assert_eq!(huge.status(), 422);
    let error: ErrorBody = huge.json().unwrap();
    assert_eq!(error.error.code, ErrorCode::ResourceLimit, "{}", error.error.message);
    let peak = proc_status_bytes(child.id(), "VmHWM:");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "resident before {} MiB, peak {} MiB (+{} MiB) with a {} MiB pool; refused after {took:?}",
        before >> 20,
        peak >> 20,
        grew >> 20,
        POOL >> 20
    );
    assert!(grew < POOL + (192 << 20), "the process grew by {} MiB over a {} MiB pool", grew >> 20, POOL >> 20);

    // Still serving.
    let next = sql("SELECT COUNT(*) AS n FROM documents");
    assert!(next.status().is_success(), "{}", next.text().unwrap());
    stop(&mut child);
}
