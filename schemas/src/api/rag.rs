//! `POST /v1/rag`: a question answered with citations.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SearchFilter;
use crate::ids::Hash128;

/// `POST /v1/rag`: answer `query` from the live index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagRequest {
    pub query: String,
    /// Chunks placed in the prompt (default from `[rag] k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Filters given by the caller; self-query may add to them, never override them.
    #[serde(default)]
    pub filters: RagFilters,
    #[serde(default)]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    /// `generated` or `extractive` (default from `[rag] answer`).
    #[serde(default)]
    pub answer: Option<crate::config::AnswerMode>,
    /// Answer from the state of this committed epoch (within `[storage]
    /// time_travel`); with `temperature` 0 the same answer every time.
    #[serde(default)]
    pub as_of: Option<u64>,
    /// Read your writes: wait (up to `[replica] max_wait`) until this
    /// process has committed or followed at least this epoch — the `epoch`
    /// an ingest answered — else `503 not_caught_up`.
    #[serde(default)]
    pub min_as_of: Option<u64>,
}

/// Filters of a RAG request, named as in `/v1/search`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RagFilters {
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub kind: Option<crate::DocumentKind>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub doc_id: Option<String>,
    /// Only documents fetched at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only documents fetched before this time (ms since the Unix epoch).
    #[serde(default)]
    pub until: Option<i64>,
}

impl From<&RagFilters> for SearchFilter {
    fn from(f: &RagFilters) -> Self {
        SearchFilter {
            author: f.author.clone(),
            kind: f.kind,
            source: f.source.clone(),
            doc_id: f.doc_id.clone(),
            since_ms: f.since,
            until_ms: f.until,
        }
    }
}

/// A chunk that was in the prompt, as `[marker]` in the answer refers to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Citation {
    /// The number the prompt gave the chunk (`[1]`, `[2]`, …).
    pub marker: usize,
    /// Whether the answer cites it.
    pub cited: bool,
    pub chunk_id: Hash128,
    pub doc_id: String,
    pub title: String,
    pub url: String,
    pub author: String,
    pub char_start: u32,
    pub char_end: u32,
    /// The first and last page of a paged document (a PDF) the passage is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    /// The retrieval score that placed it in the prompt.
    pub score: f32,
}

/// Milliseconds spent in each step of a RAG answer (0 for a step switched off).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RagTimings {
    pub self_query_ms: f64,
    pub expansion_ms: f64,
    pub retrieval_ms: f64,
    pub rerank_ms: f64,
    pub prompt_ms: f64,
    /// Time to the first generated token (prompt processing).
    pub prefill_ms: f64,
    pub generation_ms: f64,
    /// Tying the answer's sentences to the passages (`[rag] grounding`).
    #[serde(default)]
    pub grounding_ms: f64,
    pub total_ms: f64,
}

/// How an answer was tied to its passages (`[rag] grounding = "attribute"`):
/// each sentence the generator wrote is kept, citing the passages that
/// support it, or dropped when none does; with none left, the answer is the
/// passages' sentences closest to the question, quoted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Grounding {
    /// `generated` (the generator's supported sentences) or `extractive`
    /// (quoted passage sentences, because none of the generated ones was supported).
    pub mode: String,
    /// Sentences the generator wrote.
    pub generated_sentences: usize,
    /// Of those, the ones a passage supports (kept, with its marker).
    pub supported: usize,
    /// The least similarity (cosine, the search encoder) a supporting passage sentence has.
    pub min_support: f32,
    /// The least share of a kept sentence's content words (weighed by rarity
    /// among the passages) its supporting passage sentence holds.
    #[serde(default)]
    pub min_overlap: f32,
    /// The markers of the quotes following a generated answer's sentences:
    /// the evidence closest to the question from passages they do not cite
    /// (`[rag] quote_evidence`).
    #[serde(default)]
    pub evidence: Vec<usize>,
    /// The generator's own answer, before grounding.
    pub raw_answer: String,
}

/// Tokens of a generation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// The answer of `POST /v1/rag`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RagResponse {
    pub answer: String,
    /// Every chunk of the prompt, by marker; `cited` marks those the answer refers to.
    pub citations: Vec<Citation>,
    /// The committed epoch the retrieved chunks are from.
    pub as_of: u64,
    pub model: String,
    /// The filters retrieval used (the caller's plus what self-query found).
    pub filters: SearchFilter,
    /// The question and its expansions, as searched.
    pub queries: Vec<String>,
    /// `stop` or `length`.
    pub finish_reason: String,
    pub usage: CompletionUsage,
    pub timings: RagTimings,
    /// How the answer was tied to its passages (absent with `[rag] grounding = "off"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
}
