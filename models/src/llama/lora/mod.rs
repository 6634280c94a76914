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
//! Preference alignment follows: DPO (`dpo.rs`) trains fresh adapters on
//! top of the SFT'd model against (prompt, chosen = the author's text,
//! rejected = the model's answer) pairs, the SFT'd model frozen as its
//! reference; the result is one adapter (both stacked) applied to the base.
//!
//! Files: `weights.rs` (the trained factors, their file, merging them into
//! the decode weights, stacking two fine-tunes), `examples.rs` (a question
//! and its answer as tokens, with the answer marked), `technique.rs` (what a
//! technique gives the loop: its example and its batch loss), `sft.rs`,
//! `dpo.rs` (the techniques), `training.rs` (the trainer: the shared
//! training loop, held-out scoring).

mod dpo;
mod examples;
mod sft;
mod technique;
mod training;
mod weights;

pub use dpo::{Dpo, PreferenceExample};
pub use examples::SftExample;
pub use sft::Sft;
pub use technique::{BatchLoss, Rewards, Technique};
pub use training::{LoraReport, LoraTrainer, LoraTraining, Nll};
pub(in crate::llama) use weights::GgufTarget;
pub use weights::{LoraTarget, LoraWeights};
