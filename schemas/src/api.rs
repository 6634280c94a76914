//! Request and response types of the REST API, and the stable error codes.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::Hash128;
use crate::records::DocumentKind;

/// Stable, machine-readable error codes. Clients match on these; the message
/// beside them is for humans and may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON (or not an object where one is needed).
    InvalidJson,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidField,
    /// `kind` is not article, post, repository or other.
    UnknownKind,
    /// One document's content is over the per-document limit.
    DocumentTooLarge,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// The content type is not one the endpoint accepts.
    UnsupportedMediaType,
    /// A query parameter is missing or invalid.
    InvalidQuery,
    /// The SQL statement would change something (DDL, DML, COPY…).
    SqlNotReadOnly,
    /// The SQL statement failed to plan or run.
    SqlError,
    /// No such resource.
    NotFound,
    /// The request names a model this server does not serve.
    ModelNotFound,
    /// The engine is stopping and accepts no more changes.
    ShuttingDown,
    /// The engine is too far behind; retry later.
    Overloaded,
    /// The prompt (question, history and retrieved context) does not fit the generator's context.
    ContextLengthExceeded,
    /// The generator could not be loaded or reached.
    GeneratorUnavailable,
    /// A training run is already in progress.
    TrainingRunning,
    /// The twin needs the local generator (an OpenAI-compatible one cannot be fine-tuned here).
    TwinUnavailable,
    /// Accepted changes could not be made durable (disk full, unwritable data
    /// directory): they may not survive a crash; send them again.
    StorageError,
    /// Something went wrong on the server; details are in its log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is returned with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidUtf8
            | Self::MissingField
            | Self::InvalidField
            | Self::UnknownKind
            | Self::InvalidQuery
            | Self::SqlNotReadOnly
            | Self::SqlError
            | Self::ContextLengthExceeded
            | Self::TwinUnavailable => 400,
            Self::NotFound | Self::ModelNotFound => 404,
            Self::DocumentTooLarge | Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TrainingRunning => 409,
            Self::Overloaded | Self::ShuttingDown | Self::GeneratorUnavailable => 503,
            Self::Internal => 500,
            Self::StorageError => 507,
        }
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The NDJSON line the error refers to, when it refers to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// Answer to `POST /v1/documents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IngestResponse {
    /// How many changes were accepted (all of the body, or none).
    pub accepted: usize,
    /// The epoch the changes were stamped with.
    pub epoch: u64,
    /// Whether the epoch was already committed when the response was sent
    /// (`?wait=true` waits for it).
    pub committed: bool,
}

/// Query of `GET /v1/search`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// Scan every vector instead of asking the HNSW index (slow on large
    /// indexes; for measuring recall).
    #[serde(default)]
    pub exact: bool,
}

/// How a search ranks chunks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SearchMode {
    /// Exact cosine similarity of the embeddings.
    Vector,
    /// BM25 over the chunk texts.
    Bm25,
    /// Both, fused by reciprocal rank: `Σ weight / (rrf_k + rank)`.
    Hybrid { vector_weight: f32, bm25_weight: f32, rrf_k: f32 },
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

/// Output format of SQL results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqlFormat {
    #[default]
    Json,
    Csv,
    /// Arrow IPC stream.
    Arrow,
    /// One Parquet file.
    Parquet,
}

/// Body of `POST /v1/sql`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub format: SqlFormat,
}

/// A column of a JSON SQL answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SqlColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// JSON answer to `POST /v1/sql`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SqlResponse {
    pub as_of: u64,
    pub columns: Vec<SqlColumn>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub row_count: usize,
    pub took_ms: f64,
}

/// Answer to `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusResponse {
    /// Last epoch whose outputs are committed and visible.
    pub committed_epoch: u64,
    /// The epoch new changes are being stamped with.
    pub open_epoch: u64,
    /// Changes accepted but not yet committed.
    pub pending_changes: u64,
    /// Age of the oldest uncommitted change, in milliseconds.
    pub input_lag_ms: f64,
    pub workers: usize,
    pub embedder: String,
    /// Live rows per table at `committed_epoch`.
    pub tables: BTreeMap<String, u64>,
    /// Texts embedded since start (the embedding cache's misses).
    pub texts_embedded: u64,
    /// Texts waiting for the embedding model.
    #[serde(default)]
    pub texts_waiting: u64,
    pub uptime_s: f64,
    pub data_dir: String,
    /// The drift monitor's state (`null` when drift is off).
    #[serde(default)]
    pub drift: serde_json::Value,
    /// The active embedding model (`base` or an adapter version) and the training job.
    #[serde(default)]
    pub models: serde_json::Value,
    /// Committed source positions (name → position) and ingest errors (total, most recent).
    #[serde(default)]
    pub sources: serde_json::Value,
}

/// `POST /v1/embeddings`, as OpenAI's embeddings API: `input` is one string
/// or an array of strings (token-id arrays are not supported), `model` is the
/// served model's id or name (optional here), `encoding_format` is `float`
/// (default) or `base64` (little-endian f32 bytes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingsRequest {
    pub input: EmbeddingsInput,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Accepted only when equal to the model's dimension.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Ignored (OpenAI's end-user id).
    #[serde(default)]
    pub user: Option<String>,
}

/// One string or many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EmbeddingsInput {
    One(String),
    Many(Vec<String>),
}

/// The answer of `POST /v1/embeddings`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingsResponse {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<EmbeddingData>,
    /// The model id, with the hash of its weights.
    pub model: String,
    pub usage: EmbeddingsUsage,
}

/// One input's vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingData {
    /// Always `"embedding"`.
    pub object: String,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

/// A vector as floats, or as base64 of its little-endian f32 bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

/// Tokens read by the model (special tokens included, after truncation).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: u64,
    pub total_tokens: u64,
}

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
    pub total_ms: f64,
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
}

/// One message of `POST /v1/chat/completions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionMessage {
    pub role: String,
    /// Text; OpenAI's content-part arrays are accepted when every part is text.
    #[serde(default)]
    pub content: serde_json::Value,
}

/// `POST /v1/chat/completions`, as OpenAI's: the last user message is
/// answered with retrieval-augmented generation over the live index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatCompletionMessage>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, alias = "max_completion_tokens")]
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    /// One string or several.
    #[serde(default)]
    pub stop: Option<serde_json::Value>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Only `1` is supported.
    #[serde(default)]
    pub n: Option<usize>,
    /// Accepted and ignored: `user`, `stream_options`, … (OpenAI clients send them).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// One committed epoch, as `GET /v1/timeline` lists it: the history behind
/// the dashboard's throughput and freshness plots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelinePoint {
    pub epoch: u64,
    /// When the commit finished, in milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
    /// Changes in the epoch.
    pub changes: u64,
    /// From the epoch's first accepted change until it was committed (searchable), in milliseconds.
    pub freshness_ms: f64,
    /// Texts embedded since start, at the commit.
    pub texts_embedded: u64,
    /// Live rows per table after the commit.
    pub tables: BTreeMap<String, u64>,
}

/// Answer to `GET /v1/timeline`: the most recent commits, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineResponse {
    pub points: Vec<TimelinePoint>,
}
