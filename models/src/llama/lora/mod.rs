//! LoRA supervised fine-tuning of the decoder: the "twin" learns to answer
//! like the author from (question, the author's own text) pairs.
//!
//! ```text
//!  (question, answer) ─▶ chat template(user: question) ++ answer ++ <end of turn> ─▶ SftExample
//!                                                        └─ only these tokens are learned ─┘
//!  GGUF ─▶ burn graph on the autodiff device ─▶ burn's apply_lora on the attention
//!          projections Q, K, V, O: W + (α/r)·A·B, A ~ N(0, 1/r), B = 0, W frozen
//!  batches (right-padded) ─▶ causal forward ─▶ hidden states of answer positions
//!          ─▶ output projection ─▶ −log p(next token) ─▶ mean ─▶ backward ─▶ Adam (A, B only)
//!  ─▶ LoraWeights (A, B per layer and projection) ─▶ lora.safetensors
//!  serving: LlamaModel::merge_lora adds (α/r)·(A·B)ᵀ into the fused decode weights: no cost per token
//! ```
//!
//! Evaluation is the mean negative log-likelihood of held-out answer tokens
//! (perplexity = e^nll) under the base model, the active twin and a
//! candidate, all through the same burn graph.
//!
//! Files: `weights.rs` (the trained factors, their file, merging them into
//! the decode weights), `examples.rs` (a question and its answer as tokens,
//! with the answer marked), `training.rs` (the trainer: training loop,
//! answer-token loss, held-out scoring).

mod examples;
mod training;
mod weights;

pub use examples::SftExample;
pub use training::{LoraReport, LoraTrainer, LoraTraining, Nll};
pub use weights::{LoraTarget, LoraWeights};
