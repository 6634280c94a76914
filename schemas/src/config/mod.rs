//! The configuration tree, with defaults that run out of the box.
//!
//! Loaded in layers by the binary (built-in defaults < `twinflow.toml` <
//! `TWINFLOW__SECTION__KEY` environment variables < flags). Durations and
//! sizes are human strings: `"50ms"`, `"64MiB"`. Unknown keys are errors.
//!
//! This file holds the root [`Config`] and [`cache_root`]; each section of
//! the file lives in its own module, re-exported here:
//!
//! | file | what it owns |
//! |---|---|
//! | `engine.rs` | `[engine]`: workers, epochs, admission limits; [`ClusterConfig`] |
//! | `server.rs` | `[server]`: HTTP and Postgres addresses, TLS, body and query limits |
//! | `auth.rs` | `[auth]`: API keys and their scopes, allowed origins, sessions, the cluster secret |
//! | `storage.rs` | `[storage]`: data directory, snapshots, input log, embedding cache |
//! | `embedder.rs` | `[embedder]`: hashing or MiniLM, and their settings |
//! | `chunking.rs` | `[chunking]`: [`ChunkSpec`] per kind of document |
//! | `search.rs` | `[search]`: hybrid fusion, index shards; `[search.ann]` ([`AnnConfig`]) |
//! | `generator.rs` | `[generator]`: the local GGUF model or an OpenAI-compatible endpoint |
//! | `rag.rs` | `[rag]`: self-query, expansions, rerank, prompt and sampling settings |
//! | `drift.rs` | `[drift]`: window, MMD features, retrain thresholds |
//! | `training.rs` | `[training]`: the embedding adapter's retraining and registry |
//! | `twin.rs` | `[twin]`: LoRA fine-tunes of the local generator |
//! | `traces.rs` | `[traces]`: sampling and redaction of recorded answers |
//! | `replica.rs` | `[replica]`: the primary a read replica follows, its polling and lag limits |
//! | `subscriptions.rs` | `[subscriptions]`: limits of standing questions, webhook retries |
//! | `sources.rs` | `[[sources]]`: every source's settings; [`PartitionShare`], [`StartFrom`] |
//! | `publish.rs` | `[publish]`: Fluvio and Kafka topics of committed changes |
//! | `layers.rs` | loading in layers (defaults < file < environment < flags) with figment; `show` with origins |
//! | `tests.rs` | whole-tree tests (JSON round trip, tagged enums, unknown keys) |

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod auth;
mod chunking;
mod drift;
mod embedder;
mod engine;
mod generator;
pub mod layers;
mod publish;
mod rag;
mod replica;
mod search;
mod server;
mod sources;
mod storage;
mod subscriptions;
mod traces;
mod training;
mod twin;

pub use auth::{AuthConfig, AuthMode, KeyConfig};
pub use chunking::{ChunkSpec, ChunkingConfig};
pub use drift::DriftConfig;
pub use embedder::{EmbedderConfig, HashingEmbedderConfig, MiniLmEmbedderConfig};
pub use engine::{ClusterConfig, EngineConfig};
pub use generator::{GeneratorConfig, LocalGeneratorConfig, LocalWeights, OpenAiGeneratorConfig};
pub use publish::{FluvioPublishConfig, KafkaPublishConfig, PublishConfig};
pub use rag::{AnswerMode, GroundingMode, PassageOrder, RagConfig, Rerank};
pub use replica::ReplicaConfig;
pub use search::{AnnConfig, Fusion, SearchConfig};
pub use server::{ServerConfig, TlsConfig};
pub use sources::{
    DocIdNamespaces, FeedSourceConfig, FluvioSourceConfig, GitSourceConfig, KafkaSourceConfig, NdjsonSourceConfig,
    PartitionShare, PostgresSourceConfig, SourceConfig, StartFrom, WatchSourceConfig, WebSourceConfig,
};
pub use storage::StorageConfig;
pub use subscriptions::SubscriptionsConfig;
pub use traces::TracesConfig;
pub use training::TrainingConfig;
pub use twin::{TwinConfig, TwinMethod, TwinStage};

/// Everything twinflow can be told.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    pub server: ServerConfig,
    pub auth: AuthConfig,
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
    pub subscriptions: SubscriptionsConfig,
    /// A read replica's primary and lag limits (`twinflow serve`).
    pub replica: ReplicaConfig,
    /// Sources started by `twinflow up` besides the HTTP endpoint.
    pub sources: Vec<SourceConfig>,
    /// Where committed table changes are published, besides Parquet.
    pub publish: PublishConfig,
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

#[cfg(test)]
mod tests;
