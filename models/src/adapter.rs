//! The embedding adapter: a learned linear map on top of the frozen
//! encoder's vectors, `a(x) = W x / ‖W x‖`, applied to chunks and queries
//! alike. Starting from `W = I` (the base model), it is trained with burn's
//! autodiff and Adam on (question, source chunk) pairs with a symmetric
//! in-batch contrastive loss (InfoNCE: each pair's chunk is a negative for
//! every other question of the batch), plus `λ‖W − A‖²`, which keeps the
//! adapter close to its anchor A: the base model (I), or the adapter the run
//! starts from (continual training: measured better on the SOTU stream).
//!
//! Because the map works on the stored base vectors, applying a new adapter
//! re-projects the cached vectors: nothing is re-encoded.
//!
//! ```text
//!  pairs (q, d) base vectors ─▶ batches ─▶ Q Wᵀ, D Wᵀ ─▶ L2 ─▶ Q̂ D̂ᵀ / τ ─▶ CE(rows) + CE(cols) + λ‖W − A‖²
//!                                  ▲ Adam ◀──────────── backward ◀──────────────────────┘
//! ```

use std::path::Path;
use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use twinflow_schemas::rng::SeededRng;

use crate::error::{Error, Result};

/// A trained (or identity) adapter: `dim × dim`, row-major, `y = W x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    dim: usize,
    weight: Vec<f32>,
}

impl Adapter {
    /// The identity: the base model's vectors, unchanged.
    pub fn identity(dim: usize) -> Self {
        let mut weight = vec![0.0; dim * dim];
        for i in 0..dim {
            weight[i * dim + i] = 1.0;
        }
        Self { dim, weight }
    }

    /// An adapter from its row-major weights.
    pub fn from_weights(dim: usize, weight: Vec<f32>) -> Result<Self> {
        if weight.len() != dim * dim {
            return Err(Error::Inference(format!(
                "an adapter of dim {dim} needs {} weights, got {}",
                dim * dim,
                weight.len()
            )));
        }
        Ok(Self { dim, weight })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major weights.
    pub fn weights(&self) -> &[f32] {
        &self.weight
    }

    /// `W x / ‖W x‖` (a zero vector stays zero). A vector of another
    /// dimension is returned unchanged.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        if x.len() != self.dim {
            return x.to_vec();
        }
        let mut y: Vec<f32> =
            self.weight.chunks_exact(self.dim).map(|row| row.iter().zip(x).map(|(w, v)| w * v).sum()).collect();
        let norm = y.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            y.iter_mut().for_each(|v| *v /= norm);
        }
        y
    }

    /// `‖W − I‖_F`: how far the adapter moved from the base model.
    pub fn distance_from_identity(&self) -> f32 {
        let mut sum = 0.0;
        for (i, w) in self.weight.iter().enumerate() {
            let target = if i / self.dim == i % self.dim { 1.0 } else { 0.0 };
            sum += (w - target) * (w - target);
        }
        sum.sqrt()
    }

    /// Writes the weights as safetensors (`weight`: F32 `[dim, dim]`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes: Vec<u8> = self.weight.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![self.dim, self.dim], &bytes)
            .map_err(|e| Error::Weights { path: path.to_owned(), reason: e.to_string() })?;
        let out = safetensors::serialize([("weight", view)], None)
            .map_err(|e| Error::Weights { path: path.to_owned(), reason: e.to_string() })?;
        twinflow_schemas::fs::write_atomic(path, &out).map_err(|e| Error::io(path, e))
    }

    /// Reads weights written by [`Adapter::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Weights { path: path.to_owned(), reason };
        let tensors = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let weight = tensors.tensor("weight").map_err(|e| bad(e.to_string()))?;
        let shape = weight.shape();
        if weight.dtype() != safetensors::Dtype::F32 || shape.len() != 2 || shape[0] != shape[1] {
            return Err(bad(format!("expected an F32 square matrix, got {:?} {:?}", weight.dtype(), shape)));
        }
        let values = weight.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Self::from_weights(shape[0], values)
    }
}

/// How to train an adapter, and what a run did: plain types of `schemas` (model cards hold them).
pub use twinflow_schemas::models::{AdapterTraining, TrainingReport};

#[derive(Module, Debug)]
struct AdapterNet {
    weight: Param<Tensor<2>>,
}

impl AdapterNet {
    /// `x Wᵀ`, rows L2-normalised.
    fn project(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.weight.val().transpose());
        let norm = y.clone().powf_scalar(2.0).sum_dim(1).sqrt().clamp_min(1e-6);
        y / norm
    }
}

fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}

/// Trains an adapter starting from `init` on `(query, chunk)` pairs of base
/// vectors, on `device` (made an autodiff device here). `progress` hears
/// `(step, steps, loss)` after every step.
pub fn train_adapter(
    pairs: &[(Vec<f32>, Vec<f32>)],
    init: &Adapter,
    config: &AdapterTraining,
    device: &Device,
    mut progress: impl FnMut(usize, usize, f32),
) -> Result<(Adapter, TrainingReport)> {
    let started = Instant::now();
    let dim = init.dim;
    if let Some((q, d)) = pairs.iter().find(|(q, d)| q.len() != dim || d.len() != dim) {
        return Err(Error::Inference(format!(
            "training pairs must have {dim}-dimensional vectors, got {} and {}",
            q.len(),
            d.len()
        )));
    }
    let device = device.clone().autodiff();
    let batch = config.batch_size.max(2);
    let batches_per_epoch = pairs.len() / batch;
    if batches_per_epoch == 0 {
        return Err(Error::Inference(format!("{} training pairs do not fill one batch of {batch}", pairs.len())));
    }
    let steps = batches_per_epoch * config.epochs.max(1);
    let mut net = AdapterNet { weight: Param::from_tensor(matrix(init.weight.clone(), dim, dim, &device)) };
    let anchor = if config.anchor_to_init { init.weight.clone() } else { Adapter::identity(dim).weight };
    let identity = matrix(anchor, dim, dim, &device);
    let eye = matrix(Adapter::identity(batch).weight, batch, batch, &device);
    let mut optimizer = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = SeededRng::new(config.seed);
    let mut epoch_losses = Vec::new();
    let mut step = 0;
    for _ in 0..config.epochs.max(1) {
        rng.shuffle(&mut order);
        let mut total = 0.0;
        for indices in order.chunks_exact(batch) {
            let queries: Vec<f32> = indices.iter().flat_map(|i| pairs[*i].0.iter().copied()).collect();
            let chunks: Vec<f32> = indices.iter().flat_map(|i| pairs[*i].1.iter().copied()).collect();
            let q = net.project(matrix(queries, batch, dim, &device));
            let d = net.project(matrix(chunks, batch, dim, &device));
            let logits = q.matmul(d.transpose()).div_scalar(config.temperature.max(1e-4));
            let rows = (log_softmax(logits.clone(), 1) * eye.clone()).sum();
            let cols = (log_softmax(logits, 0) * eye.clone()).sum();
            let contrastive = (rows + cols).div_scalar(-2.0 * batch as f32);
            let regulariser =
                (net.weight.val() - identity.clone()).powf_scalar(2.0).sum().mul_scalar(config.identity_weight);
            let loss = contrastive + regulariser;
            let value = scalar(loss.clone())?;
            if !value.is_finite() {
                return Err(Error::Inference(format!("training diverged at step {}: loss {value}", step + 1)));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optimizer.step(config.learning_rate, net, grads);
            total += value;
            step += 1;
            progress(step, steps, value);
        }
        epoch_losses.push(total / batches_per_epoch as f32);
    }
    let values = net
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Inference(format!("reading the adapter weights: {e:?}")))?;
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::Inference(format!("training diverged: the adapter has a non-finite weight ({bad})")));
    }
    let adapter = Adapter::from_weights(dim, values)?;
    let report = TrainingReport {
        pairs: pairs.len(),
        steps,
        epoch_losses,
        seconds: started.elapsed().as_secs_f64(),
        distance_from_identity: adapter.distance_from_identity(),
    };
    Ok((adapter, report))
}

/// The single value of a one-element tensor (a loss).
pub(crate) fn scalar(t: Tensor<1>) -> Result<f32> {
    let values = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Inference(format!("reading the loss: {e:?}")))?;
    values.first().copied().ok_or_else(|| Error::Inference("an empty loss".into()))
}

/// Retrieval quality of an adapter: for each query, is its target among the
/// `k` corpus vectors most similar to it (both sides projected)?
///
/// `targets[i]` is the index in `corpus` of query `i`'s source chunk.
pub fn recall_at_k(adapter: &Adapter, queries: &[Vec<f32>], targets: &[usize], corpus: &[Vec<f32>], k: usize) -> f64 {
    let hits = hits_at_k(adapter, queries, targets, corpus, k);
    if hits.is_empty() { 0.0 } else { hits.iter().sum::<f64>() / hits.len() as f64 }
}

/// Per query, 1 if its target is in the top `k` (as [`recall_at_k`] ranks), else 0:
/// what a paired comparison of two adapters on the same queries resamples.
pub fn hits_at_k(
    adapter: &Adapter,
    queries: &[Vec<f32>],
    targets: &[usize],
    corpus: &[Vec<f32>],
    k: usize,
) -> Vec<f64> {
    let corpus: Vec<Vec<f32>> = corpus.iter().map(|v| adapter.apply(v)).collect();
    let mut hits = vec![0.0; queries.len()];
    for ((query, target), hit) in queries.iter().zip(targets).zip(&mut hits) {
        let q = adapter.apply(query);
        let dot = |v: &[f32]| q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        let Some(target_score) = corpus.get(*target).map(|v| dot(v)).filter(|s| s.is_finite()) else { continue };
        // Rank of the target: chunks scoring as high or higher come first (ties count against it,
        // so a degenerate adapter that maps everything to one point scores 0, not 1).
        let better = corpus
            .iter()
            .enumerate()
            .filter(|(i, v)| i != target && dot(v).partial_cmp(&target_score) != Some(std::cmp::Ordering::Less))
            .count();
        if better < k {
            *hit = 1.0;
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keeps_unit_vectors_and_weights_round_trip() {
        let a = Adapter::identity(3);
        assert_eq!(a.apply(&[0.6, 0.8, 0.0]), vec![0.6, 0.8, 0.0]);
        assert_eq!(a.distance_from_identity(), 0.0);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("adapter.safetensors");
        let b = Adapter::from_weights(2, vec![1.0, 0.5, -0.25, 2.0]).expect("weights");
        b.save(&path).expect("saved");
        assert_eq!(Adapter::load(&path).expect("loaded"), b);
        std::fs::write(&path, b"not safetensors").expect("write");
        assert!(matches!(Adapter::load(&path), Err(Error::Weights { .. })));
    }

    /// Queries and chunks share a topic in four coordinates, and carry
    /// unrelated, larger values in four others (like boilerplate wording):
    /// the base model ranks by the noise, a trained adapter learns to ignore it.
    #[test]
    fn training_learns_a_map_that_improves_recall() {
        let dim = 8;
        let mut rng = SeededRng::new(12345);
        let mut next = move || rng.unit() as f32 - 0.5;
        let norm = |mut v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= n);
            v
        };
        let mut pairs = Vec::new();
        for _ in 0..256 {
            let topic: Vec<f32> = (0..4).map(|_| next()).collect();
            let mut query: Vec<f32> = topic.iter().map(|t| t + 0.05 * next()).collect();
            query.extend((0..4).map(|_| 1.5 * next()));
            let mut chunk = topic.clone();
            chunk.extend((0..4).map(|_| 1.5 * next()));
            pairs.push((norm(query), norm(chunk)));
        }
        let (train, test) = pairs.split_at(192);
        let corpus: Vec<Vec<f32>> = test.iter().map(|(_, c)| c.clone()).collect();
        let queries: Vec<Vec<f32>> = test.iter().map(|(q, _)| q.clone()).collect();
        let targets: Vec<usize> = (0..test.len()).collect();
        let base = Adapter::identity(dim);
        let before = recall_at_k(&base, &queries, &targets, &corpus, 1);
        let config = AdapterTraining {
            epochs: 30,
            batch_size: 32,
            learning_rate: 1e-2,
            identity_weight: 0.0,
            ..Default::default()
        };
        let mut losses = Vec::new();
        let (trained, report) =
            train_adapter(train, &base, &config, &crate::cpu_device(), |_, _, l| losses.push(l)).expect("trains");
        let after = recall_at_k(&trained, &queries, &targets, &corpus, 1);
        assert_eq!(report.steps, 30 * 6);
        assert!(report.epoch_losses[29] < report.epoch_losses[0], "{:?}", report.epoch_losses);
        assert!(after > before + 0.1, "recall@1 {before} → {after}");
    }
}
