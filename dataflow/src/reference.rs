//! A from-scratch recomputation of every table: the oracle the incremental
//! engine is tested against, and a baseline for benchmarks.

use std::collections::{BTreeSet, HashMap};

use twinflow_schemas::config::ChunkingConfig;
use twinflow_schemas::{DocumentChange, DocumentRow, DriftStats, EmbeddingRow, EpochUpdates, Vector};

use crate::drift::DriftFeatures;

use crate::embed::Embedder;
use crate::features::{Derived, apply_change, derive_features};

/// The live documents after a sequence of epochs of changes, applied one
/// change at a time (the simplest possible reading of upsert/delete).
#[derive(Debug, Default, Clone)]
pub struct ReferenceDocs {
    docs: HashMap<String, DocumentRow>,
}

impl ReferenceDocs {
    /// Applies the changes of one epoch, in order.
    pub fn apply(&mut self, epoch: u64, changes: &[DocumentChange]) {
        for change in changes {
            apply_change(&mut self.docs, change, epoch);
        }
    }

    /// The live documents.
    pub fn documents(&self) -> impl Iterator<Item = &DocumentRow> {
        self.docs.values()
    }

    /// Every table's contents, computed from scratch over the live
    /// documents, as consolidated `(row, +count)` updates.
    pub fn tables(&self, chunking: &ChunkingConfig, embedder: &dyn Embedder) -> EpochUpdates {
        let mut out = EpochUpdates::default();
        let mut texts = BTreeSet::new();
        for doc in self.docs.values() {
            out.documents.push((doc.clone(), 1));
            for derived in derive_features(doc, chunking, embedder) {
                match derived {
                    Derived::Chunk(chunk, context) => {
                        texts.insert(Derived::passage(&chunk, context.as_deref()));
                        out.chunks.push((chunk, 1));
                    }
                    Derived::Instruct(sample) => out.instruct.push((sample, 1)),
                }
            }
        }
        for (chunk_id, text) in texts {
            let vector = embedder.embed_batch(&[text.as_str()]).map(|mut v| v.remove(0)).unwrap_or_default();
            out.embeddings
                .push((EmbeddingRow { chunk_id, model_id: embedder.model_id().to_owned(), vector: Vector(vector) }, 1));
        }
        out.consolidate();
        out
    }
}

/// The drift statistics of the live chunks of `tables` (as [`ReferenceDocs::tables`]
/// returns them), computed from scratch: every distinct text and every vector once.
pub fn drift_of(tables: &EpochUpdates, features: &DriftFeatures) -> DriftStats {
    let mut total = DriftStats::default();
    let texts: BTreeSet<_> = tables.chunks.iter().map(|(c, _)| (c.chunk_id, c.text.as_str())).collect();
    for (_, text) in texts {
        total.add(&DriftFeatures::of_text(text), 1);
    }
    for (row, count) in &tables.embeddings {
        total.add(&features.of_vector(&row.vector.0), *count);
    }
    total
}
