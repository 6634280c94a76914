//! The configuration tree, with defaults that run out of the box.
//!
//! Loaded in layers by the binary (built-in defaults < `twinflow.toml` <
//! `TWINFLOW__SECTION__KEY` environment variables < flags). Durations and
//! sizes are human strings: `"50ms"`, `"64MiB"`. Unknown keys are errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::records::DocumentKind;

/// Everything twinflow can be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub embedder: EmbedderConfig,
    pub chunking: ChunkingConfig,
    pub search: SearchConfig,
    pub generator: GeneratorConfig,
    pub rag: RagConfig,
    pub drift: DriftConfig,
    pub training: TrainingConfig,
    pub twin: TwinConfig,
    pub traces: TracesConfig,
    /// Sources started by `twinflow up` besides the HTTP endpoint.
    pub sources: Vec<SourceConfig>,
    /// Where committed table changes are published, besides Parquet.
    pub publish: PublishConfig,
}

/// Outputs that receive every committed epoch's table changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    /// A Fluvio topic (none by default).
    pub fluvio: Option<FluvioPublishConfig>,
    /// A Kafka topic (none by default).
    pub kafka: Option<KafkaPublishConfig>,
}

/// Publishing table changes to a Kafka topic, as to a Fluvio one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaPublishConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic (it must exist).
    pub topic: String,
    /// The tables whose changes are published.
    pub tables: Vec<crate::TableName>,
    /// Further librdkafka settings.
    pub options: std::collections::BTreeMap<String, String>,
    /// How long publishing one epoch may take before it is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for KafkaPublishConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "twinflow-changes".into(),
            tables: vec![crate::TableName::Documents, crate::TableName::Chunks],
            options: std::collections::BTreeMap::new(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Publishing table changes to a Fluvio topic: one record per row change,
/// keyed by the row's document, valued `{"table", "epoch", "diff", "row"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluvioPublishConfig {
    /// The cluster's controller, `host:port`.
    pub endpoint: String,
    /// The topic (it must exist).
    pub topic: String,
    /// The tables whose changes are published.
    pub tables: Vec<crate::TableName>,
    /// How long publishing one epoch may take before it is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for FluvioPublishConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".into(),
            topic: "twinflow-changes".into(),
            tables: vec![crate::TableName::Documents, crate::TableName::Chunks],
            timeout: Duration::from_secs(30),
        }
    }
}

/// How `/v1/search` fuses its two rankings in `hybrid` mode: each chunk
/// scores `Σ weight / (rrf_k + rank)` over the vector and BM25 rankings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    pub vector_weight: f32,
    pub bm25_weight: f32,
    /// Damping of reciprocal-rank fusion (60 in the original paper).
    pub rrf_k: f32,
    /// Shards of both live indexes (BM25 and HNSW), split by chunk id:
    /// a search asks every shard and merges their best, a commit updates
    /// them side by side. A property of the index, not of the workers: the
    /// default is fixed (2), so answers do not change when workers or
    /// processes are added; 0 = one per engine worker (of every process).
    pub shards: usize,
    /// The approximate vector index.
    pub ann: AnnConfig,
}

impl SearchConfig {
    /// The number of index shards for `engine`'s workers.
    pub fn shards_for(&self, engine: &EngineConfig) -> usize {
        match self.shards {
            0 => engine.workers.max(1) * engine.cluster.as_ref().map_or(1, |c| c.hosts.len().max(1)),
            n => n,
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { vector_weight: 1.0, bm25_weight: 1.0, rrf_k: 60.0, shards: 2, ann: AnnConfig::default() }
    }
}

/// The model that writes answers (`/v1/rag`, `/v1/chat/completions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneratorConfig {
    /// A Llama-architecture GGUF model run in-process (burn, CPU):
    /// SmolLM2-135M-Instruct by default, fetched once into the cache.
    Local(LocalGeneratorConfig),
    /// Any OpenAI-compatible `/v1/chat/completions` endpoint.
    Openai(OpenAiGeneratorConfig),
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self::Local(LocalGeneratorConfig::default())
    }
}

/// Settings of the in-process generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalGeneratorConfig {
    /// The GGUF file; when absent SmolLM2-135M-Instruct is fetched into (or found in) the cache.
    pub gguf: Option<PathBuf>,
    /// Positions (prompt and answer together) the KV cache holds.
    pub context: usize,
}

impl Default for LocalGeneratorConfig {
    fn default() -> Self {
        Self { gguf: None, context: 2048 }
    }
}

/// Settings of a remote OpenAI-compatible generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiGeneratorConfig {
    /// Base URL, up to and including `/v1` (e.g. `http://127.0.0.1:8000/v1`).
    pub url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a
    /// bearer token when set); the key itself never goes in a config file.
    pub api_key_env: Option<String>,
    /// Context size of the remote model, in tokens (for prompt budgets).
    pub context: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OpenAiGeneratorConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000/v1".into(),
            model: "default".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            context: 8192,
            timeout: Duration::from_secs(120),
        }
    }
}

/// The steps of the retrieval-augmented answer; each can be switched off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Extract filters (author, kind) from the question by matching the
    /// authors and kinds of the live documents.
    pub self_query: bool,
    /// Extra phrasings of the question written by the generator (0 = off).
    pub expansions: usize,
    /// Chunks retrieved per phrasing (hybrid search).
    pub candidates: usize,
    /// Re-order the merged candidates by similarity to the original question
    /// (else by fused rank).
    pub rerank: bool,
    /// Chunks placed in the prompt (default for requests that give no `k`).
    pub k: usize,
    /// Tokens the answer may take.
    pub max_tokens: usize,
    pub temperature: f32,
    /// Penalty on tokens the answer already used (1 = off); small models loop without one.
    pub repetition_penalty: f32,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            self_query: true,
            expansions: 2,
            candidates: 20,
            rerank: true,
            k: 4,
            max_tokens: 256,
            temperature: 0.0,
            repetition_penalty: 1.15,
        }
    }
}

/// Drift of the embedding stream against the reference (the data the
/// current model was trained on), and when it triggers a retrain (`[drift]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Off: no statistics in the dataflow, no `drift` rows, no triggers.
    pub enabled: bool,
    /// The window: the newest live chunks (at least this many, whole epochs).
    pub window: usize,
    /// Chunks that must have entered since the reference before a trigger
    /// (also the size of the first, bootstrap reference).
    pub min_samples: usize,
    /// Random Fourier features of the MMD estimate.
    pub features: usize,
    /// Bandwidth σ of the Gaussian kernel of the MMD (unit vectors: ~1).
    pub bandwidth: f32,
    /// Seed of the random features (fixed: statistics stay comparable across restarts).
    pub seed: u64,
    /// `1 − cos(mean of the reference, mean of the window)` above which a retrain triggers (0: never).
    pub mean_shift: f64,
    /// Kernel MMD estimate above which a retrain triggers (0: never).
    pub mmd: f64,
    /// Share of the window's words never seen in the reference above which a retrain triggers (0: never).
    pub oov_rate: f64,
    /// After a trigger, metrics must fall below `threshold × hysteresis`, or
    /// `min_samples` more chunks must arrive, before another can fire.
    pub hysteresis: f64,
    /// Least time between two triggers.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 400,
            min_samples: 200,
            features: 256,
            bandwidth: 1.0,
            seed: 0x7769_6e66_6c6f_77,
            mean_shift: 0.03,
            mmd: 0.12,
            oov_rate: 0.10,
            hysteresis: 0.8,
            cooldown: Duration::from_secs(600),
        }
    }
}

/// Retraining (`[training]`): the embedding adapter and the model registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Retrain in the background of `twinflow up` when drift triggers.
    pub on_drift: bool,
    /// Where model versions are kept (default: `<data_dir>/_models`).
    pub registry: Option<PathBuf>,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Pairs per step (each pair's chunk is a negative for the others).
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Softmax temperature of the contrastive loss.
    pub temperature: f32,
    /// Weight of `‖W − A‖²` in the loss: keeps the adapter near its anchor A.
    pub identity_weight: f32,
    /// The anchor A: the active adapter a run starts from (true), or the base model I (false).
    pub anchor_to_parent: bool,
    /// Recall@k reported and compared for promotion.
    pub recall_k: usize,
    /// Largest number of training pairs (an even sample of the train split); 0 = all.
    pub max_pairs: usize,
    /// Seed of shuffling and initialisation.
    pub seed: u64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            on_drift: true,
            registry: None,
            epochs: 8,
            batch_size: 64,
            learning_rate: 2e-3,
            temperature: 0.05,
            identity_weight: 0.1,
            anchor_to_parent: true,
            recall_k: 10,
            max_pairs: 20_000,
            seed: 7,
        }
    }
}

/// The LLM twin (`[twin]`): LoRA fine-tunes of the local generator on the
/// instruct dataset (questions → the author's own text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinConfig {
    /// Fine-tune in the background of `twinflow up` when drift triggers
    /// (minutes of CPU per run: off by default; `twinflow twin train` runs one).
    pub on_drift: bool,
    /// Where twin versions are kept (default: `<data_dir>/_models/twin`).
    pub registry: Option<PathBuf>,
    /// LoRA rank r of every adapted projection.
    pub rank: usize,
    /// The update is scaled by alpha / rank.
    pub alpha: f64,
    /// Adapted attention projections: any of `q`, `k`, `v`, `o`.
    pub targets: Vec<String>,
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Longest example (prompt and answer) in tokens; longer answers are cut.
    pub max_tokens: usize,
    /// Largest number of training examples (an even sample of the train split); 0 = all.
    pub max_examples: usize,
    /// Largest number of held-out examples scored per model.
    pub max_test: usize,
    pub seed: u64,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            on_drift: false,
            registry: None,
            rank: 8,
            alpha: 16.0,
            targets: ["q", "k", "v", "o"].map(String::from).to_vec(),
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-3,
            max_tokens: 192,
            max_examples: 256,
            max_test: 64,
            seed: 7,
        }
    }
}

/// Prompt monitoring (`[traces]`): answered questions recorded in the
/// `traces` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    pub enabled: bool,
    /// Share of answers recorded (0 to 1), chosen by a hash of the trace id.
    pub sample_rate: f64,
    /// Keep questions and answers out of the table (a hash of each instead).
    pub redact: bool,
    /// Longest time a trace waits before it is written.
    #[serde(with = "humantime_serde")]
    pub flush_every: Duration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self { enabled: true, sample_rate: 1.0, redact: false, flush_every: Duration::from_secs(1) }
    }
}

/// The HNSW index over the live embeddings (`[search.ann]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnConfig {
    /// Off: every vector search scans exactly.
    pub enabled: bool,
    /// Searches over fewer candidate chunks than this (a small index, or a
    /// selective filter) scan exactly: as fast, and exact.
    pub exact_below: usize,
    /// Links per node (HNSW `M`).
    pub connectivity: usize,
    /// Candidates kept while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidates kept while searching (`ef`): recall against speed.
    pub expansion_search: usize,
    /// How the graph stores vectors: `bf16` (default: half the memory, and
    /// AVX512-BF16 dot products where the CPU has them), `f16` or `f32` (USearch's
    /// f32 inner product accumulates in f64: 2.5× slower here).
    /// Exact scans and returned scores always use the stored f32 vectors.
    pub quantization: String,
}

impl Default for AnnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exact_below: 20_000,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: "bf16".into(),
        }
    }
}

/// The dataflow engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// timely worker threads in this process.
    pub workers: usize,
    /// How often an epoch with pending changes is closed.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// An epoch is closed early once it holds this many changes.
    pub max_batch: usize,
    /// Changes accepted but not yet committed above which ingest is refused
    /// (HTTP 503 `overloaded`) or sources wait: bounded memory.
    pub max_pending: usize,
    /// Age of the oldest uncommitted change above which ingest is refused
    /// (HTTP 503 `overloaded`, with `Retry-After`) or sources wait: bounded
    /// freshness when changes arrive faster than they can be committed.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// timely's cluster mode: this process is one of several, each with
    /// `workers` threads. `None`: a single process.
    pub cluster: Option<ClusterConfig>,
}

/// One process of a timely cluster. Process 0 serves HTTP, runs the sources
/// and commits; every process chunks and embeds its share (documents are
/// exchanged by `doc_id`, chunk texts by hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's index in `hosts`.
    pub process: usize,
    /// `host:port` of every process, in order (timely's hostfile).
    pub hosts: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            tick: Duration::from_millis(50),
            max_batch: 10_000,
            max_pending: 200_000,
            max_lag: Duration::from_secs(60),
            cluster: None,
        }
    }
}

/// The HTTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Largest request body.
    pub max_body: ByteSize,
    /// Largest `content` of one document.
    pub max_document: ByteSize,
    /// Longest time a SQL query may run.
    #[serde(with = "humantime_serde")]
    pub sql_timeout: Duration,
    /// Where the Postgres wire protocol endpoint (read-only SQL, no
    /// authentication) listens; off when unset.
    pub pg_addr: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: ByteSize::mib(64),
            max_document: ByteSize::mib(8),
            sql_timeout: Duration::from_secs(30),
            pg_addr: None,
        }
    }
}

/// Where and how tables are stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root of the Parquet tables and the manifest.
    pub data_dir: PathBuf,
    /// Write a consolidated snapshot of every table every this many
    /// committed epochs (0: only on demand).
    pub snapshot_every: u64,
    /// Append changes accepted over HTTP to an fsynced log before
    /// acknowledging them (`<data_dir>/_input_log`), so an acknowledged change
    /// survives a crash before its epoch commits. Off: faster, and a crash
    /// loses the acknowledged changes of uncommitted epochs.
    pub input_log: bool,
    /// Keep every computed vector in `<data_dir>/_embed_cache` (by chunk hash
    /// and model), so a restart never encodes a text twice.
    pub embedding_cache: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("twinflow-data"), snapshot_every: 500, input_log: true, embedding_cache: true }
    }
}

/// Which embedding model the engine uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmbedderConfig {
    /// Deterministic feature hashing of words and word pairs: no model, no
    /// weights; for tests, benchmarks and machines without the model files.
    Hashing(HashingEmbedderConfig),
    /// The all-MiniLM-L6-v2 sentence encoder (burn, CPU), weights fetched
    /// once by `twinflow models fetch` into the cache.
    Minilm(MiniLmEmbedderConfig),
}

/// Settings of the MiniLM sentence encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiniLmEmbedderConfig {
    /// Folder with `config.json`, `tokenizer.json` and `model.safetensors`;
    /// when absent the model is fetched into (or found in) the cache.
    pub model_dir: Option<PathBuf>,
    /// Texts per forward pass.
    pub batch_size: usize,
}

impl Default for MiniLmEmbedderConfig {
    fn default() -> Self {
        Self { model_dir: None, batch_size: 32 }
    }
}

impl Default for EmbedderConfig {
    /// The real sentence encoder: what users search with.
    fn default() -> Self {
        Self::Minilm(MiniLmEmbedderConfig::default())
    }
}

/// Settings of the feature-hashing embedder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashingEmbedderConfig {
    /// Output dimension.
    pub dim: usize,
}

impl Default for HashingEmbedderConfig {
    fn default() -> Self {
        Self { dim: 384 }
    }
}

/// Chunk sizes per kind of document, as in the LLM-twin book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Articles: sentence-packed 1000–2000 characters.
    pub article: ChunkSpec,
    /// Posts: about 250 tokens.
    pub post: ChunkSpec,
    /// Code: about 1500 tokens, cut at blank lines and top-level items.
    pub repository: ChunkSpec,
    /// Everything else: as articles.
    pub other: ChunkSpec,
}

impl ChunkingConfig {
    /// The spec for one kind of document.
    pub fn for_kind(&self, kind: DocumentKind) -> &ChunkSpec {
        match kind {
            DocumentKind::Article => &self.article,
            DocumentKind::Post => &self.post,
            DocumentKind::Repository => &self.repository,
            DocumentKind::Other => &self.other,
        }
    }
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        let article = ChunkSpec { min_chars: 1000, max_chars: 2000, boundary_one_in: 4 };
        Self {
            article: article.clone(),
            post: ChunkSpec { min_chars: 700, max_chars: 1200, boundary_one_in: 3 },
            repository: ChunkSpec { min_chars: 4000, max_chars: 7000, boundary_one_in: 4 },
            other: article,
        }
    }
}

/// Sizes of one kind's chunks. Every unit (sentence, or line for code) gets
/// a score from its content: paragraph ends (top-level items for code) rank
/// highest, then units whose hash picks them (one in `boundary_one_in`),
/// then the rest. A unit is a cut when it outscores every unit within
/// `min_chars` of it, so cuts are at least `min_chars` apart and depend only
/// on nearby text: an edit moves only the cuts around it. Stretches longer
/// than `max_chars` are split at their best units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkSpec {
    pub min_chars: usize,
    pub max_chars: usize,
    pub boundary_one_in: u32,
}

impl Default for ChunkSpec {
    fn default() -> Self {
        ChunkingConfig::default().article
    }
}

/// A source of document changes, besides `POST /v1/documents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Watch a directory: created or modified files are upserts, removed
    /// files deletes.
    Watch(WatchSourceConfig),
    /// Replay an NDJSON file of changes once.
    Ndjson(NdjsonSourceConfig),
    /// Crawl web pages from seeds or a sitemap, and re-crawl on a schedule.
    Web(WebSourceConfig),
    /// Files at the head of a git branch; new commits give exactly the
    /// changed, added and deleted files.
    Git(GitSourceConfig),
    /// Records of a Fluvio topic, each one JSON change (the line format of
    /// an NDJSON change log), with offsets committed with the epoch.
    Fluvio(FluvioSourceConfig),
    /// Records of a Kafka topic, each one JSON change, with offsets
    /// committed with the epoch (and then to the consumer group).
    Kafka(KafkaSourceConfig),
}

/// Settings of a Kafka topic source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// The consumer group whose offsets are committed after each epoch
    /// (and used to start from when twinflow has no committed position).
    pub group: String,
    /// Partitions read (empty: all of the topic's).
    pub partitions: Vec<u32>,
    /// Where a partition with no committed offset (twinflow's or the group's) starts.
    pub start: StartFrom,
    /// Changes handed to the engine per batch at most.
    pub batch: usize,
    /// Further librdkafka settings (`security.protocol`, `sasl.mechanism`, …).
    pub options: std::collections::BTreeMap<String, String>,
    /// This process's share of the partitions in a cluster (set by
    /// `twinflow up`, not a setting).
    #[serde(skip)]
    pub share: Option<PartitionShare>,
}

/// The partitions one process of a cluster reads of a partitioned source
/// (Kafka, Fluvio): partition `p` goes to process `p % of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionShare {
    /// This process.
    pub index: usize,
    /// Processes in the cluster.
    pub of: usize,
}

impl PartitionShare {
    /// Whether `partition` is this process's to read.
    pub fn takes(&self, partition: u32) -> bool {
        self.of <= 1 || partition as usize % self.of == self.index
    }
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: String::new(),
            group: "twinflow".into(),
            partitions: Vec::new(),
            start: StartFrom::Beginning,
            batch: 500,
            options: std::collections::BTreeMap::new(),
            share: None,
        }
    }
}

/// Where a partition with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record the partition still has.
    #[default]
    Beginning,
    /// Only records written after the source starts.
    End,
}

/// Settings of a Fluvio topic source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluvioSourceConfig {
    /// The cluster's controller, `host:port` (Fluvio listens on 9003).
    pub endpoint: String,
    pub topic: String,
    /// Partitions read (empty: all of the topic's).
    pub partitions: Vec<u32>,
    /// Where a partition with no committed offset starts.
    pub start: StartFrom,
    /// Changes handed to the engine per batch at most.
    pub batch: usize,
    /// This process's share of the partitions in a cluster (set by
    /// `twinflow up`, not a setting).
    #[serde(skip)]
    pub share: Option<PartitionShare>,
}

impl Default for FluvioSourceConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".into(),
            topic: String::new(),
            partitions: Vec::new(),
            start: StartFrom::Beginning,
            batch: 500,
            share: None,
        }
    }
}

/// Settings of a web crawl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSourceConfig {
    /// Pages the crawl starts from.
    pub seeds: Vec<String>,
    /// A sitemap (`<urlset>` of `<loc>`, or a `<sitemapindex>`) whose pages are seeds too.
    pub sitemap: Option<String>,
    /// Hosts the crawl may visit (default: the hosts of the seeds and the sitemap).
    pub allowed_domains: Vec<String>,
    /// Links followed from a seed at most (0: the seeds only).
    pub max_depth: usize,
    /// Pages fetched per crawl at most.
    pub max_pages: usize,
    /// Requests per second to one host at most (a robots.txt `Crawl-delay` can lower it).
    pub rate_per_host: f64,
    /// Time between the start of two crawls (`0s`: crawl once).
    #[serde(with = "humantime_serde")]
    pub recrawl: Duration,
    /// Honour robots.txt.
    pub respect_robots: bool,
    pub user_agent: String,
    /// Kind given to the pages' documents.
    pub kind: DocumentKind,
    /// Author given to pages without a `<meta name="author">`.
    pub author: String,
    /// Pages larger than this are refused (an ingest error).
    pub max_page: ByteSize,
    /// Per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebSourceConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            sitemap: None,
            allowed_domains: Vec::new(),
            max_depth: 3,
            max_pages: 1_000,
            rate_per_host: 4.0,
            recrawl: Duration::from_secs(3600),
            respect_robots: true,
            user_agent: "twinflow".into(),
            kind: DocumentKind::Article,
            author: String::new(),
            max_page: ByteSize::mib(4),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Settings of a git repository source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitSourceConfig {
    /// A local repository (working copy or bare), or a `file://` URL.
    pub repo: String,
    /// The branch followed (default: the repository's HEAD).
    pub branch: Option<String>,
    /// Paths taken: glob patterns (`*` within a name, `**` across folders); empty = all.
    pub include: Vec<String>,
    /// Paths left out, after `include`.
    pub exclude: Vec<String>,
    /// Files larger than this are skipped (an ingest error).
    pub max_file: ByteSize,
    /// Time between two looks at the branch (`0s`: once).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Author given to the files' documents.
    pub author: String,
}

impl Default for GitSourceConfig {
    fn default() -> Self {
        Self {
            repo: String::new(),
            branch: None,
            include: Vec::new(),
            exclude: Vec::new(),
            max_file: ByteSize::kib(512),
            poll: Duration::from_secs(30),
            author: String::new(),
        }
    }
}

/// Settings of a directory watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSourceConfig {
    pub path: PathBuf,
    /// Kind given to the files' documents.
    pub kind: DocumentKind,
    /// Author given to the files' documents.
    pub author: String,
    /// File extensions taken (others are ignored).
    pub extensions: Vec<String>,
    /// Files larger than this are refused (an ingest error, not a crash).
    pub max_file: ByteSize,
}

impl Default for WatchSourceConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("."),
            kind: DocumentKind::Article,
            author: String::new(),
            extensions: ["md", "markdown", "txt", "html", "htm", "json"].map(String::from).to_vec(),
            max_file: ByteSize::mib(8),
        }
    }
}

/// Settings of an NDJSON replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NdjsonSourceConfig {
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_json() {
        let config = Config::default();
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["engine"]["tick"], "50ms");
        let back: Config = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn tagged_sources_and_unknown_keys() {
        let json = r#"{"sources":[{"type":"watch","config":{"path":"/tmp/x","kind":"post"}}],
                       "engine":{"tick":"200ms","workers":4}}"#;
        let config: Config = serde_json::from_str(json).unwrap();
        assert_eq!(config.engine.tick, Duration::from_millis(200));
        assert!(matches!(&config.sources[0], SourceConfig::Watch(w) if w.kind == DocumentKind::Post));
        let err = serde_json::from_str::<Config>(r#"{"engine":{"tik":"1s"}}"#).unwrap_err();
        assert!(err.to_string().contains("tik"), "{err}");
    }

    #[test]
    fn streaming_sources_and_publishers() {
        let json = r#"{"sources":[
            {"type":"fluvio","config":{"endpoint":"10.0.0.1:9003","topic":"posts","partitions":[0,2],"start":"end"}},
            {"type":"kafka","config":{"brokers":"k1:9092,k2:9092","topic":"posts","options":{"security.protocol":"SSL"}}}],
            "publish":{"kafka":{"brokers":"k1:9092","topic":"out","tables":["documents","embeddings"]}}}"#;
        let config: Config = serde_json::from_str(json).unwrap();
        assert!(
            matches!(&config.sources[0], SourceConfig::Fluvio(f) if f.partitions == [0, 2] && f.start == StartFrom::End)
        );
        assert!(matches!(&config.sources[1], SourceConfig::Kafka(k) if k.group == "twinflow" && k.options.len() == 1));
        let kafka = config.publish.kafka.unwrap();
        assert_eq!(kafka.tables, [crate::TableName::Documents, crate::TableName::Embeddings]);
        assert!(config.publish.fluvio.is_none());
        let err = serde_json::from_str::<Config>(r#"{"publish":{"kafka":{"topik":"x"}}}"#).unwrap_err();
        assert!(err.to_string().contains("topik"), "{err}");
    }
}

/// twinflow's cache of fetched data (model weights, the demo corpus), kept
/// outside any checkout: `$TWINFLOW_CACHE`, or else `$HOME/.cache/twinflow`
/// (a temporary folder when neither is set).
pub fn cache_root() -> PathBuf {
    let non_empty = |name| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty("TWINFLOW_CACHE") {
        return PathBuf::from(dir);
    }
    match non_empty("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("twinflow"),
        None => std::env::temp_dir().join("twinflow-cache"),
    }
}
