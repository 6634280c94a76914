//! LoRA supervised fine-tuning of the decoder: the "twin" learns to answer
//! like the author from (question, the author's own text) pairs.
//!
//! ```text
//!  (question, answer) ─▶ chat template(user: question) ++ answer ++ <end of turn> ─▶ SftExample
//!                                                        └─ only these tokens are learned ─┘
//!  GGUF ─▶ burn graph on the autodiff device ─▶ burn's apply_lora on the attention
//!          projections Q, K, V, O: W + (α/r)·A·B, A ~ N(0, 1/r), B = 0, W frozen
//!  batches (right-padded) ─▶ causal forward ─▶ hidden states of answer positions
//!          ─▶ output projection ─▶ −log p(next token) ─▶ mean ─▶ backward ─▶ Adam (A, B only)
//!  ─▶ LoraWeights (A, B per layer and projection) ─▶ lora.safetensors
//!  serving: LlamaModel::merge_lora adds (α/r)·(A·B)ᵀ into the fused decode weights: no cost per token
//! ```
//!
//! Evaluation is the mean negative log-likelihood of held-out answer tokens
//! (perplexity = e^nll) under the base model, the active twin and a
//! candidate, all through the same burn graph.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::{Lora, Module, ParamGroup};
use burn::nn::Linear;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::tokenizer::{ChatMessage, ChatTokenizer};
use super::{Llama, LlamaConfig, LlamaModel};
use crate::adapter::{scalar, shuffle};
use crate::gguf::Gguf;
use crate::{Error, Result};

/// An attention projection LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O];

    /// `q`, `k`, `v` or `o`: the field of the burn attention module.
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
        }
    }

    /// The GGUF tensor it adapts (`attn_q` …).
    fn gguf_name(self) -> &'static str {
        match self {
            LoraTarget::Q => "attn_q",
            LoraTarget::K => "attn_k",
            LoraTarget::V => "attn_v",
            LoraTarget::O => "attn_output",
        }
    }

    fn from_gguf_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.gguf_name() == name)
    }

    /// `(in, out)` of the projection.
    fn dims(self, config: &LlamaConfig) -> (usize, usize) {
        let h = config.hidden_size;
        match self {
            LoraTarget::Q | LoraTarget::O => (h, h),
            LoraTarget::K | LoraTarget::V => (h, config.num_kv_heads * config.head_dim()),
        }
    }
}

/// How to fine-tune.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraTraining {
    /// Rank r of each adapter.
    pub rank: usize,
    /// α: the adapter's update is scaled by α / r.
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
    /// Passes over the training examples.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Longest example in tokens (prompt and answer; longer answers are cut).
    pub max_tokens: usize,
    /// Seed of the batch order and of A's initialisation.
    pub seed: u64,
}

impl Default for LoraTraining {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: LoraTarget::ALL.to_vec(),
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-3,
            max_tokens: 192,
            seed: 7,
        }
    }
}

/// One supervised example: the prompt's tokens, then the answer's, which
/// are the ones learned (and scored).
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    /// Index in `ids` of the first answer token (≥ 1).
    pub answer_start: usize,
}

impl SftExample {
    /// `question` as the user's turn (through the chat template), then
    /// `answer` and the end-of-turn token, cut to `max_tokens`. `None` when
    /// the prompt leaves no room for at least 8 answer tokens, or the answer is empty.
    pub fn from_chat(
        tokenizer: &ChatTokenizer,
        question: &str,
        answer: &str,
        max_tokens: usize,
    ) -> Result<Option<Self>> {
        let prompt = tokenizer.apply_chat_template(&[ChatMessage::new("user", question)])?;
        let mut ids = tokenizer.encode(&prompt)?;
        let mut answer_ids = tokenizer.encode(&tokenizer.neutralise(answer.trim()))?;
        if answer_ids.is_empty() || ids.len() + 8 > max_tokens {
            return Ok(None);
        }
        if let Some(end) = tokenizer.end_of_turn() {
            answer_ids.push(end);
        }
        answer_ids.truncate(max_tokens - ids.len());
        let answer_start = ids.len();
        ids.extend(answer_ids);
        Ok(Some(Self { ids, answer_start }))
    }

    /// Tokens learned: every answer token.
    pub fn answer_tokens(&self) -> usize {
        self.ids.len() - self.answer_start
    }
}

/// The trained factors: for each (layer, projection), `A` `[in, r]` and `B`
/// `[r, out]`, row-major, with `ΔW = (α/r)·A·B` in burn's `[in, out]` orientation.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraWeights {
    pub rank: usize,
    pub alpha: f64,
    factors: BTreeMap<(usize, LoraTarget), (Vec<f32>, Vec<f32>)>,
}

impl LoraWeights {
    /// `α / r`.
    pub fn scale(&self) -> f32 {
        (self.alpha / self.rank as f64) as f32
    }

    /// Adapted projections.
    pub fn len(&self) -> usize {
        self.factors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.factors.is_empty()
    }

    /// Trainable numbers (A and B of every projection).
    pub fn parameters(&self) -> usize {
        self.factors.values().map(|(a, b)| a.len() + b.len()).sum()
    }

    /// `ΔW` of one projection in GGUF's `[out, in]` row order.
    fn delta_rows(&self, a: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
        let (r, scale) = (self.rank, self.scale());
        let mut delta = vec![0f32; d_out * d_in];
        for i in 0..d_in {
            let a_row = &a[i * r..][..r];
            for (k, a_ik) in a_row.iter().enumerate() {
                let b_row = &b[k * d_out..][..d_out];
                for (o, b_ko) in b_row.iter().enumerate() {
                    delta[o * d_in + i] += scale * a_ik * b_ko;
                }
            }
        }
        delta
    }

    /// Writes `blk.<layer>.<attn_q|attn_k|attn_v|attn_output>.lora_a` `[in, r]`
    /// and `.lora_b` `[r, out]` (F32) with `rank` and `alpha` in the metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bad = |e: safetensors::SafeTensorError| Error::Weights { path: path.to_owned(), reason: e.to_string() };
        let r = self.rank;
        let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for ((layer, target), (a, b)) in &self.factors {
            let name = format!("blk.{layer}.{}", target.gguf_name());
            let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            bytes.push((format!("{name}.lora_a"), vec![a.len() / r, r], le(a)));
            bytes.push((format!("{name}.lora_b"), vec![r, b.len() / r], le(b)));
        }
        let views = bytes
            .iter()
            .map(|(name, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|view| (name.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(bad)?;
        let metadata = std::collections::HashMap::from([
            ("format".to_owned(), "twinflow-lora".to_owned()),
            ("rank".to_owned(), r.to_string()),
            ("alpha".to_owned(), self.alpha.to_string()),
        ]);
        let out = safetensors::serialize(views, Some(metadata)).map_err(bad)?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, out).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Reads factors written by [`LoraWeights::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Weights { path: path.to_owned(), reason };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let rank: usize = meta.get("rank").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no rank".into()))?;
        let alpha: f64 = meta.get("alpha").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no alpha".into()))?;
        let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut halves: BTreeMap<(usize, LoraTarget), (Option<Vec<f32>>, Option<Vec<f32>>)> = BTreeMap::new();
        for (name, view) in tensors.tensors() {
            let parts: Vec<&str> = name.split('.').collect();
            let parsed = match parts.as_slice() {
                ["blk", layer, target, half] => {
                    layer.parse::<usize>().ok().zip(LoraTarget::from_gguf_name(target)).zip(match *half {
                        "lora_a" => Some(true),
                        "lora_b" => Some(false),
                        _ => None,
                    })
                }
                _ => None,
            };
            let Some(((layer, target), is_a)) = parsed else {
                return Err(bad(format!("unexpected tensor {name}")));
            };
            let shape = view.shape();
            let expected_rank_dim = if is_a { shape.get(1) } else { shape.first() };
            if view.dtype() != safetensors::Dtype::F32 || shape.len() != 2 || expected_rank_dim != Some(&rank) {
                return Err(bad(format!("{name}: expected F32 with rank {rank}, got {:?} {shape:?}", view.dtype())));
            }
            let values: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let entry = halves.entry((layer, target)).or_default();
            if is_a { entry.0 = Some(values) } else { entry.1 = Some(values) }
        }
        let mut factors = BTreeMap::new();
        for (key, pair) in halves {
            let (Some(a), Some(b)) = pair else {
                return Err(bad(format!("layer {} {:?} lacks one of its two factors", key.0, key.1)));
            };
            factors.insert(key, (a, b));
        }
        Ok(Self { rank, alpha, factors })
    }
}

impl LlamaModel {
    /// Adds `(α/r)·A·B` of every adapted projection to the weights: the fused
    /// path and the burn graph then run the fine-tuned model at the base model's speed.
    pub fn merge_lora(&mut self, lora: &LoraWeights) -> Result<()> {
        let config = self.config.clone();
        for ((layer, target), (a, b)) in &lora.factors {
            let (d_in, d_out) = target.dims(&config);
            if *layer >= config.num_layers || a.len() != d_in * lora.rank || b.len() != lora.rank * d_out {
                return Err(Error::Inference(format!(
                    "the LoRA factors of layer {layer} {target:?} do not fit this model ({} layers, {d_in} → {d_out})",
                    config.num_layers
                )));
            }
            let delta = lora.delta_rows(a, b, d_in, d_out);
            if let Some(fused) = &mut self.fused {
                fused.add_attention_delta(*layer, *target as usize, &delta);
            }
            if let Some(network) = &mut self.network {
                let attn = &mut network.blocks[*layer].attn;
                let linear = match target {
                    LoraTarget::Q => &mut attn.q,
                    LoraTarget::K => &mut attn.k,
                    LoraTarget::V => &mut attn.v,
                    LoraTarget::O => &mut attn.o,
                };
                // The graph's weight is `[in, out]`: the transpose of the rows.
                let update = Tensor::<2>::from_data(
                    TensorData::new(super::transpose(&delta, d_out, d_in), [d_in, d_out]),
                    &self.device,
                );
                linear.weight = linear.weight.clone().map(|w| w + update);
            }
        }
        Ok(())
    }
}

/// What a fine-tuning run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraReport {
    pub examples: usize,
    /// Answer tokens learned per epoch.
    pub answer_tokens: usize,
    pub steps: usize,
    /// Mean loss (nll per answer token) of each epoch.
    pub epoch_losses: Vec<f32>,
    pub trainable_parameters: usize,
    pub seconds: f64,
}

/// Mean negative log-likelihood of the answer tokens of a set of examples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Nll {
    pub examples: usize,
    pub tokens: usize,
    /// Per token, in nats.
    pub mean: f64,
}

impl Nll {
    /// `e^nll`.
    pub fn perplexity(&self) -> f64 {
        self.mean.exp()
    }
}

/// Fine-tunes and scores LoRA adapters of one GGUF model through the burn graph.
#[derive(Debug)]
pub struct LoraTrainer {
    gguf: std::path::PathBuf,
    tokenizer: ChatTokenizer,
    config: LlamaConfig,
    /// The base model on the (non-autodiff) device, for scoring.
    base: LlamaModel,
    device: Device,
    max_tokens: usize,
}

impl LoraTrainer {
    /// Loads `gguf` for examples of up to `max_tokens` tokens on `device`.
    pub fn load(gguf: &Path, max_tokens: usize, device: &Device) -> Result<Self> {
        let file = Gguf::open(gguf)?;
        let base = LlamaModel::from_gguf_burn_graph(&file, max_tokens, device)?;
        Ok(Self {
            gguf: gguf.to_owned(),
            tokenizer: ChatTokenizer::from_gguf(&file)?,
            config: base.config.clone(),
            max_tokens: base.config.context_length,
            base,
            device: device.clone(),
        })
    }

    /// Longest example the trainer takes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// `question` → `answer` as an example for this model (see [`SftExample::from_chat`]).
    pub fn example(&self, question: &str, answer: &str) -> Result<Option<SftExample>> {
        SftExample::from_chat(&self.tokenizer, question, answer, self.max_tokens)
    }

    /// The held-out score of the base model (`lora: None`) or the base model
    /// with `lora` merged, `batch_size` examples per forward pass.
    pub fn nll(&self, examples: &[SftExample], lora: Option<&LoraWeights>, batch_size: usize) -> Result<Nll> {
        let merged;
        let model = match lora {
            Some(lora) => {
                let mut copy = LlamaModel {
                    config: self.base.config.clone(),
                    network: self.base.network.clone(),
                    fused: None,
                    embeddings: Vec::new(),
                    device: self.device.clone(),
                };
                copy.merge_lora(lora)?;
                merged = copy;
                &merged
            }
            None => &self.base,
        };
        let network = model.network.as_ref().ok_or_else(|| Error::Inference("no network loaded".into()))?;
        let (mut sum, mut tokens) = (0f64, 0usize);
        for batch in examples.chunks(batch_size.max(1)) {
            let (loss, n) = self.batch_loss(network, batch, &self.device)?;
            sum += f64::from(scalar(loss)?) * n as f64;
            tokens += n;
        }
        let mean = if tokens == 0 { 0.0 } else { sum / tokens as f64 };
        Ok(Nll { examples: examples.len(), tokens, mean })
    }

    /// The mean nll per answer token of `batch` (a graph on `device`) and the token count.
    fn batch_loss(&self, network: &Llama, batch: &[SftExample], device: &Device) -> Result<(Tensor<1>, usize)> {
        let h = self.config.hidden_size;
        let s = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if s < 2 || s > self.max_tokens {
            return Err(Error::Inference(format!("examples must have 2..={} tokens, got {s}", self.max_tokens)));
        }
        let b = batch.len();
        let mut x = Vec::with_capacity(b * s * h);
        let (mut positions, mut targets) = (Vec::new(), Vec::new());
        for (row, example) in batch.iter().enumerate() {
            for (i, &id) in example.ids.iter().enumerate() {
                let embedding = self
                    .base
                    .embeddings
                    .get(id as usize * h..(id as usize + 1) * h)
                    .ok_or_else(|| Error::Inference(format!("token id {id} is outside the vocabulary")))?;
                x.extend_from_slice(embedding);
                // Position i predicts token i + 1: learned when that token is in the answer.
                if i + 1 >= example.answer_start.max(1) && i + 1 < example.ids.len() {
                    positions.push((row * s + i) as i64);
                    targets.push(i64::from(example.ids[i + 1]));
                }
            }
            // Right padding (never attended to by the real tokens: attention is causal).
            x.extend(std::iter::repeat_n(0.0, (s - example.ids.len()) * h));
        }
        let n = positions.len();
        if n == 0 {
            return Err(Error::Inference("a batch without answer tokens".into()));
        }
        let x = Tensor::<3>::from_data(TensorData::new(x, [b, s, h]), device);
        let mut caches = vec![None; network.blocks.len()];
        let hidden = network.hidden(x, 0, &mut caches).reshape([b * s, h]);
        let picked = hidden.select(0, Tensor::<1, Int>::from_data(TensorData::new(positions, [n]), device));
        let logits = network.output.forward(picked);
        let log_probs = log_softmax(logits, 1);
        let chosen = log_probs.gather(1, Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device));
        Ok((chosen.sum().neg().div_scalar(n as f32), n))
    }

    /// Trains fresh adapters on `examples`; `progress` hears `(step, steps, loss)`.
    pub fn train(
        &self,
        examples: &[SftExample],
        config: &LoraTraining,
        mut progress: impl FnMut(usize, usize, f32),
    ) -> Result<(LoraWeights, LoraReport)> {
        let started = Instant::now();
        if config.rank == 0 || config.targets.is_empty() {
            return Err(Error::Inference("LoRA needs a rank ≥ 1 and at least one target".into()));
        }
        let examples: Vec<&SftExample> = examples.iter().filter(|e| e.ids.len() <= self.max_tokens).collect();
        if examples.is_empty() {
            return Err(Error::Inference(format!("no training example fits {} tokens", self.max_tokens)));
        }
        let device = self.device.clone().autodiff();
        device.seed(config.seed);
        let file = Gguf::open(&self.gguf)?;
        let mut network = LlamaModel::from_gguf_burn_graph(&file, self.max_tokens, &device)?
            .network
            .ok_or_else(|| Error::Inference("no network loaded".into()))?;
        let paths: Vec<String> = (0..self.config.num_layers)
            .flat_map(|i| config.targets.iter().map(move |t| format!("blocks.{i}.attn.{}.weight", t.name())))
            .collect();
        network =
            network.apply_lora(Lora::new(config.rank, config.alpha).set_param_group(ParamGroup::from_paths(paths)));
        let mut optimizer = AdamConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
        let batch = config.batch_size.max(1);
        let steps = examples.len().div_ceil(batch) * config.epochs.max(1);
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut rng = config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut epoch_losses = Vec::new();
        let mut step = 0;
        for _ in 0..config.epochs.max(1) {
            shuffle(&mut order, &mut rng);
            let (mut total, mut tokens) = (0f64, 0usize);
            for indices in order.chunks(batch) {
                let batch: Vec<SftExample> = indices.iter().map(|i| examples[*i].clone()).collect();
                let (loss, n) = self.batch_loss(&network, &batch, &device)?;
                let value = scalar(loss.clone())?;
                if !value.is_finite() {
                    return Err(Error::Inference(format!("fine-tuning diverged at step {}: loss {value}", step + 1)));
                }
                let grads = GradientsParams::from_grads(loss.backward(), &network);
                network = optimizer.step(config.learning_rate, network, grads);
                total += f64::from(value) * n as f64;
                tokens += n;
                step += 1;
                progress(step, steps, value);
            }
            epoch_losses.push((total / tokens.max(1) as f64) as f32);
        }
        let weights = extract(&network, config)?;
        let report = LoraReport {
            examples: examples.len(),
            answer_tokens: examples.iter().map(|e| e.answer_tokens()).sum(),
            steps,
            epoch_losses,
            trainable_parameters: weights.parameters(),
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((weights, report))
    }
}

/// The trained factors of `network`'s adapted projections.
fn extract(network: &Llama, config: &LoraTraining) -> Result<LoraWeights> {
    let read = |t: Tensor<2>| -> Result<Vec<f32>> {
        t.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::Inference(format!("{e:?}")))
    };
    let mut factors = BTreeMap::new();
    for (layer, block) in network.blocks.iter().enumerate() {
        for target in &config.targets {
            let linear: &Linear = match target {
                LoraTarget::Q => &block.attn.q,
                LoraTarget::K => &block.attn.k,
                LoraTarget::V => &block.attn.v,
                LoraTarget::O => &block.attn.o,
            };
            let adapter = linear.weight.adapter().ok_or_else(|| {
                Error::Inference(format!("layer {layer} {target:?} has no LoRA adapter after training"))
            })?;
            let (a, b) = (read(adapter.a.val())?, read(adapter.b.val())?);
            if let Some(bad) = a.iter().chain(&b).find(|v| !v.is_finite()) {
                return Err(Error::Inference(format!("fine-tuning diverged: a non-finite factor ({bad})")));
            }
            factors.insert((layer, *target), (a, b));
        }
    }
    Ok(LoraWeights { rank: config.rank, alpha: config.alpha, factors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_round_trip_and_reject_damage() {
        let mut factors = BTreeMap::new();
        factors.insert((0, LoraTarget::Q), (vec![1.0, 2.0, 3.0, 4.0], vec![0.5, -0.5, 0.25, 1.0, 0.0, 2.0]));
        factors.insert((3, LoraTarget::V), (vec![0.1; 4], vec![0.2; 4]));
        let weights = LoraWeights { rank: 2, alpha: 4.0, factors };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lora.safetensors");
        weights.save(&path).expect("saved");
        assert_eq!(LoraWeights::load(&path).expect("loaded"), weights);
        assert_eq!(weights.parameters(), 4 + 6 + 4 + 4);
        std::fs::write(&path, b"garbage").expect("write");
        assert!(matches!(LoraWeights::load(&path), Err(Error::Weights { .. })));
    }

    #[test]
    fn delta_is_scaled_product_in_row_order() {
        // A [in=2, r=1] = [1, 2]ᵀ, B [r=1, out=3] = [1, 0, -1]; scale 2 → ΔW[in, out] = 2·A·B.
        let weights = LoraWeights { rank: 1, alpha: 2.0, factors: BTreeMap::new() };
        let rows = weights.delta_rows(&[1.0, 2.0], &[1.0, 0.0, -1.0], 2, 3);
        // [out, in]: row o = (2·A[0]·B[o], 2·A[1]·B[o]).
        assert_eq!(rows, vec![2.0, 4.0, 0.0, 0.0, -2.0, -4.0]);
    }
}
