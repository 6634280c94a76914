//! Serving benches over a real loopback socket:
//! - `twinflow-bench search-load`: `/v1/search` latency under concurrent
//!   clients on an index of the State of the Union speeches cut into small
//!   chunks (≈100k); deletes and re-inserts of whole documents while they
//!   search (chunk rows per second); then the step timings of `/v1/rag`;
//! - `twinflow-bench generate`: prefill and decode tokens/s of the local LLM,
//!   beside llama.cpp's on the same file (`--peer llama-cpp`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_models::{LocalLlm, cpu_device, default_cache_dir, fetch_smollm2};

use crate::quantized::median;
use twinflow_schemas::DocumentChange;
use twinflow_schemas::api::{RagRequest, RagResponse};
use twinflow_schemas::config::{ChunkSpec, Config, EmbedderConfig};

/// What `search-load` runs.
#[derive(Debug, Clone)]
pub struct LoadBench {
    pub clients: usize,
    pub seconds: u64,
    /// Real MiniLM for documents and queries (else the feature-hashing double, to isolate the index).
    pub minilm: bool,
    /// RAG questions to time after the load.
    pub rag_questions: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The admin key of the apps this process serves (a new random one per run).
fn bench_key() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| twinflow_schemas::auth::generate_key().expect("the system's random source"))
}

/// A blocking client sending [`bench_key`].
fn http(timeout: Duration) -> anyhow::Result<reqwest::blocking::Client> {
    twinflow_server::client::blocking_client(timeout, Some(bench_key())).map_err(anyhow::Error::msg)
}

/// The CLI's client of the server at `base`, with [`bench_key`].
fn client(base: &str) -> anyhow::Result<twinflow_server::client::Client> {
    twinflow_server::client::Client::with_key(base, Some(bench_key()))
}

/// Starts an app on `config` and serves it on a loopback port: the app, the
/// runtime serving it (keep it alive) and its base URL.
fn serve(mut config: Config) -> anyhow::Result<(Arc<twinflow_server::App>, tokio::runtime::Runtime, String)> {
    config.auth.keys = vec![twinflow_schemas::config::KeyConfig {
        name: "bench".into(),
        scopes: vec![twinflow_schemas::auth::Scope::Admin],
        sha256: twinflow_schemas::auth::key_sha256(bench_key()),
        scram: None,
    }];
    let app = twinflow_server::App::start(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    Ok((app, runtime, base))
}

/// Runs `search-load` and returns its report.
pub fn search_load(bench: &LoadBench) -> anyhow::Result<Value> {
    let cache = twinflow_connectors::demo::default_cache_dir();
    let corpus = twinflow_connectors::demo::fetch_sotu(&cache)?;
    let docs = twinflow_connectors::demo::sotu_changes(&corpus, None)?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    // This bench measures search: no drift statistics, no retrain competing for the cores.
    config.drift.enabled = false;
    config.training.on_drift = false;
    // Sentence-sized chunks: about 100k of them over the 233 speeches.
    config.chunking.article = ChunkSpec { min_chars: 40, max_chars: 110, ..config.chunking.article };
    if !bench.minilm {
        config.embedder = EmbedderConfig::Hashing(Default::default());
    }
    config.rag.expansions = 1;
    let (app, _runtime, base) = serve(config)?;
    let client = client(&base)?;

    let loading = Instant::now();
    for batch in docs.chunks(20) {
        client.ingest(crate::corpus::ndjson(batch)?, false).context("loading the corpus")?;
    }
    while app.engine().unwrap().stats().pending_changes > 0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let load_s = loading.elapsed().as_secs_f64();
    let (_, counts) = app.store.counts();
    let chunks = counts.get("chunks").copied().unwrap_or(0);
    eprintln!("loaded {chunks} chunks in {load_s:.1} s");

    // Queries: sentences of the speeches, in their own words.
    let queries: Vec<String> = docs
        .iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert(d) => {
                Some(d.content.split('.').nth(3)?.split_whitespace().take(8).collect::<Vec<_>>().join(" "))
            }
            DocumentChange::Delete { .. } => None,
        })
        .filter(|q| q.split(' ').count() >= 4)
        .collect();
    let queries = Arc::new(queries);
    let mut modes = Vec::new();
    // The default fusion, then the same without the documents' leads: what they cost.
    for mode in ["hybrid", "hybrid&lead_weight=0", "vector", "bm25"] {
        modes.push(load_mode(&base, mode, bench, &queries)?);
    }
    let churn = churn(&base, &client, bench, &queries, &docs[..20])?;

    let mut rag = Vec::new();
    let questions = [
        "What did the president say about the national debt?",
        "How should tariffs protect industry?",
        "What did Lincoln say about emancipation?",
        "Why is education important for the nation?",
        "What is the state of the union?",
    ];
    let http = http(Duration::from_secs(600))?;
    for question in questions.iter().cycle().take(bench.rag_questions) {
        let request = RagRequest { query: (*question).into(), ..RagRequest::default() };
        let response = http.post(format!("{base}/v1/rag")).json(&request).send()?;
        anyhow::ensure!(response.status().is_success(), "rag failed: {}", response.text()?);
        let answer: RagResponse = response.json()?;
        rag.push(json!({"question": question, "timings": answer.timings, "usage": answer.usage,
                        "cited": answer.citations.iter().filter(|c| c.cited).count(), "answer": answer.answer}));
    }
    app.shutdown()?;
    Ok(json!({
        "bench": "search-load",
        "embedder": app.engine().unwrap().embedder().model_id(),
        "chunks": chunks,
        "load_s": load_s,
        "clients": bench.clients,
        "seconds_per_mode": bench.seconds,
        "modes": modes,
        "churn": churn,
        "rag": rag,
    }))
}

/// `clients` threads searching in `mode` for `seconds`; QPS and latency percentiles.
fn load_mode(base: &str, mode: &str, bench: &LoadBench, queries: &Arc<Vec<String>>) -> anyhow::Result<Value> {
    let load = Load::start(base, mode, bench.clients, queries);
    std::thread::sleep(Duration::from_secs(bench.seconds));
    load.finish()
}

/// Clients searching until [`Load::finish`].
struct Load {
    mode: String,
    stop: Arc<AtomicBool>,
    started: Instant,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<(Vec<f64>, usize)>>>,
}

impl Load {
    /// `mode` is `/v1/search`'s `mode`, optionally followed by more of its
    /// parameters: `hybrid&lead_weight=0`.
    fn start(base: &str, mode: &str, clients: usize, queries: &Arc<Vec<String>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut parts = mode.split('&');
        let name = parts.next().unwrap_or("hybrid").to_owned();
        let extra: Vec<(String, String)> =
            parts.filter_map(|p| p.split_once('=')).map(|(key, value)| (key.to_owned(), value.to_owned())).collect();
        let threads = (0..clients)
            .map(|c| {
                let (base, mode, extra, queries, stop) =
                    (base.to_owned(), name.clone(), extra.clone(), queries.clone(), stop.clone());
                std::thread::spawn(move || -> anyhow::Result<(Vec<f64>, usize)> {
                    let http = http(Duration::from_secs(60))?;
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let q = &queries[i % queries.len()];
                        i += 17;
                        let started = Instant::now();
                        let response = http
                            .get(format!("{base}/v1/search"))
                            .query(&[("q", q.as_str()), ("k", "10"), ("mode", &mode)])
                            .query(&extra)
                            .send()?;
                        if response.status().is_success() {
                            response.bytes()?;
                            latencies.push(started.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                    }
                    Ok((latencies, errors))
                })
            })
            .collect();
        Self { mode: mode.to_owned(), stop, started: Instant::now(), threads }
    }

    fn finish(self) -> anyhow::Result<Value> {
        self.stop.store(true, Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in self.threads {
            let (latencies, e) = t.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
            all.extend(latencies);
            errors += e;
        }
        all.sort_by(f64::total_cmp);
        Ok(json!({
            "mode": self.mode, "requests": all.len(), "errors": errors, "qps": all.len() as f64 / seconds,
            "p50_ms": percentile(&all, 0.5), "p90_ms": percentile(&all, 0.9), "p99_ms": percentile(&all, 0.99),
        }))
    }
}

/// Deletes `victims` (whole documents) and inserts them again while
/// `clients` search (hybrid): chunk rows deleted and inserted per second,
/// and the search latency meanwhile.
fn churn(
    base: &str,
    client: &twinflow_server::client::Client,
    bench: &LoadBench,
    queries: &Arc<Vec<String>>,
    victims: &[DocumentChange],
) -> anyhow::Result<Value> {
    let deletes: Vec<DocumentChange> = victims
        .iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert(d) => Some(DocumentChange::Delete { doc_id: d.doc_id.clone() }),
            DocumentChange::Delete { .. } => None,
        })
        .collect();
    let chunk_changes = |sign: &str, after: u64| -> anyhow::Result<u64> {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(ABS(_diff)), 0) AS BIGINT) AS n FROM chunks_changes WHERE _diff {sign} 0 AND _epoch > {after}"
        );
        let csv = String::from_utf8(client.sql(&sql, twinflow_schemas::api::SqlFormat::Csv)?)?;
        Ok(csv.lines().nth(1).unwrap_or("0").trim().parse()?)
    };
    let before = client.status()?.committed_epoch;
    let load = Load::start(base, "hybrid", bench.clients, queries);
    let started = Instant::now();
    client.ingest(crate::corpus::ndjson(&deletes)?, true)?;
    let delete_s = started.elapsed().as_secs_f64();
    let middle = client.status()?.committed_epoch;
    let started = Instant::now();
    client.ingest(crate::corpus::ndjson(victims)?, true)?;
    let insert_s = started.elapsed().as_secs_f64();
    let searches = load.finish()?;
    let deleted = chunk_changes("<", before)?;
    let inserted = chunk_changes(">", middle)?;
    Ok(json!({
        "documents": victims.len(),
        "chunks_deleted": deleted, "delete_s": delete_s, "deleted_per_s": deleted as f64 / delete_s,
        "chunks_inserted": inserted, "insert_s": insert_s, "inserted_per_s": inserted as f64 / insert_s,
        "what": "POST ?wait=true of the deletes, then of the documents again: chunking, embedding, Parquet, both indexes",
        "searches_meanwhile": searches,
    }))
}

/// What `generate` runs.
#[derive(Debug, Clone)]
pub struct GenerateBench {
    /// Tokens decoded after each prompt.
    pub tokens: usize,
    pub runs: usize,
    /// Also run llama.cpp (`benches/peers/llama_cpp_bench.sh`) on the same file and token ids.
    pub peer: bool,
    /// Also run the burn graph (slow: a reference, not a serving path).
    pub burn_graph: bool,
}

/// `twinflow-bench generate`: prefill and greedy decode tokens/s of the
/// local LLM (SmolLM2-135M-Instruct Q4_1) on a short prompt and a ~1k-token
/// RAG-shaped one, through the fused path with the weights dequantised to
/// `f32` and kept as their blocks (integer kernels), and with `peer`,
/// llama.cpp on the same GGUF and the same token ids in the same run;
/// ratios twinflow / llama.cpp (above 1: twinflow faster).
pub fn generate(bench: &GenerateBench) -> anyhow::Result<Value> {
    let path = fetch_smollm2(&default_cache_dir())?;
    let passage = "The State of the Union is a report the president gives to Congress each year. ";
    let prompts = [
        ("short", "Write a detailed essay about the history of the United States.".to_owned()),
        ("rag_1k", format!("Context:\n{}\nQuestion: what is the State of the Union?", passage.repeat(60))),
    ];
    let mut variants = vec!["f32", "blocks"];
    if bench.burn_graph {
        variants.push("burn");
    }
    let mut prompt_ids: Vec<(&str, Vec<u32>)> = Vec::new();
    let mut rows = Vec::new();
    for variant in variants {
        let started = Instant::now();
        let llm = match variant {
            "f32" => LocalLlm::load(&path, 2048, &cpu_device())?,
            "blocks" => LocalLlm::load_quantized(&path, 2048, &cpu_device())?,
            _ => LocalLlm::load_burn_graph(&path, 2048, &cpu_device())?,
        };
        let load_s = started.elapsed().as_secs_f64();
        if prompt_ids.is_empty() {
            for (name, text) in &prompts {
                let messages = [twinflow_models::ChatMessage::new("user", text.clone())];
                prompt_ids.push((name, llm.tokenizer().encode(&llm.tokenizer().apply_chat_template(&messages)?)?));
            }
        }
        for (name, ids) in &prompt_ids {
            let (mut prefill, mut decode, mut first) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..bench.runs {
                let model = llm.model();
                let mut cache = twinflow_models::llama::KvCache::default();
                let started = Instant::now();
                let mut logits = model.step(ids, &mut cache)?;
                prefill.push(ids.len() as f64 / started.elapsed().as_secs_f64());
                let argmax =
                    |l: &[f32]| l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
                let mut out = vec![argmax(&logits)];
                let started = Instant::now();
                for _ in 1..bench.tokens {
                    logits = model.step(&[*out.last().expect("one token")], &mut cache)?;
                    out.push(argmax(&logits));
                }
                decode.push((bench.tokens - 1) as f64 / started.elapsed().as_secs_f64());
                out.truncate(16);
                first = out;
            }
            let row = json!({
                "runtime": "twinflow",
                "weights": variant,
                "load_s": load_s,
                "prompt": name,
                "prompt_tokens": ids.len(),
                "prefill_tok_s": median(prefill),
                "decode_tok_s": median(decode),
                "first_tokens": first,
            });
            eprintln!("{row}");
            rows.push(row);
        }
    }
    let mut ratios = Vec::new();
    if bench.peer {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("prompts.json");
        let ids: serde_json::Map<String, Value> =
            prompt_ids.iter().map(|(n, ids)| ((*n).to_owned(), json!(ids))).collect();
        std::fs::write(&file, serde_json::to_vec(&ids)?)?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/llama_cpp_bench.sh");
        let output = std::process::Command::new(script)
            .arg("--model")
            .arg(&path)
            .arg("--prompts")
            .arg(&file)
            .args(["--tokens", &bench.tokens.to_string(), "--runs", &bench.runs.to_string()])
            .args(["--threads", &rayon::current_num_threads().to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running benches/peers/llama_cpp_bench.sh")?;
        anyhow::ensure!(output.status.success(), "llama_cpp_bench.sh failed: {}", output.status);
        let peer: Value = serde_json::from_slice(&output.stdout).context("llama_cpp_bench.sh's JSON line")?;
        for (name, _) in &prompt_ids {
            let peer_rows: Vec<&Value> =
                peer["rows"].as_array().into_iter().flatten().filter(|r| r["prompt"] == *name).collect();
            let of = |key: &str| median(peer_rows.iter().filter_map(|r| r[key].as_f64()).collect());
            let row = json!({
                "runtime": format!("llama.cpp (llama-cpp-python {})", peer["version"].as_str().unwrap_or("?")),
                "weights": "blocks",
                "prompt": name,
                "prompt_tokens": peer_rows.first().map(|r| r["prompt_tokens"].clone()),
                "prefill_tok_s": of("prefill_tok_s"),
                "decode_tok_s": of("decode_tok_s"),
                "first_tokens": peer_rows.first().map(|r| r["first_tokens"].clone()),
            });
            eprintln!("{row}");
            for ours in rows.iter().filter(|r| r["prompt"] == *name && r["runtime"] == "twinflow") {
                let ratio = |key: &str| ours[key].as_f64().unwrap_or(f64::NAN) / row[key].as_f64().unwrap_or(f64::NAN);
                ratios.push(json!({
                    "prompt": name,
                    "twinflow_weights": ours["weights"],
                    "decode_ratio_twinflow_over_llama_cpp": ratio("decode_tok_s"),
                    "prefill_ratio_twinflow_over_llama_cpp": ratio("prefill_tok_s"),
                    "same_first_16_tokens": ours["first_tokens"] == row["first_tokens"],
                }));
            }
            rows.push(row);
        }
    }
    Ok(json!({"bench": "generate", "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
              "threads": rayon::current_num_threads(), "decoded_tokens": bench.tokens, "runs": bench.runs,
              "rows": rows, "ratios": ratios}))
}

/// What `ingest-load` runs.
#[derive(Debug, Clone)]
pub struct IngestLoadBench {
    pub clients: usize,
    pub seconds: u64,
    /// Batches per second the writer aims at.
    pub rate: f64,
    /// Documents per batch.
    pub batch: usize,
    pub minilm: bool,
    /// The engine's `max_lag`: batches are refused (503 `overloaded`) while
    /// the oldest uncommitted change is older.
    pub max_lag: Duration,
    /// Index shards (`search.shards`).
    pub shards: usize,
}

/// Peak and current resident memory of this process, in MiB (`VmHWM`, `VmRSS`).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// `twinflow-bench ingest-load`: edits of the speeches posted at a fixed
/// rate (each through the fsynced input log; its freshness is from the POST
/// until its epoch is committed, i.e. searchable), while `clients` search over the loopback
/// socket; the process's memory sampled throughout. Reports freshness
/// p50/p99, the achieved rate, search latency, errors, and resident memory
/// in each third of the run (bounded memory: the last third's peak is not
/// above the first's by more than noise).
pub fn ingest_load(bench: &IngestLoadBench) -> anyhow::Result<Value> {
    let cache = twinflow_connectors::demo::default_cache_dir();
    let corpus = twinflow_connectors::demo::fetch_sotu(&cache)?;
    let docs = twinflow_connectors::demo::sotu_changes(&corpus, None)?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.training.on_drift = false;
    config.engine.max_lag = bench.max_lag;
    config.search.shards = bench.shards;
    if !bench.minilm {
        config.embedder = EmbedderConfig::Hashing(Default::default());
    }
    let (app, _runtime, base) = serve(config)?;
    let client = client(&base)?;
    let preload = &docs[..docs.len().min(60)];
    for batch in preload.chunks(20) {
        client.ingest(crate::corpus::ndjson(batch)?, true).context("preloading")?;
    }
    let queries: Arc<Vec<String>> = Arc::new(
        preload
            .iter()
            .filter_map(|c| match c {
                DocumentChange::Upsert(d) => Some(d.title.clone()),
                DocumentChange::Delete { .. } => None,
            })
            .collect(),
    );

    // Memory sampler.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(memory_mib().1);
                std::thread::sleep(Duration::from_millis(200));
            }
            samples
        })
    };
    // Freshness watcher: resolves each posted batch once its epoch is committed.
    let pending: Arc<parking_lot::Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (pending, watching, engine) = (pending.clone(), watching.clone(), app.engine().unwrap().clone());
        std::thread::spawn(move || {
            let mut freshness = Vec::new();
            loop {
                let committed = engine.stats().committed_epoch;
                let now = Instant::now();
                pending.lock().retain(|(epoch, sent)| {
                    let done = *epoch <= committed;
                    if done {
                        freshness.push((now - *sent).as_secs_f64() * 1e3);
                    }
                    !done
                });
                if !watching.load(Ordering::Relaxed) && pending.lock().is_empty() {
                    return freshness;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let load = Load::start(&base, "hybrid", bench.clients, &queries);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / bench.rate.max(0.01));
    let (mut errors, mut refused, mut batches, mut round) = (0usize, 0usize, 0usize, 0usize);
    let mut next = Instant::now();
    while started.elapsed() < Duration::from_secs(bench.seconds) {
        // Every batch edits documents already there: new chunks are embedded, old ones retracted.
        let edits: Vec<DocumentChange> = (0..bench.batch)
            .filter_map(|i| match &docs[(round * bench.batch + i) % docs.len()] {
                DocumentChange::Upsert(d) => {
                    let mut d = d.clone();
                    d.content.push_str(&format!("\n\nEdit {round}: the union remains strong in year {round}."));
                    Some(DocumentChange::Upsert(d))
                }
                DocumentChange::Delete { .. } => None,
            })
            .collect();
        round += 1;
        let sent = Instant::now();
        // Sent once: a fixed-rate writer counts refusals instead of waiting them out.
        match client.ingest_with_patience(crate::corpus::ndjson(&edits)?, false, Duration::ZERO) {
            Ok(answer) => pending.lock().push((answer.epoch, sent)),
            Err(e) if format!("{e:#}").contains("Overloaded") => refused += 1,
            Err(e) => {
                errors += 1;
                eprintln!("ingest error: {e:#}");
            }
        }
        batches += 1;
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let searches = load.finish()?;
    watching.store(false, Ordering::Relaxed);
    let mut freshness = watcher.join().map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))?;
    freshness.sort_by(f64::total_cmp);
    let thirds: Vec<f64> =
        samples.chunks(samples.len().div_ceil(3).max(1)).map(|c| c.iter().copied().fold(f64::NAN, f64::max)).collect();
    let (peak, _) = memory_mib();
    let stats = app.engine().unwrap().stats();
    app.shutdown()?;
    Ok(json!({
        "embedder": if bench.minilm { "all-MiniLM-L6-v2" } else { "feature hashing" },
        "documents": preload.len(),
        "target_batches_per_s": bench.rate, "docs_per_batch": bench.batch,
        "batches": batches, "achieved_batches_per_s": batches as f64 / elapsed, "ingest_errors": errors,
        "refused_overloaded": refused, "accepted_batches_per_s": (batches - refused - errors) as f64 / elapsed,
        "max_lag_ms": bench.max_lag.as_millis() as u64, "index_shards": bench.shards,
        "freshness_ms": {
            "p50": percentile(&freshness, 0.5), "p99": percentile(&freshness, 0.99),
            "max": freshness.last().copied().unwrap_or(f64::NAN),
            "what": "from the POST until its epoch is committed: logged, chunked, embedded, written to Parquet and both indexes",
        },
        "texts_embedded": stats.texts_embedded,
        "searches": searches,
        "rss_mib": { "peak": peak, "max_by_third": thirds },
    }))
}
