//! `TextTokenizer`: a Hugging Face `tokenizer.json` (WordPiece for BERT) with
//! the truncation of sentence-transformers and no padding (batches are padded
//! by the model, to their own longest text).

use std::path::Path;

use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::{Error, Result};

/// Turns texts into token ids, special tokens (`[CLS]`, `[SEP]`) included.
#[derive(Clone, Debug)]
pub struct TextTokenizer {
    /// Cuts each text to `max_tokens` tokens.
    truncating: Tokenizer,
    /// The same without truncation, to count tokens.
    counting: Tokenizer,
    max_tokens: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; encodings are cut at `max_tokens` tokens (specials included).
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        if max_tokens < 3 {
            return Err(Error::Tokenizer(format!(
                "max_tokens {max_tokens} leaves no room for text between the special tokens"
            )));
        }
        let mut counting =
            Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        // tokenizer.json of all-MiniLM-L6-v2 pads and truncates to 128: undo both.
        counting.with_padding(None::<PaddingParams>);
        counting.with_truncation(None).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut truncating = counting.clone();
        truncating
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(Self { truncating, counting, max_tokens })
    }

    /// The longest encoding, in tokens, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Token ids of each text, cut at [`max_tokens`](Self::max_tokens).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings =
            self.truncating.encode_batch_fast(texts.to_vec(), true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Token ids of one text, cut at [`max_tokens`](Self::max_tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.truncating.encode_fast(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// How many tokens `text` has, special tokens included, before any
    /// truncation: a text with more than [`max_tokens`](Self::max_tokens) is
    /// cut when embedded.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let encoding = self.counting.encode_fast(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.len())
    }
}
