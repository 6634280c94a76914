//! `twinflow-bench replicas`: read throughput as read replicas are added.
//!
//! Every server is a `twinflow` process of its own — the primary (`up`)
//! and each replica (`serve --follow`) — limited to `--cpu` CPUs (a cgroup
//! when this user may make one, else pinned to a core with `taskset`), so
//! the scaling shows on a small machine. For each count of replicas: the
//! primary is loaded with State of the Union speeches, the replicas start
//! and catch up, then `--clients` threads send searches, then extractive
//! RAG answers, round-robin over every process (a load balancer's view),
//! for `--seconds` each. With replicas, a writer then edits speeches at
//! the `ingest-load` bench's rate while nothing reads, and each replica
//! reports how long the primary's commits took to be searchable there.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_schemas::DocumentChange;

/// What `replicas` runs.
#[derive(Debug, Clone)]
pub struct ReplicasBench {
    /// Replica counts to measure, e.g. `[0, 1, 2]`.
    pub replicas: Vec<usize>,
    pub clients: usize,
    pub seconds: u64,
    /// Speeches loaded before the reads.
    pub docs: usize,
    /// CPUs each server process may use.
    pub cpu: f64,
    /// Edit batches per second, and speeches per batch, while lag is measured.
    pub rate: f64,
    pub batch: usize,
    /// Real MiniLM (else the feature-hashing double, as `ingest-load` by default).
    pub minilm: bool,
}

/// A server process, limited to its share of the CPUs.
struct Server {
    child: Child,
    base: String,
    limit: Limit,
}

/// How a process is held to its share.
enum Limit {
    Cgroup(PathBuf),
    Pinned(usize),
}

impl Limit {
    fn describe(&self, cpu: f64) -> String {
        match self {
            Limit::Cgroup(_) => format!("cgroup, {cpu} CPU"),
            Limit::Pinned(core) => format!("taskset, core {core}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Limit::Cgroup(dir) = &self.limit {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The `twinflow` binary beside this one (both are built into the same folder).
fn twinflow_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name("twinflow");
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: cargo build -p twinflow-server --bin twinflow -p twinflow-benches --bin twinflow-bench",
        path.display()
    );
    Ok(path)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Holds `pid` to `cpu` CPUs: a cgroup (v2, else v1's `cpu` controller),
/// else pinned to core `index` modulo the cores.
fn limit(pid: u32, cpu: f64, index: usize) -> Limit {
    let name = format!("twinflow-bench-{}-{index}", std::process::id());
    let quota = ((cpu * 100_000.0) as u64).max(1_000);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers");
    let tried = if std::fs::read_to_string(v2).is_ok_and(|c| c.contains("cpu")) {
        let dir = Path::new("/sys/fs/cgroup").join(&name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cpu.max"), format!("{quota} 100000")))
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()))
            .map(|()| dir)
    } else {
        let dir = Path::new("/sys/fs/cgroup/cpu").join(&name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join("cpu.cfs_period_us"), "100000"))
            .and_then(|()| std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()))
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()))
            .map(|()| dir)
    };
    match tried {
        Ok(dir) => Limit::Cgroup(dir),
        Err(_) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let core = index % cores;
            let _ = Command::new("taskset").args(["-a", "-p", "-c", &core.to_string(), &pid.to_string()]).status();
            Limit::Pinned(core)
        }
    }
}

/// Starts `twinflow <args>` on a free port, limited, and waits for `/readyz`
/// (with the admin key the primary writes to the data directory).
fn start(bench: &ReplicasBench, args: &[&str], data: &Path, index: usize, log: &Path) -> anyhow::Result<Server> {
    let port = free_port()?;
    let mut command = Command::new(twinflow_binary()?);
    command.args(args).args(["--addr", &format!("127.0.0.1:{port}")]);
    command.env("TWINFLOW_LOG", "warn").env("TWINFLOW__REPLICA__POLL", "20ms");
    command.env("TWINFLOW__ENGINE__MAX_LAG", "60s").env("TWINFLOW__TRAINING__ON_DRIFT", "false");
    if !bench.minilm {
        command.env("TWINFLOW__EMBEDDER__TYPE", "hashing");
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting twinflow {args:?}"))?;
    let limit = limit(child.id(), bench.cpu, index);
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), limit };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = server.child.try_wait()? {
            anyhow::bail!("twinflow {args:?} exited ({status}); its log: {}", log.display());
        }
        // The admin key exists once the primary has started.
        if let Ok(key) = std::fs::read_to_string(data.join("_auth").join("admin.key")) {
            let http = twinflow_server::client::blocking_client(Duration::from_secs(5), Some(key.trim()))
                .map_err(anyhow::Error::msg)?;
            if http.get(format!("{}/readyz", server.base)).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(server);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "twinflow {args:?} was not ready in 600 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Requests answered per second by `clients` threads over `targets` for `seconds`, with latencies.
fn load(
    http: &reqwest::blocking::Client,
    targets: &[String],
    clients: usize,
    seconds: u64,
    request: &(dyn Fn(&reqwest::blocking::Client, &str, usize) -> bool + Sync),
) -> Value {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let results: Vec<(usize, usize, Vec<f64>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|client| {
                let stop = &stop;
                scope.spawn(move || {
                    let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
                    let mut n = client;
                    while !stop.load(Ordering::Relaxed) {
                        let target = &targets[n % targets.len()];
                        let sent = Instant::now();
                        if request(http, target, n) {
                            ok += 1;
                            latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                        } else {
                            failed += 1;
                        }
                        n += clients;
                    }
                    (ok, failed, latencies)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().expect("a load thread")).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let failed: usize = results.iter().map(|r| r.1).sum();
    let mut latencies: Vec<f64> = results.into_iter().flat_map(|r| r.2).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies.get(((latencies.len().max(1) - 1) as f64 * q).round() as usize).copied();
    json!({
        "per_second": ok as f64 / elapsed,
        "answered": ok,
        "failed": failed,
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
    })
}

/// Runs the bench and returns its report.
pub fn run(bench: &ReplicasBench) -> anyhow::Result<Value> {
    let cache = twinflow_connectors::demo::default_cache_dir();
    let corpus = twinflow_connectors::demo::fetch_sotu(&cache)?;
    let speeches = twinflow_connectors::demo::sotu_changes(&corpus, None)?;
    let speeches: Vec<DocumentChange> = speeches.into_iter().take(bench.docs.max(1)).collect();
    let titles: Arc<Vec<String>> = Arc::new(
        speeches
            .iter()
            .filter_map(|c| match c {
                DocumentChange::Upsert(d) => Some(d.title.clone()),
                DocumentChange::Delete { .. } => None,
            })
            .collect(),
    );
    let mut rows = Vec::new();
    for &replicas in &bench.replicas {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let data_arg = data.display().to_string();
        let primary = start(bench, &["up", "--data", &data_arg], &data, 0, &dir.path().join("primary.log"))?;
        let key = std::fs::read_to_string(data.join("_auth").join("admin.key"))?;
        let http = twinflow_server::client::blocking_client(Duration::from_secs(120), Some(key.trim()))
            .map_err(anyhow::Error::msg)?;
        for batch in speeches.chunks(20) {
            let response = http
                .post(format!("{}/v1/documents?wait=true&timeout_ms=120000", primary.base))
                .header("content-type", "application/x-ndjson")
                .body(crate::corpus::ndjson(batch)?)
                .send()?;
            anyhow::ensure!(response.status().is_success(), "preloading: {}", response.text()?);
        }
        let loaded = Instant::now();
        let mut servers = vec![primary];
        for i in 1..=replicas {
            let log = dir.path().join(format!("replica-{i}.log"));
            servers.push(start(bench, &["serve", "--follow", &data_arg], &data, i, &log)?);
        }
        let catch_up_s = loaded.elapsed().as_secs_f64();
        let targets: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
        let search = |http: &reqwest::blocking::Client, base: &str, n: usize| {
            let q = &titles[n % titles.len()];
            http.get(format!("{base}/v1/search"))
                .query(&[("q", q.as_str()), ("k", "10")])
                .send()
                .is_ok_and(|r| r.status().is_success())
        };
        let rag = |http: &reqwest::blocking::Client, base: &str, n: usize| {
            let q = format!("What did the speech {} say?", titles[n % titles.len()]);
            http.post(format!("{base}/v1/rag"))
                .json(&json!({ "query": q, "answer": "extractive" }))
                .send()
                .is_ok_and(|r| r.status().is_success())
        };
        let searches = load(&http, &targets, bench.clients, bench.seconds, &search);
        let answers = load(&http, &targets, bench.clients, bench.seconds, &rag);
        let lag = if replicas == 0 { Value::Null } else { replica_lag(bench, &http, &servers, &speeches)? };
        rows.push(json!({
            "replicas": replicas,
            "processes": servers.len(),
            "limit": servers[0].limit.describe(bench.cpu),
            "replicas_ready_s": catch_up_s,
            "search": searches,
            "rag_extractive": answers,
            "replica_lag": lag,
        }));
        drop(servers);
    }
    let base = |kind: &str| rows.first().and_then(|r| r[kind]["per_second"].as_f64()).unwrap_or(f64::NAN);
    let (search0, rag0) = (base("search"), base("rag_extractive"));
    for row in &mut rows {
        row["search_vs_primary_alone"] = json!(row["search"]["per_second"].as_f64().unwrap_or(f64::NAN) / search0);
        row["rag_vs_primary_alone"] = json!(row["rag_extractive"]["per_second"].as_f64().unwrap_or(f64::NAN) / rag0);
    }
    Ok(json!({
        "bench": "replicas",
        "embedder": if bench.minilm { "all-MiniLM-L6-v2" } else { "feature hashing (test double)" },
        "documents": speeches.len(),
        "clients": bench.clients,
        "seconds": bench.seconds,
        "cpu_per_process": bench.cpu,
        "edit_rate": { "batches_per_second": bench.rate, "documents_per_batch": bench.batch },
        "machine_cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "rows": rows,
    }))
}

/// Edits speeches on the primary at the bench's rate for `seconds`, then
/// asks each replica how long commits took to be searchable there.
fn replica_lag(
    bench: &ReplicasBench,
    http: &reqwest::blocking::Client,
    servers: &[Server],
    speeches: &[DocumentChange],
) -> anyhow::Result<Value> {
    let every = Duration::from_secs_f64(1.0 / bench.rate.max(0.1));
    let started = Instant::now();
    let (mut batches, mut last_epoch, mut n) = (0, 0, 0usize);
    while started.elapsed() < Duration::from_secs(bench.seconds) {
        let next = started + every * batches;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let edits: Vec<DocumentChange> = (0..bench.batch)
            .map(|_| {
                n += 1;
                let mut change = speeches[n % speeches.len()].clone();
                if let DocumentChange::Upsert(doc) = &mut change {
                    doc.content.push_str(&format!("\n\nEdit {n}: the record was amended."));
                }
                change
            })
            .collect();
        let response = http
            .post(format!("{}/v1/documents", servers[0].base))
            .header("content-type", "application/x-ndjson")
            .body(crate::corpus::ndjson(&edits)?)
            .send()?;
        if response.status().is_success() {
            last_epoch = response.json::<Value>()?["epoch"].as_u64().unwrap_or(last_epoch);
        }
        batches += 1;
    }
    // Every replica reaches the last edit's epoch; then its lags are read.
    let mut per_replica = Vec::new();
    for server in &servers[1..] {
        let waited = Instant::now();
        let response = http
            .get(format!("{}/v1/search", server.base))
            .query(&[("q", "amended"), ("k", "1"), ("min_as_of", &last_epoch.to_string())])
            .send()?;
        let caught_up_ms = waited.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(response.status().is_success(), "the replica did not reach epoch {last_epoch}");
        let status: Value = http.get(format!("{}/v1/status", server.base)).send()?.json()?;
        let replica = &status["replica"];
        per_replica.push(json!({
            "apply_lag_p50_ms": replica["apply_lag_p50_ms"],
            "apply_lag_p99_ms": replica["apply_lag_p99_ms"],
            "epochs_applied": replica["epochs_applied"],
            "last_edit_visible_after_ms": caught_up_ms,
        }));
    }
    Ok(json!({ "edit_batches": batches, "last_epoch": last_epoch, "replicas": per_replica }))
}
