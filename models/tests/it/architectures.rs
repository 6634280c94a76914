//! The decoder families a downloaded GGUF may hold — Llama 3.x (grouped K/V
//! heads, `rope_freqs` factors, an untied output), Qwen2/2.5 (Q/K/V biases,
//! RoPE on head halves, linear RoPE scaling, tied embeddings) and Qwen3
//! (QK-norm, heads wider than hidden / heads) — each as a small model with
//! random weights, K-quant and other block types, written as GGUF here. Both
//! forward passes (the fused CPU path, with f32 weights or with the blocks
//! kept, and the burn graph), prefilling then
//! decoding through the KV cache, must give the logits of a NumPy forward
//! pass over the same file read by the `gguf` package
//! (`tests/data/reference_forward.py`). A missing `gguf` package fails the
//! test unless `TWINFLOW_SKIP_GGUF=1`.

use std::path::Path;
use std::process::Command;

use twinflow_models::cpu_device;
use twinflow_models::gguf::{GgmlType, Gguf, GgufWriter, Meta};
use twinflow_models::llama::{Architecture, KvCache, LlamaConfig, LlamaModel};
use twinflow_schemas::rng::SeededRng;

pub(crate) const VOCAB: usize = 64;
const HIDDEN: usize = 256;
const FFN: usize = 512;
const LAYERS: usize = 2;
const TOKENS: usize = 12;
/// Tokens run in the first step (prefill); the rest are decoded one by one.
const PREFILL: usize = 7;

/// An `f32` within a half's range as half bits (truncated; subnormals too).
fn half_bits(v: f32) -> [u8; 2] {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!(exp < 31, "{v} is beyond a half's range");
    let bits = if exp >= 1 {
        sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
    } else {
        sign | (v.abs() * 16_777_216.0) as u16
    };
    bits.to_le_bytes()
}

/// A `[rows, cols]` matrix (or a vector with `rows` 1) of `ty`, random, of
/// magnitude about `scale`: random blocks whose scale fields are set so.
fn random_tensor(ty: GgmlType, rows: usize, cols: usize, scale: f32, rng: &mut SeededRng) -> Vec<u8> {
    let n = rows * cols;
    let mut value = || (rng.unit() as f32 * 2.0 - 1.0) * scale;
    match ty {
        GgmlType::F32 => return (0..n).flat_map(|_| value().to_le_bytes()).collect(),
        GgmlType::F16 => return (0..n).flat_map(|_| half_bits(value())).collect(),
        GgmlType::BF16 => return (0..n).flat_map(|_| value().to_bits().to_le_bytes()[2..].to_vec()).collect(),
        _ => {}
    }
    let (block, size) = ty.block();
    // Offsets of the f16 scale fields and the largest |quant · sub-scale| they multiply.
    let (fields, range): (&[usize], f32) = match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => (&[0], 128.0),
        GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0, 2], 32.0),
        GgmlType::Q2_K => (&[80, 82], 45.0),
        GgmlType::Q3_K => (&[108], 128.0),
        GgmlType::Q4_K => (&[0, 2], 63.0 * 15.0),
        GgmlType::Q5_K => (&[0, 2], 63.0 * 31.0),
        GgmlType::Q6_K => (&[208], 128.0 * 32.0),
        other => panic!("no random blocks for {other:?}"),
    };
    let mut data: Vec<u8> = (0..n / block * size).map(|_| rng.below(256) as u8).collect();
    for b in data.chunks_exact_mut(size) {
        for &at in fields {
            b[at..at + 2].copy_from_slice(&half_bits(scale / range * (0.5 + rng.unit() as f32)));
        }
    }
    data
}

pub(crate) struct Spec {
    pub(crate) arch: Architecture,
    /// Llama 3.1's `rope_freqs` (Llama only).
    pub(crate) rope_factors: bool,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    /// Types of Q, K, V, output, gate, up, down and the token embeddings.
    pub(crate) types: [GgmlType; 8],
    /// The output projection's type, or `None` for tied embeddings.
    pub(crate) output: Option<GgmlType>,
}

pub(crate) fn write_model(spec: &Spec, path: &Path, rng: &mut SeededRng) {
    use GgmlType::F32;
    let arch = spec.arch.name();
    let key = |k: &str| format!("{arch}.{k}");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Meta::String(arch.into()))
        .meta(&key("block_count"), Meta::U32(LAYERS as u32))
        .meta(&key("context_length"), Meta::U32(64))
        .meta(&key("embedding_length"), Meta::U32(HIDDEN as u32))
        .meta(&key("feed_forward_length"), Meta::U32(FFN as u32))
        .meta(&key("attention.head_count"), Meta::U32(spec.heads as u32))
        .meta(&key("attention.head_count_kv"), Meta::U32(spec.kv_heads as u32))
        .meta(&key("attention.layer_norm_rms_epsilon"), Meta::F32(1e-6))
        .meta("tokenizer.ggml.tokens", Meta::Strings((0..VOCAB).map(|i| format!("t{i}")).collect()));
    let (q, kv) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
    let [tq, tk, tv, to, tg, tu, td, te] = spec.types;
    let mut tensor = |w: &mut GgufWriter, name: &str, ty: GgmlType, rows: usize, cols: usize, scale: f32| {
        let dims: Vec<usize> = if rows == 1 { vec![cols] } else { vec![cols, rows] };
        w.tensor(name, &dims, ty, random_tensor(ty, rows, cols, scale, rng)).unwrap();
    };
    match spec.arch {
        Architecture::Llama => {
            w.meta(&key("rope.freq_base"), Meta::F32(500_000.0));
            // Llama 3.1's long-context factors: low frequencies slowed.
            if spec.rope_factors {
                let factors: Vec<f32> = (0..spec.head_dim / 2).map(|i| 1.0 + (i as f32 / 4.0).floor()).collect();
                w.tensor_f32("rope_freqs.weight", &[spec.head_dim / 2], &factors).unwrap();
            }
        }
        Architecture::Qwen2 => {
            w.meta(&key("rope.freq_base"), Meta::F32(1_000_000.0))
                .meta(&key("rope.scaling.type"), Meta::String("linear".into()))
                .meta(&key("rope.scaling.factor"), Meta::F32(2.0));
        }
        Architecture::Qwen3 => {
            w.meta(&key("rope.freq_base"), Meta::F32(1_000_000.0))
                .meta(&key("attention.key_length"), Meta::U32(spec.head_dim as u32))
                .meta(&key("attention.value_length"), Meta::U32(spec.head_dim as u32));
        }
    }
    tensor(&mut w, "token_embd.weight", te, VOCAB, HIDDEN, 1.0);
    for i in 0..LAYERS {
        let p = |n: &str| format!("blk.{i}.{n}");
        let gain = |w: &mut GgufWriter, name: &str, n: usize| {
            w.tensor_f32(name, &[n], &vec![1.0; n]).unwrap();
        };
        gain(&mut w, &p("attn_norm.weight"), HIDDEN);
        gain(&mut w, &p("ffn_norm.weight"), HIDDEN);
        tensor(&mut w, &p("attn_q.weight"), tq, q, HIDDEN, 0.15);
        tensor(&mut w, &p("attn_k.weight"), tk, kv, HIDDEN, 0.15);
        tensor(&mut w, &p("attn_v.weight"), tv, kv, HIDDEN, 0.15);
        tensor(&mut w, &p("attn_output.weight"), to, HIDDEN, q, 0.1);
        tensor(&mut w, &p("ffn_gate.weight"), tg, FFN, HIDDEN, 0.1);
        tensor(&mut w, &p("ffn_up.weight"), tu, FFN, HIDDEN, 0.1);
        tensor(&mut w, &p("ffn_down.weight"), td, HIDDEN, FFN, 0.05);
        if spec.arch == Architecture::Qwen2 {
            tensor(&mut w, &p("attn_q.bias"), F32, 1, q, 0.5);
            tensor(&mut w, &p("attn_k.bias"), F32, 1, kv, 0.5);
            tensor(&mut w, &p("attn_v.bias"), F32, 1, kv, 0.5);
        }
        if spec.arch == Architecture::Qwen3 {
            tensor(&mut w, &p("attn_q_norm.weight"), F32, 1, spec.head_dim, 1.5);
            tensor(&mut w, &p("attn_k_norm.weight"), F32, 1, spec.head_dim, 1.5);
        }
    }
    w.tensor_f32("output_norm.weight", &[HIDDEN], &[1.0; HIDDEN]).unwrap();
    if let Some(ty) = spec.output {
        tensor(&mut w, "output.weight", ty, VOCAB, HIDDEN, 0.2);
    }
    w.write(path).unwrap();
}

/// The reference's logits `[TOKENS][VOCAB]`.
pub(crate) fn reference(path: &Path, ids: &[u32], dir: &Path) -> Vec<Vec<f32>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/reference_forward.py");
    let out = dir.join("logits.f32");
    let ids = serde_json::to_string(ids).unwrap();
    let run = Command::new("python3").arg(script).arg(path).arg(ids).arg(&out).output().unwrap();
    assert!(run.status.success(), "reference failed: {}", String::from_utf8_lossy(&run.stderr));
    let values: Vec<f32> =
        std::fs::read(&out).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    values.chunks_exact(VOCAB).map(<[f32]>::to_vec).collect()
}

/// Whether the `gguf` package (and numpy) can run; when not, fails the test
/// unless `TWINFLOW_SKIP_GGUF=1`.
pub(crate) fn gguf_py() -> bool {
    if Command::new("python3").args(["-c", "import gguf, numpy"]).output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    twinflow_schemas::testing::tool_missing("gguf", "python3 -m pip install gguf==0.19.0");
    false
}

fn check(spec: Spec, seed: u64) {
    if !gguf_py() {
        return;
    }
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    write_model(&spec, &path, &mut rng);
    let ids: Vec<u32> = (0..TOKENS).map(|_| rng.below(VOCAB as u64) as u32).collect();
    let expected = reference(&path, &ids, dir.path());
    // The logits change along the sequence: a comparison that can fail.
    let spread = expected[0].iter().zip(&expected[TOKENS - 1]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(spread > 0.05, "{:?}: logits barely change ({spread}): {:?}", spec.arch, &expected[0][..4]);

    let gguf = Gguf::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&gguf).unwrap();
    assert_eq!((config.architecture, config.head_dim), (spec.arch, spec.head_dim));
    let device = cpu_device();
    let models = [
        LlamaModel::from_gguf(&gguf, 64, &device).unwrap(),
        LlamaModel::from_gguf_quantized(&gguf, 64, &device).unwrap(),
        LlamaModel::from_gguf_burn_graph(&gguf, 64, &device).unwrap(),
    ];
    // Kept as blocks, the projections take a fraction of their f32 bytes.
    let (f32_bytes, block_bytes) = (models[0].projection_bytes().unwrap(), models[1].projection_bytes().unwrap());
    assert!(block_bytes * 3 < f32_bytes, "{:?}: {block_bytes} bytes as blocks, {f32_bytes} as f32", spec.arch);
    for (i, model) in models.iter().enumerate() {
        let path = if i == 1 { "fused-cpu with blocks" } else { model.path() };
        let mut cache = KvCache::default();
        let mut steps = vec![(PREFILL - 1, model.step(&ids[..PREFILL], &mut cache).unwrap())];
        for t in PREFILL..TOKENS {
            steps.push((t, model.step(&ids[t..=t], &mut cache).unwrap()));
        }
        for (t, logits) in steps {
            let scale = expected[t].iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = logits.iter().zip(&expected[t]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            // Normalised squared error: Σ(a − b)² / Σb².
            let nmse = logits.iter().zip(&expected[t]).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>()
                / expected[t].iter().map(|b| f64::from(*b).powi(2)).sum::<f64>();
            // Decoding with blocks multiplies 8-bit activations (as llama.cpp
            // does): held to a normalised error, not to f32's last digits.
            let within = if i == 1 && t >= PREFILL { nmse <= 1e-3 } else { diff <= 1e-3 * scale };
            assert!(
                within,
                "{:?} on {path}: position {t} differs from the reference by {diff} (logits up to {scale}; nmse {nmse:.2e})",
                spec.arch,
            );
        }
    }
}

impl Spec {
    /// Llama 3.x: grouped K/V heads, K-quant projections, an untied F16 output;
    /// with `rope_factors`, Llama 3.1's `rope_freqs`.
    pub(crate) fn llama3(rope_factors: bool) -> Self {
        use GgmlType::*;
        Spec {
            arch: Architecture::Llama,
            rope_factors,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            types: [Q4_K, Q5_K, Q6_K, Q8_0, Q4_K, Q3_K, Q2_K, Q6_K],
            output: Some(F16),
        }
    }

    /// Qwen2: one K/V head, the 32-element block types, BF16 embeddings tied to the output.
    pub(crate) fn qwen2() -> Self {
        use GgmlType::*;
        Spec {
            arch: Architecture::Qwen2,
            rope_factors: false,
            heads: 4,
            kv_heads: 1,
            head_dim: 64,
            types: [Q5_0, Q5_1, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, BF16],
            output: None,
        }
    }

    /// Qwen3: heads of 48 (4 × 48 ≠ hidden 256), an untied Q6_K output.
    pub(crate) fn qwen3() -> Self {
        use GgmlType::*;
        Spec {
            arch: Architecture::Qwen3,
            rope_factors: false,
            heads: 4,
            kv_heads: 2,
            head_dim: 48,
            types: [Q6_K, Q4_K, Q8_0, F16, Q5_K, Q4_K, Q6_K, F16],
            output: Some(Q6_K),
        }
    }
}

#[test]
fn llama3_with_rope_factors_and_k_quants_matches_the_reference() {
    check(Spec::llama3(true), 1);
}

#[test]
fn qwen2_with_biases_and_half_rotation_matches_the_reference() {
    check(Spec::qwen2(), 2);
}

#[test]
fn qwen3_with_qk_norm_and_wide_heads_matches_the_reference() {
    check(Spec::qwen3(), 3);
}
