//! `twinflow-bench shards`: the store's two live indexes (BM25 and HNSW)
//! split into 1, 2, … shards, side by side in one run on the same data.
//!
//! `--n` chunks (default 50,000) of 30 words drawn from a Zipf-like
//! vocabulary of 5,000 pseudo-words, each with a vector of the synthetic
//! mixture of `ann.rs` (384 dimensions), committed in epochs of `--epoch`
//! chunks; then `--queries` queries, one at a time, in each mode (BM25,
//! approximate vector, hybrid with the approximate vector side). Reports per
//! shard count: commit throughput, query latency p50/p99, how many BM25 and
//! hybrid answers equal those of the first shard count (ids and scores; the
//! hybrid side through the HNSW graphs, which differ by sharding), and the HNSW
//! recall@10 against the exact scan.

use std::time::Instant;

use serde_json::{Value, json};

use twinflow_schemas::api::{SearchFilter, SearchMode};
use twinflow_schemas::config::AnnConfig;
use twinflow_schemas::rng::SeededRng;
use twinflow_schemas::{
    ChunkRow, ContentFormat, DocumentKind, DocumentRow, EmbeddingRow, EpochUpdates, Hash128, Vector,
};
use twinflow_sinks::{EpochCommit, Store};

const DIM: usize = 384;
const K: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct ShardsBench {
    pub n: usize,
    pub queries: usize,
    pub epoch: usize,
    pub shards: Vec<usize>,
}

/// A word index below `vocabulary`, small ones far more often (≈ Zipf).
fn zipf_index(rng: &mut SeededRng, vocabulary: usize) -> usize {
    ((vocabulary as f64).powf(rng.unit()) - 1.0) as usize
}

fn word(i: usize) -> String {
    const SYLLABLES: [&str; 16] =
        ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "in", "pha", "gro", "ste", "bu", "nar", "os", "que"];
    let mut i = i + 16;
    let mut w = String::new();
    while i > 0 {
        w.push_str(SYLLABLES[i % 16]);
        i /= 16;
    }
    w
}

fn words(rng: &mut SeededRng, n: usize) -> String {
    (0..n).map(|_| word(zipf_index(rng, 5_000))).collect::<Vec<_>>().join(" ")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN)
}

/// The epochs: documents of 100 chunks each, added with their first chunk.
fn epochs(texts: &[String], vectors: &[f32], epoch: usize) -> Vec<EpochUpdates> {
    texts
        .chunks(epoch)
        .enumerate()
        .map(|(e, batch)| {
            let mut u = EpochUpdates::default();
            for (j, text) in batch.iter().enumerate() {
                let i = e * epoch + j;
                let doc_id = format!("doc-{}", i / 100);
                if i % 100 == 0 {
                    let content = format!("document {}", i / 100);
                    let row = DocumentRow {
                        doc_id: doc_id.clone(),
                        kind: DocumentKind::Article,
                        author: "bench".into(),
                        title: doc_id.clone(),
                        url: String::new(),
                        source: "bench".into(),
                        format: ContentFormat::Markdown,
                        content_hash: Hash128::of(content.as_bytes()),
                        content,
                        fetched_at: 0,
                        version: 1,
                    };
                    u.documents.push((row, 1));
                }
                let chunk = ChunkRow {
                    chunk_id: Hash128::of(text.as_bytes()),
                    doc_id,
                    ordinal: (i % 100) as u32,
                    text: text.clone(),
                    char_start: 0,
                    char_end: text.len() as u32,
                    token_estimate: 30,
                    pages: None,
                };
                let vector = Vector(vectors[i * DIM..(i + 1) * DIM].to_vec());
                u.embeddings.push((EmbeddingRow { chunk_id: chunk.chunk_id, model_id: "bench".into(), vector }, 1));
                u.chunks.push((chunk, 1));
            }
            u
        })
        .collect()
}

pub fn run(bench: &ShardsBench) -> anyhow::Result<Value> {
    let data = crate::ann::synthetic(bench.n, bench.queries)?;
    let mut rng = SeededRng::new(0x5_4a2d5);
    let texts: Vec<String> = (0..bench.n).map(|i| format!("{} {i}", words(&mut rng, 30))).collect();
    let queries: Vec<String> = (0..bench.queries).map(|_| words(&mut rng, 3)).collect();
    let all = SearchFilter::default();
    let hybrid = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight: 1.0, lead_weight: 0.0, rrf_k: 60.0 };
    let modes = [("bm25", SearchMode::Bm25), ("vector", SearchMode::Vector), ("hybrid", hybrid)];
    let mut runs = Vec::new();
    let mut reference: Option<Vec<(&str, Vec<String>)>> = None;
    for &shards in &bench.shards {
        let dir = tempfile::tempdir()?;
        let store = Store::open_sharded(dir.path(), DIM, &AnnConfig::default(), shards)?;
        let started = Instant::now();
        let mut commit_s = Vec::new();
        for (e, updates) in epochs(&texts, &data.base, bench.epoch).into_iter().enumerate() {
            let t = Instant::now();
            store.commit(EpochCommit::new(e as u64 + 1, vec![(0, updates)]))?;
            commit_s.push(t.elapsed().as_secs_f64());
        }
        let commit = started.elapsed().as_secs_f64();
        commit_s.sort_by(f64::total_cmp);
        let mut report = json!({
            "shards": shards,
            "commit_s": commit,
            "commit_chunks_per_s": bench.n as f64 / commit,
            "commit_s_per_epoch_p50": percentile(&commit_s, 0.5),
        });
        let mut answers = Vec::new();
        for (name, mode) in modes {
            let mut latencies = Vec::new();
            for (q, text) in queries.iter().enumerate() {
                let vector = &data.queries[q * DIM..(q + 1) * DIM];
                let t = Instant::now();
                let (_, hits) = store.search_mode(text, vector, K, &all, mode, false)?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
                if name != "vector" {
                    let hits = hits.iter().map(|h| format!("{} {:.5}", h.chunk_id, h.score)).collect::<Vec<_>>();
                    answers.push((name, hits));
                }
            }
            latencies.sort_by(f64::total_cmp);
            report[name] = json!({
                "p50_ms": percentile(&latencies, 0.5), "p99_ms": percentile(&latencies, 0.99),
                "qps_one_client": latencies.len() as f64 / (latencies.iter().sum::<f64>() / 1e3),
            });
        }
        // HNSW recall@10 against the exact scan of the same store.
        let mut found = 0usize;
        for q in 0..bench.queries {
            let vector = &data.queries[q * DIM..(q + 1) * DIM];
            let ids = |exact| -> anyhow::Result<Vec<Hash128>> {
                let (_, hits) = store.search_mode("", vector, K, &all, SearchMode::Vector, exact)?;
                Ok(hits.into_iter().map(|h| h.chunk_id).collect())
            };
            let truth = ids(true)?;
            found += ids(false)?.iter().filter(|id| truth.contains(id)).count();
        }
        report["hnsw_recall_at_10"] = json!(found as f64 / (bench.queries * K) as f64);
        match &reference {
            None => reference = Some(answers),
            Some(one) => {
                for mode in ["bm25", "hybrid"] {
                    let pairs = one.iter().zip(&answers).filter(|(a, _)| a.0 == mode);
                    for (a, b) in pairs.clone().filter(|(a, b)| a != b) {
                        eprintln!("{shards} shards, {mode} differs:\n  {:?}\n  {:?}", a.1, b.1);
                    }
                    let (same, all) = pairs.fold((0, 0), |(s, n), (a, b)| (s + usize::from(a == b), n + 1));
                    report[mode]["answers_equal_to_first"] = json!(format!("{same}/{all}"));
                }
            }
        }
        eprintln!("{report}");
        runs.push(report);
    }
    let base = runs.first().cloned().unwrap_or(Value::Null);
    let ratio = |r: &Value, path: [&str; 2]| {
        let get = |v: &Value| v[path[0]][path[1]].as_f64().or_else(|| v[path[0]].as_f64());
        match (get(&base), get(r)) {
            (Some(b), Some(x)) if x > 0.0 => json!(b / x),
            _ => Value::Null,
        }
    };
    let speedups: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "shards": r["shards"],
                "commit": ratio(r, ["commit_s", ""]),
                "bm25_p50": ratio(r, ["bm25", "p50_ms"]),
                "vector_p50": ratio(r, ["vector", "p50_ms"]),
                "hybrid_p50": ratio(r, ["hybrid", "p50_ms"]),
            })
        })
        .collect();
    Ok(json!({
        "chunks": bench.n, "queries": bench.queries, "epoch_chunks": bench.epoch,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "runs": runs,
        "speedup_vs_first (>1 = faster)": speedups,
    }))
}
