//! `SentenceEncoder`: texts in, unit vectors out, as sentence-transformers'
//! `encode(..., normalize_embeddings=True)` for a BERT model with mean pooling.

use std::path::Path;

use burn::tensor::Device;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::bert::fused::FusedBert;
use crate::bert::{BertConfig, BertModel};
use crate::tokenize::TextTokenizer;
use crate::{Error, Result};

/// Texts per forward pass unless [`SentenceEncoder::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// Written by the fetch step beside the model files; names the model.
pub(crate) const MODEL_INFO: &str = "twinflow-model.json";

/// A sentence encoder loaded from a sentence-transformers model directory:
/// `config.json`, `model.safetensors`, `tokenizer.json`, and optionally
/// `sentence_bert_config.json` (`max_seq_length`, default 512 capped by the
/// position table) and `twinflow-model.json` (`name`, default the directory name).
///
/// On the CPU device the forward pass runs on the fused path (`bert/fused.rs`:
/// BLAS products, fused row kernels, no padding); on other devices, and with
/// [`with_burn_graph`](Self::with_burn_graph), through the burn graph.
///
/// `Send + Sync`: worker threads may call [`embed`](Self::embed) concurrently;
/// fused passes take turns, as each already uses every core.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: BertModel,
    fused: Option<FusedBert>,
    fused_turn: std::sync::Mutex<()>,
    tokenizer: TextTokenizer,
    model_id: String,
    dim: usize,
    batch_size: usize,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModelInfo {
    name: String,
}

impl SentenceEncoder {
    /// Loads the model in `dir` onto `device` (see [`crate::cpu_device`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = BertConfig::load(&dir.join("config.json"))?;
        let max_tokens = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.max_seq_length)
            .unwrap_or(512)
            .min(config.max_position_embeddings);
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_tokens)?;
        let weights = dir.join("model.safetensors");
        let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
        let model = BertModel::from_safetensors(&config, &weights, &bytes, device)?;
        let name = match read_json::<ModelInfo>(&dir.join(MODEL_INFO))? {
            Some(info) => info.name,
            None => dir.file_name().map_or_else(|| "bert".into(), |n| n.to_string_lossy().into_owned()),
        };
        let digest = sha256_hex(&bytes);
        let fused = if *device == crate::cpu_device() { Some(FusedBert::from_model(&model, &config)?) } else { None };
        Ok(Self {
            model,
            fused,
            fused_turn: std::sync::Mutex::new(()),
            tokenizer,
            model_id: format!("{name}@{}", &digest[..12]),
            dim: config.hidden_size,
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// The same encoder, running `batch_size` texts (at least 1) per forward pass.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The same encoder, running every batch through the burn graph even on the
    /// CPU (the reference the fused path is tested against).
    pub fn with_burn_graph(mut self) -> Self {
        self.fused = None;
        self
    }

    /// `"fused-cpu"` or `"burn-graph"`: which forward pass [`embed`](Self::embed) runs.
    pub fn kernels(&self) -> &'static str {
        if self.fused.is_some() { "fused-cpu" } else { "burn-graph" }
    }

    /// Texts per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// `<name>@<first 12 hex digits of the SHA-256 of model.safetensors>`,
    /// e.g. `all-MiniLM-L6-v2@53aa51172d14`: other weights, another id.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Length of every vector (the hidden size, 384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Longest input in tokens, special tokens included (256 for
    /// all-MiniLM-L6-v2); longer texts are cut to their first tokens.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_tokens()
    }

    /// Tokens of `text`, special tokens included, before truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        self.tokenizer.count_tokens(text)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// One unit vector of [`dim`](Self::dim) floats per text, in order.
    ///
    /// Texts are sorted by token count and run in batches of
    /// [`batch_size`](Self::batch_size), each padded to its longest text, so
    /// little work goes to padding; a text's vector does not depend on the
    /// other texts. The empty string embeds `[CLS] [SEP]`: a valid unit vector.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = self.tokenizer.encode_batch(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut vectors = vec![Vec::new(); ids.len()];
        for batch in order.chunks(self.batch_size) {
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let out = match &self.fused {
                Some(fused) => {
                    let _turn = self.fused_turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    fused.embed_ids(&seqs)?
                }
                None => self.model.embed_ids(&seqs)?,
            };
            for (&i, v) in batch.iter().zip(out) {
                vectors[i] = v;
            }
        }
        Ok(vectors)
    }
}

/// Parses `path` as JSON; `None` if the file does not exist.
fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Config { path: path.to_owned(), reason: e.to_string() })
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SentenceEncoder>();
    }

    #[test]
    fn sha256_of_abc_is_the_published_one() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
