//! [`ShardedVectors`]: the HNSW index split by chunk id into shards
//! (`shards.rs`), the form the store holds; each operation goes to the
//! chunk's shard or to every shard, side by side when there is enough work.

use std::fmt;
use std::path::Path;

use twinflow_schemas::Hash128;
use twinflow_schemas::config::AnnConfig;

use super::saved::{remove_older, saved_paths};
use super::staged::Staged;
use super::{VectorIndex, VectorIndexStats};
use crate::error::{Error, Result};

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
