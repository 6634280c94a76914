//! Supervised examples: a question through the chat template, then the
//! author's answer and the end-of-turn token, as token ids with the index
//! where the answer (the tokens learned and scored) starts.

use crate::Result;
use crate::llama::tokenizer::{ChatMessage, ChatTokenizer};

/// One supervised example: the prompt's tokens, then the answer's, which
/// are the ones learned (and scored).
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub ids: Vec<u32>,
    /// Index in `ids` of the first answer token (≥ 1).
    pub answer_start: usize,
}

impl SftExample {
    /// `question` as the user's turn (through the chat template), then
    /// `answer` and the end-of-turn token, cut to `max_tokens`. `None` when
    /// the prompt leaves no room for at least 8 answer tokens, or the answer is empty.
    pub fn from_chat(
        tokenizer: &ChatTokenizer,
        question: &str,
        answer: &str,
        max_tokens: usize,
    ) -> Result<Option<Self>> {
        let prompt = tokenizer.apply_chat_template(&[ChatMessage::new("user", question)])?;
        let mut ids = tokenizer.encode(&prompt)?;
        let mut answer_ids = tokenizer.encode(&tokenizer.neutralise(answer.trim()))?;
        if answer_ids.is_empty() || ids.len() + 8 > max_tokens {
            return Ok(None);
        }
        if let Some(end) = tokenizer.end_of_turn() {
            answer_ids.push(end);
        }
        answer_ids.truncate(max_tokens - ids.len());
        let answer_start = ids.len();
        ids.extend(answer_ids);
        Ok(Some(Self { ids, answer_start }))
    }

    /// Tokens learned: every answer token.
    pub fn answer_tokens(&self) -> usize {
        self.ids.len() - self.answer_start
    }
}
