//! `twinflow-bench ann`: the HNSW index of twinflow (`twinflow_sinks::VectorIndex`,
//! USearch inside) against hnswlib (`benches/peers/hnswlib_bench.sh`) on the
//! same vectors, queries and exact top-10, in one run.
//!
//! Two datasets of 384-dimensional unit vectors:
//! - `sotu`: real all-MiniLM-L6-v2 vectors of the State of the Union
//!   sentences (every 60th sentence held out as a query), embedded once and
//!   cached under `<cache>/bench/ann-sotu/`;
//! - `synthetic`: a seeded mixture of 1,000 Gaussian clusters (`--n` vectors,
//!   default 100,000), cached under `<cache>/bench/ann-synthetic-<n>/`.
//!
//! Each side builds with the same M and ef_construction on one thread, then
//! answers the queries one at a time on one thread for each `ef`; recall@10
//! is against the exact top-10 (brute force, written as `truth.u32` for both).
//! Then 10% of the vectors are deleted and recall is measured again against
//! the exact top-10 of what is left.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;
use serde_json::{Value, json};

use twinflow_schemas::Hash128;
use twinflow_schemas::config::AnnConfig;
use twinflow_sinks::VectorIndex;

const DIM: usize = 384;
const K: usize = 10;

/// What to run.
#[derive(Debug, Clone)]
pub struct AnnBench {
    /// `sotu`, `synthetic` or `both`.
    pub dataset: String,
    /// Vectors of the synthetic set.
    pub n: usize,
    pub queries: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub efs: Vec<usize>,
    pub peer: bool,
    /// Vector storage of twinflow's graph (`bf16`, `f16`, `f32`).
    pub quantization: String,
}

/// A dataset on disk in the peer script's format.
pub(crate) struct Dataset {
    name: String,
    dir: PathBuf,
    pub(crate) base: Vec<f32>,
    pub(crate) queries: Vec<f32>,
}

impl Dataset {
    fn n(&self) -> usize {
        self.base.len() / DIM
    }

    fn q(&self) -> usize {
        self.queries.len() / DIM
    }
}

fn write_f32(path: &Path, values: &[f32]) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for v in values {
        file.write_all(&v.to_le_bytes())?;
    }
    Ok(file.flush()?)
}

fn read_f32(path: &Path) -> anyhow::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

fn save(dir: &Path, base: &[f32], queries: &[f32]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_f32(&dir.join("base.f32"), base)?;
    write_f32(&dir.join("queries.f32"), queries)?;
    let meta = json!({"n": base.len() / DIM, "d": DIM, "q": queries.len() / DIM});
    std::fs::write(dir.join("meta.json"), meta.to_string())?;
    Ok(())
}

fn load(name: &str, dir: PathBuf) -> anyhow::Result<Option<Dataset>> {
    if !dir.join("meta.json").is_file() {
        return Ok(None);
    }
    let base = read_f32(&dir.join("base.f32"))?;
    let queries = read_f32(&dir.join("queries.f32"))?;
    Ok(Some(Dataset { name: name.into(), dir, base, queries }))
}

fn bench_dir(name: &str) -> PathBuf {
    twinflow_schemas::config::cache_root().join("bench").join(name)
}

/// The State of the Union sentences (at least 4 words), embedded by MiniLM.
fn sotu(queries: usize) -> anyhow::Result<Dataset> {
    let dir = bench_dir("ann-sotu");
    if let Some(data) = load("sotu", dir.clone())? {
        return Ok(data);
    }
    let cache = twinflow_connectors::demo::default_cache_dir();
    let corpus = twinflow_connectors::demo::fetch_sotu(&cache)?;
    let mut sentences = Vec::new();
    for change in twinflow_connectors::demo::sotu_changes(&corpus, None)? {
        if let twinflow_schemas::DocumentChange::Upsert(doc) = change {
            for sentence in doc.content.split_inclusive(['.', '!', '?']) {
                let sentence = sentence.split_whitespace().collect::<Vec<_>>().join(" ");
                if sentence.split(' ').count() >= 4 {
                    sentences.push(sentence);
                }
            }
        }
    }
    let model = twinflow_models::fetch_minilm(&twinflow_models::default_cache_dir())?;
    let encoder = twinflow_models::SentenceEncoder::load(&model, &twinflow_models::cpu_device())?;
    eprintln!("embedding {} sentences with MiniLM (once; cached in {})", sentences.len(), dir.display());
    let started = Instant::now();
    let every = (sentences.len() / queries.max(1)).max(2);
    let (mut base, mut query_vectors) = (Vec::new(), Vec::new());
    for (i, batch) in sentences.chunks(512).enumerate() {
        let texts: Vec<&str> = batch.iter().map(String::as_str).collect();
        for (j, v) in encoder.embed(&texts)?.into_iter().enumerate() {
            let index = i * 512 + j;
            if index % every == every - 1 && query_vectors.len() / DIM < queries {
                query_vectors.extend(v);
            } else {
                base.extend(v);
            }
        }
        if i % 20 == 0 {
            eprintln!("  {} / {} ({:.0} s)", (i + 1) * 512, sentences.len(), started.elapsed().as_secs_f64());
        }
    }
    save(&dir, &base, &query_vectors)?;
    Ok(Dataset { name: "sotu".into(), dir, base, queries: query_vectors })
}

/// `n` base vectors and `q` queries from a seeded mixture of 1,000 clusters:
/// centre + Gaussian noise of about 0.9 of the centre's norm, normalised.
pub(crate) fn synthetic(n: usize, q: usize) -> anyhow::Result<Dataset> {
    let dir = bench_dir(&format!("ann-synthetic-{n}"));
    if let Some(data) = load("synthetic", dir.clone())? {
        return Ok(data);
    }
    let mut state = 0x5eed_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut gaussian = move || {
        let (u, v) = (uniform(), uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    };
    let unit = |mut v: Vec<f32>| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let centres: Vec<Vec<f32>> = (0..1000).map(|_| unit((0..DIM).map(|_| gaussian()).collect())).collect();
    let spread = 0.9 / (DIM as f32).sqrt();
    let mut point = |i: usize| -> Vec<f32> {
        let centre = &centres[(i * 7919) % centres.len()];
        unit(centre.iter().map(|c| c + spread * gaussian()).collect())
    };
    let base: Vec<f32> = (0..n).flat_map(&mut point).collect();
    let queries: Vec<f32> = (n..n + q).flat_map(&mut point).collect();
    save(&dir, &base, &queries)?;
    Ok(Dataset { name: "synthetic".into(), dir, base, queries })
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

/// Exact top-`K` ids of each query among the base vectors that are `alive`.
fn exact_top_k(data: &Dataset, alive: &(dyn Fn(usize) -> bool + Sync)) -> Vec<Vec<u32>> {
    data.queries
        .par_chunks_exact(DIM)
        .map(|query| {
            let mut scored: Vec<(f32, u32)> = data
                .base
                .chunks_exact(DIM)
                .enumerate()
                .filter(|(i, _)| alive(*i))
                .map(|(i, v)| (dot(query, v), i as u32))
                .collect();
            scored.select_nth_unstable_by(K - 1, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(K);
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            scored.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

fn percentile(sorted_us: &[f64], p: f64) -> f64 {
    sorted_us[((sorted_us.len() as f64 - 1.0) * p).round() as usize]
}

/// Queries one at a time on this thread: recall@10, QPS, p50/p99 (µs), and how many deleted ids came back.
fn measure(
    index: &VectorIndex,
    data: &Dataset,
    truth: &[Vec<u32>],
    dead: &dyn Fn(u32) -> bool,
) -> anyhow::Result<Value> {
    let mut latencies = Vec::with_capacity(data.q());
    let mut found = 0usize;
    let mut returned_dead = 0usize;
    let started = Instant::now();
    for (query, want) in data.queries.chunks_exact(DIM).zip(truth) {
        let t = Instant::now();
        let hits = index.search(query, K, None)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        let ids: Vec<u32> = hits.iter().map(|(_, id)| id.0 as u32).collect();
        found += ids.iter().filter(|id| want.contains(id)).count();
        returned_dead += ids.iter().filter(|id| dead(**id)).count();
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "recall_at_10": found as f64 / (truth.len() * K) as f64,
        "qps": data.q() as f64 / seconds,
        "p50_us": percentile(&latencies, 0.5),
        "p99_us": percentile(&latencies, 0.99),
        "deleted_returned": returned_dead,
    }))
}

fn run_dataset(bench: &AnnBench, data: &Dataset) -> anyhow::Result<Value> {
    let (n, q) = (data.n(), data.q());
    eprintln!("{}: {n} vectors, {q} queries; exact top-10 by brute force", data.name);
    let truth = exact_top_k(data, &|_| true);
    let mut bytes = Vec::with_capacity(q * K * 4);
    for row in &truth {
        row.iter().for_each(|id| bytes.extend(id.to_le_bytes()));
    }
    std::fs::write(data.dir.join("truth.u32"), bytes)?;

    let config = AnnConfig {
        connectivity: bench.m,
        expansion_add: bench.ef_construction,
        expansion_search: bench.efs[0],
        quantization: bench.quantization.clone(),
        ..AnnConfig::default()
    };
    let mut index = VectorIndex::new(DIM, &config)?;
    let started = Instant::now();
    for (i, v) in data.base.chunks_exact(DIM).enumerate() {
        index.set(Hash128(i as u128), "m", Some(v))?;
    }
    let build_s = started.elapsed().as_secs_f64();
    let stats = index.stats();
    let bound = (4 * DIM + 8 * bench.m) as f64;
    let mut search = Vec::new();
    for &ef in &bench.efs {
        index.set_expansion_search(ef);
        let mut row = measure(&index, data, &truth, &|_| false)?;
        row["ef"] = json!(ef);
        search.push(row);
    }
    // Delete every 10th vector, then measure at the middle ef against the new truth.
    let dead = |id: u32| id % 10 == 3;
    let started = Instant::now();
    let mut deleted = 0;
    for i in (0..n).filter(|i| dead(*i as u32)) {
        index.set(Hash128(i as u128), "m", None)?;
        deleted += 1;
    }
    let delete_s = started.elapsed().as_secs_f64();
    let truth_after = exact_top_k(data, &|i| !dead(i as u32));
    let ef = bench.efs[bench.efs.len() / 2];
    index.set_expansion_search(ef);
    let mut after = measure(&index, data, &truth_after, &dead)?;
    after["ef"] = json!(ef);
    after["deleted"] = json!(deleted);
    after["per_s"] = json!(deleted as f64 / delete_s);
    let ours = json!({
        "engine": "twinflow VectorIndex (usearch 2.26.6)",
        "quantization": bench.quantization,
        "kernels": index.acceleration(),
        "build": {"threads": 1, "seconds": build_s, "vectors_per_s": n as f64 / build_s},
        "memory": {
            "index_bytes_per_vector": stats.memory_bytes as f64 / n as f64,
            "bookkeeping_bytes_per_vector": stats.bookkeeping_bytes as f64 / n as f64,
            "bound_4d_plus_8m": bound,
            "index_ratio_to_bound": stats.memory_bytes as f64 / n as f64 / bound,
        },
        "search": search,
        "delete": after,
    });
    let peer = if bench.peer { run_peer(bench, &data.dir)? } else { Value::Null };
    let ratios = compare(&ours, &peer);
    Ok(json!({"dataset": data.name, "n": n, "q": q, "m": bench.m, "ef_construction": bench.ef_construction,
              "twinflow": ours, "hnswlib": peer, "ratios": ratios}))
}

fn run_peer(bench: &AnnBench, dir: &Path) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/hnswlib_bench.sh");
    let efs: Vec<String> = bench.efs.iter().map(usize::to_string).collect();
    eprintln!("running the hnswlib peer ({})", script.display());
    let output = Command::new("bash")
        .arg(&script)
        .arg("--data")
        .arg(dir)
        .args(["--m", &bench.m.to_string(), "--ef-construction", &bench.ef_construction.to_string()])
        .args(["--ef", &efs.join(","), "--threads-build", "1", "--k", "10"])
        .output()
        .context("cannot run the hnswlib peer script")?;
    anyhow::ensure!(
        output.status.success(),
        "the hnswlib peer failed: {}",
        String::from_utf8_lossy(&output.stderr).lines().rev().take(10).collect::<Vec<_>>().join("\n")
    );
    Ok(serde_json::from_slice(&output.stdout).context("the hnswlib peer printed no JSON")?)
}

/// Per ef: QPS ratio (twinflow / hnswlib) and both recalls; build and memory ratios.
fn compare(ours: &Value, peer: &Value) -> Value {
    if peer.is_null() {
        return Value::Null;
    }
    let per_ef: Vec<Value> = ours["search"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| {
            let theirs = peer["search"].as_array()?.iter().find(|p| p["ef"] == row["ef"])?;
            Some(json!({
                "ef": row["ef"],
                "qps_ratio": row["qps"].as_f64()? / theirs["qps"].as_f64()?,
                "recall_twinflow": row["recall_at_10"],
                "recall_hnswlib": theirs["recall_at_10"],
            }))
        })
        .collect();
    json!({
        "per_ef": per_ef,
        "build_rate_ratio": ours["build"]["vectors_per_s"].as_f64().unwrap_or(0.0)
            / peer["build"]["vectors_per_s"].as_f64().unwrap_or(f64::NAN),
        "memory_ratio": ours["memory"]["index_bytes_per_vector"].as_f64().unwrap_or(0.0)
            / peer["memory"]["bytes_per_vector"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Runs the bench and returns its report.
pub fn run(bench: &AnnBench) -> anyhow::Result<Value> {
    let mut reports = Vec::new();
    if matches!(bench.dataset.as_str(), "sotu" | "both") {
        reports.push(run_dataset(bench, &sotu(bench.queries)?)?);
    }
    if matches!(bench.dataset.as_str(), "synthetic" | "both") {
        reports.push(run_dataset(bench, &synthetic(bench.n, bench.queries)?)?);
    }
    Ok(json!(reports))
}
