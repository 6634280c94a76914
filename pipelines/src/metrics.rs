//! The pipelines' events as Prometheus metrics (through the `metrics`
//! facade): the server installs the recorder and renders `GET /metrics`;
//! these functions record what happens as it happens.

use std::sync::Arc;
use std::time::Instant;

use metrics::{counter, histogram};

use twinflow_dataflow::{EmbedError, Embedder};

/// Records a committed epoch.
pub fn epoch_committed(stats: &twinflow_sinks::CommitStats, freshness: std::time::Duration, seconds: f64) {
    counter!("twinflow_epochs_committed_total").increment(1);
    for (table, rows) in &stats.rows {
        counter!("twinflow_rows_committed_total", "table" => table.clone()).increment(*rows as u64);
    }
    histogram!("twinflow_commit_seconds").record(seconds);
    histogram!("twinflow_freshness_seconds").record(freshness.as_secs_f64());
}

/// Records changes accepted from `source`.
pub fn changes_accepted(source: &str, changes: usize) {
    counter!("twinflow_source_changes_total", "source" => source.to_owned()).increment(changes as u64);
}

/// Records a refused record of `source`.
pub fn ingest_error(source: &str) {
    counter!("twinflow_ingest_errors_total", "source" => source.to_owned()).increment(1);
}

/// Records a text the model could not embed (it has no vector).
pub fn embed_failed() {
    counter!("twinflow_embed_failures_total").increment(1);
}

/// Records one generation.
pub fn generation(model: &str, generation: &twinflow_models::Generation) {
    let model = model.to_owned();
    counter!("twinflow_generated_tokens_total", "model" => model.clone(), "kind" => "prompt")
        .increment(generation.prompt_tokens as u64);
    counter!("twinflow_generated_tokens_total", "model" => model.clone(), "kind" => "completion")
        .increment(generation.completion_tokens as u64);
    // Prompt tokens whose keys and values were reused from the previous generation.
    counter!("twinflow_generated_tokens_total", "model" => model, "kind" => "cached")
        .increment(generation.cached_tokens as u64);
    histogram!("twinflow_generation_seconds", "phase" => "prefill").record(generation.prefill_ms / 1e3);
    histogram!("twinflow_generation_seconds", "phase" => "decode").record(generation.decode_ms / 1e3);
}

/// Records the end of a training run.
pub fn training_run(kind: &'static str, outcome: &'static str) {
    counter!("twinflow_training_runs_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// An embedder that records batch sizes and latency of the one it wraps.
#[derive(Debug)]
pub struct MeteredEmbedder(pub Arc<dyn Embedder>);

impl Embedder for MeteredEmbedder {
    fn model_id(&self) -> &str {
        self.0.model_id()
    }

    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn batch_size(&self) -> usize {
        self.0.batch_size()
    }

    fn max_tokens(&self) -> Option<usize> {
        self.0.max_tokens()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let started = Instant::now();
        let result = self.0.embed_batch(texts);
        histogram!("twinflow_embed_seconds").record(started.elapsed().as_secs_f64());
        histogram!("twinflow_embed_batch_size").record(texts.len() as f64);
        counter!("twinflow_embedded_texts_total").increment(texts.len() as u64);
        result
    }
}
