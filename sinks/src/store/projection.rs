//! The embedding adapter: a [`VectorProjection`] applied to every stored
//! vector and query before vector search, switched in by
//! [`Store::set_projection`]; and the approximate vector index's sizes and
//! search breadth.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use twinflow_schemas::Hash128;

use super::Store;
use crate::error::Result;
use crate::vector_index::{ShardedVectors, VectorIndexStats};

/// A map applied to every stored vector and every query before vector
/// search (an embedding adapter): the index holds the projected vectors,
/// the `embeddings` table keeps the base ones.
pub trait VectorProjection: Send + Sync + fmt::Debug {
    /// A name for logs and status (e.g. the model version).
    fn id(&self) -> &str;
    /// The projected vector (same length, L2-normalised).
    fn project(&self, vector: &[f32]) -> Vec<f32>;
}

/// What a [`Store::set_projection`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionSwitch {
    /// The committed epoch from which searches use the new projection.
    pub epoch: u64,
    /// Vectors re-projected (none were re-encoded).
    pub vectors: usize,
    pub seconds: f64,
}

impl Store {
    /// Makes vector search use `projection` (an adapter; `None`: the base
    /// vectors): every live vector is re-projected from the stored base
    /// vector (nothing is re-encoded) into a new index, built while searches
    /// go on against the current one; then both switch under the write lock,
    /// so every search sees one projection, at one committed epoch. Commits
    /// wait meanwhile.
    pub fn set_projection(&self, projection: Option<Arc<dyn VectorProjection>>) -> Result<ProjectionSwitch> {
        let started = Instant::now();
        let _writer = self.writer.lock();
        let (mut index, projected) = {
            let state = self.state.read();
            let rows = state.live.embeddings.current();
            let projected: HashMap<Hash128, Vec<f32>> = match &projection {
                Some(p) => rows.iter().map(|r| (r.chunk_id, p.project(&r.vector.0))).collect(),
                None => HashMap::new(),
            };
            let mut index = ShardedVectors::new(self.dim, &state.vectors.config(), state.vectors.shards())?;
            for row in &rows {
                let vector = projected.get(&row.chunk_id).map_or(row.vector.0.as_slice(), Vec::as_slice);
                index.set(row.chunk_id, &row.model_id, Some(vector))?;
            }
            (index, projected)
        };
        let vectors = index.len();
        let mut state = self.state.write();
        std::mem::swap(&mut state.vectors, &mut index);
        state.projected = projected;
        state.live.forget_leads();
        tracing::info!(
            epoch = state.committed,
            projection = projection.as_ref().map(|p| p.id()).unwrap_or("none"),
            vectors,
            "vector search switched projection"
        );
        state.projection = projection;
        let epoch = state.committed;
        drop(state);
        drop(index);
        self.notify([]);
        Ok(ProjectionSwitch { epoch, vectors, seconds: started.elapsed().as_secs_f64() })
    }

    /// The id of the active projection, if any.
    pub fn projection(&self) -> Option<String> {
        self.state.read().projection.as_ref().map(|p| p.id().to_owned())
    }

    /// Sizes of the approximate vector index.
    pub fn vector_index_stats(&self) -> VectorIndexStats {
        self.state.read().vectors.stats()
    }

    /// Sets the HNSW search breadth (`ef`) from now on (for benchmarks that sweep it).
    pub fn set_vector_search_breadth(&self, ef: usize) {
        self.state.read().vectors.set_expansion_search(ef);
    }
}
