//! The one front door of the feature pipeline: every change — pushed over
//! HTTP, read by a source of this process, or forwarded by another process
//! of the cluster — enters through [`Ingest::accept`].
//!
//! ```text
//!  HTTP push ───────────┐            ┌─ limits (what a change may be)
//!  source batch ────────┼▶ accept ───┼─ input log before the ack (HTTP only)
//!  forwarded share ─────┘            ├─ epoch (Engine::submit; admission: overloaded / behind)
//!                                    ├─ position of the source, committed with that epoch
//!                                    └─ ingest errors and metrics
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use twinflow_connectors::IngestError;
use twinflow_dataflow::{Engine, SubmitError};
use twinflow_schemas::config::DocIdNamespaces;
use twinflow_schemas::{ChangeLimits, DocumentChange, IngestErrorRow};
use twinflow_sinks::{EncodedBatch, InputLog};

/// How many recent ingest errors are kept for `/v1/status`.
const RECENT_ERRORS: usize = 100;

/// Where a batch of changes comes from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// Pushed by a client (`POST /v1/documents`): logged and fsynced before
    /// it is acknowledged, so a crash loses nothing acknowledged.
    Http,
    /// Read by a source of this process; its position after the batch is
    /// committed with the batch's epoch.
    Source { name: String, position: Option<Value> },
    /// Read by another process of the cluster from its share of a
    /// partitioned source (`<source>@p<I>`, I > 0), with that share's position.
    Forwarded { share: String, position: Option<Value> },
}

impl Origin {
    /// A forwarded share's origin, checked: `share` must name another
    /// process's share (`<source>@p<I>`, I > 0), never process 0's own positions.
    pub fn forwarded(share: String, position: Option<Value>) -> Result<Self, AcceptError> {
        let process = share.rsplit_once("@p").and_then(|(_, p)| p.parse::<usize>().ok());
        if !process.is_some_and(|p| p > 0) {
            return Err(AcceptError::NotAShare(share));
        }
        Ok(Origin::Forwarded { share, position })
    }

    /// The name changes and errors are counted under.
    pub fn source(&self) -> &str {
        match self {
            Origin::Http => "http",
            Origin::Source { name, .. } => name,
            Origin::Forwarded { share, .. } => share,
        }
    }
}

/// Why a batch was not accepted. Nothing of a refused batch is kept.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The engine refused it (too many pending changes, too far behind, or stopping).
    #[error(transparent)]
    Refused(#[from] SubmitError),
    /// A forwarded batch that does not name another process's share.
    #[error("source {0:?} is not another process's share (<source>@p<process>)")]
    NotAShare(String),
    /// The batch could not be encoded for the input log.
    #[error("could not encode the changes for the input log: {0}")]
    Encode(#[source] twinflow_sinks::Error),
    /// The engine took the batch but the input log could not keep it: the
    /// client was not told it is durable and must send it again.
    #[error(
        "the changes were accepted but are not durable ({0}); free space or fix the data directory, \
         then send them again"
    )]
    NotDurable(#[source] twinflow_sinks::Error),
}

/// What an accepted batch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Changes accepted.
    pub changes: usize,
    /// The epoch that holds them (searchable once committed).
    pub epoch: u64,
}

/// The front door: owns the validation limits, the input log, the pending
/// source positions and ingest errors, and hands batches to the engine.
#[derive(Debug)]
pub struct Ingest {
    engine: Arc<Engine>,
    limits: ChangeLimits,
    input_log: Option<Arc<InputLog>>,
    positions: Arc<PendingPositions>,
    errors: IngestErrors,
    /// Which `doc_id`s each source may change.
    namespaces: DocIdNamespaces,
    /// Set when the shutdown begins: sources waiting on a busy engine give up.
    stopping: AtomicBool,
}

impl Ingest {
    /// A door into `engine`; changes over HTTP go to `input_log` before they are acknowledged.
    pub fn new(engine: Arc<Engine>, limits: ChangeLimits, input_log: Option<Arc<InputLog>>) -> Self {
        Self {
            engine,
            limits,
            input_log,
            positions: Arc::new(PendingPositions::default()),
            errors: IngestErrors::default(),
            namespaces: DocIdNamespaces::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// This door, letting each source change only the `doc_id`s `namespaces` give it.
    pub fn with_namespaces(mut self, namespaces: DocIdNamespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// What a change may be (size of its content, of its id): every caller
    /// parses with these before [`Ingest::accept`].
    pub fn limits(&self) -> &ChangeLimits {
        &self.limits
    }

    /// The input log, when changes over HTTP are logged.
    pub fn input_log(&self) -> Option<&Arc<InputLog>> {
        self.input_log.as_ref()
    }

    /// Source positions waiting for their epochs to commit.
    pub fn positions(&self) -> &Arc<PendingPositions> {
        &self.positions
    }

    /// Accepts `changes` (already parsed within [`Ingest::limits`]) and the
    /// records the source refused (`errors`, recorded once the batch is
    /// taken, so a refused and resent batch records them once). Blocking:
    /// an HTTP batch is fsynced to the input log before this returns.
    pub fn accept(
        &self,
        mut changes: Vec<DocumentChange>,
        origin: Origin,
        mut errors: Vec<IngestError>,
    ) -> Result<Accepted, AcceptError> {
        if let Origin::Forwarded { share, position } = &origin {
            Origin::forwarded(share.clone(), position.clone())?;
        }
        if !matches!(origin, Origin::Http) {
            // A source changes only its own documents: another's are refused record by record.
            let source = origin.source().to_owned();
            changes.retain(|change| match self.namespaces.check(&source, change.doc_id()) {
                Ok(()) => true,
                Err(reason) => {
                    errors.push(IngestError::new(&source, change.doc_id().to_owned(), reason));
                    false
                }
            });
        }
        let count = changes.len();
        let (position, logged) = match origin {
            Origin::Http => (None, true),
            Origin::Source { ref position, .. } | Origin::Forwarded { ref position, .. } => (position.clone(), false),
        };
        if count == 0 && position.is_none() && !logged {
            // Refused records only: nothing to submit, so nothing to refuse.
            errors.into_iter().for_each(|e| self.record_error(e));
            return Ok(Accepted { changes: 0, epoch: self.engine.stats().committed_epoch });
        }
        // Stamped here (not by the engine) so the input log holds the time a replay must keep.
        let now_ms = crate::now_ms();
        for change in &mut changes {
            if let DocumentChange::Upsert(doc) = change {
                doc.fetched_at.get_or_insert(now_ms);
            }
        }
        let log = self.input_log.as_ref().filter(|_| logged);
        let encoded = log.map(|_| EncodedBatch::new(&changes)).transpose().map_err(AcceptError::Encode)?;
        let epoch = self.engine.submit(changes)?;
        if let (Some(log), Some(encoded)) = (log, encoded) {
            log.append(epoch, &encoded).map_err(|e| {
                tracing::error!(error = %e, "could not append to the input log");
                AcceptError::NotDurable(e)
            })?;
        }
        if let Some(position) = position {
            self.positions.record(origin.source(), epoch, position);
        }
        crate::metrics::changes_accepted(origin.source(), count);
        errors.into_iter().for_each(|e| self.record_error(e));
        Ok(Accepted { changes: count, epoch })
    }

    /// [`Ingest::accept`] for sources, which must not drop changes: waits
    /// while the engine is overloaded or behind, up to `patience` (or until
    /// the shutdown begins).
    pub fn accept_patiently(
        &self,
        changes: Vec<DocumentChange>,
        origin: Origin,
        patience: Duration,
    ) -> Result<Accepted, AcceptError> {
        let deadline = Instant::now() + patience;
        loop {
            match self.accept(changes.clone(), origin.clone(), Vec::new()) {
                Err(AcceptError::Refused(SubmitError::Overloaded { .. } | SubmitError::Behind { .. }))
                    if Instant::now() < deadline && !self.is_stopping() =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Records a malformed record from a source.
    pub fn record_error(&self, error: IngestError) {
        tracing::warn!(source = %error.source, location = %error.location, reason = %error.reason, "ingest error");
        crate::metrics::ingest_error(&error.source);
        self.errors.push(error);
    }

    /// The most recent ingest errors, oldest first, and the total count.
    pub fn recent_errors(&self) -> (Vec<IngestError>, u64) {
        self.errors.recent()
    }

    /// Ingest errors not yet committed (they leave with this call).
    pub fn take_pending_errors(&self) -> Vec<IngestErrorRow> {
        self.errors.take_pending()
    }

    /// Sources waiting on a busy engine give up from now on.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether the shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Ingest errors: the recent ones (for status) and those waiting to be
/// committed (as the `ingest_errors` table) with the next epoch.
#[derive(Debug, Default)]
struct IngestErrors {
    pending: Mutex<Vec<IngestErrorRow>>,
    recent: Mutex<VecDeque<IngestError>>,
    count: AtomicU64,
}

impl IngestErrors {
    fn push(&self, error: IngestError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().push(IngestErrorRow {
            epoch: 0,
            source: error.source.clone(),
            location: error.location.clone(),
            reason: error.reason.clone(),
            at_ms: error.at_ms,
        });
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_ERRORS {
            recent.pop_front();
        }
        recent.push_back(error);
    }

    fn recent(&self) -> (Vec<IngestError>, u64) {
        (self.recent.lock().iter().cloned().collect(), self.count.load(Ordering::Relaxed))
    }

    fn take_pending(&self) -> Vec<IngestErrorRow> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Source positions waiting for the epoch of their changes to commit: each
/// is committed in the manifest of the first commit at or after that epoch
/// (never before its changes; a position recorded late goes with a later commit).
#[derive(Debug, Default)]
pub struct PendingPositions {
    pending: Mutex<BTreeMap<String, Vec<(u64, Value)>>>,
    /// Sources to tell when their positions are committed.
    listeners: Mutex<BTreeMap<String, crossbeam_channel::Sender<Value>>>,
}

impl PendingPositions {
    /// `source` stands at `position` once `epoch` is committed.
    pub fn record(&self, source: &str, epoch: u64, position: Value) {
        self.pending.lock().entry(source.to_owned()).or_default().push((epoch, position));
    }

    /// The newest position of each source whose epoch is at most `epoch`;
    /// those (and older ones) leave the queue.
    pub fn take_up_to(&self, epoch: u64) -> BTreeMap<String, Value> {
        let mut pending = self.pending.lock();
        let mut ready = BTreeMap::new();
        for (source, queue) in pending.iter_mut() {
            let due = queue.iter().take_while(|(e, _)| *e <= epoch).count();
            if let Some((_, position)) = queue.drain(..due).last() {
                ready.insert(source.clone(), position);
            }
        }
        pending.retain(|_, queue| !queue.is_empty());
        ready
    }

    /// Tells `source` (through `to`) when its positions are committed.
    pub fn listen(&self, source: &str, to: crossbeam_channel::Sender<Value>) {
        self.listeners.lock().insert(source.to_owned(), to);
    }

    /// Tells each source its newly committed position.
    pub fn committed(&self, positions: &BTreeMap<String, Value>) {
        let listeners = self.listeners.lock();
        for (source, position) in positions {
            if let Some(to) = listeners.get(source) {
                let _ = to.send(position.clone());
            }
        }
    }
}
