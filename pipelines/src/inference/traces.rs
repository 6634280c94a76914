//! Prompt monitoring: every answered question becomes a row of the
//! `traces` table (sampled, optionally redacted), written in small Parquet
//! files by a background flusher.
//!
//! ```text
//!  rag.rs: answer ─▶ Traces::record (sample by trace id; redact) ─▶ pending
//!  flusher thread, every [traces] flush_every ─▶ Store::append_traces ─▶ traces/epoch=E/part-N.parquet
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::json;

use twinflow_schemas::api::RagResponse;
use twinflow_schemas::config::TracesConfig;
use twinflow_schemas::{Hash128, TraceRow};
use twinflow_sinks::Store;

use crate::now_ms;

/// The traces waiting to be written.
#[derive(Debug)]
pub struct Traces {
    config: TracesConfig,
    pending: Mutex<Vec<TraceRow>>,
    next: AtomicU64,
    /// Distinguishes this process's trace ids from an earlier run's.
    boot: u64,
}

impl Traces {
    pub fn new(config: TracesConfig) -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self { config, pending: Mutex::new(Vec::new()), next: AtomicU64::new(0), boot }
    }

    pub fn config(&self) -> &TracesConfig {
        &self.config
    }

    /// Records one answer (if tracing is on and the sample takes it).
    pub fn record(&self, question: &str, answer: &RagResponse, search_model: String) {
        if !self.config.enabled || self.config.sample_rate <= 0.0 {
            return;
        }
        let trace_id = format!("{:x}-{}", self.boot, self.next.fetch_add(1, Ordering::Relaxed));
        let draw = Hash128::of(trace_id.as_bytes()).low64() as f64 / u64::MAX as f64;
        if draw >= self.config.sample_rate {
            return;
        }
        let text = |t: &str| {
            if self.config.redact { format!("redacted:{}", Hash128::of(t.as_bytes()).to_hex()) } else { t.to_owned() }
        };
        let retrieved: Vec<_> = answer
            .citations
            .iter()
            .map(|c| json!({"chunk_id": c.chunk_id.to_hex(), "doc_id": c.doc_id, "score": c.score, "cited": c.cited}))
            .collect();
        let row = TraceRow {
            epoch: 0,
            trace_id,
            at_ms: now_ms(),
            question: text(question),
            filters: serde_json::to_string(&answer.filters).unwrap_or_default(),
            queries: if self.config.redact {
                json!(answer.queries.len()).to_string()
            } else {
                serde_json::to_string(&answer.queries).unwrap_or_default()
            },
            retrieved: json!(retrieved).to_string(),
            as_of: answer.as_of,
            prompt_tokens: answer.usage.prompt_tokens as u64,
            completion_tokens: answer.usage.completion_tokens as u64,
            answer: text(&answer.answer),
            finish_reason: answer.finish_reason.clone(),
            timings: serde_json::to_string(&answer.timings).unwrap_or_default(),
            total_ms: answer.timings.total_ms,
            model: answer.model.clone(),
            search_model,
        };
        self.pending.lock().push(row);
    }

    /// Writes what is pending; returns how many rows.
    pub fn flush(&self, store: &Store) -> usize {
        let rows = std::mem::take(&mut *self.pending.lock());
        let n = rows.len();
        if let Err(e) = store.append_traces(rows) {
            tracing::error!(error = %e, traces = n, "could not write traces");
            return 0;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::api::{CompletionUsage, RagTimings, SearchFilter};

    fn answer() -> RagResponse {
        RagResponse {
            answer: "Paris.".into(),
            citations: Vec::new(),
            as_of: 3,
            model: "m".into(),
            filters: SearchFilter::default(),
            queries: vec!["capital of France?".into()],
            finish_reason: "stop".into(),
            usage: CompletionUsage { prompt_tokens: 10, completion_tokens: 2, total_tokens: 12 },
            timings: RagTimings { total_ms: 5.0, ..RagTimings::default() },
            grounding: None,
        }
    }

    #[test]
    fn sampling_and_redaction() {
        let all = Traces::new(TracesConfig::default());
        all.record("capital of France?", &answer(), "s".into());
        let row = all.pending.lock()[0].clone();
        assert_eq!(
            (row.question.as_str(), row.answer.as_str(), row.prompt_tokens),
            ("capital of France?", "Paris.", 10)
        );

        let redacted = Traces::new(TracesConfig { redact: true, ..TracesConfig::default() });
        redacted.record("capital of France?", &answer(), "s".into());
        let row = redacted.pending.lock()[0].clone();
        assert!(row.question.starts_with("redacted:") && row.answer.starts_with("redacted:"), "{row:?}");
        assert!(!row.queries.contains("France"));

        let none = Traces::new(TracesConfig { sample_rate: 0.0, ..TracesConfig::default() });
        let half = Traces::new(TracesConfig { sample_rate: 0.5, ..TracesConfig::default() });
        for _ in 0..1000 {
            none.record("q", &answer(), "s".into());
            half.record("q", &answer(), "s".into());
        }
        assert!(none.pending.lock().is_empty());
        let kept = half.pending.lock().len();
        assert!((400..600).contains(&kept), "{kept} of 1000 kept at rate 0.5");
    }
}
