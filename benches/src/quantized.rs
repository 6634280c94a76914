//! `twinflow-bench quantized`: the fused decode path with the projections
//! kept as their GGUF blocks (dequantised in the products) against the same
//! path with them dequantised to `f32` at load, side by side in one run, on
//! the real SmolLM2-135M (Q4_1/Q8_0 blocks) and on a synthetic ~0.4B
//! Llama-shaped model of random Q4_K/Q6_K weights written as GGUF (no real
//! file of that size reaches this machine): load time, bytes of the
//! projections, prefill and decode tokens/s.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use twinflow_models::gguf::{GgmlType, Gguf, GgufWriter, Meta};
use twinflow_models::llama::{KvCache, LlamaModel};
use twinflow_models::{cpu_device, default_cache_dir, fetch_smollm2};
use twinflow_schemas::rng::SeededRng;

/// What the run measures.
#[derive(Debug, Clone)]
pub struct QuantizedBench {
    pub prompt: usize,
    pub tokens: usize,
    pub runs: usize,
}

/// Random blocks of `ty` for `n` values of magnitude about 0.05 (scale fields set so).
fn random_blocks(ty: GgmlType, n: usize, rng: &mut SeededRng) -> Vec<u8> {
    let (block, size) = ty.block();
    let mut data: Vec<u8> = (0..n / block * size).map(|_| rng.below(256) as u8).collect();
    let half = |v: f32| -> [u8; 2] {
        let b = v.to_bits();
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        ((exp.clamp(1, 30) as u16) << 10 | ((b >> 13) & 0x3ff) as u16).to_le_bytes()
    };
    let (fields, range): (&[usize], f32) = match ty {
        GgmlType::Q4_K => (&[0, 2], 63.0 * 15.0),
        GgmlType::Q6_K => (&[208], 128.0 * 32.0 / 8.0),
        _ => (&[0], 128.0),
    };
    for b in data.chunks_exact_mut(size) {
        for &at in fields {
            b[at..at + 2].copy_from_slice(&half(0.05 / range));
        }
    }
    data
}

/// A Llama-shaped model of random weights as GGUF: Q4_K projections, Q6_K
/// down projections (as Q4_K_M files do), f32 norms, Q8_0 embeddings.
fn write_synthetic(path: &Path) -> anyhow::Result<()> {
    let (h, f, layers, heads, kv_heads, vocab) = (1024usize, 4096usize, 24usize, 16usize, 4usize, 32_000usize);
    let kv = kv_heads * h / heads;
    let mut rng = SeededRng::new(5);
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Meta::String("llama".into()))
        .meta("llama.block_count", Meta::U32(layers as u32))
        .meta("llama.context_length", Meta::U32(2048))
        .meta("llama.embedding_length", Meta::U32(h as u32))
        .meta("llama.feed_forward_length", Meta::U32(f as u32))
        .meta("llama.attention.head_count", Meta::U32(heads as u32))
        .meta("llama.attention.head_count_kv", Meta::U32(kv_heads as u32))
        .meta("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5))
        .meta("tokenizer.ggml.tokens", Meta::Strings((0..vocab).map(|i| format!("t{i}")).collect()));
    w.tensor("token_embd.weight", &[h, vocab], GgmlType::Q8_0, random_blocks(GgmlType::Q8_0, h * vocab, &mut rng))?;
    for i in 0..layers {
        let p = |n: &str| format!("blk.{i}.{n}.weight");
        w.tensor_f32(&p("attn_norm"), &[h], &vec![1.0; h])?;
        w.tensor_f32(&p("ffn_norm"), &[h], &vec![1.0; h])?;
        for (name, rows, cols, ty) in [
            ("attn_q", h, h, GgmlType::Q4_K),
            ("attn_k", kv, h, GgmlType::Q4_K),
            ("attn_v", kv, h, GgmlType::Q6_K),
            ("attn_output", h, h, GgmlType::Q4_K),
            ("ffn_gate", f, h, GgmlType::Q4_K),
            ("ffn_up", f, h, GgmlType::Q4_K),
            ("ffn_down", h, f, GgmlType::Q6_K),
        ] {
            w.tensor(&p(name), &[cols, rows], ty, random_blocks(ty, rows * cols, &mut rng))?;
        }
    }
    w.tensor_f32("output_norm.weight", &[h], &vec![1.0; h])?;
    w.write(path)?;
    Ok(())
}

/// Median of `values`.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the bench and returns the report.
pub fn run(bench: &QuantizedBench) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let synthetic = dir.path().join("synthetic-0.4b-q4_k.gguf");
    write_synthetic(&synthetic)?;
    let smollm = fetch_smollm2(&default_cache_dir())?;
    let device = cpu_device();
    let mut rows = Vec::new();
    for (model, path) in [("SmolLM2-135M Q4_1", smollm.as_path()), ("synthetic 0.4B Q4_K/Q6_K", synthetic.as_path())] {
        let gguf = Gguf::open(path)?;
        let mut measured = Vec::new();
        for blocks in [false, true] {
            let started = Instant::now();
            let llm = if blocks {
                LlamaModel::from_gguf_quantized(&gguf, 2048, &device)?
            } else {
                LlamaModel::from_gguf(&gguf, 2048, &device)?
            };
            let load_s = started.elapsed().as_secs_f64();
            let vocab = llm.config.vocab_size as u64;
            let mut rng = SeededRng::new(9);
            let prompt: Vec<u32> = (0..bench.prompt).map(|_| rng.below(vocab) as u32).collect();
            let (mut prefill, mut decode) = (Vec::new(), Vec::new());
            for _ in 0..bench.runs {
                let mut cache = KvCache::default();
                let t = Instant::now();
                llm.step(&prompt, &mut cache)?;
                prefill.push(bench.prompt as f64 / t.elapsed().as_secs_f64());
                let t = Instant::now();
                for i in 0..bench.tokens {
                    llm.step(&[(i as u64 % vocab) as u32], &mut cache)?;
                }
                decode.push(bench.tokens as f64 / t.elapsed().as_secs_f64());
            }
            let row = json!({
                "model": model,
                "weights": if blocks { "blocks" } else { "f32" },
                "load_s": load_s,
                "projection_mib": llm.projection_bytes().unwrap_or(0) as f64 / (1 << 20) as f64,
                "prefill_tok_s": median(prefill),
                "decode_tok_s": median(decode),
            });
            eprintln!("{row}");
            measured.push(row);
        }
        let ratio =
            |key: &str| measured[1][key].as_f64().unwrap_or(f64::NAN) / measured[0][key].as_f64().unwrap_or(f64::NAN);
        rows.push(json!({
            "model": model,
            "f32": measured[0],
            "blocks": measured[1],
            "decode_ratio_blocks_over_f32": ratio("decode_tok_s"),
            "prefill_ratio_blocks_over_f32": ratio("prefill_tok_s"),
            "memory_ratio_blocks_over_f32": ratio("projection_mib"),
        }));
    }
    Ok(json!({
        "bench": "quantized",
        "threads": rayon::current_num_threads(),
        "prompt_tokens": bench.prompt,
        "decoded_tokens": bench.tokens,
        "runs": bench.runs,
        "models": rows,
    }))
}
