//! `twinflow-bench embed`: sentence-encoder throughput of twinflow's burn
//! MiniLM against sentence-transformers (PyTorch) on the same texts, in one run.
//!
//! The fused CPU path is timed [`RUNS`] times and reports its median pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_models::SentenceEncoder;
use twinflow_schemas::DocumentChange;

/// Floating-point operations per token of all-MiniLM-L6-v2 (`../shared/ASSETS.md`).
const FLOP_PER_TOKEN: f64 = 22.4e6;
/// fp32 roofline of one core of this machine (AVX-512 FMA at 2.6 GHz).
const ROOFLINE_PER_CORE: f64 = 166e9;
/// Timed passes of the fused path.
const RUNS: usize = 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct EmbedBench {
    /// Number of texts.
    pub texts: usize,
    /// Words per text (≈ 1.15 tokens per word for English prose).
    pub words: usize,
    /// Texts per forward pass.
    pub batch: usize,
    /// Threads for both sides.
    pub threads: usize,
    /// Run the PyTorch peer (`benches/peers/minilm_pytorch.sh`).
    pub peer: bool,
    /// Also time twinflow's burn-graph path (the stock burn ops) on the same texts.
    pub burn_graph: bool,
}

/// `n` texts of `words` consecutive words of the State of the Union speeches,
/// taken round-robin from the speeches so every era's vocabulary is in.
pub fn texts(n: usize, words: usize) -> anyhow::Result<Vec<String>> {
    let cache = twinflow_connectors::demo::default_cache_dir();
    let dir = twinflow_connectors::demo::fetch_sotu(&cache)?;
    let speeches: Vec<Vec<String>> = twinflow_connectors::demo::sotu_changes(&dir, None)?
        .into_iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert(doc) => Some(doc.content.split_whitespace().map(str::to_owned).collect()),
            DocumentChange::Delete { .. } => None,
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut window = 0;
    while out.len() < n {
        let before = out.len();
        for speech in &speeches {
            if out.len() == n {
                break;
            }
            if let Some(slice) = speech.get(window * words..(window + 1) * words) {
                out.push(slice.join(" "));
            }
        }
        anyhow::ensure!(out.len() > before, "the corpus has fewer than {n} windows of {words} words");
        window += 1;
    }
    Ok(out)
}

/// Runs the bench and returns its report.
pub fn run(bench: &EmbedBench) -> anyhow::Result<Value> {
    rayon::ThreadPoolBuilder::new().num_threads(bench.threads).build_global().ok();
    let texts = texts(bench.texts, bench.words)?;
    let model_dir = twinflow_models::fetch_minilm(&twinflow_models::default_cache_dir())?;
    let encoder = SentenceEncoder::load(&model_dir, &twinflow_models::cpu_device())?.with_batch_size(bench.batch);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize =
        refs.iter().map(|t| encoder.count_tokens(t).map(|n| n.min(encoder.max_tokens()))).sum::<Result<_, _>>()?;

    let time = |encoder: &SentenceEncoder| -> anyhow::Result<(Vec<Vec<f32>>, f64)> {
        encoder.embed(&refs[..bench.batch.min(refs.len())])?; // warm-up
        let started = Instant::now();
        let vectors = encoder.embed(&refs)?;
        Ok((vectors, started.elapsed().as_secs_f64()))
    };
    let mut passes = Vec::with_capacity(RUNS);
    let mut vectors = Vec::new();
    for _ in 0..RUNS {
        let (output, seconds) = time(&encoder)?;
        passes.push(seconds);
        vectors = output;
    }
    let seconds = median(&passes);
    let mut ours = side(&format!("twinflow {}", encoder.kernels()), texts.len(), tokens, seconds, bench.threads);
    ours["runs_s"] = json!(passes);
    eprintln!("{ours}");

    let mut report = json!({
        "bench": "embed",
        "model": encoder.model_id(),
        "texts": texts.len(),
        "words_per_text": bench.words,
        "tokens": tokens,
        "mean_tokens": tokens as f64 / texts.len() as f64,
        "batch": bench.batch,
        "threads": bench.threads,
        "twinflow": ours,
    });
    if bench.burn_graph {
        let graph = SentenceEncoder::load(&model_dir, &twinflow_models::cpu_device())?
            .with_batch_size(bench.batch)
            .with_burn_graph();
        let (_, graph_seconds) = time(&graph)?;
        let theirs = side("twinflow burn-graph (burn flex ops)", texts.len(), tokens, graph_seconds, bench.threads);
        eprintln!("{theirs}");
        report["twinflow_burn_graph"] = theirs;
        report["fused_over_burn_graph"] = json!(graph_seconds / seconds);
    }
    if bench.peer {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("texts.txt");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        for t in &texts {
            writeln!(out, "{t}")?;
        }
        out.flush()?;
        drop(out);
        let peer_vectors = dir.path().join("vectors.json");
        let peer = run_peer(&model_dir, &file, &peer_vectors, bench)?;
        eprintln!("{peer}");
        let theirs: Vec<Vec<f32>> = serde_json::from_slice(&std::fs::read(&peer_vectors)?)?;
        let min_cosine = theirs
            .iter()
            .zip(&vectors)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
            .fold(f32::INFINITY, f32::min);
        let ratio = report["twinflow"]["sentences_per_s"].as_f64().unwrap_or(f64::NAN)
            / peer["sentences_per_s"].as_f64().unwrap_or(f64::NAN);
        report["pytorch"] = peer;
        report["twinflow_over_pytorch"] = json!(ratio);
        report["min_cosine_vs_pytorch_first_8"] = json!(min_cosine);
    }
    Ok(report)
}

/// The middle of `passes` (the mean of the two middle ones for an even count).
fn median(passes: &[f64]) -> f64 {
    let mut sorted = passes.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] }
}

fn side(name: &str, texts: usize, tokens: usize, seconds: f64, threads: usize) -> Value {
    let tokens_per_s = tokens as f64 / seconds;
    json!({
        "impl": name,
        "seconds": seconds,
        "sentences_per_s": texts as f64 / seconds,
        "tokens_per_s": tokens_per_s,
        "gflop_per_s": tokens_per_s * FLOP_PER_TOKEN / 1e9,
        "fraction_of_roofline": tokens_per_s * FLOP_PER_TOKEN / (ROOFLINE_PER_CORE * threads as f64),
    })
}

fn run_peer(model_dir: &Path, texts: &Path, vectors: &Path, bench: &EmbedBench) -> anyhow::Result<Value> {
    let script = peers_dir().join("minilm_pytorch.sh");
    let output = Command::new(&script)
        .arg("--model-dir")
        .arg(model_dir)
        .arg("--texts")
        .arg(texts)
        .arg("--vectors-out")
        .arg(vectors)
        .args(["--batch", &bench.batch.to_string(), "--threads", &bench.threads.to_string()])
        .env("OMP_NUM_THREADS", bench.threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(output.status.success(), "{} failed ({}); rerun with --no-peer", script.display(), output.status);
    let line = String::from_utf8_lossy(&output.stdout);
    let line = line.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("peer printed {line:?}"))
}

/// `benches/peers`, found from the working directory (the workspace root or `benches/`).
fn peers_dir() -> PathBuf {
    for candidate in ["benches/peers", "peers"] {
        let dir = PathBuf::from(candidate);
        if dir.join("minilm_pytorch.sh").exists() {
            return dir;
        }
    }
    PathBuf::from("benches/peers")
}
