//! The live state: every table as a consolidated multiset of rows at the
//! committed epoch, grouped by key so search can find a chunk's vectors,
//! occurrences and documents without scanning.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use twinflow_schemas::{ChunkRow, DocumentRow, EmbeddingRow, EpochUpdates, Hash128, InstructRow, TableName};

use crate::convert::{TableRow, change_batch, rows_to_batch};
use crate::error::Result;

/// One table's rows with their multiplicities, grouped by key. Rows whose
/// multiplicity reaches zero are dropped.
#[derive(Debug)]
pub(crate) struct Multiset<R: TableRow> {
    by_key: HashMap<R::Key, Vec<(R, i64)>>,
    /// Sum of multiplicities.
    total: i64,
    /// The last epoch that changed this table (for caching its batch).
    pub(crate) changed_at: u64,
}

impl<R: TableRow> Default for Multiset<R> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), total: 0, changed_at: 0 }
    }
}

impl<R: TableRow> Multiset<R> {
    /// Adds `diff` copies of `row` (removes when negative).
    pub(crate) fn apply(&mut self, row: R, diff: i64) {
        if diff == 0 {
            return;
        }
        self.total += diff;
        let key = row.key();
        let group = self.by_key.entry(key.clone()).or_default();
        match group.iter().position(|(r, _)| *r == row) {
            Some(i) => {
                group[i].1 += diff;
                if group[i].1 == 0 {
                    group.swap_remove(i);
                }
            }
            None => group.push((row, diff)),
        }
        if group.is_empty() {
            self.by_key.remove(&key);
        }
    }

    /// Applies every update of this table in `updates`, noting `epoch` as
    /// the table's last change when there are any.
    fn apply_all(&mut self, updates: &mut EpochUpdates, epoch: u64) {
        let updates = std::mem::take(R::updates_mut(updates));
        if !updates.is_empty() {
            self.changed_at = epoch;
        }
        for (row, diff) in updates {
            self.apply(row, diff);
        }
    }

    /// Sum of multiplicities (never below zero).
    pub(crate) fn count(&self) -> u64 {
        self.total.max(0) as u64
    }

    /// The rows under `key` with a positive multiplicity.
    pub(crate) fn present(&self, key: &R::Key) -> impl Iterator<Item = &R> {
        self.by_key.get(key).into_iter().flatten().filter(|(_, n)| *n > 0).map(|(r, _)| r)
    }

    /// The rows under `key` (any multiplicity).
    pub(crate) fn group(&self, key: &R::Key) -> &[(R, i64)] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every key with its rows (any multiplicity).
    pub(crate) fn groups(&self) -> impl Iterator<Item = (&R::Key, &[(R, i64)])> {
        self.by_key.iter().map(|(k, rows)| (k, rows.as_slice()))
    }

    /// Every row and its non-zero multiplicity, sorted by row.
    pub(crate) fn sorted(&self) -> Vec<(&R, i64)> {
        let mut rows: Vec<(&R, i64)> = self.by_key.values().flatten().map(|(r, n)| (r, *n)).collect();
        rows.sort_unstable();
        rows
    }

    /// The current rows, sorted, each repeated by its (positive) multiplicity.
    pub(crate) fn current(&self) -> Vec<&R> {
        let mut rows = Vec::with_capacity(self.count() as usize);
        for (row, n) in self.sorted() {
            rows.extend(std::iter::repeat_n(row, n.max(0) as usize));
        }
        rows
    }

    /// The current rows as one batch with the table's schema.
    fn current_batch(&self, dim: usize) -> Result<RecordBatch> {
        rows_to_batch(&self.current(), dim)
    }

    /// The consolidated state as a change-log batch: `_epoch = epoch`,
    /// `_diff` = multiplicity.
    fn snapshot_batch(&self, epoch: u64, dim: usize) -> Result<RecordBatch> {
        let sorted = self.sorted();
        let rows: Vec<&R> = sorted.iter().map(|(r, _)| *r).collect();
        change_batch(&rows, sorted.iter().map(|(_, n)| *n), epoch, dim)
    }
}

/// Every table's multiset, and each document's chunks.
#[derive(Debug, Default)]
pub(crate) struct LiveState {
    pub(crate) documents: Multiset<DocumentRow>,
    pub(crate) chunks: Multiset<ChunkRow>,
    pub(crate) embeddings: Multiset<EmbeddingRow>,
    pub(crate) instruct: Multiset<InstructRow>,
    /// Per document, its chunks by `(chunk_id, ordinal)` with their
    /// multiplicities; kept with `chunks`. The chunk at ordinal 0 is the
    /// document's lead: what the whole document is about.
    by_doc: HashMap<String, HashMap<(Hash128, u32), i64>>,
    /// What hybrid search reads of a document that no query changes, by
    /// document and vector length, computed on first use; a document's
    /// entries go when its chunks or their vectors change, all of them when
    /// the projection does ([`forget_leads`](Self::forget_leads)).
    leads: Mutex<HashMap<(String, usize), Option<Arc<DocumentLead>>>>,
}

/// A document's lead (its chunk at ordinal 0) as hybrid search weighs it,
/// apart from the query: each of the document's chunks (sorted) with its
/// cosine to the lead (0 at worst; `None` without a vector of the length),
/// and `coherence`, the mean of those cosines.
#[derive(Debug)]
pub(crate) struct DocumentLead {
    pub(crate) id: Hash128,
    pub(crate) chunks: Vec<(Hash128, Option<f32>)>,
    pub(crate) coherence: f32,
}

impl DocumentLead {
    /// `chunk`'s cosine with the lead (1 for the lead itself).
    pub(crate) fn agreement(&self, chunk: &Hash128) -> Option<f32> {
        if *chunk == self.id {
            return Some(1.0);
        }
        let at = self.chunks.binary_search_by(|(id, _)| id.cmp(chunk)).ok()?;
        self.chunks[at].1
    }
}

impl LiveState {
    /// The live state of these tables (`chunks` indexed by document).
    pub(crate) fn new(
        documents: Multiset<DocumentRow>,
        chunks: Multiset<ChunkRow>,
        embeddings: Multiset<EmbeddingRow>,
        instruct: Multiset<InstructRow>,
    ) -> Self {
        let mut live =
            Self { documents, chunks, embeddings, instruct, by_doc: HashMap::new(), leads: Mutex::default() };
        let rows: Vec<(String, Hash128, u32, i64)> = live
            .chunks
            .groups()
            .flat_map(|(id, rows)| rows.iter().map(|(c, n)| (c.doc_id.clone(), *id, c.ordinal, *n)))
            .collect();
        for (doc, id, ordinal, n) in rows {
            live.note_chunk(doc, id, ordinal, n);
        }
        live
    }

    /// `doc_id`'s lead: its live chunk at ordinal 0 (the smallest id if its
    /// live versions have several).
    pub(crate) fn lead(&self, doc_id: &str) -> Option<Hash128> {
        self.by_doc
            .get(doc_id)?
            .iter()
            .filter(|((_, ordinal), n)| *ordinal == 0 && **n > 0)
            .map(|((id, _), _)| *id)
            .min()
    }

    /// `doc_id`'s distinct live chunks, sorted (a [`DocumentLead`] looks its chunks up by binary search).
    pub(crate) fn chunks_of(&self, doc_id: &str) -> Vec<Hash128> {
        let mut ids: Vec<Hash128> =
            self.by_doc.get(doc_id).into_iter().flatten().filter(|(_, n)| **n > 0).map(|((id, _), _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn note_chunk(&mut self, doc_id: String, chunk_id: Hash128, ordinal: u32, diff: i64) {
        let group = self.by_doc.entry(doc_id.clone()).or_default();
        let n = group.entry((chunk_id, ordinal)).or_default();
        *n += diff;
        if *n == 0 {
            group.remove(&(chunk_id, ordinal));
        }
        if group.is_empty() {
            self.by_doc.remove(&doc_id);
        }
    }

    /// Applies one epoch's updates (consumed).
    pub(crate) fn apply(&mut self, mut updates: EpochUpdates, epoch: u64) {
        let rows: Vec<(String, Hash128, u32, i64)> =
            updates.chunks.iter().map(|(c, n)| (c.doc_id.clone(), c.chunk_id, c.ordinal, *n)).collect();
        let vectors_changed: Vec<Hash128> = updates.embeddings.iter().map(|(e, _)| e.chunk_id).collect();
        let mut changed: BTreeSet<String> = rows.iter().map(|(doc, ..)| doc.clone()).collect();
        for (doc, id, ordinal, n) in rows {
            self.note_chunk(doc, id, ordinal, n);
        }
        self.documents.apply_all(&mut updates, epoch);
        self.chunks.apply_all(&mut updates, epoch);
        self.embeddings.apply_all(&mut updates, epoch);
        self.instruct.apply_all(&mut updates, epoch);
        changed.extend(vectors_changed.iter().flat_map(|id| self.chunks.present(id).map(|c| c.doc_id.clone())));
        if !changed.is_empty() {
            self.leads.get_mut().retain(|(doc, _), _| !changed.contains(doc));
        }
    }

    /// Drops every document's cached lead: the vectors it was computed from
    /// are no longer the ones search reads (another projection).
    pub(crate) fn forget_leads(&mut self) {
        self.leads.get_mut().clear();
    }

    /// `doc_id`'s lead for vectors of length `dim`, from the cache or made
    /// by `make` (outside the cache's lock) and kept.
    pub(crate) fn document_lead(
        &self,
        doc_id: &str,
        dim: usize,
        make: impl FnOnce() -> Option<DocumentLead>,
    ) -> Option<Arc<DocumentLead>> {
        let key = (doc_id.to_owned(), dim);
        if let Some(cached) = self.leads.lock().get(&key) {
            return cached.clone();
        }
        let made = make().map(Arc::new);
        self.leads.lock().insert(key, made.clone());
        made
    }

    /// Live rows of `table`.
    pub(crate) fn count(&self, table: TableName) -> u64 {
        match table {
            TableName::Documents => self.documents.count(),
            TableName::Chunks => self.chunks.count(),
            TableName::Embeddings => self.embeddings.count(),
            TableName::Instruct => self.instruct.count(),
        }
    }

    /// The last epoch that changed `table`.
    pub(crate) fn changed_at(&self, table: TableName) -> u64 {
        match table {
            TableName::Documents => self.documents.changed_at,
            TableName::Chunks => self.chunks.changed_at,
            TableName::Embeddings => self.embeddings.changed_at,
            TableName::Instruct => self.instruct.changed_at,
        }
    }

    /// `table`'s current rows as one batch (no system columns).
    pub(crate) fn current_batch(&self, table: TableName, dim: usize) -> Result<RecordBatch> {
        match table {
            TableName::Documents => self.documents.current_batch(dim),
            TableName::Chunks => self.chunks.current_batch(dim),
            TableName::Embeddings => self.embeddings.current_batch(dim),
            TableName::Instruct => self.instruct.current_batch(dim),
        }
    }

    /// `table`'s consolidated state as a change-log batch.
    pub(crate) fn snapshot_batch(&self, table: TableName, epoch: u64, dim: usize) -> Result<RecordBatch> {
        match table {
            TableName::Documents => self.documents.snapshot_batch(epoch, dim),
            TableName::Chunks => self.chunks.snapshot_batch(epoch, dim),
            TableName::Embeddings => self.embeddings.snapshot_batch(epoch, dim),
            TableName::Instruct => self.instruct.snapshot_batch(epoch, dim),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::Hash128;

    fn chunk(text: &str, doc: &str) -> ChunkRow {
        ChunkRow {
            chunk_id: Hash128::of(text.as_bytes()),
            doc_id: doc.into(),
            ordinal: 0,
            text: text.into(),
            char_start: 0,
            char_end: text.len() as u32,
            token_estimate: 1,
            pages: None,
        }
    }

    #[test]
    fn multiset_consolidates_and_groups_by_key() {
        let mut set = Multiset::<ChunkRow>::default();
        set.apply(chunk("a", "d1"), 1);
        set.apply(chunk("a", "d2"), 2);
        set.apply(chunk("b", "d1"), 1);
        set.apply(chunk("b", "d1"), -1);
        assert_eq!(set.count(), 3);
        assert_eq!(set.present(&Hash128::of(b"a")).count(), 2);
        assert_eq!(set.present(&Hash128::of(b"b")).count(), 0);
        assert_eq!(set.groups().count(), 1, "emptied keys are dropped");
        let current = set.current();
        assert_eq!(current.len(), 3);
        assert_eq!(current[1].doc_id, "d2");
        assert_eq!(current[2].doc_id, "d2");
    }
}
