//! Text generation: the [`Generator`] interface and [`LocalLlm`], a Llama
//! GGUF model run in burn with a KV cache, greedy or temperature/top-p
//! sampling, stop tokens and stop strings, and token streaming.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use twinflow_schemas::rng::SeededRng;

use super::tokenizer::{ChatMessage, ChatTokenizer};
use super::{KvCache, LlamaModel};
use crate::gguf::Gguf;
use crate::{Error, Result};

/// How to generate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities add up to `top_p` (1 = all).
    pub top_p: f32,
    /// Generation ends before the first occurrence of any of these.
    pub stop: Vec<String>,
    /// Seed of the sampler (same seed, same prompt, same params → same text).
    pub seed: u64,
    /// Logits of tokens already generated are divided by this (multiplied
    /// when negative), as in CTRL and transformers; 1 = off. The prompt is
    /// not penalised, so copying from the context stays cheap.
    #[serde(default = "no_penalty")]
    pub repetition_penalty: f32,
}

fn no_penalty() -> f32 {
    1.0
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self { max_tokens: 256, temperature: 0.0, top_p: 1.0, stop: Vec::new(), seed: 0, repetition_penalty: 1.0 }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-turn token or a stop string (or the caller stopped the stream).
    Stop,
    /// `max_tokens` or the context limit.
    Length,
}

/// What one generation produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Time to process the prompt (to the first token), milliseconds.
    pub prefill_ms: f64,
    /// Time spent generating after the first token, milliseconds.
    pub decode_ms: f64,
    /// Prompt tokens whose keys and values came from the previous
    /// generation's cache (a shared prefix: system text, the conversation so far).
    #[serde(default)]
    pub cached_tokens: usize,
}

/// Something that answers chat messages: the local model, or a remote
/// OpenAI-compatible endpoint.
pub trait Generator: Send + Sync + std::fmt::Debug {
    /// The model's name as the API reports it.
    fn model_name(&self) -> &str;

    /// Tokens the model can attend to (prompt and answer together).
    fn context_tokens(&self) -> usize;

    /// Tokens `text` takes in a prompt (an estimate where the tokenizer is remote).
    fn count_tokens(&self, text: &str) -> usize;

    /// Answers `messages`. Each new piece of text is passed to `on_text` as
    /// soon as it is final; returning `Break` stops generation early.
    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation>;
}

/// A Llama-architecture model from a GGUF file, run locally in burn.
///
/// `Send + Sync`; generations take turns (each already uses every core).
#[derive(Debug)]
pub struct LocalLlm {
    model: LlamaModel,
    tokenizer: ChatTokenizer,
    name: String,
    /// Generations take turns; each leaves its tokens and their keys and
    /// values here, for the next one to reuse what its prompt shares.
    turn: std::sync::Mutex<Turn>,
}

/// The tokens of the last generation and their cache.
#[derive(Debug, Default)]
struct Turn {
    ids: Vec<u32>,
    cache: KvCache,
}

impl LocalLlm {
    /// Loads `path` onto `device`, with at most `max_context` positions;
    /// the model is named after the file (without `.gguf`).
    pub fn load(path: &Path, max_context: usize, device: &Device) -> Result<Self> {
        Self::load_with(path, max_context, device, LlamaModel::from_gguf)
    }

    /// [`load`](Self::load) keeping the projections' GGUF blocks in memory
    /// (dequantised in the products; see `LlamaModel::from_gguf_quantized`).
    pub fn load_quantized(path: &Path, max_context: usize, device: &Device) -> Result<Self> {
        Self::load_with(path, max_context, device, LlamaModel::from_gguf_quantized)
    }

    /// [`load`](Self::load), always through the burn graph (the reference path).
    pub fn load_burn_graph(path: &Path, max_context: usize, device: &Device) -> Result<Self> {
        Self::load_with(path, max_context, device, LlamaModel::from_gguf_burn_graph)
    }

    fn load_with(
        path: &Path,
        max_context: usize,
        device: &Device,
        build: fn(&Gguf, usize, &Device) -> Result<LlamaModel>,
    ) -> Result<Self> {
        let gguf = Gguf::open(path)?;
        let tokenizer = ChatTokenizer::from_gguf(&gguf)?;
        let model = build(&gguf, max_context, device)?;
        let name = path.file_stem().map_or_else(|| "llm".to_owned(), |s| s.to_string_lossy().into_owned());
        Ok(Self { model, tokenizer, name, turn: std::sync::Mutex::default() })
    }

    /// Merges LoRA factors into the weights (the fine-tuned model decodes at
    /// the base model's speed) and names the result `name`.
    pub fn merge_lora(&mut self, lora: &super::lora::LoraWeights, name: impl Into<String>) -> Result<()> {
        self.model.merge_lora(lora)?;
        // Keys and values cached under the old weights no longer hold.
        *self.turn.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Turn::default();
        self.name = name.into();
        Ok(())
    }

    /// The tokenizer (and chat template).
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The network.
    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// The logits after running `prompt` (tokenised as is) from an empty cache.
    pub fn prompt_logits(&self, prompt: &str) -> Result<Vec<f32>> {
        let ids = self.tokenizer.encode(prompt)?;
        self.model.step(&ids, &mut KvCache::default())
    }

    /// Generates from a raw prompt (already templated).
    pub fn complete(
        &self,
        prompt: &str,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let mut turn = self.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let started = Instant::now();
        let prompt_ids = self.tokenizer.encode(prompt)?;
        let limit = self.model.config.context_length;
        if prompt_ids.len() >= limit {
            return Err(Error::ContextOverflow { tokens: prompt_ids.len(), limit });
        }
        let max_tokens = params.max_tokens.min(limit - prompt_ids.len());
        // The positions the last generation shares with this prompt are kept
        // (at least one prompt token is run, for its logits).
        let Turn { ids: cached_ids, mut cache } = std::mem::take(&mut *turn);
        let shared = cached_ids
            .iter()
            .zip(&prompt_ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt_ids.len().saturating_sub(1));
        cache.truncate(shared);
        let mut stepped = prompt_ids.clone();
        let mut sampler = Sampler::new(params);
        let mut stream = TextStream::new(&params.stop);
        let mut ids: Vec<u32> = Vec::new();
        let mut finish = FinishReason::Length;
        let mut prefill_ms = 0.0;
        let mut logits = if max_tokens > 0 { Some(self.model.step(&prompt_ids[shared..], &mut cache)?) } else { None };
        let decode_started = Instant::now();
        while let Some(current) = logits.take() {
            if ids.is_empty() {
                prefill_ms = started.elapsed().as_secs_f64() * 1e3;
            }
            let next = sampler.sample(&current, &ids);
            if self.tokenizer.stop_ids().contains(&next) {
                finish = FinishReason::Stop;
                break;
            }
            ids.push(next);
            let text = self.tokenizer.decode(&ids, true)?;
            match stream.push(&text, on_text) {
                ControlFlow::Break(()) => {
                    finish = FinishReason::Stop;
                    break;
                }
                ControlFlow::Continue(()) if ids.len() < max_tokens => {
                    logits = Some(self.model.step(&[next], &mut cache)?);
                    stepped.push(next);
                }
                ControlFlow::Continue(()) => {}
            }
        }
        let text = stream.finish(on_text);
        if cache.len() == stepped.len() {
            *turn = Turn { ids: stepped, cache };
        }
        Ok(Generation {
            text,
            finish_reason: finish,
            prompt_tokens: prompt_ids.len(),
            completion_tokens: ids.len(),
            prefill_ms,
            decode_ms: if ids.is_empty() { 0.0 } else { decode_started.elapsed().as_secs_f64() * 1e3 },
            cached_tokens: if max_tokens > 0 { shared } else { 0 },
        })
    }
}

impl Generator for LocalLlm {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn context_tokens(&self) -> usize {
        self.model.config.context_length
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.encode(text).map_or(text.len() / 3, |ids| ids.len())
    }

    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let prompt = self.tokenizer.apply_chat_template(messages)?;
        self.complete(&prompt, params, on_text)
    }
}

/// Picks the next token: argmax at temperature 0, else a draw from the
/// top-p nucleus of the tempered softmax (seeded).
#[derive(Debug)]
struct Sampler {
    temperature: f32,
    top_p: f32,
    penalty: f32,
    rng: SeededRng,
}

impl Sampler {
    fn new(params: &GenerateParams) -> Self {
        let top_p = if params.top_p.is_finite() { params.top_p.clamp(0.0, 1.0) } else { 1.0 };
        let temperature = if params.temperature.is_finite() { params.temperature.max(0.0) } else { 0.0 };
        let penalty = if params.repetition_penalty.is_finite() && params.repetition_penalty > 0.0 {
            params.repetition_penalty
        } else {
            1.0
        };
        Self { temperature, top_p, penalty, rng: SeededRng::new(params.seed) }
    }

    /// The next token after `history` (the tokens generated so far).
    fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let penalised;
        let logits = if self.penalty == 1.0 || history.is_empty() {
            logits
        } else {
            let mut copy = logits.to_vec();
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = copy.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / self.penalty } else { *l * self.penalty };
                }
            }
            penalised = copy;
            &penalised
        };
        let argmax = || logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32);
        if self.temperature == 0.0 || self.top_p == 0.0 {
            return argmax();
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, ((l - max) / self.temperature).exp()))
            .filter(|(_, p)| *p > 0.0)
            .collect();
        let total: f32 = probs.iter().map(|(_, p)| p).sum();
        if !(total.is_finite() && total > 0.0) {
            return argmax();
        }
        probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, (_, p)) in probs.iter().enumerate() {
            kept += p / total;
            if kept >= self.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        let mass: f32 = probs.iter().map(|(_, p)| p).sum();
        let mut target = self.next_unit() * mass;
        for (id, p) in &probs {
            target -= p;
            if target <= 0.0 {
                return *id;
            }
        }
        probs.last().map_or(0, |(id, _)| *id)
    }

    /// A uniform draw in `[0, 1)` (24 bits: every value exact in an `f32`).
    fn next_unit(&mut self) -> f32 {
        (self.rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Turns the growing decoded text into final pieces: holds back an
/// incomplete UTF-8 character (decoded as U+FFFD) and any tail that could be
/// the start of a stop string, and cuts the text at the first stop string.
#[derive(Debug)]
struct TextStream<'a> {
    stop: &'a [String],
    /// The text so far (cut at a stop string once one is seen).
    text: String,
    /// Bytes of `text` already passed on.
    sent: usize,
}

impl<'a> TextStream<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self { stop, text: String::new(), sent: 0 }
    }

    /// Takes the whole decoded text so far; `Break` when a stop string
    /// appeared or the consumer asked to stop.
    fn push(&mut self, text: &str, on_text: &mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
        self.text = text.to_owned();
        let first_stop = self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min();
        if let Some(at) = first_stop {
            self.text.truncate(at);
            // Generation ends here whatever the consumer answers.
            let _ = self.flush(self.text.len(), on_text);
            return ControlFlow::Break(());
        }
        let mut ready = self.text.len();
        if self.text.ends_with('\u{fffd}') {
            ready -= '\u{fffd}'.len_utf8();
        }
        // Hold back the longest tail that is a proper prefix of a stop string.
        let end = ready;
        for stop in self.stop {
            for (cut, _) in stop.char_indices().skip(1) {
                if self.text[..end].ends_with(&stop[..cut]) {
                    ready = ready.min(end - cut);
                }
            }
        }
        self.flush(ready.max(self.sent), on_text)
    }

    fn flush(&mut self, upto: usize, on_text: &mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
        if upto > self.sent && self.text.is_char_boundary(upto) {
            let piece = &self.text[self.sent..upto];
            self.sent = upto;
            return on_text(piece);
        }
        ControlFlow::Continue(())
    }

    /// Passes on what was held back and returns the whole text.
    fn finish(mut self, on_text: &mut dyn FnMut(&str) -> ControlFlow<()>) -> String {
        let len = self.text.len();
        let _ = self.flush(len, on_text);
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(stop: &[&str], steps: &[&str]) -> (Vec<String>, String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| (*s).to_owned()).collect();
        let mut stream = TextStream::new(&stop);
        let mut pieces = Vec::new();
        let mut stopped = false;
        for step in steps {
            if stream.push(step, &mut |p| {
                pieces.push(p.to_owned());
                ControlFlow::Continue(())
            }) == ControlFlow::Break(())
            {
                stopped = true;
                break;
            }
        }
        let text = stream.finish(&mut |p| {
            pieces.push(p.to_owned());
            ControlFlow::Continue(())
        });
        (pieces, text, stopped)
    }

    #[test]
    fn stream_cuts_at_stop_strings_and_holds_back_their_prefixes() {
        let (pieces, text, stopped) = collect(&["\nUser:"], &["Hi", "Hi\n", "Hi\nUs", "Hi\nUser: more"]);
        assert!(stopped);
        assert_eq!(text, "Hi");
        assert_eq!(pieces.concat(), "Hi");
        // A held-back prefix that turns out not to be a stop is released.
        let (pieces, text, stopped) = collect(&["\nUser:"], &["Hi", "Hi\n", "Hi\nThere"]);
        assert!(!stopped);
        assert_eq!(text, "Hi\nThere");
        assert_eq!(pieces, ["Hi", "\nThere"]);
    }

    #[test]
    fn stream_waits_for_whole_characters() {
        let (pieces, text, _) = collect(&[], &["caf", "caf\u{fffd}", "café"]);
        assert_eq!(pieces, ["caf", "é"]);
        assert_eq!(text, "café");
        // A stop string's prefix before an unfinished character is held back too.
        let (pieces, text, stopped) = collect(&["\né"], &["x", "x\n\u{fffd}", "x\né"]);
        assert!(stopped);
        assert_eq!((pieces.concat(), text), ("x".to_owned(), "x".to_owned()));
    }

    #[test]
    fn sampler_is_greedy_at_zero_temperature_and_seeded_otherwise() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let mut greedy = Sampler::new(&GenerateParams::default());
        assert_eq!(greedy.sample(&logits, &[]), 1);
        // A penalty on the generated token 1 lets 2 win.
        let mut penalised = Sampler::new(&GenerateParams { repetition_penalty: 1.2, ..GenerateParams::default() });
        assert_eq!(penalised.sample(&logits, &[1]), 2);
        let params = GenerateParams { temperature: 1.0, top_p: 0.9, seed: 7, ..GenerateParams::default() };
        let draws = |p: &GenerateParams| {
            let mut s = Sampler::new(p);
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        let a = draws(&params);
        assert_eq!(a, draws(&params));
        assert!(a.contains(&1) && a.contains(&2), "{a:?}");
        // top_p this small keeps only the most likely token.
        let narrow = GenerateParams { top_p: 0.01, ..params };
        assert!(draws(&narrow).iter().all(|&t| t == 1));
    }
}
