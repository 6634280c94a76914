//! `[embedder]`: which embedding model the engine uses, and its settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
