//! The `traces` table: one row per answered question (`/v1/rag`,
//! `/v1/chat/completions`), for prompt monitoring: what was asked, what was
//! retrieved, the prompt's size, the answer, tokens, latencies and the
//! model versions that produced it.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// One answered question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// The committed epoch when the trace was written.
    pub epoch: u64,
    pub trace_id: String,
    /// When the answer finished, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The question (`redacted:<hash>` when redaction is on).
    pub question: String,
    /// The filters retrieval used, as JSON.
    pub filters: String,
    /// The question and its expansions, as JSON.
    pub queries: String,
    /// The chunks placed in the prompt, as JSON: `[{chunk_id, doc_id, score, cited}]`.
    pub retrieved: String,
    /// The committed epoch retrieval read.
    pub as_of: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The answer (`redacted:<hash>` when redaction is on).
    pub answer: String,
    pub finish_reason: String,
    /// Step latencies, as JSON (`RagTimings`).
    pub timings: String,
    pub total_ms: f64,
    /// The generator that answered (a twin is `<base>+twin-v<N>`).
    pub model: String,
    /// The embedding model and the active adapter (`base` or `adapter-v<N>`).
    pub search_model: String,
}

/// The Arrow schema of `traces`.
pub fn traces_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::UInt64, false),
        text("trace_id"),
        Field::new("at_ms", DataType::Int64, false),
        text("question"),
        text("filters"),
        text("queries"),
        text("retrieved"),
        Field::new("as_of", DataType::UInt64, false),
        Field::new("prompt_tokens", DataType::UInt64, false),
        Field::new("completion_tokens", DataType::UInt64, false),
        text("answer"),
        text("finish_reason"),
        text("timings"),
        Field::new("total_ms", DataType::Float64, false),
        text("model"),
        text("search_model"),
    ]))
}
