//! The Llama decoder as blocked matrix products and plain row loops: the fast
//! CPU path.
//!
//! Same network as the burn graph in `mod.rs` (which tests hold it to), laid
//! out for decoding one token at a time, where every step reads all the
//! weights once and is bound by memory: weights stay in GGUF's `[out, in]`
//! row order, Q/K/V are one matrix and gate/up another, and each product is
//! split by output rows into one single-threaded [`matmul`] per rayon thread
//! (a matrix-vector product when decoding, a matrix product for a prompt).
//! burn's generic matmul packs the weight matrix on every call, which doubles
//! the memory traffic of a decode step.

use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

use super::matrix::{Matrix, Part};
use super::{LlamaConfig, Weights};
use crate::Result;
use crate::gguf::Gguf;
use crate::gguf::dot::kernel;
use crate::gguf::half::{f16_to_f32, f32_to_f16};
use crate::matmul::matmul;

mod decode;

struct Block {
    attn_norm: Vec<f32>,
    /// `[q + 2·kv, h]`: Q, K, V stacked.
    qkv: Matrix,
    /// `[q + 2·kv]`: their biases, where the architecture has them (Qwen2).
    qkv_bias: Option<Vec<f32>>,
    /// `[head_dim]` gains of the Q and K heads' RMSNorm (Qwen3).
    qk_norm: Option<[Vec<f32>; 2]>,
    /// `[h, q]`.
    out: Matrix,
    ffn_norm: Vec<f32>,
    /// `[2·f, h]`: gate, up stacked.
    gate_up: Matrix,
    /// `[h, f]`.
    down: Matrix,
}

/// The network on the host.
pub(crate) struct FusedLlama {
    config: LlamaConfig,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    /// `[vocab, h]`: the output projection (the token embeddings when tied;
    /// kept as blocks with the projections, where its type has a kernel).
    output: Matrix,
    /// `cos`, `sin` of position · θᵢ, `[context, head_dim / 2]`.
    rope: (Vec<f32>, Vec<f32>),
}

impl std::fmt::Debug for FusedLlama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FusedLlama").field("layers", &self.blocks.len()).finish_non_exhaustive()
    }
}

/// Keys and values per layer, one row of `kv_heads · head_dim` per position,
/// in half precision (as llama.cpp keeps them): a decoded token reads every
/// cached row, and halves are half the bytes.
#[derive(Debug, Default)]
pub(crate) struct FusedCache {
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    pub(crate) len: usize,
}

/// `values` appended to `rows` in half precision.
fn push_half(rows: &mut Vec<u16>, values: &[f32]) {
    let at = rows.len();
    rows.resize(at + values.len(), 0);
    f32_to_f16(values, &mut rows[at..]);
}

/// `halves` as `f32`.
fn widen(halves: &[u16]) -> Vec<f32> {
    let mut values = vec![0f32; halves.len()];
    f16_to_f32(halves, &mut values);
    values
}

/// `values` rounded to half precision, as the cache will hold them.
fn round_half(values: &mut [f32]) {
    let mut halves = vec![0u16; values.len()];
    f32_to_f16(values, &mut halves);
    f16_to_f32(&halves, values);
}

impl FusedCache {
    /// Keeps the first `len` positions.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.len {
            for rows in self.k.iter_mut().chain(self.v.iter_mut()) {
                let width = rows.len() / self.len;
                rows.truncate(len * width);
            }
            self.len = len;
        }
    }
}

fn stacked(parts: Vec<Vec<f32>>, cols: usize) -> Array2<f32> {
    let values: Vec<f32> = parts.concat();
    Array2::from_shape_vec((values.len() / cols, cols), values).expect("stacked rows × cols values")
}

impl FusedLlama {
    /// Reads the weights of `gguf` for `config`; `embeddings` is `token_embd`
    /// `[vocab, h]`. With `keep_blocks`, the projections of a block type stay
    /// as their blocks (dequantised in the products, `matrix.rs`).
    pub(crate) fn from_gguf(gguf: &Gguf, config: &LlamaConfig, embeddings: &[f32], keep_blocks: bool) -> Result<Self> {
        let (h, f, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let (qd, kv) = (config.q_dim(), config.kv_dim());
        let weights = Weights::new(gguf, config);
        let part = |i: usize, name: &str, rows: usize, cols: usize| weights.part(i, name, rows, cols, keep_blocks);
        let blocks = (0..config.num_layers)
            .map(|i| -> Result<Block> {
                Ok(Block {
                    attn_norm: gguf.tensor_f32(&format!("blk.{i}.attn_norm.weight"), &[h])?,
                    qkv: Matrix::new(vec![
                        part(i, "attn_q", qd, h)?,
                        part(i, "attn_k", kv, h)?,
                        part(i, "attn_v", kv, h)?,
                    ]),
                    qkv_bias: weights.qkv_bias(i)?.map(|parts| parts.concat()),
                    qk_norm: weights.qk_norm(i)?,
                    out: Matrix::new(vec![part(i, "attn_output", h, qd)?]),
                    ffn_norm: gguf.tensor_f32(&format!("blk.{i}.ffn_norm.weight"), &[h])?,
                    gate_up: Matrix::new(vec![part(i, "ffn_gate", f, h)?, part(i, "ffn_up", f, h)?]),
                    down: Matrix::new(vec![part(i, "ffn_down", h, f)?]),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tied = !gguf.tensors.contains_key("output.weight");
        let (info, bytes) = gguf.tensor_bytes(if tied { "token_embd.weight" } else { "output.weight" })?;
        let output = if keep_blocks && kernel(info.ty).is_some() && info.dims == [h, v] {
            Part::blocks(info.ty, v, h, bytes.to_vec())
        } else if tied {
            Part::F32(Array2::from_shape_vec((v, h), embeddings.to_vec()).expect("vocab × h embeddings"))
        } else {
            Part::F32(stacked(vec![gguf.tensor_f32("output.weight", &[h, v])?], h))
        };
        // The logits are read directly (greedy choices between near ties): precise activations.
        let output = Matrix::new(vec![output]).precise();
        let half = config.head_dim / 2;
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for position in 0..config.context_length {
            for i in 0..half {
                let angle = position as f64 * config.rope_frequency(i);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            config: config.clone(),
            blocks,
            norm: gguf.tensor_f32("output_norm.weight", &[h])?,
            output,
            rope: (cos, sin),
        })
    }

    /// Bytes of every block's projections (not the output projection).
    pub(crate) fn projection_bytes(&self) -> usize {
        self.blocks.iter().map(|b| b.qkv.bytes() + b.out.bytes() + b.gate_up.bytes() + b.down.bytes()).sum()
    }

    /// Adds `delta` (`[out, in]` rows) to an attention projection of `layer`:
    /// `which` 0 = Q, 1 = K, 2 = V, 3 = the output projection.
    pub(crate) fn add_attention_delta(&mut self, layer: usize, which: usize, delta: &[f32]) {
        let c = &self.config;
        let (h, qd, kv) = (c.hidden_size, c.q_dim(), c.kv_dim());
        let block = &mut self.blocks[layer];
        let (matrix, rows) = match which {
            0 => (block.qkv.as_f32_mut(), 0..qd),
            1 => (block.qkv.as_f32_mut(), qd..qd + kv),
            2 => (block.qkv.as_f32_mut(), qd + kv..qd + 2 * kv),
            _ => (block.out.as_f32_mut(), 0..h),
        };
        let width = matrix.ncols();
        let mut rows = matrix.slice_mut(s![rows, ..]);
        for (mut row, update) in rows.axis_iter_mut(Axis(0)).zip(delta.chunks_exact(width)) {
            row.iter_mut().zip(update).for_each(|(w, d)| *w += d);
        }
    }

    /// Runs the embedded tokens `x` `[s, h]` at the positions after `cache`
    /// and returns the logits of the last one.
    pub(crate) fn step(&self, mut x: Array2<f32>, cache: &mut FusedCache) -> Vec<f32> {
        if x.nrows() == 1 {
            let x = x.row(0);
            return self.decode(x.as_slice().expect("standard layout"), cache);
        }
        let c = &self.config;
        let (s, d) = (x.nrows(), c.head_dim);
        let (qd, kv) = (c.q_dim(), c.kv_dim());
        let start = cache.len;
        cache.k.resize_with(self.blocks.len(), Vec::new);
        cache.v.resize_with(self.blocks.len(), Vec::new);
        for (layer, block) in self.blocks.iter().enumerate() {
            let normed = rms_norm(&x, &block.attn_norm, c.rms_eps as f32);
            let mut qkv = block.qkv.product(&normed);
            for (i, mut row) in qkv.axis_iter_mut(Axis(0)).enumerate() {
                let row = row.as_slice_mut().expect("standard layout");
                if let Some(bias) = &block.qkv_bias {
                    row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
                }
                for (j, head) in row[..qd + kv].chunks_exact_mut(d).enumerate() {
                    if let Some([q_norm, k_norm]) = &block.qk_norm {
                        rms_norm_row(head, if j < c.num_heads { q_norm } else { k_norm }, c.rms_eps as f32);
                    }
                    self.rotate(head, start + i);
                }
            }
            let (k_cache, v_cache) = (&mut cache.k[layer], &mut cache.v[layer]);
            for row in qkv.axis_iter(Axis(0)) {
                let row = row.as_slice().expect("standard layout");
                push_half(k_cache, &row[qd..qd + kv]);
                push_half(v_cache, &row[qd + kv..]);
            }
            let context = self.attention(&qkv, &widen(k_cache), &widen(v_cache), start);
            x += &block.out.product(&context);
            let normed = rms_norm(&x, &block.ffn_norm, c.rms_eps as f32);
            let gate_up = block.gate_up.product(&normed);
            let f = c.intermediate_size;
            let mut act = Array2::<f32>::zeros((s, f));
            for (mut out, gu) in act.axis_iter_mut(Axis(0)).zip(gate_up.axis_iter(Axis(0))) {
                let (gate, up) = gu.as_slice().expect("standard layout").split_at(f);
                for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            x += &block.down.product(&act);
        }
        cache.len = start + s;
        let last = x.slice(s![s - 1..s, ..]).to_owned();
        let normed = rms_norm(&last, &self.norm, c.rms_eps as f32);
        self.output.product(&normed).into_raw_vec_and_offset().0
    }

    /// RoPE on one head at `position`: pairs `(2i, 2i+1)` rotated by `position · θᵢ`.
    fn rotate(&self, head: &mut [f32], position: usize) {
        let half = head.len() / 2;
        let (cos, sin) = (&self.rope.0[position * half..][..half], &self.rope.1[position * half..][..half]);
        for (i, pair) in head.chunks_exact_mut(2).enumerate() {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos[i] - b * sin[i];
            pair[1] = a * sin[i] + b * cos[i];
        }
    }

    /// Causal attention of the `s` new queries over every cached position,
    /// `[s, h]`: per head and block of [`QUERY_BLOCK`] queries,
    /// `softmax(Q·Kᵀ/√d, masked)·V` as two [`matmul`]s over the keys the block
    /// sees (a prompt's first block reads 64 keys, not all of them), so the
    /// scores held at once are a block's, linear in the context, and the
    /// masked-out half of a prompt's square is never computed.
    fn attention(&self, qkv: &Array2<f32>, k: &[f32], v: &[f32], start: usize) -> Array2<f32> {
        let c = &self.config;
        let (s, d) = (qkv.nrows(), c.head_dim);
        let (kv, group) = (c.kv_dim(), c.num_heads / c.num_kv_heads);
        let t = start + s;
        let keys = ArrayView2::from_shape((t, kv), k).expect("t × kv keys");
        let values = ArrayView2::from_shape((t, kv), v).expect("t × kv values");
        let scale = 1.0 / (d as f32).sqrt();
        let blocks = s.div_ceil(QUERY_BLOCK);
        let parts: Vec<(usize, usize, Array2<f32>)> = (0..c.num_heads * blocks)
            .into_par_iter()
            .map(|job| {
                let (head, first) = (job / blocks, job % blocks * QUERY_BLOCK);
                let end = (first + QUERY_BLOCK).min(s);
                // Keys 0..seen: those the block's last query sees.
                let seen = start + end;
                let g = head / group;
                let q = qkv.slice(s![first..end, head * d..(head + 1) * d]);
                let mut scores = Array2::<f32>::zeros((end - first, seen));
                matmul(scale, q, keys.slice(s![..seen, g * d..(g + 1) * d]).t(), 0.0, scores.view_mut());
                for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                    let row = row.as_slice_mut().expect("standard layout");
                    // Query first + i (position start + first + i) sees keys 0..=start + first + i.
                    let visible = start + first + i + 1;
                    crate::bert::fused::softmax_row(&mut row[..visible]);
                    row[visible..].fill(0.0);
                }
                let mut out = Array2::<f32>::zeros((end - first, d));
                matmul(1.0, scores.view(), values.slice(s![..seen, g * d..(g + 1) * d]), 0.0, out.view_mut());
                (head, first, out)
            })
            .collect();
        let mut out = Array2::<f32>::zeros((s, c.q_dim()));
        for (head, first, part) in parts {
            out.slice_mut(s![first..first + part.nrows(), head * d..(head + 1) * d]).assign(&part);
        }
        out
    }
}

/// Queries whose attention scores a prompt holds at once, per head.
const QUERY_BLOCK: usize = 64;

/// `a · b` in `simd`'s widest registers: one fused multiply-add per register
/// of values, one horizontal sum at the end (the plain loop's per-lane
/// arrays were left scalar by the compiler here, 16 dependent additions per dot).
#[inline(always)]
fn dot<S: pulp::Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (a_head, a_tail) = S::as_simd_f32s(a);
    let (b_head, b_tail) = S::as_simd_f32s(b);
    let mut acc = simd.splat_f32s(0.0);
    for (x, y) in a_head.iter().zip(b_head) {
        acc = simd.mul_add_f32s(*x, *y, acc);
    }
    simd.reduce_sum_f32s(acc) + a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum::<f32>()
}

/// `a · b`, compiled for this CPU's SIMD.
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    struct Dot<'a>(&'a [f32], &'a [f32]);
    impl pulp::WithSimd for Dot<'_> {
        type Output = f32;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
            dot(simd, self.0, self.1)
        }
    }
    pulp::Arch::new().dispatch(Dot(a, b))
}

/// Each row scaled to unit root-mean-square, then by `weight`.
fn rms_norm(x: &Array2<f32>, weight: &[f32], eps: f32) -> Array2<f32> {
    let mut out = x.clone();
    for mut row in out.axis_iter_mut(Axis(0)) {
        rms_norm_row(row.as_slice_mut().expect("standard layout"), weight, eps);
    }
    out
}

/// `row` scaled to unit root-mean-square, then by `weight`, in place.
fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f32) {
    let mean_square = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    let inv = 1.0 / (mean_square + eps).sqrt();
    for (v, w) in row.iter_mut().zip(weight) {
        *v *= inv * w;
    }
}
