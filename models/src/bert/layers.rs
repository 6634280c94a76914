//! The building blocks of BERT: embeddings, self-attention, feed-forward, encoder layer.
//!
//! Shapes: `b` texts in a batch, `s` tokens (padded), `h` hidden size,
//! `n` heads of width `d = h / n`.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::{gelu, gelu_approximate};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor};

/// Word + position + token-type embeddings, then LayerNorm.
#[derive(Module, Debug)]
pub(crate) struct Embeddings {
    pub(crate) word: Embedding,
    pub(crate) position: Embedding,
    pub(crate) token_type: Embedding,
    pub(crate) norm: LayerNorm,
}

impl Embeddings {
    /// `ids` `[b, s]` → `[b, s, h]`. Positions count from 0; every token has type 0.
    pub(crate) fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, s] = ids.dims();
        let words = self.word.forward(ids);
        // Rows of the tables, broadcast over the batch: no gather needed.
        let positions = self.position.weight.val().narrow(0, 0, s).unsqueeze::<3>();
        let token_type = self.token_type.weight.val().narrow(0, 0, 1).unsqueeze::<3>();
        self.norm.forward(words + positions + token_type)
    }
}

/// Multi-head self-attention with its output projection, residual and LayerNorm.
#[derive(Module, Debug)]
pub(crate) struct SelfAttention {
    pub(crate) query: Linear,
    pub(crate) key: Linear,
    pub(crate) value: Linear,
    pub(crate) output: Linear,
    pub(crate) norm: LayerNorm,
    pub(crate) num_heads: usize,
}

impl SelfAttention {
    /// `x` `[b, s, h]`, `padding` `[b, n, s, s]` (true = key is padding) → `[b, s, h]`.
    pub(crate) fn forward(&self, x: Tensor<3>, padding: Option<Tensor<4, Bool>>) -> Tensor<3> {
        let [b, s, h] = x.dims();
        let n = self.num_heads;
        let heads = |t: Tensor<3>| t.reshape([b, s, n, h / n]).swap_dims(1, 2);
        let q = heads(self.query.forward(x.clone()));
        let k = heads(self.key.forward(x.clone()));
        let v = heads(self.value.forward(x.clone()));
        // Fused scaled dot-product attention (scale 1/sqrt(d), masked keys get -inf).
        let context = attention(q, k, v, padding, None, AttentionModuleOptions::default());
        let context = context.swap_dims(1, 2).reshape([b, s, h]);
        self.norm.forward(self.output.forward(context) + x)
    }
}

/// The position-wise feed-forward block with its residual and LayerNorm.
#[derive(Module, Debug)]
pub(crate) struct FeedForward {
    pub(crate) intermediate: Linear,
    pub(crate) output: Linear,
    pub(crate) norm: LayerNorm,
    /// Tanh-approximated GELU instead of the exact (erf) one.
    pub(crate) gelu_tanh: bool,
}

impl FeedForward {
    pub(crate) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let inner = self.intermediate.forward(x.clone());
        let inner = if self.gelu_tanh { gelu_approximate(inner) } else { gelu(inner) };
        self.norm.forward(self.output.forward(inner) + x)
    }
}

/// One encoder layer: self-attention then feed-forward, each post-LN.
#[derive(Module, Debug)]
pub(crate) struct EncoderLayer {
    pub(crate) attention: SelfAttention,
    pub(crate) feed_forward: FeedForward,
}

impl EncoderLayer {
    pub(crate) fn forward(&self, x: Tensor<3>, padding: Option<Tensor<4, Bool>>) -> Tensor<3> {
        self.feed_forward.forward(self.attention.forward(x, padding))
    }
}
