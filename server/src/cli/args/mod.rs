//! The verbs and their flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use twinflow_schemas::DocumentKind;
use twinflow_schemas::config::{FluvioSourceConfig, KafkaSourceConfig};

use crate::settings::Overrides;

mod tools;
pub use tools::*;

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

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine and the HTTP API until Ctrl-C (or SIGTERM), then
    /// commit what was accepted and exit.
    Up(UpArgs),
    /// Serve a primary's reads as a read replica: open its committed tables
    /// (a shared data directory), follow every epoch it commits and the
    /// models it promotes, and answer search, SQL, RAG, chat and embeddings
    /// (writes answer 409 naming the primary). Ctrl-C or SIGTERM stops it.
    Serve(ServeArgs),
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
    /// Follow a standing question: its top-k now, then every change of it
    /// (and of its answer, with `--answer`) as commits move it. Ctrl-C ends
    /// it and forgets the subscription unless `--keep`.
    Watch(WatchArgs),
    /// Show epochs, lag and table sizes of a running server.
    Status(ServerArgs),
    /// The running sources: kind, state, committed position, changes per
    /// second, refused records; `pause NAME` holds one back (it waits,
    /// nothing is lost), `resume NAME` lets it in again (admin).
    Sources {
        #[command(subcommand)]
        action: Option<SourcesCommand>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve the Model Context Protocol over stdin and stdout (for an
    /// agent's MCP client), answered by a running server with this key.
    Mcp(ServerArgs),
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
    /// API keys: make one to configure (the server keeps only its SHA-256).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The evaluation stage: measure retrieval on a question set with judged answers.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
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
    pub(super) fn overrides(&self) -> anyhow::Result<Overrides> {
        let mut o = Overrides::default();
        o.set_opt("storage.data_dir", self.data.as_ref())?;
        o.set_opt("server.addr", self.addr.as_ref())?;
        o.set_opt("engine.workers", self.workers)?;
        o.set_opt("engine.tick", self.tick.as_ref())?;
        Ok(o)
    }
}

/// `twinflow sources …`
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Hold a source's changes back.
    Pause { name: String },
    /// Let a paused source's changes in again.
    Resume { name: String },
}

/// `twinflow serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The primary's data directory on a shared filesystem, or the object
    /// store it ships to, `s3://bucket/prefix` (replica.follow).
    #[arg(long, value_name = "DIR|URL")]
    pub follow: Option<String>,
    /// The primary's base URL, named in the answer to writes sent here (replica.primary).
    #[arg(long, value_name = "URL")]
    pub primary: Option<String>,
    /// HTTP listen address (server.addr).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Also serve read-only SQL over the Postgres wire protocol here.
    #[arg(long, value_name = "ADDR")]
    pub pg: Option<String>,
}

impl ServeArgs {
    pub(super) fn overrides(&self) -> anyhow::Result<Overrides> {
        let mut o = Overrides::default();
        o.set_opt("replica.follow", self.follow.as_ref())?;
        o.set_opt("replica.primary", self.primary.as_ref())?;
        o.set_opt("server.addr", self.addr.as_ref())?;
        o.set_opt("server.pg_addr", self.pg.as_ref())?;
        Ok(o)
    }
}

/// `twinflow up`
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub engine: EngineFlags,
    /// Watch a directory: files created, modified or deleted there become
    /// changes (md, txt, html, json). Repeatable: with several, each
    /// directory's doc_ids start with `file:<its name>/`.
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
    /// psql, drivers and BI tools; a key with `read` logs in, with SCRAM as the key's name), e.g. 127.0.0.1:5433.
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
    /// API key (default: the admin key a first start wrote to `<data-dir>/_auth/admin.key`).
    #[arg(long, env = "TWINFLOW_API_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// The server's data directory, where its generated admin key is.
    #[arg(long, value_name = "DIR", default_value = "twinflow-data", env = "TWINFLOW__STORAGE__DATA_DIR")]
    pub data_dir: PathBuf,
    /// A PEM certificate to trust for an `https://` server besides the
    /// public CAs: its private CA, or its self-signed certificate.
    #[arg(long, value_name = "PEM", env = "TWINFLOW_CA")]
    pub ca: Option<PathBuf>,
}

impl ServerArgs {
    /// A client of the server, with the key given or found.
    pub fn client(&self) -> anyhow::Result<crate::client::Client> {
        let key = self.key.clone().or_else(|| twinflow_schemas::auth::read_admin_key(&self.data_dir));
        let roots = match &self.ca {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read --ca {}: {e}", path.display()))?)
            }
            None => None,
        };
        crate::client::Client::trusting(&self.server, key.as_deref(), roots.as_deref())
    }
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

/// Options of `twinflow watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The question (not with `--id`).
    #[arg(required_unless_present = "id")]
    pub question: Option<String>,
    /// Follow an existing subscription instead of registering one.
    #[arg(long, conflicts_with = "question")]
    pub id: Option<String>,
    /// Hits kept.
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    /// `hybrid`, `vector` or `bm25`.
    #[arg(long)]
    pub mode: Option<String>,
    /// Only passages by this author.
    #[arg(long)]
    pub author: Option<String>,
    /// Also keep an answer, written again when its evidence changes.
    #[arg(long)]
    pub answer: bool,
    /// Leave the subscription registered on exit.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Entry point of the binary.

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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::{Cli, Command, ModelsCommand};

    /// clap's own consistency checks over every verb (a positional named
    /// `version` clashed with the automatic `--version` and crashed
    /// `twinflow models promote 3` in debug builds).
    #[test]
    fn every_verb_parses() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["twinflow", "models", "promote", "3"]).unwrap();
        assert!(matches!(cli.command, Command::Models { command: ModelsCommand::Promote { version: 3, .. } }));
    }
}
