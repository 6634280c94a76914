//! The model registry: versioned model directories on disk, and which
//! version is active. One registry per kind of model: embedding adapters
//! ([`ModelCard`]), LoRA fine-tunes of the generator ([`TwinCard`]) and
//! retrieval settings ([`RetrievalCard`], a card with no weights).
//!
//! ```text
//!  <registry>/registry.json           { "active": 2, "events": [ {at_ms, action, version, reason} ] }
//!  <registry>/v1/card.json            the model card (lineage, training, metrics, decision)
//!  <registry>/v1/adapter.safetensors  the weights (lora.safetensors for a twin)
//!  <registry>/v1/<extra files>        e.g. the drift reference of its training data
//! ```
//! A version directory is written under a temporary name and renamed into
//! place, and `registry.json` is replaced atomically: a crash leaves the
//! previous or the next registry, never half a version.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use twinflow_schemas::clock::now_ms;
use twinflow_schemas::fs;

use crate::adapter::Adapter;
use crate::error::{Error, Result};
use crate::llama::lora::LoraWeights;

/// The cards and events are plain types of `schemas` (the API lists them).
pub use twinflow_schemas::models::{
    DatasetRef, Evaluation, ModelCard, RegistryEvent, RetrievalCard, TwinCard, TwinEvaluation,
};

const INDEX_FILE: &str = "registry.json";
const CARD_FILE: &str = "card.json";
const ADAPTER_FILE: &str = "adapter.safetensors";
const LORA_FILE: &str = "lora.safetensors";

/// What a registry needs of a model card.
pub trait Card: Serialize + DeserializeOwned + Clone {
    fn version(&self) -> u64;
    fn set_version(&mut self, version: u64);
    /// Why it was (or was not) promoted: the reason of its `register` event.
    fn decision(&self) -> &str;
    /// The dataset version it was trained on (its lineage).
    fn dataset(&self) -> &DatasetRef;
}

/// Every card keeps its version, decision and dataset in fields of those names.
macro_rules! cards {
    ($($card:ty),*) => {$(
        impl Card for $card {
            fn version(&self) -> u64 {
                self.version
            }

            fn set_version(&mut self, version: u64) {
                self.version = version;
            }

            fn decision(&self) -> &str {
                &self.decision
            }

            fn dataset(&self) -> &DatasetRef {
                &self.dataset
            }
        }
    )*};
}

cards!(ModelCard, TwinCard, RetrievalCard);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Index {
    active: Option<u64>,
    /// Versions active before the current one, oldest first (`None`: the base model).
    previous: Vec<Option<u64>>,
    events: Vec<RegistryEvent>,
}

/// A registry directory of models described by `C`. Every call reads what
/// is on disk; changes to the index (register, promote, rollback) are
/// serialised within the process.
#[derive(Debug)]
pub struct Registry<C = ModelCard> {
    dir: PathBuf,
    lock: std::sync::Arc<std::sync::Mutex<()>>,
    retention: Retention,
    card: PhantomData<fn() -> C>,
}

/// Which versions a registry keeps after registering a new one: the newest
/// `keep` (0: all), the `pinned`, the active one and those a rollback can
/// return to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep: usize,
    pub pinned: Vec<u64>,
}

impl<C> Clone for Registry<C> {
    fn clone(&self) -> Self {
        Self { dir: self.dir.clone(), lock: self.lock.clone(), retention: self.retention.clone(), card: PhantomData }
    }
}

impl Registry<ModelCard> {
    /// Registers an embedding adapter (see [`Registry::register`]).
    pub fn register_adapter(&self, card: ModelCard, adapter: &Adapter, extra: &[(&str, Vec<u8>)]) -> Result<ModelCard> {
        self.register(card, |dir| adapter.save(&dir.join(ADAPTER_FILE)), extra)
    }

    /// The adapter of `version`.
    pub fn adapter(&self, version: u64) -> Result<Adapter> {
        Adapter::load(&self.version_dir(version).join(ADAPTER_FILE))
    }
}

impl Registry<TwinCard> {
    /// Registers a LoRA fine-tune (see [`Registry::register`]).
    pub fn register_lora(&self, card: TwinCard, lora: &LoraWeights, extra: &[(&str, Vec<u8>)]) -> Result<TwinCard> {
        self.register(card, |dir| lora.save(&dir.join(LORA_FILE)), extra)
    }

    /// The LoRA factors of `version`.
    pub fn lora(&self, version: u64) -> Result<LoraWeights> {
        LoraWeights::load(&self.version_dir(version).join(LORA_FILE))
    }
}

impl<C: Card> Registry<C> {
    /// Opens (creating) the registry at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Self { dir: dir.to_owned(), lock: Default::default(), retention: Retention::default(), card: PhantomData })
    }

    /// This registry, removing after each registration the versions `retention` does not keep.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Removes the versions past the newest `keep` that are not pinned, not
    /// active and not a rollback target; returns them.
    fn prune(&self, index: &mut Index) -> Result<Vec<u64>> {
        if self.retention.keep == 0 {
            return Ok(Vec::new());
        }
        let mut versions: Vec<u64> = self.list()?.iter().map(Card::version).collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        let needed = |v: &u64| {
            self.retention.pinned.contains(v) || index.active == Some(*v) || index.previous.contains(&Some(*v))
        };
        let removed: Vec<u64> = versions.into_iter().skip(self.retention.keep).filter(|v| !needed(v)).collect();
        for version in &removed {
            let dir = self.version_dir(*version);
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            index.events.push(RegistryEvent {
                at_ms: now_ms(),
                action: "remove".into(),
                version: Some(*version),
                reason: format!("past the newest {} versions", self.retention.keep),
            });
        }
        Ok(removed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> Result<Index> {
        let path = self.dir.join(INDEX_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::Config { path, reason: format!("the registry index is damaged: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn store_index(&self, index: &Index) -> Result<()> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Inference(e.to_string()))?;
        fs::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))
    }

    /// The directory of `version`.
    pub fn version_dir(&self, version: u64) -> PathBuf {
        self.dir.join(format!("v{version}"))
    }

    /// Every registered version's card, oldest first.
    pub fn list(&self) -> Result<Vec<C>> {
        let mut cards = BTreeMap::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) {
                cards.insert(version, self.card(version)?);
            }
        }
        Ok(cards.into_values().collect())
    }

    /// The card of `version`.
    pub fn card(&self, version: u64) -> Result<C> {
        let path = self.version_dir(version).join(CARD_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Config { path, reason: e.to_string() })
    }

    /// The active version (`None`: the base model).
    pub fn active(&self) -> Result<Option<u64>> {
        Ok(self.index()?.active)
    }

    /// The change history, oldest first.
    pub fn events(&self) -> Result<Vec<RegistryEvent>> {
        Ok(self.index()?.events)
    }

    /// Registers a new version: `write_weights` writes its weights into the
    /// (temporary) version directory, `extra` files (name → bytes) go beside
    /// them; returns the card with its number set.
    pub fn register(
        &self,
        mut card: C,
        write_weights: impl FnOnce(&Path) -> Result<()>,
        extra: &[(&str, Vec<u8>)],
    ) -> Result<C> {
        let _lock = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let version = self.list()?.iter().map(Card::version).max().unwrap_or(0) + 1;
        card.set_version(version);
        let tmp = self.dir.join(format!(".v{version}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        write_weights(&tmp)?;
        let json = serde_json::to_vec_pretty(&card).map_err(|e| Error::Inference(e.to_string()))?;
        let card_path = tmp.join(CARD_FILE);
        fs::write_atomic(&card_path, &json).map_err(|e| Error::io(&card_path, e))?;
        for (name, bytes) in extra {
            let path = tmp.join(name);
            fs::write_atomic(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        let dir = self.version_dir(version);
        fs::rename_durably(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        let mut index = self.index()?;
        index.events.push(RegistryEvent {
            at_ms: now_ms(),
            action: "register".into(),
            version: Some(version),
            reason: card.decision().to_owned(),
        });
        self.prune(&mut index)?;
        self.store_index(&index)?;
        Ok(card)
    }

    /// Makes `version` the active model.
    pub fn promote(&self, version: u64, reason: &str) -> Result<()> {
        let _lock = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.card(version)?;
        let mut index = self.index()?;
        if index.active == Some(version) {
            return Ok(());
        }
        let before = index.active;
        index.previous.push(before);
        index.active = Some(version);
        index.events.push(RegistryEvent {
            at_ms: now_ms(),
            action: "promote".into(),
            version: Some(version),
            reason: reason.into(),
        });
        self.store_index(&index)
    }

    /// Makes the previously active version (or the base model) active again;
    /// returns it. An error when nothing was promoted before.
    pub fn rollback(&self, reason: &str) -> Result<Option<u64>> {
        let _lock = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut index = self.index()?;
        let Some(previous) = index.previous.pop() else {
            return Err(Error::Config { path: self.dir.join(INDEX_FILE), reason: "nothing to roll back to".into() });
        };
        index.active = previous;
        index.events.push(RegistryEvent {
            at_ms: now_ms(),
            action: "rollback".into(),
            version: previous,
            reason: reason.into(),
        });
        self.store_index(&index)?;
        Ok(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{AdapterTraining, TrainingReport};

    fn card() -> ModelCard {
        ModelCard {
            version: 0,
            kind: "embedding-adapter".into(),
            base_model: "base".into(),
            dim: 2,
            created_at_ms: 1,
            parent: None,
            dataset: DatasetRef {
                name: "instruct".into(),
                version: 1,
                epoch: 3,
                content_hash: "h".into(),
                train_pairs: 10,
                test_pairs: 2,
            },
            trigger: serde_json::json!("manual"),
            training: AdapterTraining::default(),
            report: TrainingReport {
                pairs: 10,
                steps: 1,
                epoch_losses: vec![1.0],
                seconds: 0.1,
                distance_from_identity: 0.0,
            },
            evaluation: Evaluation {
                k: 10,
                queries: 2,
                corpus: 5,
                base: 0.5,
                parent: 0.5,
                candidate: 0.6,
                evidence: Vec::new(),
                gain: None,
            },
            promotable: true,
            decision: "better".into(),
        }
    }

    #[test]
    fn register_promote_rollback() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::open(dir.path()).expect("opens");
        assert_eq!(registry.active().expect("reads"), None);
        let v1 =
            registry.register_adapter(card(), &Adapter::identity(2), &[("extra.json", b"{}".to_vec())]).expect("v1");
        let v2 = registry.register_adapter(card(), &Adapter::identity(2), &[]).expect("v2");
        assert_eq!((v1.version, v2.version), (1, 2));
        assert!(registry.version_dir(1).join("extra.json").exists());
        registry.promote(1, "test").expect("promoted");
        registry.promote(2, "test").expect("promoted");
        assert_eq!(registry.active().expect("reads"), Some(2));
        assert_eq!(registry.rollback("test").expect("rolled back"), Some(1));
        assert_eq!(registry.rollback("test").expect("rolled back"), None);
        assert!(registry.rollback("test").is_err());
        assert!(registry.promote(9, "missing").is_err());
        assert_eq!(registry.list().expect("lists").len(), 2);
        assert_eq!(registry.adapter(2).expect("weights"), Adapter::identity(2));
        let actions: Vec<_> = registry.events().expect("events").into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["register", "register", "promote", "promote", "rollback", "rollback"]);
    }

    #[test]
    fn retention_keeps_the_newest_the_pinned_the_active_and_rollback_targets() {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry =
            Registry::open(dir.path()).expect("opens").with_retention(Retention { keep: 2, pinned: vec![1] });
        let register = || registry.register_adapter(card(), &Adapter::identity(2), &[]).expect("registers").version;
        for _ in 0..3 {
            register();
        }
        registry.promote(2, "test").expect("promoted");
        registry.promote(3, "test").expect("promoted");
        for _ in 0..3 {
            register();
        }
        let mut kept: Vec<u64> = registry.list().expect("lists").iter().map(|c| c.version).collect();
        kept.sort_unstable();
        // v1 pinned, v2 a rollback target, v3 active, v5 and v6 the newest two; v4 goes.
        assert_eq!(kept, [1, 2, 3, 5, 6]);
        assert!(!registry.version_dir(4).exists());
        assert_eq!(registry.rollback("test").expect("rolls back"), Some(2));
        assert_eq!(register(), 7, "numbers keep growing");
    }
}
