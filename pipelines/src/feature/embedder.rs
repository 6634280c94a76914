//! The embedders the configuration can name, behind the dataflow's
//! [`Embedder`] trait.

use std::sync::Arc;

use super::Error;
use crate::Context;

use twinflow_dataflow::{EmbedError, Embedder, HashingEmbedder};
use twinflow_models::{SentenceEncoder, cpu_device, default_cache_dir, fetch_minilm};
use twinflow_schemas::config::EmbedderConfig;

/// The MiniLM sentence encoder as the engine's embedder.
#[derive(Debug)]
pub struct MiniLmEmbedder {
    encoder: SentenceEncoder,
}

impl MiniLmEmbedder {
    /// Wraps a loaded encoder.
    pub fn new(encoder: SentenceEncoder) -> Self {
        Self { encoder }
    }
}

impl Embedder for MiniLmEmbedder {
    fn model_id(&self) -> &str {
        self.encoder.model_id()
    }

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn batch_size(&self) -> usize {
        self.encoder.batch_size()
    }

    fn max_tokens(&self) -> Option<usize> {
        Some(self.encoder.max_tokens())
    }

    fn count_tokens(&self, text: &str) -> usize {
        // A text the tokenizer refuses is counted by the estimate; embedding it reports the error.
        self.encoder.count_tokens(text).unwrap_or_else(|_| twinflow_dataflow::text::token_estimate(text) as usize)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.encoder.embed(texts).map_err(|e| EmbedError(e.to_string()))
    }
}

/// Builds the embedder the configuration names (fetching MiniLM's weights
/// into the cache the first time).
pub fn build_embedder(config: &EmbedderConfig) -> Result<Arc<dyn Embedder>, Error> {
    Ok(match config {
        EmbedderConfig::Hashing(hashing) => Arc::new(HashingEmbedder::new(hashing.dim)),
        EmbedderConfig::Minilm(minilm) => {
            let dir = match &minilm.model_dir {
                Some(dir) => dir.clone(),
                None => fetch_minilm(&default_cache_dir()).context("cannot fetch the MiniLM weights")?,
            };
            let encoder = SentenceEncoder::load(&dir, &cpu_device())
                .with_context(|| format!("cannot load the MiniLM model from {}", dir.display()))?
                .with_batch_size(minilm.batch_size);
            tracing::info!(model = encoder.model_id(), dir = %dir.display(), "sentence encoder loaded");
            Arc::new(MiniLmEmbedder::new(encoder))
        }
    })
}
