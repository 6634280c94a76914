//! The embed operator: turns the distinct chunk texts of a worker into
//! embedding rows, one batch per epoch, through an [`Embedder`].
//!
//! A text is embedded once per model for the life of the process: vectors
//! are kept in an [`EmbedCache`] keyed by chunk hash, so re-inserting a text
//! (an edit that is undone, the same paragraph in another document, a
//! restart seeded from stored embeddings) costs nothing. Retractions reuse
//! the cached vector, so a delete retracts exactly the row that was inserted.
//!
//! ```ignore
//! let embeddings = texts          // Collection<(Hash128, String)>, distinct
//!     .embed(embedder, cache);    // Collection<EmbeddingRow>
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use differential_dataflow::{AsCollection, VecCollection};
use parking_lot::RwLock;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use twinflow_schemas::{EmbeddingRow, Hash128, Vector};

use crate::embed::Embedder;

/// Vectors already computed, by chunk hash, for one model. Shared by all
/// workers of a process.
#[derive(Debug)]
pub struct EmbedCache {
    model_id: String,
    /// Told of every vector the model computes (the persistent cache).
    sink: Option<Arc<dyn ComputedVectors>>,
    vectors: RwLock<HashMap<Hash128, Arc<[f32]>>>,
    /// Texts actually sent to the model (cache misses).
    embedded: AtomicU64,
    /// Cache misses found so far, embedded or about to be: `queued − embedded`
    /// is the backlog of the model.
    queued: AtomicU64,
}

impl EmbedCache {
    /// An empty cache for vectors of `model_id`.
    pub fn new(model_id: &str) -> Self {
        Self {
            model_id: model_id.to_owned(),
            sink: None,
            vectors: RwLock::default(),
            embedded: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }

    /// With `sink` told of every vector computed from now on.
    pub fn with_sink(mut self, sink: Option<Arc<dyn ComputedVectors>>) -> Self {
        self.sink = sink;
        self
    }

    /// Adds known vectors (e.g. the stored `embeddings` table after a
    /// restart); rows of other models are ignored.
    pub fn seed(&self, rows: impl IntoIterator<Item = EmbeddingRow>) -> usize {
        let mut vectors = self.vectors.write();
        let before = vectors.len();
        for row in rows.into_iter().filter(|r| r.model_id == self.model_id) {
            vectors.insert(row.chunk_id, row.vector.0.into());
        }
        vectors.len() - before
    }

    /// Number of texts sent to the model so far.
    pub fn texts_embedded(&self) -> u64 {
        self.embedded.load(Ordering::Relaxed)
    }

    /// Number of texts found missing from the cache so far (embedded or waiting for the model).
    pub fn texts_queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Number of cached vectors.
    pub fn len(&self) -> usize {
        self.vectors.read().len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, id: &Hash128) -> Option<Arc<[f32]>> {
        self.vectors.read().get(id).cloned()
    }

    /// Vectors for `texts`, computing the missing ones in length-sorted
    /// batches of the embedder's batch size.
    fn vectors_for(&self, embedder: &dyn Embedder, texts: &[(Hash128, String)]) -> Vec<Arc<[f32]>> {
        let mut out: Vec<Option<Arc<[f32]>>> = texts.iter().map(|(id, _)| self.get(id)).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|i| out[*i].is_none()).collect();
        missing.sort_by_key(|i| texts[*i].1.len());
        self.queued.fetch_add(missing.len() as u64, Ordering::Relaxed);
        for batch in missing.chunks(embedder.batch_size().max(1)) {
            let inputs: Vec<&str> = batch.iter().map(|i| texts[*i].1.as_str()).collect();
            let vectors = embed_or_fallback(embedder, &inputs);
            self.embedded.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut cache = self.vectors.write();
            for (i, vector) in batch.iter().zip(vectors) {
                let vector: Arc<[f32]> = vector.into();
                cache.insert(texts[*i].0, vector.clone());
                out[*i] = Some(vector);
            }
            drop(cache);
            if let Some(sink) = &self.sink {
                let computed: Vec<(Hash128, &[f32])> =
                    batch.iter().filter_map(|i| Some((texts[*i].0, &**out[*i].as_ref()?))).collect();
                sink.computed(&computed);
            }
        }
        out.into_iter().map(|v| v.unwrap_or_else(|| Arc::from(Vec::new()))).collect()
    }
}

/// Told of the vectors the model computes, e.g. to keep them across
/// restarts. Called from worker threads; must not block for long.
pub trait ComputedVectors: Send + Sync + std::fmt::Debug {
    /// `(chunk hash, vector)` pairs just computed.
    fn computed(&self, vectors: &[(Hash128, &[f32])]);
}

/// Embeds a batch; when the model fails, retries text by text and gives a
/// zero vector (logged) to a text that still fails, so the table stays
/// consistent with its chunks.
fn embed_or_fallback(embedder: &dyn Embedder, inputs: &[&str]) -> Vec<Vec<f32>> {
    match embedder.embed_batch(inputs) {
        Ok(vectors) if vectors.len() == inputs.len() => vectors,
        result => {
            tracing::warn!(model = embedder.model_id(), error = ?result.err(), "batch embedding failed; retrying one by one");
            inputs
                .iter()
                .map(|text| match embedder.embed_batch(&[text]) {
                    Ok(mut v) if v.len() == 1 => v.remove(0),
                    other => {
                        tracing::error!(model = embedder.model_id(), error = ?other.err(), chars = text.len(), "embedding a text failed; storing a zero vector");
                        vec![0.0; embedder.dim()]
                    }
                })
                .collect()
        }
    }
}

/// Extension trait adding [`EmbedExt::embed`] to collections of distinct
/// `(chunk hash, text)` pairs.
pub trait EmbedExt<'scope> {
    /// Embeds each text once per epoch in which it appears or disappears.
    fn embed(
        self,
        embedder: Arc<dyn Embedder>,
        cache: Arc<EmbedCache>,
    ) -> VecCollection<'scope, u64, EmbeddingRow, isize>;
}

impl<'scope> EmbedExt<'scope> for VecCollection<'scope, u64, (Hash128, String), isize> {
    fn embed(
        self,
        embedder: Arc<dyn Embedder>,
        cache: Arc<EmbedCache>,
    ) -> VecCollection<'scope, u64, EmbeddingRow, isize> {
        let model_id = embedder.model_id().to_owned();
        self.inner
            .unary_frontier(Pipeline, "Embed", move |_capability, _info| {
                let mut stash = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for ((id, text), time, diff) in data.drain(..) {
                            stash
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, output.output_index()), Vec::new()))
                                .1
                                .push((id, text, diff));
                        }
                    });
                    let ready: Vec<u64> = stash.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                    for time in ready {
                        let Some((cap, updates)) = stash.remove(&time) else { continue };
                        let texts: Vec<(Hash128, String)> =
                            updates.iter().map(|(id, text, _)| (*id, text.clone())).collect();
                        let vectors = cache.vectors_for(embedder.as_ref(), &texts);
                        let mut session = output.session(&cap);
                        for ((id, _, diff), vector) in updates.into_iter().zip(vectors) {
                            let row = EmbeddingRow {
                                chunk_id: id,
                                model_id: model_id.clone(),
                                vector: Vector(vector.to_vec()),
                            };
                            session.give((row, time, diff));
                        }
                    }
                }
            })
            .as_collection()
    }
}
