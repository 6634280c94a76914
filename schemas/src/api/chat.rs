//! `POST /v1/chat/completions`, as OpenAI's chat completions API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
