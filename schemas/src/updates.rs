//! Changes to the feature tables in one epoch: what the dataflow hands the
//! sinks. Each update is `(row, diff)`; `diff` is +1 for an insert and -1
//! for a retraction (larger magnitudes mean several copies).

use serde::{Deserialize, Serialize};

use crate::drift::DriftStats;
use crate::records::{ChunkRow, DocumentRow, EmbeddingRow, InstructRow};
use crate::tables::TableName;

/// One table's updates.
pub type Updates<R> = Vec<(R, i64)>;

/// Updates of every table in one epoch from one worker (or merged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochUpdates {
    pub documents: Updates<DocumentRow>,
    pub chunks: Updates<ChunkRow>,
    pub embeddings: Updates<EmbeddingRow>,
    pub instruct: Updates<InstructRow>,
    /// Changes of the drift statistics, per bucket (the epoch in which the
    /// chunks they count entered): not a table, the input of the drift monitor.
    pub drift: Vec<(u64, DriftStats)>,
}

impl EpochUpdates {
    /// True when no table changed.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
            && self.chunks.is_empty()
            && self.embeddings.is_empty()
            && self.instruct.is_empty()
            && self.drift.is_empty()
    }

    /// Number of updates of one table.
    pub fn len_of(&self, table: TableName) -> usize {
        match table {
            TableName::Documents => self.documents.len(),
            TableName::Chunks => self.chunks.len(),
            TableName::Embeddings => self.embeddings.len(),
            TableName::Instruct => self.instruct.len(),
        }
    }

    /// Appends `other`'s updates.
    pub fn extend(&mut self, other: EpochUpdates) {
        self.documents.extend(other.documents);
        self.chunks.extend(other.chunks);
        self.embeddings.extend(other.embeddings);
        self.instruct.extend(other.instruct);
        self.drift.extend(other.drift);
    }

    /// Sorts every table and merges equal rows, dropping those whose diffs
    /// cancel, so the result is the canonical form of the change.
    pub fn consolidate(&mut self) {
        consolidate(&mut self.documents);
        consolidate(&mut self.chunks);
        consolidate(&mut self.embeddings);
        consolidate(&mut self.instruct);
        consolidate_drift(&mut self.drift);
    }
}

/// Sorts `updates` and merges equal rows, dropping zero diffs.
pub fn consolidate<R: Ord>(updates: &mut Updates<R>) {
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Updates<R> = Vec::with_capacity(updates.len());
    for (row, diff) in updates.drain(..) {
        match out.last_mut() {
            Some((last, total)) if *last == row => *total += diff,
            _ => out.push((row, diff)),
        }
    }
    out.retain(|(_, diff)| *diff != 0);
    *updates = out;
}

/// Sums drift changes of the same bucket, dropping those that cancel.
fn consolidate_drift(drift: &mut Vec<(u64, DriftStats)>) {
    if drift.len() < 2 && drift.iter().all(|(_, s)| !s.is_empty()) {
        return;
    }
    let mut by_bucket: std::collections::BTreeMap<u64, DriftStats> = std::collections::BTreeMap::new();
    for (bucket, stats) in drift.drain(..) {
        by_bucket.entry(bucket).or_default().add(&stats, 1);
    }
    drift.extend(by_bucket.into_iter().filter(|(_, s)| !s.is_empty()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consolidate_merges_and_cancels() {
        let mut updates = vec![("b", 1), ("a", 1), ("b", -1), ("a", 2), ("c", -1)];
        consolidate(&mut updates);
        assert_eq!(updates, vec![("a", 3), ("c", -1)]);
    }
}
