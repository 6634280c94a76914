//! The dataflow of one worker: documents in, every feature table out.
//!
//! ```text
//! documents ─┬──────────────────────────────────────────────▶ OutRow::Document
//!            └─ derive (clean, chunk, instruct) ─┬─ chunks ──▶ OutRow::Chunk
//!                                                │   └─ (hash, text) ─ distinct ─┬─ embed ─▶ OutRow::Embedding
//!                                                │                               └─ + embeddings ─ drift stats ─▶ OutRow::Drift
//!                                                └─ instruct ▶ OutRow::Instruct
//! ```
//! Documents arrive already partitioned by `doc_id` (see `engine.rs`; in a
//! cluster they are exchanged by `doc_id` here, and every output goes to
//! worker 0); `distinct` exchanges chunk texts by their hash, so each text is
//! embedded by exactly one worker however many documents contain it.

use std::sync::Arc;

use differential_dataflow::AsCollection;
use differential_dataflow::input::{Input, InputSession};
use timely::dataflow::operators::Exchange;
use timely::worker::Worker;

use twinflow_schemas::DocumentRow;
use twinflow_schemas::config::ChunkingConfig;
use twinflow_schemas::ids::partition_hash;

use crate::drift::DriftFeatures;
use crate::embed::Embedder;
use crate::features::{Derived, derive_features};
use crate::operators::{CollectEpochsExt, DriftInput, DriftStatsExt, EmbedCache, EmbedExt, OutRow, WorkerMsg};

/// Builds the feature dataflow in `worker` and returns the documents input.
pub(crate) fn build(
    worker: &mut Worker,
    chunking: ChunkingConfig,
    embedder: Arc<dyn Embedder>,
    cache: Arc<EmbedCache>,
    drift: Option<Arc<DriftFeatures>>,
    cluster: bool,
    emit: impl FnMut(WorkerMsg) + 'static,
) -> InputSession<u64, DocumentRow, isize> {
    let index = worker.index();
    worker.dataflow::<u64, _, _>(move |scope| {
        let (input, docs) = scope.new_collection::<DocumentRow, isize>();
        // In a cluster only process 0 takes input: its documents are spread over every
        // process's workers by `doc_id` (in one process they already arrive partitioned).
        let docs =
            if cluster { docs.inner.exchange(|(doc, _, _)| partition_hash(&doc.doc_id)).as_collection() } else { docs };
        let counter = embedder.clone();
        let derived = docs.clone().flat_map(move |doc| derive_features(&doc, &chunking, &*counter));
        let chunks = derived.clone().flat_map(|d| match d {
            Derived::Chunk(c) => Some(c),
            Derived::Instruct(_) => None,
        });
        let instruct = derived.flat_map(|d| match d {
            Derived::Instruct(s) => Some(s),
            Derived::Chunk(_) => None,
        });
        let texts = chunks.clone().map(|c| (c.chunk_id, c.text)).distinct();
        let embeddings = texts.clone().embed(embedder, cache);
        let mut out = docs
            .map(OutRow::Document)
            .concat(chunks.map(OutRow::Chunk))
            .concat(embeddings.clone().map(OutRow::Embedding))
            .concat(instruct.map(OutRow::Instruct));
        if let Some(features) = drift {
            let stats = texts
                .map(|(id, text)| DriftInput::Text(id, text))
                .concat(embeddings.map(DriftInput::Vector))
                .drift_stats(features);
            out = out.concat(stats.map(|(bucket, stats)| OutRow::Drift(bucket, stats)));
        }
        if cluster {
            // Every output goes to worker 0, in process 0, whose collector commits it.
            out = out.inner.exchange(|_| 0).as_collection();
        }
        out.collect_epochs(index, emit);
        input
    })
}
