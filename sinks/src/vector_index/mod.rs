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
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | `VectorIndex`: the graph, its key bookkeeping, `set` and `search` |
//! | `staged.rs` | adds in three steps (stage, add beside searches, publish) |
//! | `saved.rs` | the graph and keys saved with a snapshot, loaded and reconciled on open |
//! | `sharded.rs` | `ShardedVectors`: the index split by chunk id, as the store holds it |

mod saved;
mod sharded;
mod staged;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use twinflow_schemas::Hash128;
use twinflow_schemas::config::AnnConfig;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result};

pub(crate) use sharded::ShardedVectors;

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

    /// The SIMD kernels USearch picked for the metric (e.g. `skylake`, `genoa`).
    pub fn acceleration(&self) -> String {
        self.graph.hardware_acceleration()
    }

    /// Sets how many candidates a search keeps (HNSW `ef`).
    pub fn set_expansion_search(&self, ef: usize) {
        self.graph.change_expansion_search(ef);
    }
}
