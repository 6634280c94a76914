//! The Llama-family decoder in burn (SmolLM2, TinyLlama, Llama 2/3.x, Qwen2,
//! Qwen2.5, Qwen3: see [`Architecture`]), loaded from a GGUF file of any
//! block type `gguf` reads, with a KV cache for incremental decoding.
//!
//! ```text
//!  ids ─▶ token_embd rows ─▶ N × Block:
//!           x ─▶ RMSNorm ─▶ Q,K,V ─▶ RoPE(Q,K) ─▶ append K,V to the cache
//!             ─▶ softmax(QKᵀ/√d, causal)·V (each K/V head shared by heads/kv_heads query heads)
//!             ─▶ attn_output ─▶ +x
//!             ─▶ RMSNorm ─▶ ffn_down(SiLU(ffn_gate·x) ⊙ ffn_up·x) ─▶ +x
//!      ─▶ RMSNorm ─▶ logits = x·token_embdᵀ (or `output.weight` when not tied)
//! ```
//!
//! GGUF converters permute Llama's Q and K so that RoPE rotates adjacent
//! pairs `(2i, 2i+1)`, which is what burn's [`RotaryEncoding`] does; Qwen
//! models rotate `(i, i + d/2)`, and [`Weights`] permutes their Q and K rows
//! on load so that both forward passes need only the one rotation.
//! Qwen2's Q/K/V biases, Qwen3's QK-norm (RMSNorm per head before RoPE),
//! heads wider than hidden / heads, and RoPE frequency divisors (linear
//! scaling, Llama 3.1's `rope_freqs`) come from the file.
//!
//! On the CPU device the same network runs as BLAS products and row loops
//! (`fused.rs`, the fast decode path); the burn graph here is the reference
//! it is tested against and the path on other devices.
//!
//! Files: `tokenizer.rs` (BPE and chat template from the GGUF metadata),
//! `generate.rs` (sampling, stop conditions, streaming: [`crate::LocalLlm`]),
//! `fused.rs`, `lora/` (LoRA fine-tuning on the burn graph, merged into
//! both paths for serving: `weights.rs`, `examples.rs`, `training.rs`).

pub mod export;
mod fused;
pub mod generate;
pub mod lora;
mod matrix;
mod weights;

pub(crate) use weights::Weights;
pub mod tokenizer;

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm, RmsNormConfig, RotaryEncoding, RotaryEncodingConfig};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::gguf::Gguf;
use crate::{Error, Result};

/// The decoder families this loader runs: one block shape (pre-norm
/// attention with grouped K/V heads and RoPE, SwiGLU), differing in what the
/// metadata and the tensors say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 1/2/3.x, SmolLM, TinyLlama: RoPE on adjacent pairs (the
    /// converter permuted Q and K for it), Llama 3.1's `rope_freqs` factors.
    Llama,
    /// Qwen2 and Qwen2.5: biases on Q, K and V; RoPE on the two halves of a head.
    Qwen2,
    /// Qwen3: Qwen2's RoPE, no biases, RMSNorm of each Q and K head (QK-norm).
    Qwen3,
}

impl Architecture {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            _ => return None,
        })
    }

    /// The name of `general.architecture`, and the prefix of the model's keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }

    /// Whether RoPE rotates the pairs `(i, i + d/2)` of a head (GPT-NeoX's
    /// layout) rather than `(2i, 2i + 1)`.
    fn rotates_halves(self) -> bool {
        !matches!(self, Self::Llama)
    }
}

/// The hyper-parameters of a network, from the GGUF metadata (`<arch>.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Width of one attention head (`attention.key_length`, else hidden / heads).
    pub head_dim: usize,
    /// Longest sequence (prompt + generated) the model was trained for.
    pub context_length: usize,
    pub rope_theta: f64,
    /// What each RoPE frequency is divided by (`head_dim / 2` of them):
    /// linear scaling's factor times Llama 3.1's `rope_freqs`; all 1 without scaling.
    pub rope_divisors: Vec<f64>,
    pub rms_eps: f64,
    /// Q, K and V have biases (Qwen2).
    pub qkv_bias: bool,
    /// Q and K heads are RMS-normalised before RoPE (Qwen3).
    pub qk_norm: bool,
}

impl LlamaConfig {
    /// Reads the config from `gguf`'s metadata and tensor table.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let name = gguf.get_str("general.architecture")?;
        let bad = |reason: String| Error::Config { path: gguf.path().to_owned(), reason };
        let architecture = Architecture::from_name(name)
            .ok_or_else(|| bad(format!("architecture {name:?} is not supported (llama, qwen2 and qwen3 are)")))?;
        let key = |k: &str| format!("{name}.{k}");
        let heads = gguf.get_usize(&key("attention.head_count"))?;
        let hidden = gguf.get_usize(&key("embedding_length"))?;
        let head_dim = match gguf.get_usize(&key("attention.key_length")) {
            Ok(d) => d,
            Err(_) => hidden / heads.max(1),
        };
        if let Ok(v) = gguf.get_usize(&key("attention.value_length"))
            && v != head_dim
        {
            return Err(bad(format!("value heads of {v} differ from key heads of {head_dim}")));
        }
        if let Ok(r) = gguf.get_usize(&key("rope.dimension_count"))
            && r != head_dim
        {
            return Err(bad(format!("RoPE over {r} of {head_dim} dimensions (partial rotation) is not supported")));
        }
        let linear = match gguf.metadata.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => 1.0,
            Some("linear") => gguf.get_f64(&key("rope.scaling.factor"))?,
            Some(other) => return Err(bad(format!("RoPE scaling {other:?} is not supported (linear is)"))),
        };
        let mut rope_divisors = vec![linear; head_dim / 2];
        if gguf.tensors.contains_key("rope_freqs.weight") {
            let factors = gguf.tensor_f32("rope_freqs.weight", &[head_dim / 2])?;
            rope_divisors.iter_mut().zip(factors).for_each(|(d, f)| *d *= f64::from(f));
        }
        let config = Self {
            architecture,
            vocab_size: gguf.get("tokenizer.ggml.tokens")?.as_array().map_or(0, <[_]>::len),
            hidden_size: hidden,
            intermediate_size: gguf.get_usize(&key("feed_forward_length"))?,
            num_layers: gguf.get_usize(&key("block_count"))?,
            num_heads: heads,
            num_kv_heads: gguf.get_usize(&key("attention.head_count_kv")).unwrap_or(heads),
            head_dim,
            context_length: gguf.get_usize(&key("context_length"))?,
            rope_theta: gguf.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_divisors,
            rms_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            qkv_bias: gguf.tensors.contains_key("blk.0.attn_q.bias"),
            qk_norm: gguf.tensors.contains_key("blk.0.attn_q_norm.weight"),
        };
        let fits = config.num_heads > 0
            && config.num_kv_heads > 0
            && config.hidden_size > 0
            && config.intermediate_size > 0
            && config.num_layers > 0
            && config.head_dim > 0
            && config.num_heads % config.num_kv_heads == 0
            && config.head_dim % 2 == 0
            && config.vocab_size > 0
            && config.rope_divisors.iter().all(|d| d.is_finite() && *d > 0.0);
        if !fits {
            return Err(bad(format!("inconsistent shape: {config:?}")));
        }
        Ok(config)
    }

    /// Width of all query heads together (the hidden size, except in models like Qwen3-0.6B).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// RoPE's angle per position of pair `i` (of `head_dim / 2`).
    pub fn rope_frequency(&self, i: usize) -> f64 {
        self.rope_theta.powf(-2.0 * i as f64 / self.head_dim as f64) / self.rope_divisors[i]
    }
}

/// Attention with grouped K/V heads.
#[derive(Module, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Qwen3's RMSNorm of each Q and K head, before RoPE.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The SwiGLU feed-forward block.
#[derive(Module, Debug)]
struct FeedForward {
    gate: Linear,
    up: Linear,
    down: Linear,
}

#[derive(Module, Debug)]
struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    ffn_norm: RmsNorm,
    ffn: FeedForward,
}

/// The decoder network. The token embedding table stays on the host (rows
/// are looked up there); the output projection is on the device.
#[derive(Module, Debug)]
pub struct Llama {
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: RotaryEncoding,
}

/// Keys and values of every position seen so far, per layer: `[1, kv_heads, t, head_dim]`
/// on the burn graph, rows of `kv_heads · head_dim` on the fused path.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    fused: fused::FusedCache,
    len: usize,
}

impl KvCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (a no-op past the end): what a
    /// prompt sharing the first `len` tokens with the cached ones reuses.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for (k, v) in self.layers.iter_mut().flatten() {
            let [b, heads, _, d] = k.dims();
            *k = k.clone().slice([0..b, 0..heads, 0..len, 0..d]);
            *v = v.clone().slice([0..b, 0..heads, 0..len, 0..d]);
        }
        self.fused.truncate(len);
        self.len = len;
    }
}

impl Attention {
    /// `x` `[1, s, h]` at positions `start..start + s` → `[1, s, h]`, appending to `cache`.
    fn forward(
        &self,
        x: Tensor<3>,
        rope: &RotaryEncoding,
        start: usize,
        cache: &mut Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let d = self.head_dim;
        let split = |t: Tensor<3>, n: usize| t.reshape([b, s, n, d]);
        let (mut q, mut k) =
            (split(self.q.forward(x.clone()), self.heads), split(self.k.forward(x.clone()), self.kv_heads));
        if let (Some(q_norm), Some(k_norm)) = (&self.q_norm, &self.k_norm) {
            (q, k) = (q_norm.forward(q), k_norm.forward(k));
        }
        let q = rope.apply(q.swap_dims(1, 2), start);
        let k = rope.apply(k.swap_dims(1, 2), start);
        let v = split(self.v.forward(x), self.kv_heads).swap_dims(1, 2);
        let (k, v) = match cache.take() {
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let t = start + s;
        let group = self.heads / self.kv_heads;
        let widen = |t4: Tensor<4>| {
            if group == 1 {
                return t4;
            }
            t4.unsqueeze_dim::<5>(2).expand([b, self.kv_heads, group, t, d]).reshape([b, self.heads, t, d])
        };
        // Query i (position start + i) sees keys 0..=start + i.
        let mask = (s > 1).then(|| {
            let data: Vec<bool> = (0..s).flat_map(|i| (0..t).map(move |j| j > start + i)).collect();
            Tensor::<2, Bool>::from_data(TensorData::new(data, [s, t]), &q.device())
                .reshape([1, 1, s, t])
                .expand([b, self.heads, s, t])
        });
        let context = attention(q, widen(k), widen(v), mask, None, AttentionModuleOptions::default());
        self.o.forward(context.swap_dims(1, 2).reshape([b, s, self.heads * d]))
    }
}

impl Llama {
    /// The final-normalised hidden states `[b, s, h]` of the embedded tokens
    /// `x` `[b, s, h]` at positions `start..start + s`, extending `caches` (one per layer).
    fn hidden(&self, x: Tensor<3>, start: usize, caches: &mut [Option<(Tensor<4>, Tensor<4>)>]) -> Tensor<3> {
        let mut x = x;
        for (block, layer_cache) in self.blocks.iter().zip(caches) {
            let attended = block.attn.forward(block.attn_norm.forward(x.clone()), &self.rope, start, layer_cache);
            x = x + attended;
            let normed = block.ffn_norm.forward(x.clone());
            let ffn = &block.ffn;
            x = x + ffn.down.forward(silu(ffn.gate.forward(normed.clone())) * ffn.up.forward(normed));
        }
        self.norm.forward(x)
    }

    /// Logits `[1, vocab]` of the last of `x` = the embedded tokens `[1, s, h]`
    /// at positions `cache.len()..`, extending `cache`.
    pub fn forward(&self, x: Tensor<3>, cache: &mut KvCache) -> Tensor<2> {
        let [_, s, _] = x.dims();
        let start = cache.len;
        cache.layers.resize_with(self.blocks.len(), || None);
        let hidden = self.hidden(x, start, &mut cache.layers);
        cache.len = start + s;
        let last = hidden.narrow(1, s - 1, 1);
        let vocab = self.output.weight.dims()[1];
        self.output.forward(last).reshape([1, vocab])
    }
}

/// The decoder with its config and host embedding table: what generation uses.
#[derive(Debug)]
pub struct LlamaModel {
    pub config: LlamaConfig,
    /// The burn graph (other devices, and the reference).
    network: Option<Llama>,
    /// The fast CPU path (on the CPU device).
    fused: Option<fused::FusedLlama>,
    /// `[vocab, hidden]`, row-major.
    embeddings: Vec<f32>,
    device: Device,
}

impl LlamaModel {
    /// Loads the network of `gguf` for `device`, dequantising every tensor to
    /// `f32`: the fused path on the CPU device, the burn graph elsewhere.
    /// Positions are limited to `max_context` (and the model's own limit).
    pub fn from_gguf(gguf: &Gguf, max_context: usize, device: &Device) -> Result<Self> {
        Self::from_gguf_with(gguf, max_context, device, false)
    }

    /// [`from_gguf`](Self::from_gguf) keeping the projections of a block
    /// type (Q4_K, Q8_0, …) as their blocks on the fused path: a quarter to
    /// a seventh of the memory, dequantised in the products.
    pub fn from_gguf_quantized(gguf: &Gguf, max_context: usize, device: &Device) -> Result<Self> {
        Self::from_gguf_with(gguf, max_context, device, true)
    }

    fn from_gguf_with(gguf: &Gguf, max_context: usize, device: &Device, keep_blocks: bool) -> Result<Self> {
        if *device == crate::cpu_device() {
            let (config, embeddings) = Self::config_and_embeddings(gguf, max_context)?;
            let fused = fused::FusedLlama::from_gguf(gguf, &config, &embeddings, keep_blocks)?;
            return Ok(Self { config, network: None, fused: Some(fused), embeddings, device: device.clone() });
        }
        Self::from_gguf_burn_graph(gguf, max_context, device)
    }

    /// Bytes the projections of the fused path take (`None` on the burn graph).
    pub fn projection_bytes(&self) -> Option<usize> {
        self.fused.as_ref().map(fused::FusedLlama::projection_bytes)
    }

    fn config_and_embeddings(gguf: &Gguf, max_context: usize) -> Result<(LlamaConfig, Vec<f32>)> {
        let mut config = LlamaConfig::from_gguf(gguf)?;
        config.context_length = config.context_length.min(max_context).max(1);
        let embeddings = gguf.tensor_f32("token_embd.weight", &[config.hidden_size, config.vocab_size])?;
        Ok((config, embeddings))
    }

    /// [`from_gguf`](Self::from_gguf) always through the burn graph.
    pub fn from_gguf_burn_graph(gguf: &Gguf, max_context: usize, device: &Device) -> Result<Self> {
        let (config, embeddings) = Self::config_and_embeddings(gguf, max_context)?;
        let (h, f, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let (qd, kv, d) = (config.q_dim(), config.kv_dim(), config.head_dim);
        let weights = Weights::new(gguf, &config);
        let tensor =
            |values: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(values, shape), device);
        let vector = |values: Vec<f32>| {
            let n = values.len();
            Param::from_tensor(Tensor::<1>::from_data(TensorData::new(values, [n]), device))
        };
        // GGUF `[in, out]` (ne order) is PyTorch's `[out, in]` row-major; burn's Linear wants `[in, out]`.
        let linear_from = |rows: &[f32], d_in: usize, d_out: usize, bias: Option<Vec<f32>>| Linear {
            weight: Param::from_tensor(tensor(transpose(rows, d_out, d_in), [d_in, d_out])),
            bias: bias.map(vector),
        };
        let linear = |layer: usize, name: &str, d_in: usize, d_out: usize, bias: Option<Vec<f32>>| -> Result<Linear> {
            Ok(linear_from(&weights.matrix(layer, name, d_out, d_in)?, d_in, d_out, bias))
        };
        let norm_of = |gamma: Vec<f32>| {
            let mut norm = RmsNormConfig::new(gamma.len()).with_epsilon(config.rms_eps).init(device);
            norm.gamma = vector(gamma);
            norm
        };
        let norm = |name: &str| -> Result<RmsNorm> { Ok(norm_of(gguf.tensor_f32(name, &[h])?)) };
        let blocks = (0..config.num_layers)
            .map(|i| -> Result<Block> {
                let [q_bias, k_bias, v_bias] = match weights.qkv_bias(i)? {
                    Some([q, k, v]) => [Some(q), Some(k), Some(v)],
                    None => [None, None, None],
                };
                let (q_norm, k_norm) = match weights.qk_norm(i)? {
                    Some([q, k]) => (Some(norm_of(q)), Some(norm_of(k))),
                    None => (None, None),
                };
                Ok(Block {
                    attn_norm: norm(&format!("blk.{i}.attn_norm.weight"))?,
                    attn: Attention {
                        q: linear(i, "attn_q", h, qd, q_bias)?,
                        k: linear(i, "attn_k", h, kv, k_bias)?,
                        v: linear(i, "attn_v", h, kv, v_bias)?,
                        o: linear(i, "attn_output", qd, h, None)?,
                        q_norm,
                        k_norm,
                        heads: config.num_heads,
                        kv_heads: config.num_kv_heads,
                        head_dim: d,
                    },
                    ffn_norm: norm(&format!("blk.{i}.ffn_norm.weight"))?,
                    ffn: FeedForward {
                        gate: linear(i, "ffn_gate", h, f, None)?,
                        up: linear(i, "ffn_up", h, f, None)?,
                        down: linear(i, "ffn_down", f, h, None)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Tied output unless the file has its own.
        let output = if gguf.tensors.contains_key("output.weight") {
            linear_from(&gguf.tensor_f32("output.weight", &[h, v])?, h, v, None)
        } else {
            linear_from(&embeddings, h, v, None)
        };
        let divisors: Vec<f32> = config.rope_divisors.iter().map(|d| *d as f32).collect();
        let rope = RotaryEncodingConfig::new(config.context_length, d)
            .with_theta(config.rope_theta as f32)
            .init_with_frequency_scaling(
                |frequencies| {
                    let n = divisors.len();
                    frequencies.div(Tensor::from_data(TensorData::new(divisors.clone(), [n]), device))
                },
                device,
            );
        let network = Llama { blocks, norm: norm("output_norm.weight")?, output, rope };
        Ok(Self { config, network: Some(network), fused: None, embeddings, device: device.clone() })
    }

    /// Loads a GGUF file (see [`from_gguf`](Self::from_gguf)).
    pub fn load(path: &Path, max_context: usize, device: &Device) -> Result<Self> {
        Self::from_gguf(&Gguf::open(path)?, max_context, device)
    }

    /// `"fused-cpu"` or `"burn-graph"`: which forward pass [`step`](Self::step) runs.
    pub fn path(&self) -> &'static str {
        if self.fused.is_some() { "fused-cpu" } else { "burn-graph" }
    }

    /// The device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `ids` at the positions after `cache` and returns the logits of the
    /// last one. Ids out of the vocabulary, or a sequence past the context, are errors.
    pub fn step(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let h = self.config.hidden_size;
        if ids.is_empty() {
            return Err(Error::Inference("no tokens to run".into()));
        }
        if cache.len() + ids.len() > self.config.context_length {
            return Err(Error::Inference(format!(
                "{} tokens exceed the context of {}",
                cache.len() + ids.len(),
                self.config.context_length
            )));
        }
        let mut x = Vec::with_capacity(ids.len() * h);
        for &id in ids {
            let row = self
                .embeddings
                .get(id as usize * h..(id as usize + 1) * h)
                .ok_or_else(|| Error::Inference(format!("token id {id} is outside the vocabulary")))?;
            x.extend_from_slice(row);
        }
        if let Some(fused) = &self.fused {
            let x = ndarray::Array2::from_shape_vec((ids.len(), h), x).expect("ids × h values");
            let logits = fused.step(x, &mut cache.fused);
            cache.len = cache.fused.len;
            return Ok(logits);
        }
        let network = self.network.as_ref().ok_or_else(|| Error::Inference("no network loaded".into()))?;
        let x = Tensor::<3>::from_data(TensorData::new(x, [1, ids.len(), h]), &self.device);
        let logits = network.forward(x, cache);
        logits.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Inference(format!("{e:?}")))
    }
}

/// `rows` `[r, c]` row-major → `[c, r]` row-major.
fn transpose(rows: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows.len()];
    for (i, row) in rows.chunks_exact(c).enumerate() {
        for (j, value) in row.iter().enumerate() {
            out[j * r + i] = *value;
        }
    }
    out
}
