//! The generators the configuration can name, behind
//! [`twinflow_models::Generator`]: the local GGUF model, or any
//! OpenAI-compatible endpoint ([`OpenAiGenerator`]), loaded on first use;
//! and the active twin (the local model with a LoRA fine-tune merged), which
//! answers in its place once one is promoted.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use twinflow_models::{
    ChatMessage, Error as ModelError, FinishReason, GenerateParams, Generation, Generator, LocalLlm, LoraWeights,
    cpu_device, default_cache_dir, fetch_smollm2,
};
use twinflow_schemas::config::{GeneratorConfig, LocalWeights, OpenAiGeneratorConfig};

use super::Error;
use crate::Context;

/// The configured generator, built on first use (loading SmolLM2 takes a
/// second or two and fetches it the first time; servers that never answer
/// questions never pay for it), and the active twin.
#[derive(Debug)]
pub struct LazyGenerator {
    config: GeneratorConfig,
    /// Only a success is kept: a failed build (no network for the fetch) is retried by the next call.
    built: Mutex<Option<Arc<dyn Generator>>>,
    twin: Mutex<Option<TwinSlot>>,
}

/// The active twin: its name and factors, and the merged model once built.
#[derive(Debug)]
struct TwinSlot {
    name: String,
    lora: Arc<LoraWeights>,
    built: Option<Arc<dyn Generator>>,
}

impl LazyGenerator {
    pub fn new(config: GeneratorConfig) -> Self {
        Self { config, built: Mutex::new(None), twin: Mutex::new(None) }
    }

    /// What answers questions: the twin when one is active, else the
    /// configured generator; built now if needed (blocking: call it off the
    /// async runtime). The error says why it could not be built.
    pub fn get(&self) -> Result<Arc<dyn Generator>, String> {
        let mut twin = self.twin.lock();
        if let Some(slot) = twin.as_mut() {
            if let Some(generator) = &slot.built {
                return Ok(generator.clone());
            }
            let generator = self.build_twin(&slot.name, &slot.lora).map_err(|e| crate::error_chain(&e))?;
            slot.built = Some(generator.clone());
            return Ok(generator);
        }
        drop(twin);
        self.base()
    }

    /// The configured generator, never the twin (dataset generation and the
    /// preference data's rejected answers come from it).
    pub fn base(&self) -> Result<Arc<dyn Generator>, String> {
        let mut built = self.built.lock();
        if let Some(generator) = built.as_ref() {
            return Ok(generator.clone());
        }
        let generator = build_generator(&self.config).map_err(|e| crate::error_chain(&e))?;
        *built = Some(generator.clone());
        Ok(generator)
    }

    /// The local model's GGUF file and context (fetched if needed); an error
    /// for an OpenAI-compatible generator, which cannot be fine-tuned here.
    pub fn local_gguf(&self) -> Result<(std::path::PathBuf, usize), Error> {
        match &self.config {
            GeneratorConfig::Local(local) => {
                let path = match &local.gguf {
                    Some(path) => path.clone(),
                    None => fetch_smollm2(&default_cache_dir()).context("cannot fetch the SmolLM2 weights")?,
                };
                Ok((path, local.context))
            }
            GeneratorConfig::Openai(remote) => Err(Error::NotLocal(format!(
                "the generator is the OpenAI-compatible endpoint {} ({}); the twin fine-tunes the local model only",
                remote.url, remote.model
            ))),
        }
    }

    /// The local model with `lora` merged, named `name`.
    pub fn build_twin(&self, name: &str, lora: &LoraWeights) -> Result<Arc<dyn Generator>, Error> {
        let (path, context) = self.local_gguf()?;
        let weights = match &self.config {
            GeneratorConfig::Local(local) => local.weights,
            GeneratorConfig::Openai(_) => LocalWeights::F32,
        };
        let started = Instant::now();
        let mut llm = load_local(&path, context, weights)
            .with_context(|| format!("cannot load the generator {}", path.display()))?;
        llm.merge_lora(lora, name).with_context(|| format!("cannot merge the twin {name}"))?;
        tracing::info!(twin = name, ms = started.elapsed().as_millis() as u64, "loaded the twin");
        Ok(Arc::new(llm))
    }

    /// Makes `twin` (name, factors and, when already built, the merged model)
    /// answer from the next request on; `None` goes back to the configured
    /// generator. Requests in flight finish on the model they started with.
    pub fn set_twin(&self, twin: Option<(String, Arc<LoraWeights>, Option<Arc<dyn Generator>>)>) {
        *self.twin.lock() = twin.map(|(name, lora, built)| TwinSlot { name, lora, built });
    }

    /// The name of the active twin, if any.
    pub fn twin_name(&self) -> Option<String> {
        self.twin.lock().as_ref().map(|slot| slot.name.clone())
    }
}

/// Builds the generator `config` names.
pub fn build_generator(config: &GeneratorConfig) -> Result<Arc<dyn Generator>, Error> {
    Ok(match config {
        GeneratorConfig::Local(local) => {
            let path = match &local.gguf {
                Some(path) => path.clone(),
                None => fetch_smollm2(&default_cache_dir()).context("cannot fetch the SmolLM2 weights")?,
            };
            let started = Instant::now();
            let llm = load_local(&path, local.context, local.weights)
                .with_context(|| format!("cannot load the generator {}", path.display()))?;
            tracing::info!(model = llm.model_name(), ms = started.elapsed().as_millis() as u64, "loaded the generator");
            Arc::new(llm)
        }
        GeneratorConfig::Openai(remote) => Arc::new(OpenAiGenerator::new(remote.clone())?),
    })
}

/// A generator that calls an OpenAI-compatible `POST {url}/chat/completions`
/// with `stream: true` and passes the streamed text on.
#[derive(Debug)]
pub struct OpenAiGenerator {
    config: OpenAiGeneratorConfig,
    api_key: Option<String>,
    http: reqwest::blocking::Client,
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    /// Servers report a failure mid-stream as an event with an `error`.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
}

fn remote_error(message: String) -> ModelError {
    ModelError::Inference(message)
}

impl OpenAiGenerator {
    /// A client for `config` (the API key is read from `config.api_key_env` now).
    pub fn new(config: OpenAiGeneratorConfig) -> Result<Self, Error> {
        let api_key = config.api_key_env.as_deref().and_then(|name| std::env::var(name).ok()).filter(|k| !k.is_empty());
        let http = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .build()
            .context("cannot build the HTTP client of the OpenAI-compatible generator")?;
        Ok(Self { config, api_key, http })
    }

    /// This client with `key` as its API key, whatever the environment holds
    /// (for a caller that keeps keys elsewhere than in variables).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }
}

impl Generator for OpenAiGenerator {
    fn model_name(&self) -> &str {
        &self.config.model
    }

    fn context_tokens(&self) -> usize {
        self.config.context
    }

    fn count_tokens(&self, text: &str) -> usize {
        // The tokenizer is remote: about four bytes a token for English, rounded up.
        text.len().div_ceil(4)
    }

    fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation, ModelError> {
        let started = Instant::now();
        let url = format!("{}/chat/completions", self.config.url.trim_end_matches('/'));
        let mut body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !params.stop.is_empty() {
            body["stop"] = json!(params.stop);
        }
        let mut request = self.http.post(&url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().map_err(|e| remote_error(format!("{url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().unwrap_or_default();
            return Err(remote_error(format!(
                "{url} answered {status}: {}",
                text.chars().take(500).collect::<String>()
            )));
        }
        let mut text = String::new();
        let mut finish = FinishReason::Stop;
        let mut usage = None;
        let mut first_piece_ms = None;
        for line in BufReader::new(response).lines() {
            let line = line.map_err(|e| remote_error(format!("{url}: reading the stream: {e}")))?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                break;
            }
            let chunk: StreamChunk = serde_json::from_str(data)
                .map_err(|e| remote_error(format!("{url}: a stream event is not a chat.completion.chunk: {e}")))?;
            if let Some(error) = chunk.error {
                return Err(remote_error(format!("{url}: the stream reported an error: {error}")));
            }
            usage = chunk.usage.or(usage);
            let Some(choice) = chunk.choices.into_iter().next() else { continue };
            if let Some(reason) = choice.finish_reason {
                finish = if reason == "length" { FinishReason::Length } else { FinishReason::Stop };
            }
            if let Some(piece) = choice.delta.content.filter(|p| !p.is_empty()) {
                first_piece_ms.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1e3);
                text.push_str(&piece);
                if on_text(&piece).is_break() {
                    break;
                }
            }
        }
        let prefill_ms = first_piece_ms.unwrap_or_else(|| started.elapsed().as_secs_f64() * 1e3);
        let (prompt_tokens, completion_tokens) = match usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (messages.iter().map(|m| self.count_tokens(&m.content)).sum(), self.count_tokens(&text)),
        };
        Ok(Generation {
            text,
            finish_reason: finish,
            prompt_tokens,
            completion_tokens,
            prefill_ms,
            decode_ms: started.elapsed().as_secs_f64() * 1e3 - prefill_ms,
            cached_tokens: 0,
        })
    }
}

/// The local model at `path`, its projections in memory as `weights` says.
fn load_local(path: &std::path::Path, context: usize, weights: LocalWeights) -> twinflow_models::Result<LocalLlm> {
    match weights {
        LocalWeights::F32 => LocalLlm::load(path, context, &cpu_device()),
        LocalWeights::Blocks => LocalLlm::load_quantized(path, context, &cpu_device()),
    }
}
