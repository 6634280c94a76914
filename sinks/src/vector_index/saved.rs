//! The graph saved with each snapshot (`_index/vectors-v<N>.usearch` and
//! its `.keys` file), loaded on open and reconciled with the live rows, so
//! a restart need not rebuild it.

use std::fs::File;
use std::path::{Path, PathBuf};

use twinflow_schemas::Hash128;
use twinflow_schemas::config::AnnConfig;
use twinflow_schemas::fs;

use super::{SEARCH_THREADS, VectorIndex, index_error};
use crate::error::{Error, Result};

/// The graph and keys files of shard `shard` of `shards` saved with
/// snapshot `version` (one shard: `vectors-v{version}.*`, as before shards).
pub(super) fn saved_paths(dir: &Path, version: u64, shard: usize, shards: usize) -> (PathBuf, PathBuf) {
    let stem =
        if shards <= 1 { format!("vectors-v{version}") } else { format!("vectors-v{version}-s{shard}of{shards}") };
    (dir.join(format!("{stem}.usearch")), dir.join(format!("{stem}.keys")))
}

/// Removes the saved files of versions before `version`, and the hidden
/// temporaries (`.vectors-v<N>….tmp`) a crash may have left of them.
pub(super) fn remove_older(dir: &Path, version: u64) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let older = name
            .trim_start_matches('.')
            .strip_prefix("vectors-v")
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v < version);
        if older {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl VectorIndex {
    /// Writes the graph and then its keys to `graph_path` and `keys_path`
    /// (each through a synced temporary file and a durable rename: keys that
    /// are there belong to a whole graph). Call with no commit in progress
    /// (the store's writer lock).
    pub(super) fn save_to(&self, graph_path: &Path, keys_path: &Path) -> Result<()> {
        let graph_tmp = graph_path.with_extension("usearch.tmp");
        self.graph.save(&graph_tmp.to_string_lossy()).map_err(index_error)?;
        File::open(&graph_tmp).and_then(|file| file.sync_all()).map_err(|e| Error::io(&graph_tmp, e))?;
        fs::rename_durably(&graph_tmp, graph_path).map_err(|e| Error::io(graph_path, e))?;
        let mut text = format!("twinflow-vector-keys 1 {} {}\n", self.dim, self.config.quantization);
        for model in &self.models {
            text.push_str(&format!("model {model}\n"));
        }
        for ((chunk, model), key) in &self.keys {
            text.push_str(&format!("{:032x} {model} {key}\n", chunk.0));
        }
        fs::write_atomic(keys_path, text.as_bytes()).map_err(|e| Error::io(keys_path, e))
    }

    /// The index saved in `graph_path` and `keys_path`, if they are there,
    /// whole, and of this dimension and storage; `None` otherwise (rebuild instead).
    pub(super) fn load_from(
        graph_path: &Path,
        keys_path: &Path,
        version: u64,
        dim: usize,
        config: &AnnConfig,
    ) -> Option<Self> {
        let text = std::fs::read_to_string(keys_path).ok()?;
        let mut lines = text.lines();
        let header = lines.next()?;
        if header != format!("twinflow-vector-keys 1 {dim} {}", config.quantization) {
            return None;
        }
        let mut index = Self::new(dim, config).ok()?;
        index.graph.load(&graph_path.to_string_lossy()).ok()?;
        if index.graph.dimensions() != dim {
            return None;
        }
        for line in lines {
            if let Some(model) = line.strip_prefix("model ") {
                index.models.push(model.to_owned());
                continue;
            }
            let mut parts = line.split(' ');
            let chunk = Hash128(u128::from_str_radix(parts.next()?, 16).ok()?);
            let model: u32 = parts.next()?.parse().ok()?;
            let key: u64 = parts.next()?.parse().ok()?;
            if model as usize >= index.models.len() || !index.graph.contains(key) {
                return None;
            }
            if index.chunks.len() <= key as usize {
                index.chunks.resize(key as usize + 1, None);
            }
            index.chunks[key as usize] = Some(chunk);
            index.keys.insert((chunk, model), key);
        }
        if index.keys.len() != index.graph.size() {
            return None;
        }
        index.free = (0..index.chunks.len() as u64).filter(|k| index.chunks[*k as usize].is_none()).collect();
        let capacity = index.graph.capacity().max(index.graph.size() + 1024);
        index.graph.reserve_capacity_and_threads(capacity, SEARCH_THREADS).ok()?;
        index.graph.change_expansion_add(config.expansion_add);
        index.graph.change_expansion_search(config.expansion_search);
        index.restored_from = Some(version);
        Some(index)
    }

    /// Brings a loaded index to the live rows: adds the rows it lacks, removes
    /// the rows that are gone. Returns `(added, removed)`.
    pub(crate) fn reconcile<'a>(
        &mut self,
        live: impl Iterator<Item = (Hash128, &'a str, &'a [f32])>,
    ) -> Result<(usize, usize)> {
        let mut seen = std::collections::HashSet::new();
        let mut added = 0;
        for (chunk, model_id, vector) in live {
            let row = (chunk, self.model_index(model_id));
            seen.insert(row);
            if !self.keys.contains_key(&row) && vector.len() == self.dim {
                self.set(chunk, model_id, Some(vector))?;
                added += 1;
            }
        }
        let gone: Vec<(Hash128, u32)> = self.keys.keys().filter(|row| !seen.contains(*row)).copied().collect();
        for (chunk, model) in &gone {
            let model_id = self.models[*model as usize].clone();
            self.set(*chunk, &model_id, None)?;
        }
        Ok((added, gone.len()))
    }
}
