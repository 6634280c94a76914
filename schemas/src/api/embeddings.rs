//! `POST /v1/embeddings`, as OpenAI's embeddings API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
