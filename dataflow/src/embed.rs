//! The [`Embedder`] trait the embed operator calls, and the deterministic
//! [`HashingEmbedder`] used by tests and engine benchmarks.

use std::fmt;

use unicode_segmentation::UnicodeSegmentation;

use twinflow_schemas::Hash128;

/// Why a batch could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("embedding failed: {0}")]
pub struct EmbedError(pub String);

/// Turns texts into fixed-size vectors. Implementations are shared by all
/// workers (`Send + Sync`) and are called with batches sorted by length.
pub trait Embedder: Send + Sync + fmt::Debug + 'static {
    /// Identity of the model, including a hash of its weights, so vectors
    /// of different models are never mixed.
    fn model_id(&self) -> &str;

    /// Length of every vector.
    fn dim(&self) -> usize;

    /// Preferred number of texts per call.
    fn batch_size(&self) -> usize {
        32
    }

    /// Longest input, in the model's tokens (special tokens included), that
    /// the model reads whole; `None` when there is no limit. The chunker
    /// splits longer chunks so nothing is silently truncated.
    fn max_tokens(&self) -> Option<usize> {
        None
    }

    /// Tokens of `text` as the model counts them (special tokens included).
    /// Defaults to [`token_estimate`](crate::text::token_estimate).
    fn count_tokens(&self, text: &str) -> usize {
        crate::text::token_estimate(text) as usize
    }

    /// Embeds every text; the result has one vector per text, in order.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Feature hashing of lowercase words and word pairs into `dim` signed
/// buckets, L2-normalised. Not a language model: texts that share words are
/// close, synonyms are not. Deterministic and fast, with no weights to fetch,
/// which makes it the embedder of the engine's tests and benchmarks.
#[derive(Clone, Debug)]
pub struct HashingEmbedder {
    dim: usize,
    model_id: String,
}

impl HashingEmbedder {
    /// An embedder producing `dim`-dimensional vectors (`dim` ≥ 1).
    pub fn new(dim: usize) -> Self {
        let dim = dim.max(1);
        Self { dim, model_id: format!("hashing-v1-{dim}") }
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dim];
        let mut previous: Option<String> = None;
        for word in text.unicode_words() {
            let word = word.to_lowercase();
            self.add_feature(&mut v, word.as_bytes(), 1.0);
            if let Some(prev) = &previous {
                self.add_feature(&mut v, format!("{prev} {word}").as_bytes(), 0.5);
            }
            previous = Some(word);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    fn add_feature(&self, v: &mut [f32], feature: &[u8], weight: f32) {
        let h = Hash128::of(feature).0;
        let bucket = (h % self.dim as u128) as usize;
        let sign = if (h >> 127) == 1 { -1.0 } else { 1.0 };
        v[bucket] += sign * weight;
    }
}

impl Embedder for HashingEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn batch_size(&self) -> usize {
        256
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}

/// Cosine similarity of two vectors of equal length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_normalised_and_topical() {
        let e = HashingEmbedder::new(64);
        let a = e.embed_one("The union is strong and the economy grows");
        assert_eq!(a, e.embed_one("The union is strong and the economy grows"));
        assert!((a.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        let b = e.embed_one("the economy grows and the union is strong");
        let c = e.embed_one("rust borrow checker lifetimes traits");
        assert!(cosine(&a, &b) > cosine(&a, &c));
        assert_eq!(e.embed_one(""), vec![0.0; 64]);
    }
}
