//! The LoRA factors: which attention projections they adapt, their file
//! (`lora.safetensors`), and merging `(α/r)·A·B` into the decode weights
//! (the fused path and the burn graph) for serving.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};

use crate::llama::{LlamaConfig, LlamaModel};
use crate::{Error, Result};

/// An attention projection LoRA can adapt (a plain type of `schemas`:
/// fine-tuning settings name them).
pub use twinflow_schemas::models::LoraTarget;

/// Where a [`LoraTarget`] is in a GGUF model and the burn graph.
pub(in crate::llama) trait GgufTarget: Sized {
    /// The GGUF tensor it adapts (`attn_q` …).
    fn gguf_name(self) -> &'static str;
    fn from_gguf_name(name: &str) -> Option<Self>;
    /// `(in, out)` of the projection.
    fn dims(self, config: &LlamaConfig) -> (usize, usize);
}

impl GgufTarget for LoraTarget {
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

    fn dims(self, config: &LlamaConfig) -> (usize, usize) {
        let h = config.hidden_size;
        match self {
            LoraTarget::Q => (h, config.q_dim()),
            LoraTarget::O => (config.q_dim(), h),
            LoraTarget::K | LoraTarget::V => (h, config.kv_dim()),
        }
    }
}

/// The trained factors: for each (layer, projection), `A` `[in, r]` and `B`
/// `[r, out]`, row-major, with `ΔW = (α/r)·A·B` in burn's `[in, out]` orientation.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraWeights {
    pub rank: usize,
    pub alpha: f64,
    pub(in crate::llama) factors: BTreeMap<(usize, LoraTarget), (Vec<f32>, Vec<f32>)>,
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

    /// An adapter from its factors: for each (layer, projection), `A`
    /// `[in, r]` and `B` `[r, out]` row-major, `ΔW = (α/r)·A·B` in the
    /// `[in, out]` orientation (checked against a model when merged or exported).
    pub fn from_factors(
        rank: usize,
        alpha: f64,
        factors: BTreeMap<(usize, LoraTarget), (Vec<f32>, Vec<f32>)>,
    ) -> Result<Self> {
        for ((layer, target), (a, b)) in &factors {
            if rank == 0 || a.len() % rank != 0 || b.len() % rank != 0 || a.is_empty() || b.is_empty() {
                return Err(Error::Inference(format!(
                    "layer {layer} {target:?}: factors of {} and {} values are not of rank {rank}",
                    a.len(),
                    b.len()
                )));
            }
        }
        Ok(Self { rank, alpha, factors })
    }

    /// `self` followed by `other` as one adapter whose update is the sum of
    /// both (a DPO stage on top of its SFT stage): rank r₁ + r₂,
    /// A = [s₁·A₁ | s₂·A₂] by columns, B = [B₁; B₂] by rows, and α = r₁ + r₂
    /// so that the scale is 1. A projection only one adapts gets zeros from the other.
    pub fn stacked(&self, other: &LoraWeights) -> Result<LoraWeights> {
        let (r1, r2) = (self.rank, other.rank);
        let (s1, s2) = (self.scale(), other.scale());
        let keys: std::collections::BTreeSet<_> = self.factors.keys().chain(other.factors.keys()).copied().collect();
        let mut factors = BTreeMap::new();
        for key in keys {
            let (first, second) = (self.factors.get(&key), other.factors.get(&key));
            let dims = |(a, b): &(Vec<f32>, Vec<f32>), r: usize| (a.len() / r, b.len() / r);
            let (d_in, d_out) = match (first, second) {
                (Some(f), _) => dims(f, r1),
                (None, Some(f)) => dims(f, r2),
                (None, None) => continue,
            };
            if let (Some(f), Some(g)) = (first, second)
                && dims(f, r1) != dims(g, r2)
            {
                return Err(Error::Inference(format!("the adapters of layer {} {:?} differ in shape", key.0, key.1)));
            }
            let zeros = |r: usize| (vec![0f32; d_in * r], vec![0f32; r * d_out]);
            let (a1, b1) = first.cloned().unwrap_or_else(|| zeros(r1));
            let (a2, b2) = second.cloned().unwrap_or_else(|| zeros(r2));
            let mut a = Vec::with_capacity(d_in * (r1 + r2));
            for (row1, row2) in a1.chunks_exact(r1).zip(a2.chunks_exact(r2)) {
                a.extend(row1.iter().map(|v| v * s1));
                a.extend(row2.iter().map(|v| v * s2));
            }
            factors.insert(key, (a, [b1, b2].concat()));
        }
        Ok(LoraWeights { rank: r1 + r2, alpha: (r1 + r2) as f64, factors })
    }

    /// `ΔW` of one projection in GGUF's `[out, in]` row order.
    pub(in crate::llama) fn delta_rows(&self, a: &[f32], b: &[f32], d_in: usize, d_out: usize) -> Vec<f32> {
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
        twinflow_schemas::fs::write_atomic(path, &out).map_err(|e| Error::io(path, e))
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
                    TensorData::new(crate::llama::transpose(&delta, d_out, d_in), [d_in, d_out]),
                    &self.device,
                );
                linear.weight = linear.weight.clone().map(|w| w + update);
            }
        }
        Ok(())
    }
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
    fn stacked_adapters_update_by_the_sum_of_both() {
        let mut first = BTreeMap::new();
        first.insert((0, LoraTarget::Q), (vec![1.0, 2.0, 3.0, 4.0], vec![0.5, -0.5, 0.25, 1.0, 0.0, 2.0]));
        let mut second = BTreeMap::new();
        second.insert((0, LoraTarget::Q), (vec![0.5, -1.0], vec![2.0, 1.0, -3.0]));
        second.insert((1, LoraTarget::V), (vec![1.0, 1.0], vec![1.0, 2.0, 3.0]));
        let first = LoraWeights { rank: 2, alpha: 4.0, factors: first };
        let second = LoraWeights { rank: 1, alpha: 3.0, factors: second };
        let both = first.stacked(&second).unwrap();
        assert_eq!((both.rank, both.scale()), (3, 1.0));
        let delta = |w: &LoraWeights, key| w.factors.get(&key).map_or(vec![0.0; 6], |(a, b)| w.delta_rows(a, b, 2, 3));
        for key in [(0, LoraTarget::Q), (1, LoraTarget::V)] {
            let sum: Vec<f32> = delta(&first, key).iter().zip(delta(&second, key)).map(|(x, y)| x + y).collect();
            assert_eq!(delta(&both, key), sum, "{key:?}");
        }
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
