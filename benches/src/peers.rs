//! `twinflow-bench peers`: keeping a RAG index fresh, side by side with the
//! peers, on the same work and the same machine, in one run.
//!
//! ```text
//!  corpus (speeches, or synthetic documents of their sentences) ─▶ workload dir: corpus/, rounds.json, queries.json
//!  for each system: benches/peers/peers_bench.py ─ JSON lines ─▶ benches/peers/peer_<system>.py (its own venv)
//!                   build · rounds of edits (freshness, re-embedded, CPU) · correctness · 16 clients · restart
//!  ─▶ one table, each peer's figure over twinflow's
//! ```
//!
//! Every system watches or reads the same directory of text files and embeds
//! with all-MiniLM-L6-v2 on the CPU (twinflow with its own encoder, the peers
//! with sentence-transformers), with the same threads and chunks of about the
//! same size. The measuring is one Python driver for all, so that no system
//! is timed differently; the venvs are made by `benches/peers/peers_venvs.sh`
//! on first use, outside the repository, with pinned versions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_schemas::DocumentChange;

/// What `peers` runs.
#[derive(Debug, Clone)]
pub struct PeersBench {
    /// `synthetic` (documents of eight sentences of the speeches) or `sotu` (whole speeches).
    pub corpus: String,
    /// Documents at the start.
    pub docs: usize,
    pub rounds: usize,
    /// Share of the documents edited (one sentence), deleted and added, each, per round.
    pub rate: f64,
    /// Characters per chunk at most.
    pub chunk_chars: usize,
    pub clients: usize,
    pub seconds: usize,
    pub threads: usize,
    /// Systems to run, twinflow first.
    pub systems: Vec<String>,
    /// Seconds a round's changes may take to become searchable.
    pub timeout: usize,
}

/// The systems the bench knows: (name, venv under the peers folder, worker script).
const SYSTEMS: &[(&str, Option<&str>, &str)] = &[
    ("twinflow", None, "peer_twinflow.py"),
    ("pathway", Some("pathway"), "peer_pathway.py"),
    ("cocoindex", Some("cocoindex"), "peer_cocoindex.py"),
    ("llamaindex", Some("llamaindex"), "peer_llamaindex.py"),
    ("batch-qdrant", Some("qdrant"), "peer_batch_qdrant.py"),
];

/// A tiny deterministic generator (xorshift64*): the same workload on every run.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The sentences of `text` (ends at `.`, `!` or `?` followed by a space).
pub(crate) fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for i in 0..bytes.len() {
        if matches!(bytes[i], b'.' | b'!' | b'?') && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()) {
            let sentence = text[start..=i].split_whitespace().collect::<Vec<_>>().join(" ");
            if !sentence.is_empty() {
                out.push(sentence);
            }
            start = i + 1;
        }
    }
    out
}

/// A sentence that checks can find by its exact words: 8 to 40 words, found
/// once in the whole corpus.
fn checkable(sentence: &str, seen: &std::collections::HashMap<String, usize>) -> bool {
    let words = sentence.split(' ').count();
    (8..=40).contains(&words) && seen.get(sentence) == Some(&1)
}

/// The documents of the run: (name, text); the first `docs` are the initial
/// corpus, the rest are added by the rounds.
fn documents(bench: &PeersBench, added: usize) -> anyhow::Result<Vec<(String, String)>> {
    let speeches = speeches()?;
    let wanted = bench.docs + added;
    match bench.corpus.as_str() {
        "sotu" => {
            anyhow::ensure!(wanted <= speeches.len(), "{wanted} speeches wanted, {} exist", speeches.len());
            // The most recent speeches first: the added ones are older.
            Ok(speeches.into_iter().rev().take(wanted).collect())
        }
        "synthetic" => Ok(synthetic(&speeches, wanted)),
        other => anyhow::bail!("unknown corpus {other}: synthetic or sotu"),
    }
}

/// `n` documents of eight sentences each, drawn (seeded) from `speeches`.
pub(crate) fn synthetic(speeches: &[(String, String)], n: usize) -> Vec<(String, String)> {
    let pool: Vec<String> = speeches.iter().flat_map(|(_, text)| sentences(text)).collect();
    let mut rng = Rng(0x7477_696e_666c_6f77);
    (0..n)
        .map(|i| {
            let text = (0..8).map(|_| pool[rng.below(pool.len())].as_str()).collect::<Vec<_>>().join(" ");
            (format!("doc-{i:06}"), text)
        })
        .collect()
}

/// The speeches of the demo corpus: (name, text).
pub(crate) fn speeches() -> anyhow::Result<Vec<(String, String)>> {
    let cache = twinflow_connectors::demo::default_cache_dir();
    let corpus = twinflow_connectors::demo::fetch_sotu(&cache).context("the demo corpus (twinflow demo fetch)")?;
    Ok(twinflow_connectors::demo::sotu_changes(&corpus, None)?
        .into_iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert(d) => Some((d.doc_id.replace([':', '/'], "-"), d.content)),
            DocumentChange::Delete { .. } => None,
        })
        .collect())
}

/// Writes the workload into `dir`: `corpus/`, `rounds.json`, `queries.json`.
pub fn workload(bench: &PeersBench, dir: &Path) -> anyhow::Result<Value> {
    let per_round = ((bench.docs as f64 * bench.rate).ceil() as usize).max(1);
    let mut docs = documents(bench, per_round * bench.rounds)?;
    let mut seen = std::collections::HashMap::new();
    for (_, text) in &docs {
        for sentence in sentences(text) {
            *seen.entry(sentence).or_insert(0usize) += 1;
        }
    }
    let vocabulary: Vec<String> = {
        let mut words: Vec<String> = seen
            .keys()
            .flat_map(|s| s.split(' '))
            .filter(|w| w.len() >= 5 && w.chars().all(|c| c.is_ascii_lowercase()))
            .map(str::to_owned)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        words.sort();
        words
    };
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus)?;
    for (name, text) in &docs[..bench.docs] {
        std::fs::write(corpus.join(format!("{name}.txt")), text)?;
    }
    let mut rng = Rng(0x7065_6572_7321);
    // Documents each round may touch: the initial ones, each at most once.
    let mut untouched: Vec<usize> = (0..bench.docs).collect();
    let mut take = |rng: &mut Rng| -> Option<usize> {
        (!untouched.is_empty()).then(|| untouched.swap_remove(rng.below(untouched.len())))
    };
    let check = |kind: &str, expect: &str, doc: &str, sentence: &str| json!({"kind": kind, "expect": expect, "doc": doc, "query": sentence, "text": sentence});
    let middle = |text: &str| -> Option<String> {
        let all = sentences(text);
        let n = all.len();
        (0..n).map(|i| &all[(n / 2 + i) % n]).find(|s| checkable(s, &seen)).cloned()
    };
    let mut rounds = Vec::new();
    let mut next_added = bench.docs;
    for _ in 0..bench.rounds {
        let (mut changes, mut checks) = (Vec::new(), Vec::new());
        for _ in 0..per_round {
            // An edit: one sentence replaced by words no document has together.
            let Some(i) = take(&mut rng) else { break };
            let Some(old) = middle(&docs[i].1) else { continue };
            let words: Vec<&str> = (0..14).map(|_| vocabulary[rng.below(vocabulary.len())].as_str()).collect();
            let mut new = words.join(" ");
            new[..1].make_ascii_uppercase();
            new.push('.');
            docs[i].1 = docs[i].1.replacen(&old, &new, 1);
            changes.push(json!({"op": "upsert", "doc": docs[i].0, "text": docs[i].1}));
            checks.push(check("edited", "present", &docs[i].0, &new));
            checks.push(check("old", "absent", &docs[i].0, &old));
        }
        for _ in 0..per_round {
            let Some(i) = take(&mut rng) else { break };
            let Some(sentence) = middle(&docs[i].1) else { continue };
            changes.push(json!({"op": "delete", "doc": docs[i].0}));
            checks.push(check("deleted", "absent", &docs[i].0, &sentence));
        }
        for _ in 0..per_round {
            let (name, text) = &docs[next_added];
            next_added += 1;
            let Some(sentence) = middle(text) else { continue };
            changes.push(json!({"op": "upsert", "doc": name, "text": text}));
            checks.push(check("added", "present", name, &sentence));
        }
        rounds.push(json!({"changes": changes, "checks": checks}));
    }
    std::fs::write(dir.join("rounds.json"), serde_json::to_vec(&rounds)?)?;
    // Queries for the load: eight words of a sentence, in their own words.
    let mut queries = Vec::new();
    while queries.len() < 500 {
        let text = &docs[rng.below(bench.docs)].1;
        let all = sentences(text);
        let words: Vec<&str> = all[rng.below(all.len())].split(' ').take(8).collect();
        if words.len() >= 4 {
            queries.push(words.join(" "));
        }
    }
    std::fs::write(dir.join("queries.json"), serde_json::to_vec(&queries)?)?;
    let bytes: usize = docs[..bench.docs].iter().map(|(_, t)| t.len()).sum();
    Ok(json!({
        "corpus": bench.corpus,
        "documents": bench.docs,
        "megabytes": bytes as f64 / 1e6,
        "changes_per_round": {"edited": per_round, "deleted": per_round, "added": per_round},
        "rounds": bench.rounds,
    }))
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Runs `peers` and returns its report.
pub fn run(bench: &PeersBench) -> anyhow::Result<Value> {
    let model = twinflow_models::fetch_minilm(&twinflow_models::default_cache_dir())
        .context("fetching all-MiniLM-L6-v2 (twinflow models fetch)")?;
    let twinflow = std::env::current_exe()?.with_file_name("twinflow");
    anyhow::ensure!(
        twinflow.is_file(),
        "{} is missing: build it first (cargo build -p twinflow-server --bin twinflow)",
        twinflow.display()
    );
    let scratch = tempfile::tempdir()?;
    let workload = workload(bench, scratch.path())?;
    eprintln!("workload: {workload}");
    let venvs = std::env::var_os("TWINFLOW_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| twinflow_models::default_cache_dir().with_file_name("peers"));
    let mut reports = Vec::new();
    for name in &bench.systems {
        let Some((_, venv, script)) = SYSTEMS.iter().find(|(n, ..)| n == name) else {
            anyhow::bail!("unknown system {name}: {}", SYSTEMS.iter().map(|s| s.0).collect::<Vec<_>>().join(", "));
        };
        let python = match venv {
            None => PathBuf::from("python3"),
            Some(venv) => {
                let made = Command::new("bash")
                    .arg(peers_dir().join("peers_venvs.sh"))
                    .arg(venv)
                    .env("TWINFLOW_PEERS_DIR", &venvs)
                    .status()
                    .context("running peers_venvs.sh")?;
                if !made.success() {
                    reports.push(json!({"system": name, "error": format!("its venv could not be made ({made})")}));
                    continue;
                }
                venvs.join(venv).join("bin").join("python")
            }
        };
        eprintln!("running {name}");
        let mut command = Command::new("python3");
        command
            .arg(peers_dir().join("peers_bench.py"))
            .args(["--workload".as_ref(), scratch.path().as_os_str()])
            .args(["--system", name])
            .args(["--python".as_ref(), python.as_os_str()])
            .args(["--worker".as_ref(), peers_dir().join(script).as_os_str()])
            .args(["--model".as_ref(), model.as_os_str()])
            .args(["--threads", &bench.threads.to_string()])
            .args(["--chunk-chars", &bench.chunk_chars.to_string()])
            .args(["--clients", &bench.clients.to_string()])
            .args(["--seconds", &bench.seconds.to_string()])
            .args(["--timeout", &bench.timeout.to_string()]);
        if *name == "twinflow" {
            command.args(["--".as_ref(), "--twinflow".as_ref(), twinflow.as_os_str()]);
        }
        let output = command.stderr(std::process::Stdio::inherit()).output().context("running peers_bench.py")?;
        let report = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or_else(|| json!({"system": name, "error": format!("the driver failed ({})", output.status)}));
        reports.push(report);
    }
    let table = table(&reports);
    eprintln!("{table}");
    Ok(
        json!({"workload": workload, "threads": bench.threads, "chunk_chars": bench.chunk_chars, "systems": reports, "table": table}),
    )
}

/// The rows of the table: (label, how to read the figure from a report).
type Row = (&'static str, fn(&Value) -> Option<f64>);

fn rows() -> Vec<Row> {
    fn wrong(r: &Value) -> Option<f64> {
        r.get("final_wrong")?.as_object().map(|m| m.values().filter_map(Value::as_f64).sum())
    }
    vec![
        ("initial build, s", |r| r.get("build_s")?.as_f64()),
        ("initial build, peak memory MiB", |r| r.get("build_rss_peak_mb")?.as_f64()),
        ("initial build, CPU s", |r| r.get("build_cpu_s")?.as_f64()),
        ("chunks", |r| r.get("chunks")?.as_f64()),
        ("edits searchable, p50 s", |r| r.get("freshness_p50_s")?.as_f64()),
        ("edits searchable, p99 s", |r| r.get("freshness_p99_s")?.as_f64()),
        ("texts re-embedded per round", |r| r.get("embedded_per_round")?.as_f64()),
        ("CPU s per round", |r| r.get("cpu_s_per_round")?.as_f64()),
        ("checks not passed within the timeout", |r| r.get("checks_timed_out")?.as_f64()),
        ("wrong after the rounds (of every check)", wrong),
        ("query p50 ms, 16 clients", |r| r.get("load")?.get("p50_ms")?.as_f64()),
        ("query p99 ms, 16 clients", |r| r.get("load")?.get("p99_ms")?.as_f64()),
        ("restart to serving, s", |r| r.get("restart_s")?.as_f64()),
        ("texts re-embedded by the restart", |r| r.get("restart_embedded")?.as_f64()),
        ("peak memory MiB (whole run)", |r| r.get("rss_peak_mb")?.as_f64()),
    ]
}

fn figure(value: f64) -> String {
    if value >= 100.0 || value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.3}") }
}

/// A Markdown table: one column per system, its figure and, for peers, the
/// ratio peer / twinflow.
pub fn table(reports: &[Value]) -> String {
    let name = |r: &Value| r.get("system").and_then(Value::as_str).unwrap_or("?").to_owned();
    let mut out = format!(
        "| | {} |\n|---|{}\n",
        reports.iter().map(name).collect::<Vec<_>>().join(" | "),
        "---|".repeat(reports.len())
    );
    let base = reports.first();
    for (label, read) in rows() {
        let cells: Vec<String> = reports
            .iter()
            .enumerate()
            .map(|(i, r)| match (read(r), base.and_then(read)) {
                (Some(v), Some(b)) if i > 0 && b > 0.0 => format!("{} ({:.2}×)", figure(v), v / b),
                (Some(v), _) => figure(v),
                (None, _) => r.get("error").or(r.get("edits")).map_or("—".into(), |_| "n/a".into()),
            })
            .collect();
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    let via: Vec<String> =
        reports.iter().map(|r| r.pointer("/load/via").and_then(Value::as_str).unwrap_or("—").to_owned()).collect();
    out.push_str(&format!("| queries served | {} |\n", via.join(" | ")));
    for r in reports {
        if let Some(e) = r.get("error").or(r.get("edits")) {
            out.push_str(&format!("\n{}: {}", name(r), e.as_str().unwrap_or_default()));
        }
    }
    out
}
