//! The end-to-end bench runner. Prints one JSON report.
//!
//! ```text
//! cargo run -p twinflow-benches --bin twinflow-bench -- engine --docs 10000
//! cargo run -p twinflow-benches --bin twinflow-bench -- freshness --base 200 --requests 100 [--hashing]
//! cargo run -p twinflow-benches --bin twinflow-bench -- embed --texts 1000 --batch 32 --threads 2 [--no-peer] [--with-burn-graph]
//! cargo run -p twinflow-benches --bin twinflow-bench -- ann [--dataset sotu|synthetic|both] [--n 100000] [--queries 1000] [--m 16] [--ef-construction 128] [--no-peer]
//! cargo run -p twinflow-benches --bin twinflow-bench -- shards [--n 50000] [--queries 200] [--epoch 5000] [--shards 1,2,4]
//! cargo run -p twinflow-benches --bin twinflow-bench -- search-load [--clients 16] [--seconds 20] [--minilm] [--rag 5]
//! cargo run -p twinflow-benches --bin twinflow-bench -- ingest-load [--clients 16] [--seconds 30] [--rate 10] [--batch 4] [--max-lag-ms 5000] [--shards 2] [--minilm]
//! cargo run -p twinflow-benches --bin twinflow-bench -- generate [--tokens 128] [--runs 3] [--peer llama-cpp] [--burn-graph]
//! cargo run -p twinflow-benches --bin twinflow-bench -- peers [--corpus synthetic|sotu] [--docs 2000] [--rounds 3] [--rate 0.01] [--systems twinflow,pathway,cocoindex,llamaindex,batch-qdrant]
//! cargo run -p twinflow-benches --bin twinflow-bench -- subscriptions [--docs 1000] [--subscriptions 10000] [--rounds 20] [--edits 5] [--mode hybrid] [--k 10] [--restat 0]
//! cargo run -p twinflow-benches --bin twinflow-bench -- replicas [--replicas 0,1,2] [--clients 8] [--seconds 15] [--docs 100] [--cpu 0.5] [--rate 10] [--batch 4] [--minilm]
//! cargo run -p twinflow-benches --bin twinflow-bench -- drift [--years 10] [--hashing]
//! cargo run -p twinflow-benches --bin twinflow-bench -- sources [--docs 10000] [--files 1000] [--pages 1000]
//! cargo run -p twinflow-benches --bin twinflow-bench -- twin [--from 1901] [--to 1945] [--examples 128] [--test 32] [--max-tokens 192] [--epochs 1]
//! ```
//! `engine`: full-ingest throughput (documents/s, chunks/s) with the
//! feature-hashing embedder on 1 and 2 workers, with and without the
//! Parquet store, and the incremental cost of an epoch editing 1% of the
//! documents relative to the full ingest. `freshness`: POST → committed
//! (searchable) latency over a real loopback socket, p50/p99. `embed`:
//! MiniLM sentences/s and tokens/s of twinflow and of sentence-transformers
//! (`benches/peers/minilm_pytorch.sh`) on the same texts, and their ratio.
//! `ann`: recall@10, single-thread QPS, build rate, memory and deletes of the
//! HNSW index against hnswlib (`benches/peers/hnswlib_bench.sh`) on the same
//! vectors. `search-load`: `/v1/search` p50/p99 under concurrent clients on
//! ~100k chunks, then `/v1/rag` step timings. `generate`: the local LLM's
//! prefill and decode tokens/s (weights as `f32` and as GGUF blocks), and
//! with `--peer llama-cpp` llama.cpp's on the same file and token ids
//! (`benches/peers/llama_cpp_bench.sh`), with the ratios. `drift`: every SOTU speech in chronological
//! order, one epoch per `--years`, drift per epoch and every retrain it triggers.
//! `sources`: records/s through the NDJSON, git, Fluvio, Kafka and web sources (a crawl of
//! a local site), and restarts that must replay nothing.
//! `subscriptions`: commit latency with and without N standing questions,
//! the share of them each commit searches again (and why), matching and
//! round time, event latency, and a check of every kept top-k against a
//! search from scratch (whose time is what re-running them all would cost).
//! `replicas`: search and (extractive) RAG answers per second with the
//! primary alone and with read replicas, every server its own process held
//! to `--cpu` CPUs, requests spread over all of them; then each replica's
//! commit-to-searchable lag while the primary takes edits.
//! `twin`: one LoRA fine-tuning run on the speeches of a span of years
//! (answer tokens/s, held-out perplexity before and after) and the merged
//! twin's decode speed against the base model's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use twinflow_benches::corpus;
use twinflow_dataflow::{Engine, EngineOptions, HashingEmbedder};
use twinflow_schemas::DocumentChange;
use twinflow_schemas::config::Config;
use twinflow_sinks::{EpochCommit, Store};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let text_flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.get(1).map(String::as_str) {
        Some("engine") => engine(flag("--docs", 10_000)),
        Some("freshness") => {
            freshness(flag("--base", 200), flag("--requests", 100), args.iter().any(|a| a == "--hashing"))
        }
        Some("embed") => {
            let bench = twinflow_benches::embed::EmbedBench {
                texts: flag("--texts", 1_000),
                words: flag("--words", 100),
                batch: flag("--batch", 32),
                threads: flag("--threads", 2),
                peer: !args.iter().any(|a| a == "--no-peer"),
                burn_graph: args.iter().any(|a| a == "--with-burn-graph"),
            };
            let report = twinflow_benches::embed::run(&bench)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Some("ann") => {
            let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let bench = twinflow_benches::ann::AnnBench {
                dataset: value("--dataset").unwrap_or_else(|| "both".into()),
                n: flag("--n", 100_000),
                queries: flag("--queries", 1_000),
                m: flag("--m", 16),
                ef_construction: flag("--ef-construction", 128),
                efs: value("--ef")
                    .unwrap_or_else(|| "16,32,64,128,256".into())
                    .split(',')
                    .filter_map(|e| e.parse().ok())
                    .collect(),
                peer: !args.iter().any(|a| a == "--no-peer"),
                quantization: value("--quantization").unwrap_or_else(|| "bf16".into()),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::ann::run(&bench)?)?);
            Ok(())
        }
        Some("shards") => {
            let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
            let bench = twinflow_benches::shards::ShardsBench {
                n: flag("--n", 50_000),
                queries: flag("--queries", 200),
                epoch: flag("--epoch", 5_000),
                shards: value("--shards")
                    .unwrap_or_else(|| "1,2,4".into())
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::shards::run(&bench)?)?);
            Ok(())
        }
        Some("search-load") => {
            let bench = twinflow_benches::serve::LoadBench {
                clients: flag("--clients", 16),
                seconds: flag("--seconds", 20) as u64,
                minilm: args.iter().any(|a| a == "--minilm"),
                rag_questions: flag("--rag", 5),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::serve::search_load(&bench)?)?);
            Ok(())
        }
        Some("ingest-load") => {
            let bench = twinflow_benches::serve::IngestLoadBench {
                clients: flag("--clients", 16),
                seconds: flag("--seconds", 30) as u64,
                rate: flag("--rate", 10) as f64,
                batch: flag("--batch", 4),
                minilm: args.iter().any(|a| a == "--minilm"),
                max_lag: Duration::from_millis(flag("--max-lag-ms", 5000) as u64),
                shards: flag("--shards", 2),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::serve::ingest_load(&bench)?)?);
            Ok(())
        }
        Some("generate") => {
            let bench = twinflow_benches::serve::GenerateBench {
                tokens: flag("--tokens", 128).max(2),
                runs: flag("--runs", 3).max(1),
                peer: text_flag("--peer").as_deref() == Some("llama-cpp"),
                burn_graph: args.iter().any(|a| a == "--burn-graph"),
            };
            let report = twinflow_benches::serve::generate(&bench)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Some("peers") => {
            let bench = twinflow_benches::peers::PeersBench {
                corpus: text_flag("--corpus").unwrap_or_else(|| "synthetic".into()),
                docs: flag("--docs", 2_000),
                rounds: flag("--rounds", 3).max(1),
                rate: text_flag("--rate").and_then(|r| r.parse().ok()).unwrap_or(0.01),
                chunk_chars: flag("--chunk-chars", 1_200),
                clients: flag("--clients", 16),
                seconds: flag("--seconds", 10),
                threads: flag("--threads", 2),
                systems: text_flag("--systems")
                    .unwrap_or_else(|| "twinflow,pathway,cocoindex,llamaindex,batch-qdrant".into())
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                timeout: flag("--timeout", 300),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::peers::run(&bench)?)?);
            Ok(())
        }
        Some("subscriptions") => {
            let bench = twinflow_benches::standing::StandingBench {
                docs: flag("--docs", 1_000),
                subscriptions: flag("--subscriptions", 10_000),
                rounds: flag("--rounds", 20).max(1),
                edits: flag("--edits", 5).max(1),
                mode: text_flag("--mode").unwrap_or_else(|| "hybrid".into()),
                k: flag("--k", 10).max(1),
                restat: text_flag("--restat")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(twinflow_schemas::config::SubscriptionsConfig::default().restat_share),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::standing::run(&bench)?)?);
            Ok(())
        }
        Some("replicas") => {
            let bench = twinflow_benches::replicas::ReplicasBench {
                replicas: text_flag("--replicas")
                    .unwrap_or_else(|| "0,1,2".into())
                    .split(',')
                    .filter_map(|s| s.parse().ok())
                    .collect(),
                clients: flag("--clients", 8).max(1),
                seconds: flag("--seconds", 15).max(1) as u64,
                docs: flag("--docs", 100).max(1),
                cpu: text_flag("--cpu").and_then(|c| c.parse().ok()).unwrap_or(0.5),
                rate: text_flag("--rate").and_then(|r| r.parse().ok()).unwrap_or(10.0),
                batch: flag("--batch", 4).max(1),
                minilm: args.iter().any(|a| a == "--minilm"),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::replicas::run(&bench)?)?);
            Ok(())
        }
        Some("quantized") => {
            let bench = twinflow_benches::quantized::QuantizedBench {
                prompt: flag("--prompt", 128),
                tokens: flag("--tokens", 64),
                runs: flag("--runs", 3),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::quantized::run(&bench)?)?);
            Ok(())
        }
        Some("drift") => {
            let bench = twinflow_benches::drift::DriftBench {
                years: flag("--years", 10) as u32,
                hashing: args.iter().any(|a| a == "--hashing"),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::drift::run(&bench)?)?);
            Ok(())
        }
        Some("sources") => {
            let bench = twinflow_benches::sources::SourcesBench {
                docs: flag("--docs", 10_000),
                files: flag("--files", 1_000),
                pages: flag("--pages", 1_000),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::sources::run(&bench)?)?);
            Ok(())
        }
        Some("twin") => {
            let bench = twinflow_benches::twin::TwinBench {
                from: flag("--from", 1901) as u32,
                to: flag("--to", 1945) as u32,
                examples: flag("--examples", 128),
                test: flag("--test", 32),
                max_tokens: flag("--max-tokens", 192),
                epochs: flag("--epochs", 1),
                method: text_flag("--method").unwrap_or_else(|| "sft+dpo".into()),
                held_out_questions: flag("--held-out-questions", 40),
                questions: flag("--questions", 80),
                min_questions: flag("--min-questions", 20),
            };
            println!("{}", serde_json::to_string_pretty(&twinflow_benches::twin::run(&bench)?)?);
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: twinflow-bench engine [--docs N] | freshness [--base N] [--requests N] [--hashing] \
                 | embed [--texts N] [--words N] [--batch N] [--threads N] [--no-peer] [--with-burn-graph] \
                 | ann [--dataset sotu|synthetic|both] [--n N] [--queries N] [--m M] [--ef-construction N] [--ef a,b,..] [--quantization bf16|f16|f32] [--no-peer] \
                 | shards [--n N] [--queries N] [--epoch N] [--shards a,b,..] \
                 | search-load [--clients N] [--seconds N] [--minilm] [--rag N] | generate [--tokens N] [--runs N] [--peer llama-cpp] [--burn-graph] \
                 | quantized [--prompt N] [--tokens N] [--runs N] \
                 | peers [--corpus synthetic|sotu] [--docs N] [--rounds N] [--rate F] [--chunk-chars N] [--clients N] [--seconds N] [--threads N] [--timeout S] [--systems a,b,..] \
                 | subscriptions [--docs N] [--subscriptions N] [--rounds N] [--edits N] [--mode hybrid|vector|bm25] [--k N] [--restat F] \
                 | replicas [--replicas a,b,..] [--clients N] [--seconds N] [--docs N] [--cpu F] [--rate F] [--batch N] [--minilm] \
                 | drift [--years N] [--hashing] \
                 | sources [--docs N] [--files N] [--pages N] \
                 | twin [--from YEAR] [--to YEAR] [--examples N] [--test N] [--max-tokens N] [--epochs N] [--method sft|dpo|sft+dpo] [--held-out-questions N] [--questions N] [--min-questions N]"
            );
            std::process::exit(2)
        }
    }
}

/// Runs `changes` through an engine in one epoch per batch and returns the
/// time until the last epoch completed, and the chunks produced.
struct Run {
    engine: Engine,
    /// The other process of a 2-process cluster (compute only), stopped after `engine`.
    others: Vec<Engine>,
    store: Option<Arc<Store>>,
    chunks: i64,
}

impl Run {
    fn new(workers: usize, store: Option<Arc<Store>>) -> anyhow::Result<Self> {
        let options = EngineOptions {
            workers,
            tick: Duration::from_secs(3600),
            max_batch: usize::MAX,
            max_pending: usize::MAX,
            max_lag: Duration::MAX,
            ..EngineOptions::default()
        };
        let engine = Engine::start(options, Arc::new(HashingEmbedder::new(384)), None)?;
        Ok(Self { engine, others: Vec::new(), store, chunks: 0 })
    }

    /// Two processes of one worker each in timely's cluster mode (loopback TCP, both in this process).
    fn cluster(store: Option<Arc<Store>>) -> anyhow::Result<Self> {
        let port = || -> anyhow::Result<String> {
            Ok(format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
        };
        let hosts = vec![port()?, port()?];
        let options = |process| EngineOptions {
            workers: 1,
            tick: Duration::from_secs(3600),
            max_batch: usize::MAX,
            max_pending: usize::MAX,
            max_lag: Duration::MAX,
            cluster: Some(twinflow_schemas::config::ClusterConfig { process, hosts: hosts.clone() }),
            ..EngineOptions::default()
        };
        let other = {
            let options = options(1);
            std::thread::spawn(move || Engine::start(options, Arc::new(HashingEmbedder::new(384)), None))
        };
        let engine = Engine::start(options(0), Arc::new(HashingEmbedder::new(384)), None)?;
        let other = other.join().map_err(|_| anyhow::anyhow!("process 1 panicked"))??;
        Ok(Self { engine, others: vec![other], store, chunks: 0 })
    }

    /// Submits `changes` as one epoch; waits until it is complete (and committed to the store, if any).
    fn epoch(&mut self, changes: Vec<DocumentChange>) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let epoch = self.engine.submit(changes)?;
        self.engine.flush();
        let completed = self.engine.completed();
        loop {
            let done = completed.recv_timeout(Duration::from_secs(3600))?;
            for (_, part) in &done.parts {
                self.chunks += part.chunks.iter().map(|(_, d)| *d).sum::<i64>();
            }
            if let Some(store) = &self.store {
                store.commit(EpochCommit::new(done.epoch, done.parts))?;
            }
            if done.epoch == epoch {
                break;
            }
        }
        self.engine.mark_committed(epoch);
        Ok(started.elapsed())
    }
}

fn engine(n: usize) -> anyhow::Result<()> {
    let docs = corpus::load(n)?;
    let bytes: usize = docs
        .iter()
        .map(|d| match d {
            DocumentChange::Upsert(doc) => doc.content.len(),
            DocumentChange::Delete { .. } => 0,
        })
        .sum();
    eprintln!("corpus: {} documents, {:.1} MB", docs.len(), bytes as f64 / 1e6);
    let edited: Vec<DocumentChange> = docs.iter().step_by(100).map(corpus::edit).collect();
    let mut results = Vec::new();
    for with_store in [false, true] {
        // 1 worker, 2 workers in one process, then 2 processes × 1 worker (timely's cluster mode).
        for (workers, processes) in [(1, 1), (2, 1), (1, 2)] {
            let dir = tempfile::tempdir()?;
            let store = if with_store { Some(Arc::new(Store::open(dir.path(), 384)?)) } else { None };
            let mut run = if processes == 1 { Run::new(workers, store)? } else { Run::cluster(store)? };
            let full = run.epoch(docs.clone())?;
            let chunks = run.chunks;
            // Every process embeds its share: count them all.
            let embedded =
                |run: &Run| run.others.iter().chain([&run.engine]).map(|e| e.stats().texts_embedded).sum::<u64>();
            let before = embedded(&run);
            let incremental = run.epoch(edited.clone())?;
            let reembedded = embedded(&run) - before;
            let result = json!({
                "workers": workers,
                "processes": processes,
                "store": with_store,
                "documents": docs.len(),
                "chunks": chunks,
                "full_ingest_s": full.as_secs_f64(),
                "documents_per_s": docs.len() as f64 / full.as_secs_f64(),
                "chunks_per_s": chunks as f64 / full.as_secs_f64(),
                "edited_documents": edited.len(),
                "incremental_epoch_s": incremental.as_secs_f64(),
                "incremental_over_full": incremental.as_secs_f64() / full.as_secs_f64(),
                "chunks_reembedded": reembedded,
            });
            eprintln!("{result}");
            results.push(result);
            run.engine.shutdown()?;
            for other in run.others {
                other.shutdown()?;
            }
        }
    }
    let seconds = |store: bool, workers: u64, processes: u64| {
        results
            .iter()
            .find(|r| r["workers"] == workers && r["processes"] == processes && r["store"] == store)
            .and_then(|r| r["full_ingest_s"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let speedup = |store: bool| seconds(store, 1, 1) / seconds(store, 2, 1);
    let cluster_speedup = |store: bool| seconds(store, 1, 1) / seconds(store, 1, 2);
    let report = json!({
        "bench": "engine",
        "embedder": "hashing-v1-384",
        "runs": results,
        "speedup_2_over_1_workers": { "engine": speedup(false), "engine_and_store": speedup(true) },
        "speedup_2_processes_over_1_worker": { "engine": cluster_speedup(false), "engine_and_store": cluster_speedup(true) },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn freshness(base: usize, requests: usize, hashing: bool) -> anyhow::Result<()> {
    let docs = corpus::load(base + requests)?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    if hashing {
        config.embedder = twinflow_schemas::config::EmbedderConfig::Hashing(Default::default());
    }
    let app = twinflow_server::App::start(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    runtime.spawn(axum_serve(listener, app.clone()));
    // The generated admin key of this data directory, as the CLI would find it.
    let key = twinflow_schemas::auth::read_admin_key(dir.path());
    let client = twinflow_server::client::Client::with_key(&format!("http://{addr}"), key.as_deref())?;

    let loading = Instant::now();
    for batch in docs[..base].chunks(500) {
        client.ingest(corpus::ndjson(batch)?, false).context("base load")?;
    }
    // The base load is a backlog for the model: wait until all of it is committed.
    while app.engine().unwrap().stats().pending_changes > 0 {
        anyhow::ensure!(loading.elapsed() < Duration::from_secs(3600), "the base load took over an hour");
        std::thread::sleep(Duration::from_millis(100));
    }
    let base_load_s = loading.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(requests);
    for change in &docs[base..] {
        let started = Instant::now();
        let response = client.ingest(corpus::ndjson(std::slice::from_ref(change))?, true)?;
        anyhow::ensure!(response.committed, "not committed");
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)];
    let report = json!({
        "bench": "freshness",
        "what": "POST /v1/documents?wait=true of one document until committed (searchable), loopback",
        "tick_ms": app.config.engine.tick.as_secs_f64() * 1e3,
        "embedder": app.engine().unwrap().embedder().model_id(),
        "base_documents": base,
        "base_load_s": base_load_s,
        "requests": latencies.len(),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies.last(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    app.shutdown()?;
    Ok(())
}

async fn axum_serve(listener: tokio::net::TcpListener, app: Arc<twinflow_server::App>) {
    if let Err(e) = axum::serve(listener, twinflow_server::router(app)).await {
        eprintln!("server failed: {e}");
    }
}
