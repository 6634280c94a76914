//! `ChatTokenizer`: the byte-level BPE and the chat template stored in a GGUF
//! file's metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
//!
//! The BPE is rebuilt with the `tokenizers` crate from the vocabulary and the
//! merges; control tokens (`token_type` 3, e.g. `<|im_start|>`) are special
//! tokens, matched whole. The pre-tokenizer follows `tokenizer.ggml.pre`:
//! SmolLM's splits every digit before the GPT-2 byte-level split; Llama 3's
//! and Qwen2's split by their published regular expressions. The chat
//! template (Jinja) is rendered with minijinja.

use minijinja::{Environment, ErrorKind, context};
use serde::Serialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::Gguf;
use crate::{Error, Result};

/// GGUF `token_type` of control tokens.
const CONTROL: u64 = 3;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_owned(), content: content.into() }
    }
}

/// The model's tokenizer and chat template.
#[derive(Clone, Debug)]
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    template: Option<String>,
    bos: Option<String>,
    eos: Option<String>,
    /// Ids that end generation: EOS and the template's end-of-turn token.
    stop_ids: Vec<u32>,
    /// The control tokens' texts (`<|im_start|>`, …), longest first.
    controls: Vec<String>,
}

/// Llama 3's split before the byte-level step (numbers in runs of up to three digits).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: Llama 3's, with every digit on its own.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer `tokenizer.ggml.pre` names: GPT-2's byte-level split
/// (no name, `gpt2`, `default`), SmolLM's (every digit first split off),
/// Llama 3's and Qwen2's regular expressions. Any other name is an error
/// rather than a guess: a wrong split gives plausible but wrong tokens.
fn pre_tokenizer(name: Option<&str>) -> Result<PreTokenizerWrapper> {
    let regex_then_bytes = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(pattern.to_owned()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::Tokenizer(format!("pre-tokenizer pattern: {e}")))?;
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Split(split),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
        ])))
    };
    let byte_level = ByteLevel::new(false, true, true);
    match name {
        None | Some("gpt2" | "default") => Ok(PreTokenizerWrapper::ByteLevel(byte_level)),
        Some("smollm") => Ok(PreTokenizerWrapper::Sequence(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(byte_level),
        ]))),
        Some("llama-bpe" | "llama3" | "smaug-bpe") => regex_then_bytes(LLAMA3_SPLIT),
        Some("qwen2") => regex_then_bytes(QWEN2_SPLIT),
        Some(other) => Err(Error::Tokenizer(format!(
            "pre-tokenizer {other:?} is not supported (gpt2, smollm, llama-bpe and qwen2 are)"
        ))),
    }
}

impl ChatTokenizer {
    /// Builds the tokenizer described by `gguf`'s metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!("tokenizer model {model:?} is not supported (gpt2 BPE is)")));
        }
        let tokens = gguf.get_strings("tokenizer.ggml.tokens")?;
        let merges = gguf.get_strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match gguf.metadata.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(types) => types.iter().map(|t| t.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| ((*t).to_owned(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| Error::Tokenizer(format!("merge {m:?} is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("BPE from the GGUF metadata: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = pre_tokenizer(gguf.metadata.get("tokenizer.ggml.pre").and_then(|v| v.as_str()))?;
        tokenizer.with_pre_tokenizer(Some(pre));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let mut controls: Vec<String> =
            tokens.iter().zip(&types).filter(|(_, t)| **t == CONTROL).map(|(token, _)| (*token).to_owned()).collect();
        controls.sort_by_key(|c| std::cmp::Reverse(c.len()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == CONTROL)
            .map(|(token, _)| AddedToken::from((*token).to_owned(), true))
            .collect();
        tokenizer.add_special_tokens(specials).map_err(|e| Error::Tokenizer(format!("special tokens: {e}")))?;

        let token_of = |key: &str| {
            let id = gguf.metadata.get(key).and_then(|v| v.as_u64())?;
            tokens.get(usize::try_from(id).ok()?).map(|t| (*t).to_owned())
        };
        let bos = token_of("tokenizer.ggml.bos_token_id");
        let eos = token_of("tokenizer.ggml.eos_token_id");
        let mut stop_ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|key| gguf.metadata.get(*key).and_then(|v| v.as_u64()))
            .map(|id| id as u32)
            .collect();
        // ChatML templates end a turn with <|im_end|>, whatever EOS is.
        if let Some(id) = tokenizer.token_to_id("<|im_end|>") {
            stop_ids.push(id);
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let template = gguf.metadata.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_owned);
        Ok(Self { tokenizer, template, bos, eos, stop_ids, controls })
    }

    /// Writes the tokenizer as Hugging Face's `tokenizer.json` into `dir`.
    pub fn save_hf(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        let path = dir.join("tokenizer.json");
        self.tokenizer.save(&path, true).map_err(|e| Error::Tokenizer(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }

    /// What Hugging Face's `tokenizer_config.json` says of it: the chat
    /// template and the special tokens.
    pub fn hf_config(&self) -> serde_json::Value {
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": self.template,
            "bos_token": self.bos,
            "eos_token": self.eos,
            "clean_up_tokenization_spaces": false,
        })
    }

    /// Token ids of `text`; special tokens written in the text are matched.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special`, control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// `text` with every control token broken after its first character.
    pub(crate) fn neutralise(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for control in self.controls.iter().filter(|c| c.chars().count() > 1) {
            if text.contains(control.as_str()) {
                let mut chars = control.chars();
                let first = chars.next().map(String::from).unwrap_or_default();
                text = text.replace(control.as_str(), &format!("{first}\u{200b}{}", chars.as_str()));
            }
        }
        text
    }

    /// Ids after which generation stops.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// The token that closes a turn (the end-of-sequence token when it is
    /// one token, else the first stop id): what a fine-tuned answer ends with.
    pub fn end_of_turn(&self) -> Option<u32> {
        let eos = self.eos.as_deref().and_then(|eos| self.encode(eos).ok()).filter(|ids| ids.len() == 1);
        eos.map(|ids| ids[0]).or_else(|| self.stop_ids.first().copied())
    }

    /// The prompt for `messages` as the model's chat template renders it,
    /// ending with the opening of the assistant's turn. Without a template,
    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`).
    ///
    /// Control tokens written inside a message (a question, a retrieved
    /// passage) are broken with a zero-width space, so text can never open or
    /// close a turn.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        let neutral: Vec<ChatMessage> =
            messages.iter().map(|m| ChatMessage::new(&m.role, self.neutralise(&m.content))).collect();
        let messages = neutral.as_slice();
        let Some(template) = &self.template else {
            let mut prompt: String =
                messages.iter().map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content)).collect();
            prompt.push_str("<|im_start|>assistant\n");
            return Ok(prompt);
        };
        // As transformers renders chat templates.
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_template("chat", template).map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        let rendered = env
            .get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos.clone().unwrap_or_default(),
                    eos_token => self.eos.clone().unwrap_or_default(),
                })
            })
            .map_err(|e| Error::Tokenizer(format!("chat template: {e}")))?;
        Ok(rendered)
    }
}

#[cfg(test)]
mod tests {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    use super::*;

    /// The pieces of `text` (as slices of it) the pre-tokenizer `name` makes.
    fn pieces(name: &str, text: &str) -> Vec<String> {
        let mut pre = PreTokenizedString::from(text);
        pre_tokenizer(Some(name)).unwrap().pre_tokenize(&mut pre).unwrap();
        pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, (start, end), _)| text[start..end].to_owned())
            .collect()
    }

    #[test]
    fn llama3_and_qwen2_split_as_their_expressions_say() {
        let text = "Hello world's 12345 x!!\n\n  y";
        assert_eq!(pieces("llama-bpe", text), ["Hello", " world", "'s", " ", "123", "45", " x", "!!\n\n", " ", " y"]);
        assert_eq!(
            pieces("qwen2", text),
            ["Hello", " world", "'s", " ", "1", "2", "3", "4", "5", " x", "!!\n\n", " ", " y"]
        );
        assert_eq!(pieces("smollm", "ab 12"), ["ab", " ", "1", "2"]);
        assert!(matches!(pre_tokenizer(Some("jais")), Err(Error::Tokenizer(_))));
    }
}
