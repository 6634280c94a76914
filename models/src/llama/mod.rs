//! A Llama-architecture decoder in burn (SmolLM2, TinyLlama, Llama 2/3 shapes),
//! loaded from a GGUF file, with a KV cache for incremental decoding.
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
//! GGUF converters permute Q and K so that RoPE rotates adjacent pairs
//! `(2i, 2i+1)`, which is what burn's [`RotaryEncoding`] does.
//!
//! On the CPU device the same network runs as BLAS products and row loops
//! (`fused.rs`, the fast decode path); the burn graph here is the reference
//! it is tested against and the path on other devices.
//!
//! Files: `tokenizer.rs` (BPE and chat template from the GGUF metadata),
//! `generate.rs` (sampling, stop conditions, streaming: [`crate::LocalLlm`]),
//! `fused.rs`, `lora/` (LoRA fine-tuning on the burn graph, merged into
//! both paths for serving: `weights.rs`, `examples.rs`, `training.rs`).

mod fused;
pub mod generate;
pub mod lora;
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

/// The hyper-parameters of a Llama network, from `llama.*` GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    /// Longest sequence (prompt + generated) the model was trained for.
    pub context_length: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
}

impl LlamaConfig {
    /// Reads the config from `gguf`'s metadata; only `general.architecture = llama` is accepted.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Config {
                path: gguf.path().to_owned(),
                reason: format!("architecture {arch:?} is not supported (llama is)"),
            });
        }
        let heads = gguf.get_usize("llama.attention.head_count")?;
        let config = Self {
            vocab_size: gguf.get("tokenizer.ggml.tokens")?.as_array().map_or(0, <[_]>::len),
            hidden_size: gguf.get_usize("llama.embedding_length")?,
            intermediate_size: gguf.get_usize("llama.feed_forward_length")?,
            num_layers: gguf.get_usize("llama.block_count")?,
            num_heads: heads,
            num_kv_heads: gguf.get_usize("llama.attention.head_count_kv").unwrap_or(heads),
            context_length: gguf.get_usize("llama.context_length")?,
            rope_theta: gguf.get_f64("llama.rope.freq_base").unwrap_or(10_000.0),
            rms_eps: gguf.get_f64("llama.attention.layer_norm_rms_epsilon")?,
        };
        let fits = config.num_heads > 0
            && config.num_kv_heads > 0
            && config.hidden_size > 0
            && config.intermediate_size > 0
            && config.num_layers > 0
            && config.hidden_size / config.num_heads > 0
            && config.hidden_size % config.num_heads == 0
            && config.num_heads % config.num_kv_heads == 0
            && config.head_dim() % 2 == 0
            && config.vocab_size > 0;
        if !fits {
            return Err(Error::Config {
                path: gguf.path().to_owned(),
                reason: format!("inconsistent shape: {config:?}"),
            });
        }
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// Attention with grouped K/V heads.
#[derive(Module, Debug)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
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
        let [b, s, h] = x.dims();
        let d = h / self.heads;
        let split = |t: Tensor<3>, n: usize| t.reshape([b, s, n, d]).swap_dims(1, 2);
        let q = rope.apply(split(self.q.forward(x.clone()), self.heads), start);
        let k = rope.apply(split(self.k.forward(x.clone()), self.kv_heads), start);
        let v = split(self.v.forward(x), self.kv_heads);
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
        self.o.forward(context.swap_dims(1, 2).reshape([b, s, h]))
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
        if *device == crate::cpu_device() {
            let (config, embeddings) = Self::config_and_embeddings(gguf, max_context)?;
            let fused = fused::FusedLlama::from_gguf(gguf, &config, &embeddings)?;
            return Ok(Self { config, network: None, fused: Some(fused), embeddings, device: device.clone() });
        }
        Self::from_gguf_burn_graph(gguf, max_context, device)
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
        let kv = config.num_kv_heads * config.head_dim();
        let tensor =
            |values: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(values, shape), device);
        // GGUF `[in, out]` (ne order) is PyTorch's `[out, in]` row-major; burn's Linear wants `[in, out]`.
        let linear_from = |rows: &[f32], d_in: usize, d_out: usize| Linear {
            weight: Param::from_tensor(tensor(transpose(rows, d_out, d_in), [d_in, d_out])),
            bias: None,
        };
        let linear = |name: &str, d_in: usize, d_out: usize| -> Result<Linear> {
            Ok(linear_from(&gguf.tensor_f32(name, &[d_in, d_out])?, d_in, d_out))
        };
        let norm = |name: &str| -> Result<RmsNorm> {
            let mut norm = RmsNormConfig::new(h).with_epsilon(config.rms_eps).init(device);
            let gamma = gguf.tensor_f32(name, &[h])?;
            norm.gamma = Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [h]), device));
            Ok(norm)
        };
        let blocks = (0..config.num_layers)
            .map(|i| -> Result<Block> {
                let p = format!("blk.{i}");
                Ok(Block {
                    attn_norm: norm(&format!("{p}.attn_norm.weight"))?,
                    attn: Attention {
                        q: linear(&format!("{p}.attn_q.weight"), h, h)?,
                        k: linear(&format!("{p}.attn_k.weight"), h, kv)?,
                        v: linear(&format!("{p}.attn_v.weight"), h, kv)?,
                        o: linear(&format!("{p}.attn_output.weight"), h, h)?,
                        heads: config.num_heads,
                        kv_heads: config.num_kv_heads,
                    },
                    ffn_norm: norm(&format!("{p}.ffn_norm.weight"))?,
                    ffn: FeedForward {
                        gate: linear(&format!("{p}.ffn_gate.weight"), h, f)?,
                        up: linear(&format!("{p}.ffn_up.weight"), h, f)?,
                        down: linear(&format!("{p}.ffn_down.weight"), f, h)?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Tied output unless the file has its own.
        let output = if gguf.tensors.contains_key("output.weight") {
            linear("output.weight", h, v)?
        } else {
            linear_from(&embeddings, h, v)
        };
        let rope = RotaryEncodingConfig::new(config.context_length, config.head_dim())
            .with_theta(config.rope_theta as f32)
            .init(device);
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
