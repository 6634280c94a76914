//! The drift operator: per worker, the change in drift statistics of each
//! epoch, by the epoch in which the chunks concerned entered.
//!
//! Its inputs are the distinct chunk texts and their embeddings, both
//! exchanged by chunk hash, so each chunk is counted by one worker. A chunk
//! entering adds its features to the bucket of the current epoch; a chunk
//! leaving subtracts exactly the same features from the bucket it entered
//! in (the worker remembers that epoch per chunk). Summed over workers and
//! epochs, the buckets are the statistics of the live chunks, exactly.
//!
//! ```ignore
//! let drift = texts.drift_stats(&embeddings, features); // Collection<(bucket, DriftStats)>, one row per bucket per epoch
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use twinflow_schemas::{DriftStats, EmbeddingRow, Hash128};

use crate::drift::DriftFeatures;

/// One input of the operator.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum DriftInput {
    Text(Hash128, String),
    Vector(EmbeddingRow),
}

impl DriftInput {
    fn chunk_id(&self) -> Hash128 {
        match self {
            DriftInput::Text(id, _) => *id,
            DriftInput::Vector(row) => row.chunk_id,
        }
    }
}

/// Extension trait adding [`DriftStatsExt::drift_stats`].
pub trait DriftStatsExt<'scope> {
    /// The per-epoch change of the drift statistics, as `(bucket, stats)` rows.
    fn drift_stats(self, features: Arc<DriftFeatures>) -> VecCollection<'scope, u64, (u64, DriftStats), isize>;
}

impl<'scope> DriftStatsExt<'scope> for VecCollection<'scope, u64, DriftInput, isize> {
    fn drift_stats(self, features: Arc<DriftFeatures>) -> VecCollection<'scope, u64, (u64, DriftStats), isize> {
        self.inner
            .unary_frontier(Pipeline, "DriftStats", move |_capability, _info| {
                let mut stash = BTreeMap::new();
                // The epoch each live chunk entered in, and how many of its rows (text, vector) are live.
                let mut entered: HashMap<Hash128, (u64, isize)> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        for (item, time, diff) in data.drain(..) {
                            stash
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, output.output_index()), Vec::new()))
                                .1
                                .push((item, diff));
                        }
                    });
                    let ready: Vec<u64> = stash.keys().copied().filter(|t| !frontier.less_equal(t)).collect();
                    for time in ready {
                        let Some((cap, mut updates)) = stash.remove(&time) else { continue };
                        // Retractions first: they find the bucket of the row they retract.
                        updates.sort_by_key(|(_, diff)| *diff > 0);
                        let mut buckets: BTreeMap<u64, DriftStats> = BTreeMap::new();
                        for (item, diff) in updates {
                            let id = item.chunk_id();
                            let bucket = if diff > 0 {
                                let entry = entered.entry(id).or_insert((time, 0));
                                entry.1 += diff;
                                entry.0
                            } else {
                                let Some(entry) = entered.get_mut(&id) else {
                                    tracing::error!(chunk = %id.to_hex(), "drift: a retraction of a chunk never counted");
                                    continue;
                                };
                                entry.1 += diff;
                                let bucket = entry.0;
                                if entry.1 <= 0 {
                                    entered.remove(&id);
                                }
                                bucket
                            };
                            let stats = match &item {
                                DriftInput::Text(_, text) => DriftFeatures::of_text(text),
                                DriftInput::Vector(row) => features.of_vector(&row.vector.0),
                            };
                            buckets.entry(bucket).or_default().add(&stats, diff as i64);
                        }
                        let mut session = output.session(&cap);
                        for (bucket, stats) in buckets {
                            if !stats.is_empty() {
                                session.give(((bucket, stats), time, 1));
                            }
                        }
                    }
                }
            })
            .as_collection()
    }
}
