//! `POST /v1/chat/completions`, as OpenAI's chat completions API.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Citation, CompletionUsage, Grounding, RagTimings};

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
    /// twinflow's: read your writes: wait (up to `[replica] max_wait`) until this
    /// process has committed or followed at least this epoch — the `epoch`
    /// an ingest answered — else `503 not_caught_up`.
    #[serde(default)]
    pub min_as_of: Option<u64>,
    /// Accepted and ignored: `user`, `stream_options`, … (OpenAI clients send them).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Answer to `POST /v1/chat/completions` without `stream`, as OpenAI's,
/// with the [`twinflow`](ChatExtension) extension OpenAI clients ignore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub model: String,
    /// One choice (only `n: 1` is supported).
    pub choices: Vec<ChatChoice>,
    pub usage: CompletionUsage,
    pub twinflow: ChatExtension,
}

/// The answer of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ChatAnswer,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// The assistant's message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatAnswer {
    /// Always `assistant`.
    pub role: String,
    pub content: String,
}

/// One server-sent event of `POST /v1/chat/completions` with `stream: true`
/// (`data: <chunk>`; the stream ends with `data: [DONE]`): the role first,
/// then the answer piece by piece, then the finish reason with the
/// [`twinflow`](ChatExtension) extension, then (with
/// `stream_options.include_usage`) the usage with no choices. An error
/// after the stream began comes as one [`ErrorBody`](super::ErrorBody) event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Seconds since the Unix epoch (the same in every chunk).
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twinflow: Option<ChatExtension>,
}

/// What one chunk adds to the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    /// `stop` or `length` in the last chunk of the answer, `null` before.
    pub finish_reason: Option<String>,
}

/// A piece of the assistant's message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatDelta {
    /// `assistant`, in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// twinflow's extension of OpenAI's chat answers: the passages of the
/// prompt, the epoch they are from and the time of each step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChatExtension {
    pub citations: Vec<Citation>,
    pub as_of: u64,
    pub timings: RagTimings,
    /// How a whole answer was tied to its passages (a streamed one is not grounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grounding: Option<Grounding>,
}
