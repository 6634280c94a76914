//! The collector thread: hears of every closed epoch (from the ingest) and
//! of every worker's updates and progress, and hands an epoch on as a
//! [`CompletedEpoch`] once every worker's frontier has passed it.

use std::collections::BTreeMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use twinflow_schemas::EpochUpdates;

use crate::operators::WorkerMsg;

/// Every worker has passed `epoch`: its updates are final.
#[derive(Debug)]
pub struct CompletedEpoch {
    pub epoch: u64,
    /// Non-empty updates per worker, consolidated per worker.
    pub parts: Vec<(usize, EpochUpdates)>,
    /// Number of changes submitted in the epoch.
    pub changes: usize,
    /// When the epoch's first change was accepted.
    pub first_accepted: Instant,
    /// True for the replay of restored state (already committed).
    pub restored: bool,
}

impl CompletedEpoch {
    /// All workers' updates merged and consolidated.
    pub fn merged(&self) -> EpochUpdates {
        let mut all = EpochUpdates::default();
        for (_, part) in &self.parts {
            all.extend(part.clone());
        }
        all.consolidate();
        all
    }
}

/// What the collector hears.
#[derive(Debug)]
pub(super) enum CollectorMsg {
    Closed { epoch: u64, changes: usize, first_accepted: Instant, restored: bool },
    Worker(WorkerMsg),
}

/// Assembles complete epochs: an epoch is complete once every worker's
/// frontier has passed it.
pub(super) fn run_collector(workers: usize, rx: Receiver<CollectorMsg>, tx: Sender<CompletedEpoch>) {
    let mut frontiers: Vec<Option<u64>> = vec![Some(0); workers];
    let mut pending: BTreeMap<u64, CompletedEpoch> = BTreeMap::new();
    for msg in rx {
        match msg {
            CollectorMsg::Closed { epoch, changes, first_accepted, restored } => {
                pending.insert(epoch, CompletedEpoch { epoch, parts: Vec::new(), changes, first_accepted, restored });
            }
            CollectorMsg::Worker(WorkerMsg::Part { worker, epoch, updates }) => match pending.get_mut(&epoch) {
                Some(completed) => completed.parts.push((worker, updates)),
                None => tracing::error!(epoch, worker, "updates for an epoch that was never closed"),
            },
            CollectorMsg::Worker(WorkerMsg::Progress { worker, frontier }) => frontiers[worker] = frontier,
        }
        let min = frontiers.iter().map(|f| f.unwrap_or(u64::MAX)).min().unwrap_or(u64::MAX);
        while let Some(entry) = pending.first_entry() {
            if *entry.key() >= min {
                break;
            }
            let mut completed = entry.remove();
            completed.parts.sort_by_key(|(worker, _)| *worker);
            if tx.send(completed).is_err() {
                return;
            }
        }
        if frontiers.iter().all(Option::is_none) {
            return;
        }
    }
}
