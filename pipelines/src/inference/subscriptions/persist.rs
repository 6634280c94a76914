//! Subscriptions on disk: one JSON file per subscription under
//! `<data>/_subscriptions/` (its request, embedded query, rankings and last
//! events), replaced atomically when it changes, and `_followed.json`, the
//! last epoch whose commit every subscription has seen. A restart that finds
//! the store committed past it searches every subscription again.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use twinflow_schemas::Hash128;
use twinflow_schemas::api::{RankedChunk, SubscriptionEvent};

use super::{Spec, Standing};
use crate::Failure;
use crate::failure::Context;

const DIR: &str = "_subscriptions";
const FOLLOWED: &str = "_followed.json";

/// One subscription as saved.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Saved {
    pub spec: Spec,
    /// The encoder that embedded `query`.
    pub model_id: String,
    #[serde(with = "vector")]
    pub query: Vec<f32>,
    pub standing: Standing,
    pub top: Vec<RankedChunk>,
    pub epoch: u64,
    pub events: Vec<SubscriptionEvent>,
    pub dropped_through: u64,
    pub event_count: u64,
    pub cited: Vec<Hash128>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Followed {
    epoch: u64,
}

/// The folder of saved subscriptions.
#[derive(Debug)]
pub(super) struct Files {
    dir: PathBuf,
}

impl Files {
    pub(super) fn open(data_dir: &Path) -> Result<Self, Failure> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// Every saved subscription, and the epoch followed.
    pub(super) fn load(&self) -> Result<(Vec<Saved>, u64), Failure> {
        let mut saved = Vec::new();
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("cannot list {}", self.dir.display()))?;
        for entry in entries {
            let path = entry.with_context(|| format!("cannot list {}", self.dir.display()))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.starts_with("sub_") || !name.ends_with(".json") {
                continue;
            }
            let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let one: Saved = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a saved subscription", path.display()))?;
            saved.push(one);
        }
        let followed = match std::fs::read(self.dir.join(FOLLOWED)) {
            Ok(text) => serde_json::from_slice::<Followed>(&text).map_or(0, |f| f.epoch),
            Err(_) => 0,
        };
        Ok((saved, followed))
    }

    pub(super) fn save(&self, saved: &Saved) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(saved).context("cannot encode a subscription")?;
        self.replace(&format!("{}.json", saved.spec.id), &bytes)
    }

    pub(super) fn save_followed(&self, epoch: u64) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(&Followed { epoch }).context("cannot encode the epoch followed")?;
        self.replace(FOLLOWED, &bytes)
    }

    pub(super) fn remove(&self, id: &str) -> Result<(), Failure> {
        let path = self.dir.join(format!("{id}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Writes `name` whole or not at all (a temporary file renamed over it).
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), Failure> {
        let path = self.dir.join(name);
        let temporary = self.dir.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, bytes).with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("cannot replace {}", path.display()))
    }
}

/// 20 random lower-case letters and digits (an id that cannot be guessed).
pub(super) fn random_id() -> Result<String, Failure> {
    let token = twinflow_schemas::auth::random_token().context("cannot draw a random id")?;
    Ok(token.chars().filter(char::is_ascii_alphanumeric).take(20).collect::<String>().to_ascii_lowercase())
}

/// A vector as base64 of its little-endian `f32`s (a quarter of JSON's size).
mod vector {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(serde::de::Error::custom("a vector's bytes are not a whole number of f32"));
        }
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}
