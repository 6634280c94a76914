//! The dataflow of one worker: documents in, every feature table out.
//!
//! ```text
//! documents ─┬──────────────────────────────────────────────▶ OutRow::Document
//!            └─ derive (clean, chunk, instruct) ─┬─ chunks ──▶ OutRow::Chunk
//!                                                │   └─ (id, title + text) ─ distinct ─┬─ embed ─▶ OutRow::Embedding
//!                                                │   └─ (id, text) ─ distinct ─ + embeddings ─ drift stats ─▶ OutRow::Drift
//!                                                └─ instruct ▶ OutRow::Instruct
//! ```
//! Documents arrive already partitioned by `doc_id` (see `engine.rs`; in a
//! cluster they are exchanged by `doc_id` here, and every output goes to
//! worker 0); `distinct` exchanges passages (a chunk's text after its title
//! context) by their hash, so each is embedded by exactly one worker however
//! many documents contain it.

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
            Derived::Chunk(c, _) => Some(c),
            Derived::Instruct(_) => None,
        });
        let passages = derived.clone().flat_map(|d| match d {
            Derived::Chunk(c, context) => Some(Derived::passage(&c, context.as_deref())),
            Derived::Instruct(_) => None,
        });
        let instruct = derived.flat_map(|d| match d {
            Derived::Instruct(s) => Some(s),
            Derived::Chunk(..) => None,
        });
        let embeddings = passages.distinct().embed(embedder, cache);
        // Drift reads the chunks' own texts (not their titles), one per chunk id.
        let chunk_texts = drift.is_some().then(|| chunks.clone().map(|c| (c.chunk_id, c.text)).distinct());
        let mut out = docs
            .map(OutRow::Document)
            .concat(chunks.map(OutRow::Chunk))
            .concat(embeddings.clone().map(OutRow::Embedding))
            .concat(instruct.map(OutRow::Instruct));
        if let (Some(features), Some(chunk_texts)) = (drift, chunk_texts) {
            let stats = chunk_texts
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
