//! Fine-tuning and scoring: [`LoraTrainer`] puts burn's LoRA adapters on
//! the attention projections of the burn graph, trains them with Adam on a
//! [`Technique`]'s loss (SFT: the answer tokens' negative log-likelihood;
//! DPO: the preference loss), reads the factors back as [`LoraWeights`], and
//! scores held-out examples ([`Nll`], log-probabilities) with or without them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::{Lora, Module, ParamGroup};
use burn::nn::Linear;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use twinflow_schemas::rng::SeededRng;

use super::technique::Technique;
use super::{LoraTarget, LoraWeights, Sft, SftExample};
use crate::adapter::scalar;
use crate::gguf::Gguf;
use crate::llama::tokenizer::ChatTokenizer;
use crate::llama::{Llama, LlamaConfig, LlamaModel};
use crate::{Error, Result};

/// How to fine-tune, what a run did, and held-out scores: plain types of `schemas` (twin cards hold them).
pub use twinflow_schemas::models::{LoraReport, LoraTraining, Nll};

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

    /// The model's tokenizer and chat template (what examples are built with).
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
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
        Ok(Nll::pooled(&self.nll_each(examples, lora, batch_size)?))
    }

    /// [`Self::nll`] of each example alone (its own answer tokens), in order:
    /// what a paired comparison of two models on the same answers resamples.
    /// `batch_size` examples share a forward pass; each one's loss is its own.
    pub fn nll_each(&self, examples: &[SftExample], lora: Option<&LoraWeights>, batch_size: usize) -> Result<Vec<Nll>> {
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
        let mut out = Vec::with_capacity(examples.len());
        for batch in examples.chunks(batch_size.max(1)) {
            for (loss, tokens) in self.example_losses(network, batch, &self.device)? {
                out.push(Nll { examples: 1, tokens, mean: loss });
            }
        }
        Ok(out)
    }

    /// The log-probability of each example's answer (the sum over its
    /// answer tokens) under the base model or the base with `lora` merged.
    pub fn log_probs_each(
        &self,
        examples: &[SftExample],
        lora: Option<&LoraWeights>,
        batch_size: usize,
    ) -> Result<Vec<f64>> {
        Ok(self.nll_each(examples, lora, batch_size)?.iter().map(|n| -n.mean * n.tokens as f64).collect())
    }

    /// Each example's mean nll per answer token and its answer token count, in order.
    fn example_losses(&self, network: &Llama, batch: &[SftExample], device: &Device) -> Result<Vec<(f64, usize)>> {
        let (chosen, rows) = self.answer_log_probs(network, batch, device)?;
        let values = chosen
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Inference(format!("reading the log-probabilities: {e:?}")))?;
        let mut sums = vec![(0f64, 0usize); batch.len()];
        for (value, row) in values.into_iter().zip(rows) {
            sums[row].0 -= f64::from(value);
            sums[row].1 += 1;
        }
        Ok(sums.into_iter().map(|(sum, n)| (if n == 0 { 0.0 } else { sum / n as f64 }, n)).collect())
    }

    /// The log-probability of every answer token of `batch` given what comes
    /// before it, `[n, 1]`, and the example (row) each belongs to.
    pub(super) fn answer_log_probs(
        &self,
        network: &Llama,
        batch: &[SftExample],
        device: &Device,
    ) -> Result<(Tensor<2>, Vec<usize>)> {
        let h = self.config.hidden_size;
        let s = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if s < 2 || s > self.max_tokens {
            return Err(Error::Inference(format!("examples must have 2..={} tokens, got {s}", self.max_tokens)));
        }
        let b = batch.len();
        let mut x = Vec::with_capacity(b * s * h);
        let (mut positions, mut targets, mut rows) = (Vec::new(), Vec::new(), Vec::new());
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
                    rows.push(row);
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
        Ok((chosen, rows))
    }

    /// Trains fresh adapters on `examples` by supervised fine-tuning
    /// ([`Sft`]); `progress` hears `(step, steps, loss)`.
    pub fn train(
        &self,
        examples: &[SftExample],
        config: &LoraTraining,
        progress: impl FnMut(usize, usize, f32),
    ) -> Result<(LoraWeights, LoraReport)> {
        self.train_with(&Sft, examples.to_vec(), &[], config, None, progress)
    }

    /// Trains fresh adapters on `examples` with `technique`, on top of
    /// `start` (merged into the frozen weights; `None`: the base model).
    /// Every `config.eval_every` steps and after each epoch, the `held_out`
    /// examples' loss (and rewards) on the model being trained go in the
    /// report: the learning curve on data it
    /// never trains on. Returns the adapter of the whole fine-tune: `start`
    /// and the new factors stacked into one, so that it applies to the base model.
    pub fn train_with<T: Technique>(
        &self,
        technique: &T,
        examples: Vec<T::Example>,
        held_out: &[T::Example],
        config: &LoraTraining,
        start: Option<&LoraWeights>,
        mut progress: impl FnMut(usize, usize, f32),
    ) -> Result<(LoraWeights, LoraReport)> {
        let started = Instant::now();
        if config.rank == 0 || config.targets.is_empty() {
            return Err(Error::Inference("LoRA needs a rank ≥ 1 and at least one target".into()));
        }
        let examples: Vec<T::Example> =
            examples.into_iter().filter(|e| technique.tokens(e) <= self.max_tokens).collect();
        if examples.is_empty() {
            return Err(Error::Inference(format!("no training example fits {} tokens", self.max_tokens)));
        }
        let examples = technique.prepare(self, start, examples)?;
        let held_out: Vec<T::Example> =
            held_out.iter().filter(|e| technique.tokens(e) <= self.max_tokens).cloned().collect();
        let held_out = if held_out.is_empty() { held_out } else { technique.prepare(self, start, held_out)? };
        let device = self.device.clone().autodiff();
        device.seed(config.seed);
        let file = Gguf::open(&self.gguf)?;
        let mut model = LlamaModel::from_gguf_burn_graph(&file, self.max_tokens, &device)?;
        if let Some(start) = start {
            model.merge_lora(start)?;
        }
        let mut network = model.network.ok_or_else(|| Error::Inference("no network loaded".into()))?;
        let paths: Vec<String> = (0..self.config.num_layers)
            .flat_map(|i| config.targets.iter().map(move |t| format!("blocks.{i}.attn.{}.weight", t.name())))
            .collect();
        network =
            network.apply_lora(Lora::new(config.rank, config.alpha).set_param_group(ParamGroup::from_paths(paths)));
        let mut optimizer = AdamConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0))).init();
        let batch = config.batch_size.max(1);
        let steps = examples.len().div_ceil(batch) * config.epochs.max(1);
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut rng = SeededRng::new(config.seed);
        let (mut epoch_losses, mut epoch_rewards) = (Vec::new(), Vec::new());
        let (mut held_out_steps, mut held_out_losses, mut held_out_rewards) = (Vec::new(), Vec::new(), Vec::new());
        // On the plain device: a forward pass on the autodiff device that is never
        // differentiated keeps its graph (and every activation) alive.
        let mut score_held_out = |network: &Llama, step: usize| -> Result<()> {
            if held_out.is_empty() || held_out_steps.last() == Some(&step) {
                return Ok(());
            }
            let (loss, rewards) = self.held_out_loss(technique, &network.valid(), &held_out, batch, &self.device)?;
            held_out_steps.push(step);
            held_out_losses.push(loss);
            held_out_rewards.extend(rewards.map(|r| [r.accuracy as f32, r.margin as f32]));
            Ok(())
        };
        let mut step = 0;
        for _ in 0..config.epochs.max(1) {
            rng.shuffle(&mut order);
            let (mut total, mut weight, mut rewards) = (0f64, 0usize, Vec::new());
            for indices in order.chunks(batch) {
                let batch: Vec<T::Example> = indices.iter().map(|i| examples[*i].clone()).collect();
                let step_loss = technique.loss(self, &network, &batch, &device)?;
                let value = scalar(step_loss.loss.clone())?;
                if !value.is_finite() {
                    return Err(Error::Inference(format!("fine-tuning diverged at step {}: loss {value}", step + 1)));
                }
                let grads = GradientsParams::from_grads(step_loss.loss.backward(), &network);
                network = optimizer.step(config.learning_rate, network, grads);
                total += f64::from(value) * step_loss.weight as f64;
                weight += step_loss.weight;
                rewards.extend(step_loss.rewards);
                step += 1;
                progress(step, steps, value);
                if config.eval_every > 0 && step % config.eval_every == 0 {
                    score_held_out(&network, step)?;
                }
            }
            epoch_losses.push((total / weight.max(1) as f64) as f32);
            if !rewards.is_empty() {
                let pooled = super::Rewards::pooled(&rewards);
                epoch_rewards.push([pooled.accuracy as f32, pooled.margin as f32]);
            }
            score_held_out(&network, step)?;
        }
        let trained = extract(&network, config)?;
        let trainable_parameters = trained.parameters();
        let weights = match start {
            Some(start) => start.stacked(&trained)?,
            None => trained,
        };
        let report = LoraReport {
            examples: examples.len(),
            answer_tokens: examples.iter().map(|e| technique.answer_tokens(e)).sum(),
            steps,
            epoch_losses,
            epoch_rewards,
            held_out_steps,
            held_out_losses,
            held_out_rewards,
            trainable_parameters,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((weights, report))
    }
}

impl LoraTrainer {
    /// `technique`'s mean loss over `examples` (and their pooled rewards) on
    /// `network` as it is, in batches of `batch`, without gradients kept.
    fn held_out_loss<T: Technique>(
        &self,
        technique: &T,
        network: &Llama,
        examples: &[T::Example],
        batch: usize,
        device: &Device,
    ) -> Result<(f32, Option<super::Rewards>)> {
        let (mut total, mut weight, mut rewards) = (0f64, 0usize, Vec::new());
        for chunk in examples.chunks(batch) {
            let step = technique.loss(self, network, chunk, device)?;
            total += f64::from(scalar(step.loss)?) * step.weight as f64;
            weight += step.weight;
            rewards.extend(step.rewards);
        }
        let pooled = (!rewards.is_empty()).then(|| super::Rewards::pooled(&rewards));
        Ok(((total / weight.max(1) as f64) as f32, pooled))
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
