//! Adding vectors without blocking searches: [`VectorIndex::stage_where`]
//! hands out keys under the store's write lock, [`VectorIndex::add_staged`]
//! adds the vectors beside searches (which skip the unpublished keys), and
//! [`VectorIndex::publish`] makes the live ones visible.

use std::sync::atomic::Ordering;

use twinflow_schemas::Hash128;

use super::{SEARCH_THREADS, VectorIndex, index_error};
use crate::error::Result;

/// Rows whose vectors go into the graph under fresh keys before they are
/// published: [`VectorIndex::stage`] → [`VectorIndex::add_staged`] (beside
/// searches) → [`VectorIndex::publish`].
#[derive(Debug, Default)]
pub(crate) struct Staged {
    /// `(position in the caller's list, row, key, added)`.
    pub(super) rows: Vec<(usize, (Hash128, u32), u64, bool)>,
}

impl VectorIndex {
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
}
