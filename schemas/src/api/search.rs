//! `GET /v1/search`: the query, its filters and ranked hits.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::Hash128;
use crate::records::DocumentKind;

/// Query of `GET /v1/search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchQuery {
    pub q: String,
    #[serde(default = "default_k")]
    pub k: usize,
    /// Only chunks of documents by this author.
    #[serde(default)]
    pub author: Option<String>,
    /// Only chunks of documents of this kind (`article`, `post`, `repository`, `other`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Only chunks of documents from this source.
    #[serde(default)]
    pub source: Option<String>,
    /// Only chunks of this document.
    #[serde(default)]
    pub doc_id: Option<String>,
    /// Only documents fetched at or after this time (ms since the Unix epoch).
    #[serde(default)]
    pub since: Option<i64>,
    /// Only documents fetched before this time (ms since the Unix epoch).
    #[serde(default)]
    pub until: Option<i64>,
    /// `hybrid` (default: vectors and BM25 fused by reciprocal rank),
    /// `vector` (cosine) or `bm25` (full text).
    #[serde(default)]
    pub mode: Option<String>,
    /// Hybrid only: this request's weight of the vector ranking, in place of
    /// the active retrieval setting's (as are the three below, each one given).
    #[serde(default)]
    pub vector_weight: Option<f32>,
    /// Hybrid only: the BM25 ranking's weight for this request.
    #[serde(default)]
    pub bm25_weight: Option<f32>,
    /// Hybrid only: the documents' leads' weight for this request (0: none).
    #[serde(default)]
    pub lead_weight: Option<f32>,
    /// Hybrid only: reciprocal-rank fusion's `k` for this request.
    #[serde(default)]
    pub rrf_k: Option<f32>,
    /// Scan every vector instead of asking the HNSW index (slow on large
    /// indexes; for measuring recall).
    #[serde(default)]
    pub exact: bool,
    /// Search the state of this committed epoch (within `[storage]
    /// time_travel`) instead of the latest.
    #[serde(default)]
    pub as_of: Option<u64>,
    /// Read your writes: wait (up to `[replica] max_wait`) until this
    /// process has committed or followed at least this epoch — the `epoch`
    /// an ingest answered — else `503 not_caught_up`.
    #[serde(default)]
    pub min_as_of: Option<u64>,
}

/// How a search ranks chunks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SearchMode {
    /// Exact cosine similarity of the embeddings.
    Vector,
    /// BM25 over the chunk texts.
    Bm25,
    /// Both, fused by reciprocal rank: `Σ weight / (rrf_k + rank)`. With
    /// `lead_weight` above 0, each candidate also scores
    /// `lead_weight × coherence × agreement / (rrf_k + rank)` by its
    /// document's rank among the candidates' documents by their leads'
    /// cosine (a lead is a document's first chunk: what the whole document
    /// is about), where `agreement` is the candidate's cosine with that lead
    /// and `coherence` the mean cosine of the document's chunks with it.
    Hybrid {
        vector_weight: f32,
        bm25_weight: f32,
        /// 0 when absent (settings written before leads counted).
        #[serde(default)]
        lead_weight: f32,
        rrf_k: f32,
    },
}

/// Conditions on a chunk's document, applied inside the search (before the
/// top `k` is taken, so a selective filter still fills `k`). A chunk text
/// that occurs in several documents qualifies when one of them matches, and
/// its hit lists only the matching occurrences.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SearchFilter {
    pub author: Option<String>,
    pub kind: Option<crate::DocumentKind>,
    pub source: Option<String>,
    pub doc_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl SearchFilter {
    /// True when it lets everything through.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `doc` passes every condition.
    pub fn matches(&self, doc: &crate::DocumentRow) -> bool {
        self.author.as_ref().is_none_or(|a| *a == doc.author)
            && self.kind.is_none_or(|k| k == doc.kind)
            && self.source.as_ref().is_none_or(|s| *s == doc.source)
            && self.doc_id.as_ref().is_none_or(|d| *d == doc.doc_id)
            && self.since_ms.is_none_or(|t| doc.fetched_at >= t)
            && self.until_ms.is_none_or(|t| doc.fetched_at < t)
    }
}

fn default_k() -> usize {
    10
}

/// One search result, with its provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchHit {
    pub chunk_id: Hash128,
    /// The ranking score: cosine similarity (`vector`), BM25 (`bm25`), or the
    /// weighted reciprocal-rank fusion of both (`hybrid`).
    pub score: f32,
    /// Cosine similarity to the query, when the vector search ranked this chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_score: Option<f32>,
    /// BM25 score of the query's words, when the full-text search ranked this chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25_score: Option<f32>,
    pub text: String,
    /// Every live occurrence of this chunk text (documents may share text).
    pub sources: Vec<ChunkSource>,
}

/// Where a chunk comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChunkSource {
    pub doc_id: String,
    pub ordinal: u32,
    pub char_start: u32,
    pub char_end: u32,
    /// The first and last page (1-based) of a paged document (a PDF) the chunk is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    pub title: String,
    pub url: String,
    pub author: String,
    pub kind: DocumentKind,
}

/// Answer to `GET /v1/search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SearchResponse {
    /// The committed epoch the results reflect.
    pub as_of: u64,
    pub model_id: String,
    pub results: Vec<SearchHit>,
    pub took_ms: f64,
}
