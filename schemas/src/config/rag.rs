//! `[rag]`: the steps of a retrieval-augmented answer.

use serde::{Deserialize, Serialize};

/// The steps of the retrieval-augmented answer; each can be switched off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Extract filters (author, kind) from the question by matching the
    /// authors and kinds of the live documents.
    pub self_query: bool,
    /// Extra phrasings of the question written by the generator (0 = off,
    /// the default: on the FAQ set two of them left every prompt's passages
    /// as they were and cost 0.65 s per answer, `twinflow eval rag`).
    pub expansions: usize,
    /// Chunks retrieved per phrasing (hybrid search).
    pub candidates: usize,
    /// Re-order the merged candidates by similarity to the original question
    /// (else by fused rank).
    pub rerank: bool,
    /// Chunks placed in the prompt (default for requests that give no `k`).
    pub k: usize,
    /// Passages of one document placed before any document gets another
    /// (0: no limit); more documents in the prompt when a few long ones
    /// would fill it. Slots left over are filled in rank order.
    pub max_per_document: usize,
    /// Tokens the answer may take.
    pub max_tokens: usize,
    pub temperature: f32,
    /// Penalty on tokens the answer already used (1 = off); small models loop without one.
    pub repetition_penalty: f32,
    /// Tie every answer sentence to the passages that support it
    /// (`attribute`: cite them, drop sentences none supports, quote the
    /// passages when nothing is left) or leave the answer as generated (`off`).
    pub grounding: GroundingMode,
    /// The cosine (search encoder) from which a passage sentence supports an
    /// answer sentence.
    pub min_support: f32,
}

/// What happens to a generated answer before it is returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroundingMode {
    /// As generated.
    Off,
    /// Cited by support; unsupported sentences dropped; extractive when none is left.
    #[default]
    Attribute,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            self_query: true,
            expansions: 0,
            candidates: 20,
            rerank: true,
            k: 4,
            max_per_document: 0,
            max_tokens: 256,
            temperature: 0.0,
            repetition_penalty: 1.15,
            grounding: GroundingMode::Attribute,
            min_support: 0.55,
        }
    }
}
