//! The collect operator: the end of every worker's dataflow. It gathers the
//! updates of all tables by epoch and, once the worker's frontier has passed
//! an epoch, sends them (consolidated) and then the new frontier to the
//! engine's collector, which assembles complete epochs across workers.

use std::collections::BTreeMap;

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use twinflow_schemas::{ChunkRow, DocumentRow, DriftStats, EmbeddingRow, EpochUpdates, InstructRow};

/// A row of any table, so all tables can travel in one stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum OutRow {
    Document(DocumentRow),
    Chunk(ChunkRow),
    Embedding(EmbeddingRow),
    Instruct(InstructRow),
    /// A change of the drift statistics of one bucket (not a table row).
    Drift(u64, DriftStats),
}

/// What a worker tells the collector.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The worker's updates of one epoch (sent only when non-empty).
    Part { worker: usize, epoch: u64, updates: EpochUpdates },
    /// The worker will send nothing more for epochs before `frontier`
    /// (`None`: nothing more at all).
    Progress { worker: usize, frontier: Option<u64> },
}

/// Extension trait adding [`CollectEpochsExt::collect_epochs`].
pub trait CollectEpochsExt {
    /// Hands this worker's updates per completed epoch, then its new frontier, to `emit`.
    fn collect_epochs(self, worker: usize, emit: impl FnMut(WorkerMsg) + 'static);
}

impl<'scope> CollectEpochsExt for VecCollection<'scope, u64, OutRow, isize> {
    fn collect_epochs(self, worker: usize, mut emit: impl FnMut(WorkerMsg) + 'static) {
        let mut stash: BTreeMap<u64, EpochUpdates> = BTreeMap::new();
        let mut last_frontier = Some(0);
        self.inner.sink(Pipeline, "CollectEpochs", move |(input, frontier)| {
            input.for_each(|_cap, data| {
                for (row, time, diff) in data.drain(..) {
                    let updates = stash.entry(time).or_default();
                    let diff = diff as i64;
                    match row {
                        OutRow::Document(r) => updates.documents.push((r, diff)),
                        OutRow::Chunk(r) => updates.chunks.push((r, diff)),
                        OutRow::Embedding(r) => updates.embeddings.push((r, diff)),
                        OutRow::Instruct(r) => updates.instruct.push((r, diff)),
                        OutRow::Drift(bucket, mut stats) => {
                            if diff != 1 {
                                let once = std::mem::take(&mut stats);
                                stats.add(&once, diff);
                            }
                            updates.drift.push((bucket, stats))
                        }
                    }
                }
            });
            let current = frontier.frontier().first().copied();
            if current != last_frontier {
                let ready: Vec<u64> = stash.keys().copied().filter(|t| current.is_none_or(|f| *t < f)).collect();
                for epoch in ready {
                    let Some(mut updates) = stash.remove(&epoch) else { continue };
                    updates.consolidate();
                    if !updates.is_empty() {
                        emit(WorkerMsg::Part { worker, epoch, updates });
                    }
                }
                emit(WorkerMsg::Progress { worker, frontier: current });
                last_frontier = current;
            }
        });
    }
}
