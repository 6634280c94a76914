//! The committer: turns completed epochs into committed tables, in order.
//!
//! ```text
//!  Engine::completed ─▶ drift deltas ─▶ DriftMonitor (rows, trigger?)
//!                    ─▶ Store::commit (an EpochCommit: tables, positions, drift, ingest errors; retried)
//!                    ─▶ sources told their committed positions ─▶ Engine::mark_committed
//!                    ─▶ input log truncated ─▶ publishers ─▶ timeline ─▶ snapshot every N epochs
//! ```
//!
//! A failed commit is retried (the engine's admission limits push back on
//! ingest meanwhile); nothing is marked committed until it is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use twinflow_dataflow::{CompletedEpoch, DriftTrigger, Engine};
use twinflow_schemas::api::TimelinePoint;
use twinflow_schemas::{DriftRow, IngestError, IngestErrorRow};
use twinflow_sinks::{EpochCommit, Store};

use super::Ingest;
use super::publish::ChangePublisher;
use crate::training::Training;

/// Longest time between two saves of the drift monitor's state while data flows.
const DRIFT_SAVE_EVERY: Duration = Duration::from_secs(30);

/// The most recent commits, for the dashboard's plots: bounded, oldest first.
#[derive(Debug, Default)]
pub struct Timeline(Mutex<VecDeque<TimelinePoint>>);

impl Timeline {
    /// Commits kept.
    pub const CAPACITY: usize = 720;

    fn record(&self, point: TimelinePoint) {
        let mut points = self.0.lock();
        if points.len() == Self::CAPACITY {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// The kept commits, oldest first.
    pub fn points(&self) -> Vec<TimelinePoint> {
        self.0.lock().iter().cloned().collect()
    }
}

/// Everything the committer reads from and writes to.
#[derive(Debug)]
pub struct Committer {
    pub engine: Arc<Engine>,
    pub store: Arc<Store>,
    /// Pending source positions and ingest errors, and the input log to truncate.
    pub ingest: Arc<Ingest>,
    /// The drift monitor (and where its state is saved).
    pub training: Arc<Training>,
    /// Outputs besides Parquet (Kafka / Fluvio topics).
    pub publishers: Vec<ChangePublisher>,
    pub timeline: Arc<Timeline>,
    /// A snapshot of every table every this many epochs (0: never).
    pub snapshot_every: u64,
}

impl Committer {
    /// Commits completed epochs until the engine stops; `on_trigger` is
    /// called when the drift monitor fires. Dropping the publishers at the
    /// end publishes what is queued.
    pub fn run(self, on_trigger: impl Fn(DriftTrigger)) {
        let Committer { engine, store, ingest, training, publishers, timeline, snapshot_every } = self;
        let positions = ingest.positions();
        for completed in engine.completed() {
            let epoch = completed.epoch;
            let (drift_rows, trigger) = observe_drift(&training, &completed);
            // Texts the model could not embed: visible as ingest errors, never as made-up vectors.
            for failure in engine.take_embed_failures() {
                crate::metrics::embed_failed();
                let reason = format!("could not embed ({} characters): {}", failure.chars, failure.reason);
                ingest.record_error(IngestError::new("embedder", format!("chunk:{}", failure.chunk_id), reason));
            }
            let (sources, ingest_errors) = if completed.restored {
                Default::default()
            } else {
                (positions.take_up_to(epoch), ingest.take_pending_errors())
            };
            let span =
                tracing::info_span!("epoch_commit", epoch, changes = completed.changes, restored = completed.restored);
            let entered = span.enter();
            commit_with_retry(&store, &completed, drift_rows, sources.clone(), ingest_errors);
            positions.committed(&sources);
            drop(entered);
            if let Some(trigger) = trigger {
                on_trigger(trigger);
            }
            engine.mark_committed(epoch);
            if let Some(log) = ingest.input_log().filter(|_| !completed.restored) {
                // The manifest now holds everything up to `epoch`: the log keeps only what it does not.
                if let Err(e) = log.truncate_through(epoch) {
                    tracing::error!(epoch, error = %e, "could not truncate the input log (it only grows until this is fixed)");
                }
            }
            for publisher in publishers.iter().filter(|_| !completed.restored) {
                publisher.send(epoch, &completed.parts);
            }
            if !completed.restored {
                let freshness_ms = completed.first_accepted.elapsed().as_secs_f64() * 1e3;
                tracing::debug!(epoch, changes = completed.changes, freshness_ms, "epoch committed");
                timeline.record(TimelinePoint {
                    epoch,
                    committed_at_ms: crate::now_ms(),
                    changes: completed.changes as u64,
                    freshness_ms,
                    texts_embedded: engine.stats().texts_embedded,
                    tables: store.counts().1,
                });
            }
            if snapshot_every > 0 && epoch % snapshot_every == 0 && !completed.restored {
                match store.snapshot() {
                    Ok(info) => tracing::info!(epoch, version = info.version, "snapshot written"),
                    Err(e) => tracing::error!(epoch, error = %e, "snapshot failed"),
                }
            }
        }
    }
}

/// Feeds the epoch's drift deltas to the monitor: the rows to commit with
/// the epoch, and a trigger when one fired. A replayed epoch only rebuilds
/// the monitor's buckets.
fn observe_drift(training: &Training, completed: &CompletedEpoch) -> (Vec<DriftRow>, Option<DriftTrigger>) {
    let Some(monitor) = &training.monitor else { return (Vec::new(), None) };
    let deltas: Vec<_> = completed.parts.iter().flat_map(|(_, u)| u.drift.iter().cloned()).collect();
    let mut monitor = monitor.lock();
    if completed.restored {
        monitor.absorb(completed.epoch, &deltas);
        return (Vec::new(), None);
    }
    let reference_before = monitor.reference().map(|r| r.name.clone());
    let evaluation = monitor.observe(completed.epoch, &deltas, std::time::SystemTime::now());
    let changed = monitor.reference().map(|r| r.name.clone()) != reference_before;
    drop(monitor);
    // The counters (new samples, trigger state) move every epoch: saved at most every
    // DRIFT_SAVE_EVERY besides every reference change and trigger, so a crash loses little.
    if changed || evaluation.trigger.is_some() || (!deltas.is_empty() && training.drift_state_due(DRIFT_SAVE_EVERY)) {
        training.save_drift_state();
    }
    (evaluation.rows, evaluation.trigger)
}

fn commit_with_retry(
    store: &Store,
    completed: &CompletedEpoch,
    drift: Vec<DriftRow>,
    sources: BTreeMap<String, serde_json::Value>,
    ingest_errors: Vec<IngestErrorRow>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let commit = EpochCommit::new(completed.epoch, completed.parts.clone())
            .with_sources(sources.clone())
            .with_drift(drift.clone())
            .with_ingest_errors(ingest_errors.clone());
        match store.commit(commit) {
            Ok(stats) => {
                if !completed.restored {
                    crate::metrics::epoch_committed(
                        &stats,
                        completed.first_accepted.elapsed(),
                        started.elapsed().as_secs_f64(),
                    );
                }
                tracing::trace!(epoch = stats.epoch, files = stats.files, "committed");
                return;
            }
            Err(e) => {
                tracing::error!(
                    epoch = completed.epoch,
                    error = %e,
                    retry_in = ?delay,
                    "commit failed; will retry (nothing accepted is lost meanwhile: free space or fix the \
                     data directory; ingest is refused once changes wait longer than engine.max_lag)"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}
