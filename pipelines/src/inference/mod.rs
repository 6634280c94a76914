//! The inference pipeline: answers from the live index.
//!
//! | file | what it owns |
//! |---|---|
//! | `rag.rs` | the RAG steps in order: self-query, expansion, retrieval, fusion, rerank, prompt, generation, citations |
//! | `query.rs` | the question's side: the filters it names (self-query), the generator's rephrasings (expansion) |
//! | `prompt.rs` | the prompt's numbered passages within the generator's budget, the citations the answer's markers name |
//! | `passages.rs` | which candidates the prompt holds (rerank fusion, spread over documents) and each cut to its closest sentences |
//! | `sentence_limit.rs` | generation stopped before the sentence past `[rag] max_sentences` |
//! | `grounding.rs` | each answer sentence cited by the passages that support it, or dropped; extractive fallback |
//! | `combine.rs` | the queries of concurrent requests embedded in one batch |
//! | `generator.rs` | the generator choice: the local GGUF (or the active twin) or an OpenAI-compatible endpoint |
//! | `replica.rs` | a read replica's follower: the primary's epochs and registries, its lag |
//! | `subscriptions/` | standing questions: top-k kept answered across commits, events, webhooks |
//! | `traces.rs` | every answer traced, flushed to the `traces` table |

mod combine;
pub mod generator;
pub mod grounding;
mod passages;
mod prompt;
mod query;
pub mod rag;
pub mod replica;
mod sentence_limit;
pub mod subscriptions;
pub mod traces;

pub use combine::CombiningEmbedder;
pub use generator::{LazyGenerator, OpenAiGenerator, build_generator};
pub use rag::{Prepared, Rag, RagError, RagQuestion, answer, ground_response, prepare};
pub use traces::Traces;

use crate::Failure;

/// Why a generator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured generator is not a local model (it cannot be fine-tuned or merged here).
    #[error("{0}")]
    NotLocal(String),
    #[error(transparent)]
    Failed(#[from] Failure),
}
