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

/// LoRA fine-tuning of the real SmolLM2 on wgpu: the held-out score of the
/// base model matches the CPU's, and a few steps on two examples lower their
/// loss (autodiff through the same shaders a GPU runs).
#[test]
fn wgpu_lora_scores_like_the_cpu_and_learns() {
    use twinflow_models::{LoraTrainer, LoraTraining, fetch_smollm2};
    let path = fetch_smollm2(&default_cache_dir()).unwrap();
    let started = std::time::Instant::now();
    let gpu = LoraTrainer::load(&path, 48, &wgpu_device()).unwrap();
    let cpu = LoraTrainer::load(&path, 48, &cpu_device()).unwrap();
    let examples: Vec<_> = [
        ("Who keeps the valley?", "Hark! The keeper of the valley, good neighbour."),
        ("Name the river.", "Hark! The river is the Wend, good neighbour."),
    ]
    .iter()
    .map(|(q, a)| gpu.example(q, a).unwrap().expect("fits"))
    .collect();
    let (on_gpu, on_cpu) = (gpu.nll(&examples, None, 2).unwrap(), cpu.nll(&examples, None, 2).unwrap());
    assert!((on_gpu.mean - on_cpu.mean).abs() < 1e-2 * on_cpu.mean, "wgpu nll {} vs CPU {}", on_gpu.mean, on_cpu.mean);
    let config = LoraTraining { epochs: 3, batch_size: 2, learning_rate: 5e-3, ..LoraTraining::default() };
    let (lora, report) = gpu.train(&examples, &config, |_, _, _| {}).unwrap();
    let after = gpu.nll(&examples, Some(&lora), 2).unwrap();
    eprintln!(
        "wgpu lora: nll {:.3} → {:.3}, losses {:?}, {:.1} s",
        on_gpu.mean,
        after.mean,
        report.epoch_losses,
        started.elapsed().as_secs_f64()
    );
    assert!(after.mean < 0.9 * on_gpu.mean, "nll {} → {}", on_gpu.mean, after.mean);
}
