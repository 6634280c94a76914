//! `BertConfig`: the hyperparameters of a BERT encoder, as in a Hugging Face `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hyperparameters of a BERT encoder, read from the model's `config.json`.
///
/// Field names are those of Hugging Face `transformers`; other fields of the
/// file (dropout, `architectures`, …) are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Width of every token vector (384 for MiniLM-L6).
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Longest input the position embeddings cover.
    pub max_position_embeddings: usize,
    /// Number of word pieces.
    pub vocab_size: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer: `gelu` (exact, with erf) or a
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".into()
}

/// The activations [`BertConfig::hidden_act`] may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `x * Φ(x)` with the exact erf.
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
}

impl BertConfig {
    /// Reads and checks a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: Self =
            serde_json::from_str(&text).map_err(|e| Error::Config { path: path.to_owned(), reason: e.to_string() })?;
        config.check().map_err(|reason| Error::Config { path: path.to_owned(), reason })?;
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Says what is inconsistent or unsupported, if anything.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("vocab_size", self.vocab_size),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        self.activation().map(|_| ())
    }

    pub(crate) fn activation(&self) -> Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            other => Err(format!("hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh)")),
        }
    }
}
