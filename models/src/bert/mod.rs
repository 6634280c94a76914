//! A BERT encoder in burn, as `transformers`' `BertModel` computes it, plus the
//! mean pooling and L2 normalisation of sentence-transformers.
//!
//! ```text
//!  ids [b, s] ─▶ word + position + token-type embeddings ─▶ LayerNorm
//!             ─▶ N × EncoderLayer:
//!                  x ─▶ Q,K,V ─▶ softmax(QKᵀ/√d, padded keys masked)·V ─▶ dense ─▶ +x ─▶ LayerNorm
//!                    ─▶ dense ─▶ GELU ─▶ dense ─▶ +x ─▶ LayerNorm
//!             ─▶ [b, s, h] ─▶ mean over real tokens ─▶ x / ‖x‖ ─▶ [b, h]
//! ```
//!
//! Files: `config.rs` (`config.json`), `layers.rs` (the blocks), `weights.rs`
//! (safetensors and random initialisation), `fused.rs` (the same network as
//! packed BLAS products and fused row kernels: the fast CPU path).

mod config;
pub(crate) mod fused;
mod layers;
mod weights;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

pub use config::BertConfig;
use layers::{Embeddings, EncoderLayer};

use crate::{Error, Result};

/// The BERT encoder network: embeddings and encoder layers (no pooler).
#[derive(Module, Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
}

impl BertModel {
    /// Loads the weights of `path` (a Hugging Face `model.safetensors`, F32) for `config`.
    pub fn load(config: &BertConfig, path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_safetensors(config, path, &bytes, device)
    }

    /// Builds the model from the bytes of a safetensors file; `path` names it in errors.
    pub fn from_safetensors(config: &BertConfig, path: &Path, bytes: &[u8], device: &Device) -> Result<Self> {
        weights::from_safetensors(config, path, bytes, device)
    }

    /// A model with random weights, for tests and for training from scratch.
    pub fn random(config: &BertConfig, device: &Device) -> Result<Self> {
        weights::random(config, device)
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        self.embeddings.word.weight.val().device()
    }

    /// The last hidden state `[b, s, h]` of token ids `[b, s]`; `padding`
    /// `[b, s]` is true where a position is padding (`None`: no padding).
    pub fn forward(&self, ids: Tensor<2, Int>, padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let mask = padding.map(|p| {
            let heads = self.layers.first().map_or(1, |l| l.attention.num_heads);
            p.reshape([b, 1, 1, s]).expand([b, heads, s, s])
        });
        let mut x = self.embeddings.forward(ids);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// Sentence vectors of a batch of token-id sequences: the mean of the last
    /// hidden state over each sequence's tokens, scaled to unit length.
    /// Sequences are padded to the longest; the result does not depend on it.
    pub fn embed_ids(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let Some(s) = batch.iter().map(|ids| ids.len()).max() else {
            return Ok(Vec::new());
        };
        let b = batch.len();
        if s == 0 {
            return Err(Error::Inference("an empty token sequence".into()));
        }
        let device = self.device();
        let mut ids = vec![0i64; b * s];
        let mut keep = vec![0f32; b * s];
        for (row, seq) in batch.iter().enumerate() {
            for (col, &id) in seq.iter().enumerate() {
                ids[row * s + col] = i64::from(id);
                keep[row * s + col] = 1.0;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let padding = batch.iter().any(|seq| seq.len() < s).then(|| {
            let pad: Vec<bool> = keep.iter().map(|k| *k == 0.0).collect();
            Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, s]), &device)
        });
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, s]), &device);
        let hidden = self.forward(ids, padding);
        let pooled = normalize(mean_pool(hidden, keep));
        let h = pooled.dims()[1];
        let values = pooled.try_into_vec_as::<f32>().map_err(|e| Error::Inference(format!("{e:?}")))?;
        Ok(values.chunks_exact(h).map(<[f32]>::to_vec).collect())
    }
}

/// Mean of `hidden` `[b, s, h]` over the positions where `keep` `[b, s]` is 1.
fn mean_pool(hidden: Tensor<3>, keep: Tensor<2>) -> Tensor<2> {
    let [b, _, h] = hidden.dims();
    let keep = keep.unsqueeze_dim::<3>(2);
    let sum = (hidden * keep.clone()).sum_dim(1);
    // As sentence-transformers: the count is clamped so an all-padding row gives 0, not NaN.
    let count = keep.sum_dim(1).clamp_min(1e-9);
    (sum / count).reshape([b, h])
}

/// Each row of `x` `[b, h]` divided by its L2 norm (at least 1e-12, as `F.normalize`).
fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertConfig {
        BertConfig {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            vocab_size: 100,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }

    fn model() -> BertModel {
        let device = crate::cpu_device();
        device.seed(7);
        BertModel::random(&tiny(), &device).unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= tolerance, "vectors differ by up to {worst}");
    }

    #[test]
    fn random_tiny_model_gives_unit_vectors_of_hidden_size() {
        let model = model();
        let out = model.embed_ids(&[&[2, 10, 11, 3], &[2, 3]]).unwrap();
        assert_eq!(out.len(), 2);
        for v in &out {
            assert_eq!(v.len(), 32);
            assert!(v.iter().all(|x| x.is_finite()));
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
        assert!(out[0] != out[1], "different inputs gave the same vector");
    }

    #[test]
    fn padding_does_not_change_a_vector() {
        let model = model();
        let short: &[u32] = &[2, 17, 42, 3];
        let long: &[u32] = &[2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 3];
        let alone = model.embed_ids(&[short]).unwrap();
        let padded = model.embed_ids(&[long, short]).unwrap();
        assert_close(&alone[0], &padded[1], 1e-5);
        let long_alone = model.embed_ids(&[long]).unwrap();
        assert_close(&long_alone[0], &padded[0], 1e-5);
    }

    #[test]
    fn an_empty_batch_gives_no_vectors() {
        assert!(model().embed_ids(&[]).unwrap().is_empty());
    }

    #[test]
    fn config_check_rejects_heads_that_do_not_divide_the_width() {
        let mut config = tiny();
        config.num_attention_heads = 5;
        assert!(config.check().unwrap_err().contains("multiple"));
        let mut config = tiny();
        config.hidden_act = "swish".into();
        assert!(config.check().unwrap_err().contains("swish"));
    }
}
