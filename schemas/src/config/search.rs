//! `[search]`: hybrid-search fusion, index shards, and the HNSW index (`[search.ann]`).

use serde::{Deserialize, Serialize};

use super::EngineConfig;
use crate::api::SearchMode;

/// How `/v1/search` fuses its rankings in `hybrid` mode: each chunk scores
/// `Σ weight / (rrf_k + rank)` over the vector and BM25 rankings, and over
/// its document's rank by its lead's cosine (`lead_weight`).
/// The defaults are the fusion with the best mean nDCG@10 on the dev halves
/// of `benches/eval`'s two question sets (`twinflow eval retrieval --tune`);
/// the paper's equal weights with `rrf_k` 60 scored below vector search alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    pub vector_weight: f32,
    pub bm25_weight: f32,
    /// The weight of the candidates' documents ranked by their leads (their
    /// first chunks' cosine), each candidate's share scaled by its cosine
    /// with its document's lead and by the document's coherence (its chunks'
    /// mean cosine with the lead), so that long documents on several
    /// subjects are not ranked by their first one. 0 leaves it out.
    pub lead_weight: f32,
    /// Damping of reciprocal-rank fusion (60 in the original paper).
    pub rrf_k: f32,
    /// Shards of both live indexes (BM25 and HNSW), split by chunk id:
    /// a search asks every shard and merges their best, a commit updates
    /// them side by side. A property of the index, not of the workers: the
    /// default is fixed (2), so answers do not change when workers or
    /// processes are added; 0 = one per engine worker (of every process).
    pub shards: usize,
    /// The approximate vector index.
    pub ann: AnnConfig,
}

impl SearchConfig {
    /// The configured fusion of hybrid search.
    pub fn fusion(&self) -> Fusion {
        Fusion {
            vector_weight: self.vector_weight,
            bm25_weight: self.bm25_weight,
            lead_weight: self.lead_weight,
            rrf_k: self.rrf_k,
        }
    }

    /// The number of index shards for `engine`'s workers.
    pub fn shards_for(&self, engine: &EngineConfig) -> usize {
        match self.shards {
            0 => engine.workers.max(1) * engine.cluster.as_ref().map_or(1, |c| c.hosts.len().max(1)),
            n => n,
        }
    }
}

/// The weights hybrid search fuses its rankings with: `[search]`'s, or
/// those of the active registered retrieval setting.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Fusion {
    pub vector_weight: f32,
    pub bm25_weight: f32,
    /// 0 when absent (settings registered before leads counted).
    #[serde(default)]
    pub lead_weight: f32,
    pub rrf_k: f32,
}

impl Fusion {
    /// Hybrid search with these weights.
    pub fn mode(self) -> SearchMode {
        SearchMode::Hybrid {
            vector_weight: self.vector_weight,
            bm25_weight: self.bm25_weight,
            lead_weight: self.lead_weight,
            rrf_k: self.rrf_k,
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            vector_weight: 1.0,
            bm25_weight: 1.0,
            lead_weight: 1.0,
            rrf_k: 10.0,
            shards: 2,
            ann: AnnConfig::default(),
        }
    }
}

/// The HNSW index over the live embeddings (`[search.ann]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnConfig {
    /// Off: every vector search scans exactly.
    pub enabled: bool,
    /// Searches over fewer candidate chunks than this (a small index, or a
    /// selective filter) scan exactly: as fast, and exact.
    pub exact_below: usize,
    /// Links per node (HNSW `M`).
    pub connectivity: usize,
    /// Candidates kept while inserting (`ef_construction`).
    pub expansion_add: usize,
    /// Candidates kept while searching (`ef`): recall against speed.
    pub expansion_search: usize,
    /// How the graph stores vectors: `bf16` (default: half the memory, and
    /// AVX512-BF16 dot products where the CPU has them), `f16` or `f32` (USearch's
    /// f32 inner product accumulates in f64: 2.5× slower here).
    /// Exact scans and returned scores always use the stored f32 vectors.
    pub quantization: String,
}

impl Default for AnnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exact_below: 20_000,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: "bf16".into(),
        }
    }
}
