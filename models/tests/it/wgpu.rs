//! The burn graph on wgpu: the tiny random model gives the CPU's vectors, and
//! the real MiniLM matches sentence-transformers, on whatever adapter wgpu
//! finds (lavapipe in CI: slow, but the same shaders a GPU runs).

use twinflow_models::{SentenceEncoder, cpu_device, default_cache_dir, fetch_minilm, wgpu_device};

use crate::tiny::{cleanup, model_dir};
use crate::{cosine, max_abs_diff};

#[test]
fn wgpu_runs_the_tiny_model_as_the_cpu_does() {
    let dir = model_dir("wgpu");
    let gpu = SentenceEncoder::load(&dir, &wgpu_device()).unwrap();
    assert_eq!(gpu.kernels(), "burn-graph");
    let cpu = SentenceEncoder::load(&dir, &cpu_device()).unwrap();
    let texts = ["the cat", "the cat sat on the mat.", "", "mat, sat!"];
    let (a, b) = (gpu.with_batch_size(2).embed(&texts).unwrap(), cpu.embed(&texts).unwrap());
    for ((text, x), y) in texts.iter().zip(&a).zip(&b) {
        let diff = max_abs_diff(x, y);
        assert!(diff < 1e-4, "{text:?}: wgpu and CPU differ by {diff}");
    }
    cleanup(&dir);
}

#[test]
fn wgpu_minilm_matches_the_cpu_and_the_reference() {
    let dir = fetch_minilm(&default_cache_dir()).unwrap();
    let gpu = SentenceEncoder::load(&dir, &wgpu_device()).unwrap();
    let texts =
        ["The quick brown fox jumps over the lazy dog.", "Café crème brûlée à Zürich 🎉", "東京は日本の首都です。"];
    let on_gpu = gpu.embed(&texts).unwrap();
    let on_cpu = crate::minilm().embed(&texts).unwrap();
    for ((text, x), y) in texts.iter().zip(&on_gpu).zip(&on_cpu) {
        let c = cosine(x, y);
        assert!(c >= 0.9999, "{text:?}: cosine {c} between wgpu and CPU");
    }
}
