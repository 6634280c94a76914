//! `[generator]`: the model that writes answers, local or remote.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The model that writes answers (`/v1/rag`, `/v1/chat/completions`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case", deny_unknown_fields)]
pub enum GeneratorConfig {
    /// A Llama-architecture GGUF model run in-process (burn, CPU):
    /// SmolLM2-135M-Instruct by default, fetched once into the cache.
    Local(LocalGeneratorConfig),
    /// Any OpenAI-compatible `/v1/chat/completions` endpoint.
    Openai(OpenAiGeneratorConfig),
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self::Local(LocalGeneratorConfig::default())
    }
}

/// Settings of the in-process generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalGeneratorConfig {
    /// The GGUF file; when absent SmolLM2-135M-Instruct is fetched into (or found in) the cache.
    pub gguf: Option<PathBuf>,
    /// Positions (prompt and answer together) the KV cache holds.
    pub context: usize,
    /// How the projections sit in memory: `blocks` (the default: the GGUF
    /// blocks as stored, a quarter to a seventh of the memory, multiplied
    /// with 8-bit activations by integer kernels when decoding and
    /// dequantised by tiles for a prompt) or `f32` (dequantised at load);
    /// `twinflow-bench quantized` measures the speed of both.
    pub weights: LocalWeights,
}

/// `[generator] weights`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalWeights {
    F32,
    #[default]
    Blocks,
}

impl Default for LocalGeneratorConfig {
    fn default() -> Self {
        Self { gguf: None, context: 2048, weights: LocalWeights::Blocks }
    }
}

/// Settings of a remote OpenAI-compatible generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiGeneratorConfig {
    /// Base URL, up to and including `/v1` (e.g. `http://127.0.0.1:8000/v1`).
    pub url: String,
    /// The model name sent with each request.
    pub model: String,
    /// Name of the environment variable holding the API key (sent as a
    /// bearer token when set); the key itself never goes in a config file.
    pub api_key_env: Option<String>,
    /// Context size of the remote model, in tokens (for prompt budgets).
    pub context: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OpenAiGeneratorConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000/v1".into(),
            model: "default".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            context: 8192,
            timeout: Duration::from_secs(120),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_weights_read_their_names() {
        let local: LocalGeneratorConfig = toml::from_str("weights = \"f32\"").unwrap();
        assert_eq!(local.weights, LocalWeights::F32);
        assert_eq!(LocalGeneratorConfig::default().weights, LocalWeights::Blocks);
        assert!(toml::from_str::<LocalGeneratorConfig>("weights = \"q4\"").is_err());
    }
}
