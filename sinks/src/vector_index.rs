//! The approximate vector index: an HNSW graph (USearch) over the live
//! embeddings, kept in step with the committed epochs by inserts and deletes.
//!
//! Each live embedding row — a `(chunk_id, model_id)` pair — has one key in
//! the graph. Keys are handed out from a counter and reused after deletes, so
//! the graph never needs a rebuild; a chunk with vectors of several models has
//! several keys and counts once in results, with its best score. Vectors are
//! L2-normalised, so the metric is the inner product and `score = 1 − distance`.
//!
//! Only vectors of the store's dimension are indexed; the exact scan in
//! `search.rs` covers the rest (and small or selectively filtered searches).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use twinflow_schemas::Hash128;
use twinflow_schemas::config::AnnConfig;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result};

/// Threads that may search the graph at the same time.
const SEARCH_THREADS: usize = 64;

/// The HNSW index and its key bookkeeping. The store keeps one in step with
/// its live embeddings; it is public for benchmarks and embedding programs.
pub struct VectorIndex {
    graph: Index,
    config: AnnConfig,
    dim: usize,
    /// Model ids, interned: rows refer to them by position.
    models: Vec<String>,
    /// Live row → key.
    keys: HashMap<(Hash128, u32), u64>,
    /// Key → chunk (`None` for a free key).
    chunks: Vec<Option<Hash128>>,
    free: Vec<u64>,
    /// Set while staged vectors are being added (searches must then skip unknown keys).
    staging: AtomicBool,
    /// See [`VectorIndexStats::restored_from`].
    restored_from: Option<u64>,
}

/// Rows whose vectors go into the graph under fresh keys before they are
/// published: [`VectorIndex::stage`] → [`VectorIndex::add_staged`] (beside
/// searches) → [`VectorIndex::publish`].
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// `(position in the caller's list, row, key, added)`.
    rows: Vec<(usize, (Hash128, u32), u64, bool)>,
}

impl fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorIndex").field("dim", &self.dim).field("vectors", &self.len()).finish_non_exhaustive()
    }
}

/// Sizes of the index, for status pages and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VectorIndexStats {
    /// Vectors in the graph.
    pub vectors: usize,
    /// Bytes USearch reports for the graph and the vectors.
    pub memory_bytes: usize,
    /// Bytes of twinflow's key bookkeeping beside it (estimated).
    pub bookkeeping_bytes: usize,
    /// The snapshot version whose saved graph this one was loaded from (`None`: built from the rows).
    pub restored_from: Option<u64>,
    /// Shards the index is split into (by chunk id).
    pub shards: usize,
}

/// The graph and keys files of snapshot `version`.
/// The files of shard `shard` of `shards` saved with snapshot `version`
/// (one shard: `vectors-v{version}.*`, as before shards).
fn saved_paths(dir: &Path, version: u64, shard: usize, shards: usize) -> (PathBuf, PathBuf) {
    let stem =
        if shards <= 1 { format!("vectors-v{version}") } else { format!("vectors-v{version}-s{shard}of{shards}") };
    (dir.join(format!("{stem}.usearch")), dir.join(format!("{stem}.keys")))
}

/// Removes the saved files of versions before `version`.
fn remove_older(dir: &Path, version: u64) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let older = name
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

fn index_error(e: impl fmt::Display) -> Error {
    Error::VectorIndex(e.to_string())
}

impl VectorIndex {
    /// An empty index of `dim`-dimensional unit vectors.
    pub fn new(dim: usize, config: &AnnConfig) -> Result<Self> {
        let quantization = match config.quantization.as_str() {
            "f32" => ScalarKind::F32,
            "f16" => ScalarKind::F16,
            "bf16" => ScalarKind::BF16,
            // (USearch's i8 inner product is an integer dot product, not a cosine: not offered.)
            other => return Err(index_error(format!("quantization {other:?} is not one of bf16, f16, f32"))),
        };
        let options = IndexOptions {
            dimensions: dim,
            metric: MetricKind::IP,
            quantization,
            connectivity: config.connectivity,
            expansion_add: config.expansion_add,
            expansion_search: config.expansion_search,
            multi: false,
        };
        let graph = Index::new(&options).map_err(index_error)?;
        graph.reserve_capacity_and_threads(1024, SEARCH_THREADS).map_err(index_error)?;
        Ok(Self {
            graph,
            config: config.clone(),
            dim,
            models: Vec::new(),
            keys: HashMap::new(),
            chunks: Vec::new(),
            free: Vec::new(),
            staging: AtomicBool::new(false),
            restored_from: None,
        })
    }

    /// The settings it was built with.
    pub(crate) fn config(&self) -> AnnConfig {
        self.config.clone()
    }

    /// Vectors indexed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Its sizes.
    pub fn stats(&self) -> VectorIndexStats {
        VectorIndexStats {
            vectors: self.len(),
            memory_bytes: self.graph.memory_usage(),
            // The row → key map (~48 bytes an entry with its hash-table slack) and the key → chunk table.
            bookkeeping_bytes: self.keys.capacity() * 48 + self.chunks.capacity() * 24,
            restored_from: self.restored_from,
            shards: 1,
        }
    }

    fn model_index(&mut self, model_id: &str) -> u32 {
        match self.models.iter().position(|m| m == model_id) {
            Some(i) => i as u32,
            None => {
                self.models.push(model_id.to_owned());
                (self.models.len() - 1) as u32
            }
        }
    }

    /// Makes the row `(chunk_id, model_id)` present with `vector`, or absent
    /// (`None`). Vectors of another dimension are ignored; a row already
    /// present keeps its vector (a row's vector is a function of its key).
    pub fn set(&mut self, chunk_id: Hash128, model_id: &str, vector: Option<&[f32]>) -> Result<()> {
        let model = self.model_index(model_id);
        let row = (chunk_id, model);
        match (vector, self.keys.get(&row).copied()) {
            (Some(v), None) if v.len() == self.dim => {
                if self.graph.size() + 1 > self.graph.capacity() {
                    // Grow by half: amortised, with less idle memory than doubling.
                    let grown = (self.graph.capacity() * 3 / 2).max(1024);
                    self.graph.reserve_capacity_and_threads(grown, SEARCH_THREADS).map_err(index_error)?;
                }
                let key = self.free.pop().unwrap_or(self.chunks.len() as u64);
                if let Err(e) = self.graph.add(key, v) {
                    if (key as usize) < self.chunks.len() {
                        self.free.push(key);
                    }
                    return Err(index_error(e));
                }
                if key as usize == self.chunks.len() {
                    self.chunks.push(Some(chunk_id));
                } else {
                    self.chunks[key as usize] = Some(chunk_id);
                }
                self.keys.insert(row, key);
            }
            (None, Some(key)) => {
                self.graph.remove(key).map_err(index_error)?;
                self.keys.remove(&row);
                self.chunks[key as usize] = None;
                self.free.push(key);
            }
            _ => {}
        }
        Ok(())
    }

    /// Step 1 of adding `rows` (`(chunk_id, model_id, vector)`) without
    /// blocking searches: interns models, skips rows already present or of
    /// another dimension, hands out keys (invisible to searches until
    /// [`publish`](Self::publish)) and reserves the graph's capacity. Quick;
    /// needs `&mut` (the store's write lock).
    #[cfg(test)]
    pub(crate) fn stage(&mut self, rows: &[(Hash128, &str, &[f32])]) -> Result<Staged> {
        self.stage_where(rows, |_| true)
    }

    /// [`stage`](Self::stage) of the rows whose chunk `take` accepts (this shard's).
    pub(crate) fn stage_where(
        &mut self,
        rows: &[(Hash128, &str, &[f32])],
        take: impl Fn(&Hash128) -> bool,
    ) -> Result<Staged> {
        let mut staged = Staged::default();
        for (i, (chunk_id, model_id, vector)) in rows.iter().enumerate().filter(|(_, r)| take(&r.0)) {
            let row = (*chunk_id, self.model_index(model_id));
            if vector.len() != self.dim || self.keys.contains_key(&row) || staged.rows.iter().any(|r| r.1 == row) {
                continue;
            }
            let key = self.free.pop().unwrap_or_else(|| {
                self.chunks.push(None);
                (self.chunks.len() - 1) as u64
            });
            staged.rows.push((i, row, key, false));
        }
        let needed = self.graph.size() + staged.rows.len();
        if needed > self.graph.capacity() {
            let grown = (self.graph.capacity() * 3 / 2).max(needed).max(1024);
            self.graph.reserve_capacity_and_threads(grown, SEARCH_THREADS).map_err(index_error)?;
        }
        if !staged.rows.is_empty() {
            self.staging.store(true, Ordering::Release);
        }
        Ok(staged)
    }

    /// Step 2: adds the staged vectors to the graph. `&self`: runs beside
    /// searches (USearch is safe for concurrent adds and searches), which skip
    /// the new keys until they are published. A failed add is logged and
    /// its key freed at publication.
    pub(crate) fn add_staged(&self, staged: &mut Staged, rows: &[(Hash128, &str, &[f32])]) {
        for (i, _, key, added) in &mut staged.rows {
            match self.graph.add(*key, rows[*i].2) {
                Ok(()) => *added = true,
                Err(e) => tracing::error!(error = %e, "the vector index could not add a vector"),
            }
        }
    }

    /// Step 3: makes the staged rows visible where `present(chunk_id, model)`
    /// says they are live, and removes the others. Needs `&mut`.
    pub(crate) fn publish(&mut self, staged: Staged, present: impl Fn(&Hash128, &str) -> bool) -> Result<()> {
        for (_, row, key, added) in staged.rows {
            if added && present(&row.0, &self.models[row.1 as usize]) {
                self.chunks[key as usize] = Some(row.0);
                self.keys.insert(row, key);
            } else {
                if added {
                    self.graph.remove(key).map_err(index_error)?;
                }
                self.free.push(key);
            }
        }
        self.staging.store(false, Ordering::Release);
        Ok(())
    }

    /// The `k` chunks nearest to `query` whose ids pass `allowed`, as
    /// `(cosine, chunk_id)`, best first, each chunk once; the cosine is the
    /// graph's, of its (possibly quantised) vectors.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&dyn Fn(&Hash128) -> bool>,
    ) -> Result<Vec<(f32, Hash128)>> {
        if k == 0 || query.len() != self.dim || self.keys.is_empty() {
            return Ok(Vec::new());
        }
        // Several models can give one chunk several keys: ask for enough to fill k chunks.
        let count = k * self.models.len().max(1);
        let chunk_of = |key: u64| self.chunks.get(key as usize).copied().flatten();
        // Keys being added by a commit are not published yet: skip them inside the search.
        let staging = self.staging.load(Ordering::Acquire);
        let matches = match allowed {
            None if !staging => self.graph.search(query, count),
            None => self.graph.filtered_search(query, count, |key| chunk_of(key).is_some()),
            Some(allowed) => self.graph.filtered_search(query, count, |key| chunk_of(key).is_some_and(|c| allowed(&c))),
        }
        .map_err(index_error)?;
        let mut hits: Vec<(f32, Hash128)> = Vec::with_capacity(k);
        for (key, distance) in matches.keys.iter().zip(&matches.distances) {
            if let Some(chunk) = chunk_of(*key)
                && !hits.iter().any(|(_, c)| *c == chunk)
            {
                hits.push((1.0 - distance, chunk));
            }
        }
        hits.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Writes the graph and its keys to `graph_path` and `keys_path` (each
    /// through a temporary file and a rename). Call with no commit in
    /// progress (the store's writer lock).
    fn save_to(&self, graph_path: &Path, keys_path: &Path) -> Result<()> {
        let graph_tmp = graph_path.with_extension("usearch.tmp");
        self.graph.save(&graph_tmp.to_string_lossy()).map_err(index_error)?;
        let mut text = format!("twinflow-vector-keys 1 {} {}\n", self.dim, self.config.quantization);
        for model in &self.models {
            text.push_str(&format!("model {model}\n"));
        }
        for ((chunk, model), key) in &self.keys {
            text.push_str(&format!("{:032x} {model} {key}\n", chunk.0));
        }
        let keys_tmp = keys_path.with_extension("keys.tmp");
        std::fs::write(&keys_tmp, text).map_err(|e| Error::io(&keys_tmp, e))?;
        std::fs::rename(&graph_tmp, graph_path).map_err(|e| Error::io(graph_path, e))?;
        std::fs::rename(&keys_tmp, keys_path).map_err(|e| Error::io(keys_path, e))?;
        Ok(())
    }

    /// The index saved in `graph_path` and `keys_path`, if they are there,
    /// whole, and of this dimension and storage; `None` otherwise (rebuild instead).
    fn load_from(graph_path: &Path, keys_path: &Path, version: u64, dim: usize, config: &AnnConfig) -> Option<Self> {
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

    /// The SIMD kernels USearch picked for the metric (e.g. `skylake`, `genoa`).
    pub fn acceleration(&self) -> String {
        self.graph.hardware_acceleration()
    }

    /// Sets how many candidates a search keeps (HNSW `ef`).
    pub fn set_expansion_search(&self, ef: usize) {
        self.graph.change_expansion_search(ef);
    }
}

/// The HNSW index split into shards by chunk id (`shards.rs`): rows go to
/// their chunk's shard, a search asks every shard for its `k` nearest and
/// merges them, a commit adds each shard's new vectors side by side.
pub(crate) struct ShardedVectors {
    shards: Vec<VectorIndex>,
}

impl fmt::Debug for ShardedVectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedVectors").field("shards", &self.shards.len()).field("vectors", &self.len()).finish()
    }
}

impl ShardedVectors {
    /// An empty index of `shards` shards (at least one).
    pub(crate) fn new(dim: usize, config: &AnnConfig, shards: usize) -> Result<Self> {
        let shards = (0..shards.max(1)).map(|_| VectorIndex::new(dim, config)).collect::<Result<Vec<_>>>()?;
        Ok(Self { shards })
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The settings it was built with.
    pub(crate) fn config(&self) -> AnnConfig {
        self.shards[0].config()
    }

    /// Vectors indexed, in all shards.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(VectorIndex::len).sum()
    }

    /// Sizes, summed over the shards.
    pub(crate) fn stats(&self) -> VectorIndexStats {
        let mut stats = VectorIndexStats {
            restored_from: self.shards[0].restored_from,
            shards: self.shards.len(),
            ..Default::default()
        };
        for shard in &self.shards {
            let s = shard.stats();
            stats.vectors += s.vectors;
            stats.memory_bytes += s.memory_bytes;
            stats.bookkeeping_bytes += s.bookkeeping_bytes;
        }
        stats
    }

    fn shard_of(&self, chunk_id: &Hash128) -> usize {
        crate::shards::shard_of(chunk_id, self.shards.len())
    }

    /// [`VectorIndex::set`] in the chunk's shard.
    pub(crate) fn set(&mut self, chunk_id: Hash128, model_id: &str, vector: Option<&[f32]>) -> Result<()> {
        let shard = self.shard_of(&chunk_id);
        self.shards[shard].set(chunk_id, model_id, vector)
    }

    /// [`VectorIndex::stage`], each shard its rows.
    pub(crate) fn stage(&mut self, rows: &[(Hash128, &str, &[f32])]) -> Result<Vec<Staged>> {
        let n = self.shards.len();
        (0..n).map(|s| self.shards[s].stage_where(rows, |chunk| crate::shards::shard_of(chunk, n) == s)).collect()
    }

    /// [`VectorIndex::add_staged`], the shards side by side when there is enough to add.
    pub(crate) fn add_staged(&self, staged: &mut [Staged], rows: &[(Hash128, &str, &[f32])]) {
        let total: usize = staged.iter().map(|s| s.rows.len()).sum();
        if self.shards.len() < 2 || total < 256 {
            for (shard, staged) in self.shards.iter().zip(staged) {
                shard.add_staged(staged, rows);
            }
            return;
        }
        let mut jobs: Vec<(&VectorIndex, &mut Staged)> = self.shards.iter().zip(staged.iter_mut()).collect();
        crate::shards::fan_out_mut(&mut jobs, |(shard, staged)| shard.add_staged(staged, rows));
    }

    /// [`VectorIndex::publish`] in every shard.
    pub(crate) fn publish(&mut self, staged: Vec<Staged>, present: impl Fn(&Hash128, &str) -> bool) -> Result<()> {
        for (shard, staged) in self.shards.iter_mut().zip(staged) {
            shard.publish(staged, &present)?;
        }
        Ok(())
    }

    /// The `k` nearest chunks over every shard, as [`VectorIndex::search`]:
    /// each shard's `k` best, merged (score, then `chunk_id`).
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        allowed: Option<&(dyn Fn(&Hash128) -> bool + Sync)>,
    ) -> Result<Vec<(f32, Hash128)>> {
        let parallel = self.len() >= crate::shards::PARALLEL_FROM;
        let mut hits = Vec::new();
        let one = |shard: &VectorIndex| shard.search(query, k, allowed.map(|f| f as &dyn Fn(&Hash128) -> bool));
        for found in crate::shards::fan_out(&self.shards, parallel, one) {
            hits.extend(found?);
        }
        hits.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Whether a search over `candidates` chunks (all when `None`) should
    /// scan exactly instead: the index is off, small, or the filter is selective.
    pub(crate) fn prefers_exact(&self, candidates: Option<usize>) -> bool {
        let len = self.len();
        let config = &self.shards[0].config;
        let candidates = candidates.unwrap_or(len).min(len);
        // A filter that lets through under 5% of the index: the filtered graph search would
        // wander through mostly rejected nodes; the scan of the candidates is cheaper.
        !config.enabled || candidates < config.exact_below || candidates * 20 < len
    }

    /// Writes every shard's graph and keys for snapshot `version` under `dir`,
    /// then removes older versions. Call with no commit in progress.
    pub(crate) fn save(&self, dir: &Path, version: u64) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let n = self.shards.len();
        for (s, shard) in self.shards.iter().enumerate() {
            let (graph, keys) = saved_paths(dir, version, s, n);
            shard.save_to(&graph, &keys)?;
        }
        remove_older(dir, version)
    }

    /// The `shards` shards saved for snapshot `version` in `dir`, if all are
    /// there, whole, and of this dimension and storage; `None` otherwise.
    pub(crate) fn load(dir: &Path, version: u64, dim: usize, config: &AnnConfig, shards: usize) -> Option<Self> {
        let n = shards.max(1);
        let shards = (0..n)
            .map(|s| {
                let (graph, keys) = saved_paths(dir, version, s, n);
                VectorIndex::load_from(&graph, &keys, version, dim, config)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { shards })
    }

    /// [`VectorIndex::reconcile`], each shard with its live rows.
    pub(crate) fn reconcile<'a>(
        &mut self,
        live: impl Iterator<Item = (Hash128, &'a str, &'a [f32])>,
    ) -> Result<(usize, usize)> {
        let mut rows: Vec<Vec<(Hash128, &'a str, &'a [f32])>> = vec![Vec::new(); self.shards.len()];
        for row in live {
            rows[self.shard_of(&row.0)].push(row);
        }
        let (mut added, mut removed) = (0, 0);
        for (shard, rows) in self.shards.iter_mut().zip(rows) {
            let (a, r) = shard.reconcile(rows.into_iter())?;
            added += a;
            removed += r;
        }
        Ok((added, removed))
    }

    /// Sets how many candidates a search keeps (HNSW `ef`), in every shard.
    pub(crate) fn set_expansion_search(&self, ef: usize) {
        for shard in &self.shards {
            shard.set_expansion_search(ef);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let v: Vec<f32> = (0..dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn inserts_deletes_and_key_reuse() {
        // f32 storage, so the graph's cosines are exact here.
        let config = AnnConfig { quantization: "f32".into(), ..AnnConfig::default() };
        let mut index = VectorIndex::new(16, &config).unwrap();
        for i in 0..200u64 {
            index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 16))).unwrap();
        }
        assert_eq!(index.len(), 200);
        let hits = index.search(&unit(7, 16), 3, None).unwrap();
        assert_eq!(hits[0].1, Hash128(7));
        assert!((hits[0].0 - 1.0).abs() < 1e-5);
        // Deleted rows are never returned, and their keys are reused.
        index.set(Hash128(7), "m", None).unwrap();
        assert!(index.search(&unit(7, 16), 10, None).unwrap().iter().all(|(_, c)| *c != Hash128(7)));
        index.set(Hash128(1000), "m", Some(&unit(1000, 16))).unwrap();
        assert_eq!(index.chunks.len(), 200, "the freed key was reused");
        assert_eq!(index.search(&unit(1000, 16), 1, None).unwrap()[0].1, Hash128(1000));
        // A second model's vector of the same chunk: one hit for the chunk.
        index.set(Hash128(3), "other", Some(&unit(3, 16))).unwrap();
        let hits = index.search(&unit(3, 16), 5, None).unwrap();
        assert_eq!(hits.iter().filter(|(_, c)| *c == Hash128(3)).count(), 1);
        // Filters apply inside the search.
        let even = |c: &Hash128| c.0 % 2 == 0;
        let hits = index.search(&unit(5, 16), 10, Some(&even)).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(_, c)| c.0 % 2 == 0));
        // Wrong dimensions are ignored, not errors.
        index.set(Hash128(5000), "m", Some(&[1.0, 0.0])).unwrap();
        assert!(index.search(&[1.0, 0.0], 3, None).unwrap().is_empty());
    }

    #[test]
    fn staged_vectors_stay_invisible_until_published() {
        let config = AnnConfig { quantization: "f32".into(), ..AnnConfig::default() };
        let mut index = VectorIndex::new(16, &config).unwrap();
        for i in 0..100u64 {
            index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 16))).unwrap();
        }
        let vectors: Vec<Vec<f32>> = (100..110u64).map(|i| unit(i, 16)).collect();
        let rows: Vec<(Hash128, &str, &[f32])> =
            (100..110u64).zip(&vectors).map(|(i, v)| (Hash128(u128::from(i)), "m", v.as_slice())).collect();
        let mut staged = index.stage(&rows).unwrap();
        index.add_staged(&mut staged, &rows);
        // Added to the graph, not yet published: no search sees them.
        let hits = index.search(&unit(105, 16), 5, None).unwrap();
        assert!(hits.iter().all(|(_, c)| c.0 < 100), "{hits:?}");
        // Published where live (all but 107): found; 107's key is freed.
        index.publish(staged, |c, _| c.0 != 107).unwrap();
        assert_eq!(index.search(&unit(105, 16), 1, None).unwrap()[0].1, Hash128(105));
        assert!(index.search(&unit(107, 16), 10, None).unwrap().iter().all(|(_, c)| c.0 != 107));
        assert_eq!(index.len(), 109);
        assert_eq!(index.free.len(), 1);
    }

    #[test]
    fn every_quantization_finds_the_vector_itself() {
        for quantization in ["bf16", "f16", "f32"] {
            let config = AnnConfig { quantization: quantization.into(), ..AnnConfig::default() };
            let mut index = VectorIndex::new(32, &config).unwrap();
            for i in 0..300u64 {
                index.set(Hash128(u128::from(i)), "m", Some(&unit(i, 32))).unwrap();
            }
            let hits = index.search(&unit(42, 32), 1, None).unwrap();
            assert_eq!(hits[0].1, Hash128(42), "{quantization}");
            assert!((hits[0].0 - 1.0).abs() < 2e-2, "{quantization}: {}", hits[0].0);
        }
        for bad in ["f8", "i8"] {
            let config = AnnConfig { quantization: bad.into(), ..AnnConfig::default() };
            assert!(VectorIndex::new(4, &config).unwrap_err().to_string().contains(bad));
        }
    }
}
