//! What [`Engine::start`](super::Engine::start) is given: how the engine
//! runs ([`EngineOptions`]) and the committed state it resumes from
//! ([`Restore`]).

use std::sync::Arc;
use std::time::Duration;

use twinflow_schemas::config::{ChunkingConfig, ClusterConfig, DriftConfig, EngineConfig};
use twinflow_schemas::{DocumentRow, EmbeddingRow};

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Worker threads.
    pub workers: usize,
    /// Epoch length.
    pub tick: Duration,
    /// Changes that close an epoch early.
    pub max_batch: usize,
    /// Uncommitted changes above which `submit` refuses.
    pub max_pending: usize,
    /// Age of the oldest uncommitted change above which `submit` refuses.
    pub max_lag: Duration,
    /// Chunk sizes.
    pub chunking: ChunkingConfig,
    /// Drift statistics in the dataflow (`None`: off).
    pub drift: Option<DriftConfig>,
    /// timely's cluster mode (`None`: one process).
    pub cluster: Option<ClusterConfig>,
    /// Told of every vector the model computes (the persistent embedding cache).
    pub vector_sink: Option<Arc<dyn crate::operators::ComputedVectors>>,
}

impl EngineOptions {
    /// Options from the configuration sections.
    pub fn new(engine: &EngineConfig, chunking: &ChunkingConfig) -> Self {
        Self {
            workers: engine.workers.max(1),
            tick: engine.tick,
            max_batch: engine.max_batch.max(1),
            max_pending: engine.max_pending.max(1),
            max_lag: engine.max_lag,
            chunking: chunking.clone(),
            drift: None,
            cluster: engine.cluster.clone(),
            vector_sink: None,
        }
    }

    /// With drift statistics computed by `config` (when it is enabled).
    pub fn with_drift(mut self, config: &DriftConfig) -> Self {
        self.drift = config.enabled.then(|| config.clone());
        self
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self::new(&EngineConfig::default(), &ChunkingConfig::default())
    }
}

/// State committed earlier, to resume from after a restart.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The last committed epoch; the restored state is replayed at it and
    /// new changes start at the next one.
    pub epoch: u64,
    /// The live documents at `epoch`.
    pub documents: Vec<DocumentRow>,
    /// Stored vectors, seeding the embedding cache so nothing is re-encoded.
    pub embeddings: Vec<EmbeddingRow>,
}
