//! The embed operator: turns the distinct chunk texts of a worker into
//! embedding rows, one batch per epoch, through an [`Embedder`].
//!
//! A text is embedded once per model for the life of the process: vectors
//! are kept in an [`EmbedCache`] keyed by chunk hash, so re-inserting a text
//! (an edit that is undone, the same paragraph in another document, a
//! restart seeded from stored embeddings) costs nothing. Retractions reuse
//! the cached vector, so a delete retracts exactly the row that was inserted.
//!
//! A text the model cannot embed (after a retry of its batch one text at a
//! time, and of the text itself) gets no row at all, never a made-up
//! vector: it is recorded as an [`EmbedFailure`] (which the committer turns
//! into an `ingest_errors` row), and its later retraction emits nothing
//! either. Sending the document again, or a restart, tries it again.
//!
//! ```ignore
//! let embeddings = texts          // Collection<(Hash128, String)>, distinct
//!     .embed(embedder, cache);    // Collection<EmbeddingRow>
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use differential_dataflow::{AsCollection, VecCollection};
use parking_lot::{Mutex, RwLock};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use twinflow_schemas::{EmbeddingRow, Hash128, Vector};

use crate::embed::Embedder;

/// How many times a text that failed in its batch is tried on its own.
const ATTEMPTS: u32 = 3;

/// The most failures held until the committer takes them (more are counted, not kept).
const MAX_HELD_FAILURES: usize = 10_000;

/// A text the model could not embed: it has no row in `embeddings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedFailure {
    /// The chunk text's hash (`chunk_id` in `chunks`).
    pub chunk_id: Hash128,
    /// Its length in characters.
    pub chars: usize,
    /// The model's last error.
    pub reason: String,
}

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
    /// Texts that got no vector (so their retraction emits nothing).
    failed: Mutex<HashSet<Hash128>>,
    /// Failures not yet taken by [`EmbedCache::take_failures`].
    failures: Mutex<Vec<EmbedFailure>>,
    failures_total: AtomicU64,
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
            failed: Mutex::default(),
            failures: Mutex::default(),
            failures_total: AtomicU64::new(0),
        }
    }

    /// The texts that failed since the last call (at most
    /// `MAX_HELD_FAILURES`; [`EmbedCache::failures_total`] counts them all).
    pub fn take_failures(&self) -> Vec<EmbedFailure> {
        std::mem::take(&mut *self.failures.lock())
    }

    /// Texts that got no vector since start.
    pub fn failures_total(&self) -> u64 {
        self.failures_total.load(Ordering::Relaxed)
    }

    fn record_failure(&self, failure: EmbedFailure) {
        self.failures_total.fetch_add(1, Ordering::Relaxed);
        self.failed.lock().insert(failure.chunk_id);
        let mut held = self.failures.lock();
        if held.len() < MAX_HELD_FAILURES {
            held.push(failure);
        }
    }

    /// Whether `id` got no vector; forgets it (its retraction has come).
    fn forget_failure(&self, id: &Hash128) -> bool {
        self.failed.lock().remove(id)
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
    /// batches of the embedder's batch size; `None` for a text the model
    /// failed on (recorded).
    fn vectors_for(&self, embedder: &dyn Embedder, texts: &[(Hash128, String)]) -> Vec<Option<Arc<[f32]>>> {
        let mut out: Vec<Option<Arc<[f32]>>> = texts.iter().map(|(id, _)| self.get(id)).collect();
        let mut missing: Vec<usize> = (0..texts.len()).filter(|i| out[*i].is_none()).collect();
        missing.sort_by_key(|i| texts[*i].1.len());
        self.queued.fetch_add(missing.len() as u64, Ordering::Relaxed);
        for batch in missing.chunks(embedder.batch_size().max(1)) {
            let inputs: Vec<&str> = batch.iter().map(|i| texts[*i].1.as_str()).collect();
            let vectors = embed_with_retries(embedder, &inputs);
            self.embedded.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let mut cache = self.vectors.write();
            for (i, vector) in batch.iter().zip(vectors) {
                match vector {
                    Ok(vector) => {
                        let vector: Arc<[f32]> = vector.into();
                        cache.insert(texts[*i].0, vector.clone());
                        out[*i] = Some(vector);
                    }
                    Err(reason) => {
                        let (chunk_id, text) = &texts[*i];
                        tracing::error!(model = embedder.model_id(), chunk = %chunk_id, %reason, "a text could not be embedded: it gets no vector");
                        self.record_failure(EmbedFailure { chunk_id: *chunk_id, chars: text.chars().count(), reason });
                    }
                }
            }
            drop(cache);
            if let Some(sink) = &self.sink {
                let computed: Vec<(Hash128, &[f32])> =
                    batch.iter().filter_map(|i| Some((texts[*i].0, &**out[*i].as_ref()?))).collect();
                sink.computed(&computed);
            }
        }
        out
    }
}

/// Told of the vectors the model computes, e.g. to keep them across
/// restarts. Called from worker threads; must not block for long.
pub trait ComputedVectors: Send + Sync + std::fmt::Debug {
    /// `(chunk hash, vector)` pairs just computed.
    fn computed(&self, vectors: &[(Hash128, &[f32])]);
}

/// Embeds a batch; when the model fails on it, tries each text on its own
/// up to [`ATTEMPTS`] times. A vector of the wrong length or with a value
/// that is not finite is a failure too.
fn embed_with_retries(embedder: &dyn Embedder, inputs: &[&str]) -> Vec<Result<Vec<f32>, String>> {
    let dim = embedder.dim();
    let valid = |v: &[f32]| v.len() == dim && v.iter().all(|x| x.is_finite());
    let batch_error = match embedder.embed_batch(inputs) {
        Ok(vectors) if vectors.len() == inputs.len() && vectors.iter().all(|v| valid(v)) => {
            return vectors.into_iter().map(Ok).collect();
        }
        Ok(vectors) => {
            format!("{} vectors for {} texts, or one not of {dim} finite numbers", vectors.len(), inputs.len())
        }
        Err(e) => e.to_string(),
    };
    tracing::warn!(model = embedder.model_id(), error = %batch_error, texts = inputs.len(), "batch embedding failed; trying the texts one by one");
    inputs
        .iter()
        .map(|text| {
            let mut reason = batch_error.clone();
            for attempt in 0..ATTEMPTS {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(20 << attempt));
                }
                match embedder.embed_batch(&[text]) {
                    Ok(mut v) if v.len() == 1 && valid(&v[0]) => return Ok(v.remove(0)),
                    Ok(v) => reason = format!("{} vectors, or not {dim} finite numbers", v.len()),
                    Err(e) => reason = e.to_string(),
                }
            }
            Err(reason)
        })
        .collect()
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
                        let Some((cap, mut updates)) = stash.remove(&time) else { continue };
                        // A text that got no vector had no row: its retraction has none to retract.
                        updates.retain(|(id, _, diff)| {
                            !(*diff < 0 && cache.get(id).is_none() && cache.forget_failure(id))
                        });
                        let texts: Vec<(Hash128, String)> =
                            updates.iter().map(|(id, text, _)| (*id, text.clone())).collect();
                        let vectors = cache.vectors_for(embedder.as_ref(), &texts);
                        let mut session = output.session(&cap);
                        for ((id, _, diff), vector) in updates.into_iter().zip(vectors) {
                            let Some(vector) = vector else { continue };
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
