//! The ingest side of the engine: the open epoch that `submit` adds to,
//! admission (pending and lag limits, shutdown), closing an epoch into a
//! [`Batch`] for every worker, the committed watermark, and the counters
//! built from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use twinflow_schemas::clock::now_ms;
use twinflow_schemas::{DocumentChange, DocumentRow};

use super::EngineOptions;
use super::collector::CollectorMsg;
use crate::operators::EmbedCache;

/// Why changes were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many changes are waiting to be committed.
    #[error("engine overloaded: {pending} changes are waiting to be committed (limit {limit}); retry later")]
    Overloaded { pending: usize, limit: usize },
    /// The oldest uncommitted change has waited too long: changes arrive
    /// faster than they are committed.
    #[error(
        "engine overloaded: the oldest uncommitted change has waited {} ms (limit {} ms); retry later",
        lag.as_millis(),
        limit.as_millis()
    )]
    Behind { lag: Duration, limit: Duration },
    /// The engine is shutting down.
    #[error("engine is shutting down")]
    ShuttingDown,
}

/// Counters and gauges of a running engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStats {
    pub workers: usize,
    pub open_epoch: u64,
    pub committed_epoch: u64,
    pub pending_changes: usize,
    /// Age of the oldest uncommitted change.
    pub input_lag: Duration,
    /// Texts sent to the embedding model since start.
    pub texts_embedded: u64,
    /// Texts found missing from the embedding cache since start; the
    /// model's backlog is `texts_queued − texts_embedded`.
    pub texts_queued: u64,
    /// Texts the model could not embed since start (they have no vector).
    pub embed_failures: u64,
}

/// A batch of changes closed as one epoch.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) epoch: u64,
    pub(super) changes: Vec<DocumentChange>,
    /// Documents replayed at startup (restored state), not changes.
    pub(super) restore: Vec<DocumentRow>,
}

/// The epoch that accepts changes.
#[derive(Debug)]
struct OpenEpoch {
    epoch: u64,
    changes: Vec<DocumentChange>,
    first_accepted: Option<Instant>,
}

/// Epoch bookkeeping shared by `submit`, the ticker and `mark_committed`.
#[derive(Debug)]
pub(super) struct Ingest {
    open: Mutex<OpenEpoch>,
    to_workers: Mutex<Vec<Sender<Arc<Batch>>>>,
    to_collector: Sender<CollectorMsg>,
    /// Closed, uncommitted epochs: epoch → (changes, first accepted).
    uncommitted: Mutex<BTreeMap<u64, (usize, Instant)>>,
    committed: Mutex<u64>,
    committed_changed: Condvar,
    stopping: AtomicBool,
    max_batch: usize,
    max_pending: usize,
    max_lag: Duration,
}

impl Ingest {
    /// Bookkeeping for an engine whose last committed epoch is `committed`:
    /// new changes go into the next one.
    pub(super) fn new(
        committed: u64,
        to_workers: Vec<Sender<Arc<Batch>>>,
        to_collector: Sender<CollectorMsg>,
        options: &EngineOptions,
    ) -> Self {
        Self {
            open: Mutex::new(OpenEpoch { epoch: committed + 1, changes: Vec::new(), first_accepted: None }),
            to_workers: Mutex::new(to_workers),
            to_collector,
            uncommitted: Mutex::new(BTreeMap::new()),
            committed: Mutex::new(committed),
            committed_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            max_batch: options.max_batch,
            max_pending: options.max_pending,
            max_lag: options.max_lag,
        }
    }

    /// Sends the restored `documents` to every worker as epoch `epoch`
    /// (already committed), before any change.
    pub(super) fn replay(&self, epoch: u64, documents: Vec<DocumentRow>) {
        let batch = Arc::new(Batch { epoch, changes: Vec::new(), restore: documents });
        let _ = self.to_collector.send(CollectorMsg::Closed {
            epoch,
            changes: 0,
            first_accepted: Instant::now(),
            restored: true,
        });
        for tx in self.to_workers.lock().iter() {
            let _ = tx.send(batch.clone());
        }
    }

    fn pending(&self, open: &OpenEpoch) -> usize {
        open.changes.len() + self.uncommitted.lock().values().map(|(n, _)| n).sum::<usize>()
    }

    /// When the oldest uncommitted change was accepted. Closed epochs are
    /// committed in order, so the first one holds it; else the open one.
    fn oldest(&self, open: &OpenEpoch) -> Option<Instant> {
        self.uncommitted.lock().first_key_value().map(|(_, (_, t))| *t).or(open.first_accepted)
    }

    /// Closes the open epoch if it holds changes. Called with `open` locked.
    fn close(&self, open: &mut OpenEpoch) -> Option<u64> {
        if open.changes.is_empty() {
            return None;
        }
        let epoch = open.epoch;
        let changes = std::mem::take(&mut open.changes);
        let first_accepted = open.first_accepted.take().unwrap_or_else(Instant::now);
        self.uncommitted.lock().insert(epoch, (changes.len(), first_accepted));
        let _ = self.to_collector.send(CollectorMsg::Closed {
            epoch,
            changes: changes.len(),
            first_accepted,
            restored: false,
        });
        let batch = Arc::new(Batch { epoch, changes, restore: Vec::new() });
        for tx in self.to_workers.lock().iter() {
            let _ = tx.send(batch.clone());
        }
        open.epoch += 1;
        Some(epoch)
    }

    /// See [`Engine::submit`](super::Engine::submit).
    pub(super) fn submit(&self, mut changes: Vec<DocumentChange>) -> Result<u64, SubmitError> {
        let now = now_ms();
        for change in &mut changes {
            if let DocumentChange::Upsert(doc) = change {
                doc.fetched_at.get_or_insert(now);
            }
        }
        let mut open = self.open.lock();
        if self.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let pending = self.pending(&open);
        if pending > 0 && pending + changes.len() > self.max_pending {
            return Err(SubmitError::Overloaded { pending, limit: self.max_pending });
        }
        if let Some(lag) = self.oldest(&open).map(|t| t.elapsed())
            && lag > self.max_lag
        {
            return Err(SubmitError::Behind { lag, limit: self.max_lag });
        }
        let epoch = open.epoch;
        if changes.is_empty() {
            return Ok(epoch.saturating_sub(1));
        }
        open.first_accepted.get_or_insert_with(Instant::now);
        open.changes.extend(changes);
        if open.changes.len() >= self.max_batch {
            self.close(&mut open);
        }
        Ok(epoch)
    }

    /// Closes the open epoch now (if it holds changes) and returns it.
    pub(super) fn flush(&self) -> Option<u64> {
        let mut open = self.open.lock();
        self.close(&mut open)
    }

    /// See [`Engine::mark_committed`](super::Engine::mark_committed).
    pub(super) fn mark_committed(&self, epoch: u64) {
        self.uncommitted.lock().retain(|e, _| *e > epoch);
        let mut committed = self.committed.lock();
        if epoch > *committed {
            *committed = epoch;
            self.committed_changed.notify_all();
        }
    }

    /// See [`Engine::wait_committed`](super::Engine::wait_committed).
    pub(super) fn wait_committed(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut committed = self.committed.lock();
        while *committed < epoch {
            if self.committed_changed.wait_until(&mut committed, deadline).timed_out() {
                return *committed >= epoch;
            }
        }
        true
    }

    /// The engine's counters: the epochs and admission gauges from here,
    /// the embedding counters from `cache`.
    pub(super) fn stats(&self, workers: usize, cache: &EmbedCache) -> EngineStats {
        let open = self.open.lock();
        EngineStats {
            workers,
            open_epoch: open.epoch,
            committed_epoch: *self.committed.lock(),
            pending_changes: self.pending(&open),
            input_lag: self.oldest(&open).map(|t| t.elapsed()).unwrap_or_default(),
            texts_embedded: cache.texts_embedded(),
            texts_queued: cache.texts_queued(),
            embed_failures: cache.failures_total(),
        }
    }

    /// Stops accepting changes, closes the open epoch and drops the senders
    /// to the workers, so their input ends once they have taken every batch
    /// already sent. False when the engine was already stopping.
    pub(super) fn stop(&self) -> bool {
        let mut open = self.open.lock();
        if self.stopping.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.close(&mut open);
        self.to_workers.lock().clear();
        true
    }
}
