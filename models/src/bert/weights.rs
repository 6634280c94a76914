//! Building a [`BertModel`] from a Hugging Face `model.safetensors`, or at random.
//!
//! Tensor names are those of `transformers`' `BertModel`, with or without a
//! `bert.` prefix (`encoder.layer.0.attention.self.query.weight`, …).
//! PyTorch stores a Linear weight as `[out, in]`; burn's is `[in, out]`, so
//! those are transposed here, once, on the host. `pooler.*` and
//! `embeddings.position_ids` are not used by mean pooling and are ignored.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use super::BertModel;
use super::config::{Activation, BertConfig};
use super::layers::{Embeddings, EncoderLayer, FeedForward, SelfAttention};
use crate::{Error, Result};

/// Builds the model from the bytes of a safetensors file (`path` is for messages).
pub(crate) fn from_safetensors(config: &BertConfig, path: &Path, bytes: &[u8], device: &Device) -> Result<BertModel> {
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| Error::Weights { path: path.to_owned(), reason: e.to_string() })?;
    let prefix = if tensors.tensor("bert.embeddings.word_embeddings.weight").is_ok() { "bert." } else { "" };
    let reader = Reader { tensors, prefix, path, device };
    let h = config.hidden_size;
    let eps = config.layer_norm_eps;
    let embeddings = Embeddings {
        word: reader.embedding("embeddings.word_embeddings", [config.vocab_size, h])?,
        position: reader.embedding("embeddings.position_embeddings", [config.max_position_embeddings, h])?,
        token_type: reader.embedding("embeddings.token_type_embeddings", [config.type_vocab_size, h])?,
        norm: reader.layer_norm("embeddings.LayerNorm", h, eps)?,
    };
    let gelu_tanh = activation(config, path)? == Activation::GeluTanh;
    let i = config.intermediate_size;
    let layers = (0..config.num_hidden_layers)
        .map(|n| -> Result<EncoderLayer> {
            let p = format!("encoder.layer.{n}");
            Ok(EncoderLayer {
                attention: SelfAttention {
                    query: reader.linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: reader.linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: reader.linear(&format!("{p}.attention.self.value"), h, h)?,
                    output: reader.linear(&format!("{p}.attention.output.dense"), h, h)?,
                    norm: reader.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                    num_heads: config.num_attention_heads,
                },
                feed_forward: FeedForward {
                    intermediate: reader.linear(&format!("{p}.intermediate.dense"), h, i)?,
                    output: reader.linear(&format!("{p}.output.dense"), i, h)?,
                    norm: reader.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
                    gelu_tanh,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(BertModel { embeddings, layers })
}

/// A model with random weights (burn's default initialisers, LayerNorm at identity).
pub(crate) fn random(config: &BertConfig, device: &Device) -> Result<BertModel> {
    let gelu_tanh = activation(config, Path::new("<config>"))? == Activation::GeluTanh;
    let h = config.hidden_size;
    let i = config.intermediate_size;
    let norm = || LayerNormConfig::new(h).with_epsilon(config.layer_norm_eps).init(device);
    let linear = |d_in, d_out| LinearConfig::new(d_in, d_out).init(device);
    let embeddings = Embeddings {
        word: EmbeddingConfig::new(config.vocab_size, h).init(device),
        position: EmbeddingConfig::new(config.max_position_embeddings, h).init(device),
        token_type: EmbeddingConfig::new(config.type_vocab_size, h).init(device),
        norm: norm(),
    };
    let layers = (0..config.num_hidden_layers)
        .map(|_| EncoderLayer {
            attention: SelfAttention {
                query: linear(h, h),
                key: linear(h, h),
                value: linear(h, h),
                output: linear(h, h),
                norm: norm(),
                num_heads: config.num_attention_heads,
            },
            feed_forward: FeedForward { intermediate: linear(h, i), output: linear(i, h), norm: norm(), gelu_tanh },
        })
        .collect();
    Ok(BertModel { embeddings, layers })
}

fn activation(config: &BertConfig, path: &Path) -> Result<Activation> {
    config.activation().map_err(|reason| Error::Config { path: path.to_owned(), reason })
}

/// Reads named tensors, checking their shapes against the configuration.
struct Reader<'a> {
    tensors: SafeTensors<'a>,
    prefix: &'static str,
    path: &'a Path,
    device: &'a Device,
}

impl Reader<'_> {
    fn error(&self, reason: String) -> Error {
        Error::Weights { path: self.path.to_owned(), reason }
    }

    /// The f32 values of tensor `name` (row-major), which must have `shape`.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let view = self.tensors.tensor(&full).map_err(|_| self.error(format!("tensor {full} is missing")))?;
        if view.shape() != shape {
            return Err(self.error(format!("tensor {full} has shape {:?}, the config implies {shape:?}", view.shape())));
        }
        if view.dtype() != Dtype::F32 {
            return Err(self.error(format!("tensor {full} is {:?}; only F32 weights are supported", view.dtype())));
        }
        Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), self.device)
    }

    fn embedding(&self, name: &str, shape: [usize; 2]) -> Result<Embedding> {
        let weight = self.floats(&format!("{name}.weight"), &shape)?;
        Ok(Embedding { weight: Param::from_tensor(self.tensor(weight, shape)) })
    }

    /// A Linear `d_in → d_out` from PyTorch's `[d_out, d_in]` weight and `[d_out]` bias.
    fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Linear> {
        let weight = self.floats(&format!("{name}.weight"), &[d_out, d_in])?;
        let mut transposed = vec![0f32; weight.len()];
        for (o, row) in weight.chunks_exact(d_in).enumerate() {
            for (i, w) in row.iter().enumerate() {
                transposed[i * d_out + o] = *w;
            }
        }
        let bias = self.floats(&format!("{name}.bias"), &[d_out])?;
        Ok(Linear {
            weight: Param::from_tensor(self.tensor(transposed, [d_in, d_out])),
            bias: Some(Param::from_tensor(self.tensor(bias, [d_out]))),
        })
    }

    /// A LayerNorm; old checkpoints name its parameters `gamma`/`beta`.
    fn layer_norm(&self, name: &str, d: usize, eps: f64) -> Result<LayerNorm> {
        let present = |suffix: &str| {
            let full = format!("{}{name}.{suffix}", self.prefix);
            self.tensors.tensor(&full).is_ok()
        };
        let (scale, shift) =
            if !present("weight") && present("gamma") { ("gamma", "beta") } else { ("weight", "bias") };
        let gamma = self.floats(&format!("{name}.{scale}"), &[d])?;
        let beta = self.floats(&format!("{name}.{shift}"), &[d])?;
        let mut norm = LayerNormConfig::new(d).with_epsilon(eps).init(self.device);
        norm.gamma = Param::from_tensor(self.tensor(gamma, [d]));
        norm.beta = Some(Param::from_tensor(self.tensor(beta, [d])));
        Ok(norm)
    }
}
