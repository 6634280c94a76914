//! Layered configuration: built-in defaults < `twinflow.toml` (or
//! `--config FILE`) < `TWINFLOW__SECTION__KEY` environment variables <
//! command-line flags. Unknown keys are errors naming the key and where it
//! came from. The binary (`twinflow`) loads its configuration through here;
//! so can any program embedding the pipelines.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;

use super::Config;

/// The default configuration file, read from the working directory when
/// present.
pub const DEFAULT_CONFIG_FILE: &str = "twinflow.toml";

/// Values given on the command line, as `(dotted.key, value)` pairs.
#[derive(Debug, Default)]
pub struct Overrides {
    pairs: Vec<(String, figment::value::Value)>,
}

impl Overrides {
    /// Sets `key` (e.g. `engine.workers`) to `value`.
    pub fn set(&mut self, key: &str, value: impl Serialize) -> anyhow::Result<()> {
        let value = figment::value::Value::serialize(value)?;
        self.pairs.push((key.to_owned(), value));
        Ok(())
    }

    /// Sets `key` when `value` is present.
    pub fn set_opt<T: Serialize>(&mut self, key: &str, value: Option<T>) -> anyhow::Result<()> {
        match value {
            Some(value) => self.set(key, value),
            None => Ok(()),
        }
    }
}

/// The figment of all layers, for extraction and for showing origins.
///
/// A section chosen by `type` (`embedder`, `generator`) whose type a layer
/// changes starts from that type's defaults, not from the default type's
/// `config`: `[embedder] type = "hashing"` alone is a complete setting.
pub fn figment(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Figment> {
    let layered = layers(Config::default(), file, overrides)?;
    let mut defaults = Config::default();
    let of_type = |section: &str| {
        let kind = layered.extract_inner::<String>(&format!("{section}.type")).ok()?;
        Some(serde_json::json!({ "type": kind, "config": {} }))
    };
    if let Some(embedder) = of_type("embedder").and_then(|v| serde_json::from_value(v).ok()) {
        defaults.embedder = embedder;
    }
    if let Some(generator) = of_type("generator").and_then(|v| serde_json::from_value(v).ok()) {
        defaults.generator = generator;
    }
    if defaults.embedder == Config::default().embedder && defaults.generator == Config::default().generator {
        return Ok(layered);
    }
    layers(defaults, file, overrides)
}

fn layers(defaults: Config, file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Figment> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    match file {
        Some(path) => {
            anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
            figment = figment.merge(Toml::file_exact(path));
        }
        None => {
            if Path::new(DEFAULT_CONFIG_FILE).exists() {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
        }
    }
    figment = figment.merge(Env::prefixed("TWINFLOW__").split("__"));
    for (key, value) in &overrides.pairs {
        figment = figment.merge(Serialized::global(key, value.clone()));
    }
    Ok(figment)
}

/// Loads the effective configuration.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let figment = figment(file, overrides)?;
    figment.extract::<Config>().map_err(|e| anyhow::anyhow!(describe(e)))
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let origin = e.metadata.as_ref().map(|m| match &m.source {
                Some(source) => format!("{} ({source})", m.name),
                None => m.name.to_string(),
            });
            let path = if e.path.is_empty() { String::new() } else { format!(" at `{}`", e.path.join(".")) };
            match origin {
                Some(origin) => format!("invalid configuration{path} from {origin}: {}", e.kind),
                None => format!("invalid configuration{path}: {}", e.kind),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Settings whose values `show` hides.
const SECRETS: [&str; 1] = ["auth.cluster_secret"];

/// The effective configuration as TOML, each top-level value annotated with
/// the layer it came from.
pub fn show(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<String> {
    let figment = figment(file, overrides)?;
    let config: Config = figment.extract().map_err(|e| anyhow::anyhow!(describe(e)))?;
    let value = serde_json::to_value(&config)?;
    let mut out = String::new();
    if let serde_json::Value::Object(sections) = value {
        for (section, body) in sections {
            match body {
                serde_json::Value::Object(fields) => {
                    out.push_str(&format!("[{section}]\n"));
                    for (key, mut value) in fields {
                        let path = format!("{section}.{key}");
                        // A secret is shown as set or not, never as itself.
                        if SECRETS.contains(&path.as_str()) && !value.is_null() {
                            value = serde_json::Value::String("<hidden>".into());
                        }
                        let origin = figment
                            .find_metadata(&path)
                            .map(|m| m.source.as_ref().map(|s| s.to_string()).unwrap_or_else(|| m.name.to_string()))
                            .unwrap_or_default();
                        out.push_str(&format!("{key} = {}  # {}\n", toml_value(&value), short_origin(&origin)));
                    }
                    out.push('\n');
                }
                other => out.push_str(&format!("{section} = {}\n", toml_value(&other))),
            }
        }
    }
    Ok(out)
}

fn short_origin(origin: &str) -> &str {
    if origin.contains("Config") && origin.contains("schemas") { "default" } else { origin }
}

fn toml_value(value: &serde_json::Value) -> String {
    toml::Value::try_from(value).map(|v| v.to_string()).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[engine]\nworkers = 3\ntick = \"20ms\"\n").unwrap();
        let mut flags = Overrides::default();
        flags.set("engine.workers", 5).unwrap();
        let config = load(Some(&file), &flags).unwrap();
        assert_eq!(config.engine.workers, 5);
        assert_eq!(config.engine.tick, std::time::Duration::from_millis(20));

        std::fs::write(&file, "[engine]\nwrokers = 3\n").unwrap();
        let err = load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("wrokers") && err.contains("t.toml"), "{err}");
        let shown = show(None, &flags).unwrap();
        assert!(shown.contains("workers = 5"), "{shown}");
    }

    #[test]
    fn choosing_another_type_starts_from_its_own_defaults() {
        use crate::config::{EmbedderConfig, GeneratorConfig, HashingEmbedderConfig};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "[embedder]\ntype = \"hashing\"\n").unwrap();
        let config = load(Some(&file), &Overrides::default()).unwrap();
        assert_eq!(config.embedder, EmbedderConfig::Hashing(HashingEmbedderConfig::default()));
        assert!(matches!(config.generator, GeneratorConfig::Local(_)));

        std::fs::write(&file, "[embedder]\ntype = \"hashing\"\n[embedder.config]\ndim = 64\n").unwrap();
        let config = load(Some(&file), &Overrides::default()).unwrap();
        assert!(matches!(config.embedder, EmbedderConfig::Hashing(HashingEmbedderConfig { dim: 64, .. })));

        // The default type's keys are still checked against the type chosen.
        std::fs::write(&file, "[embedder]\ntype = \"hashing\"\n[embedder.config]\nbatch_size = 8\n").unwrap();
        let err = load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("batch_size") && err.contains("t.toml"), "{err}");
        std::fs::write(&file, "[embedder]\ntype = \"bert\"\n").unwrap();
        let err = load(Some(&file), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("bert"), "{err}");
    }
}
