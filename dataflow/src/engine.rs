//! The engine: timely worker threads running the feature dataflow, the
//! ingest side that stamps changes with epochs, and the collector that
//! hands complete epochs to whoever commits them.
//!
//! ```text
//!  submit(changes) ─▶ Ingest: open epoch E ─(tick or full)─▶ Batch E ─┬─▶ worker 0 ─┐
//!                         │                                         └─▶ worker n ─┤ WorkerMsg
//!                         └─ Closed(E) ────────────────────────────▶ Collector ◀──┘
//!                                                                      │ all workers past E
//!                                                                      ▼
//!                                                        CompletedEpoch E ─▶ committer (sinks)
//!                                                                      │
//!                                                  mark_committed(E) ◀─┘  (wakes wait_committed)
//! ```
//! Every worker receives every batch, keeps the changes whose `doc_id` it
//! owns, nets them against its current documents and advances its input to
//! E+1, so all workers close epochs together.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use differential_dataflow::input::InputSession;
use parking_lot::{Condvar, Mutex};

use twinflow_schemas::config::{ChunkingConfig, ClusterConfig, DriftConfig, EngineConfig};
use twinflow_schemas::ids::partition_hash;
use twinflow_schemas::{DocumentChange, DocumentRow, EmbeddingRow, EpochUpdates};

use crate::embed::Embedder;
use crate::features::apply_change;
use crate::graph;
use crate::operators::{EmbedCache, WorkerMsg};

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Worker threads.
    pub workers: usize,
    /// Epoch length.
    pub tick: Duration,
    /// Changes that close an epoch early.
    pub max_batch: usize,
    /// Uncommitted changes above which `submit` refuses.
    pub max_pending: usize,
    /// Age of the oldest uncommitted change above which `submit` refuses.
    pub max_lag: Duration,
    /// Chunk sizes.
    pub chunking: ChunkingConfig,
    /// Drift statistics in the dataflow (`None`: off).
    pub drift: Option<DriftConfig>,
    /// timely's cluster mode (`None`: one process).
    pub cluster: Option<ClusterConfig>,
    /// Told of every vector the model computes (the persistent embedding cache).
    pub vector_sink: Option<Arc<dyn crate::operators::ComputedVectors>>,
}

impl EngineOptions {
    /// Options from the configuration sections.
    pub fn new(engine: &EngineConfig, chunking: &ChunkingConfig) -> Self {
        Self {
            workers: engine.workers.max(1),
            tick: engine.tick,
            max_batch: engine.max_batch.max(1),
            max_pending: engine.max_pending.max(1),
            max_lag: engine.max_lag,
            chunking: chunking.clone(),
            drift: None,
            cluster: engine.cluster.clone(),
            vector_sink: None,
        }
    }

    /// With drift statistics computed by `config` (when it is enabled).
    pub fn with_drift(mut self, config: &DriftConfig) -> Self {
        self.drift = config.enabled.then(|| config.clone());
        self
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self::new(&EngineConfig::default(), &ChunkingConfig::default())
    }
}

/// State committed earlier, to resume from after a restart.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The last committed epoch; the restored state is replayed at it and
    /// new changes start at the next one.
    pub epoch: u64,
    /// The live documents at `epoch`.
    pub documents: Vec<DocumentRow>,
    /// Stored vectors, seeding the embedding cache so nothing is re-encoded.
    pub embeddings: Vec<EmbeddingRow>,
}

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

/// Errors starting or stopping the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// timely could not start its workers.
    #[error("could not start the dataflow workers: {0}")]
    Start(String),
    /// A worker thread panicked.
    #[error("a dataflow worker failed: {0}")]
    Worker(String),
}

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

/// A batch of changes closed as one epoch.
#[derive(Debug)]
struct Batch {
    epoch: u64,
    changes: Vec<DocumentChange>,
    /// Documents replayed at startup (restored state), not changes.
    restore: Vec<DocumentRow>,
}

/// What the collector hears.
#[derive(Debug)]
enum CollectorMsg {
    Closed { epoch: u64, changes: usize, first_accepted: Instant, restored: bool },
    Worker(WorkerMsg),
}

#[derive(Debug)]
struct OpenEpoch {
    epoch: u64,
    changes: Vec<DocumentChange>,
    first_accepted: Option<Instant>,
}

/// Epoch bookkeeping shared by `submit`, the ticker and `mark_committed`.
#[derive(Debug)]
struct Ingest {
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
}

/// A running feature engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    ingest: Arc<Ingest>,
    cache: Arc<EmbedCache>,
    embedder: Arc<dyn Embedder>,
    completed: Receiver<CompletedEpoch>,
    workers: usize,
    stop_ticker: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<Result<(), String>>>>,
}

impl Engine {
    /// Starts the workers, the collector and the epoch ticker. With
    /// `restore`, the restored documents are replayed at `restore.epoch`
    /// (delivered as a `restored` completed epoch) and new changes start at
    /// the next epoch.
    pub fn start(
        options: EngineOptions,
        embedder: Arc<dyn Embedder>,
        restore: Option<Restore>,
    ) -> Result<Engine, EngineError> {
        let workers = options.workers.max(1);
        // In a cluster, process 0 takes the input and collects every worker's output; the
        // others only compute (their inputs close at once, so only process 0's drive the epochs).
        let (timely_config, process, processes) = match &options.cluster {
            None => (timely::Config::process(workers), 0, 1),
            Some(cluster) => {
                if cluster.process >= cluster.hosts.len() {
                    return Err(EngineError::Start(format!(
                        "process {} is not among the {} hosts",
                        cluster.process,
                        cluster.hosts.len()
                    )));
                }
                let communication = timely::CommunicationConfig::Cluster {
                    threads: workers,
                    process: cluster.process,
                    addresses: cluster.hosts.clone(),
                    report: false,
                    zerocopy: false,
                };
                (
                    timely::Config { communication, worker: timely::WorkerConfig::default() },
                    cluster.process,
                    cluster.hosts.len(),
                )
            }
        };
        let restore = restore.unwrap_or_default();
        let first_epoch = restore.epoch + 1;
        let cache = Arc::new(EmbedCache::new(embedder.model_id()).with_sink(options.vector_sink.clone()));
        cache.seed(restore.embeddings);

        let (collector_tx, collector_rx) = crossbeam_channel::unbounded();
        let (completed_tx, completed_rx) = crossbeam_channel::unbounded();
        let mut worker_txs = Vec::new();
        let mut worker_rxs = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
            worker_txs.push(tx);
            worker_rxs.push(Mutex::new(Some(rx)));
        }
        let ingest = Arc::new(Ingest {
            open: Mutex::new(OpenEpoch { epoch: first_epoch, changes: Vec::new(), first_accepted: None }),
            to_workers: Mutex::new(worker_txs),
            to_collector: collector_tx.clone(),
            uncommitted: Mutex::new(BTreeMap::new()),
            committed: Mutex::new(restore.epoch),
            committed_changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            max_batch: options.max_batch,
            max_pending: options.max_pending,
            max_lag: options.max_lag,
        });

        // The restored state is replayed as epoch `restore.epoch`, before any change.
        if !restore.documents.is_empty() {
            let batch = Arc::new(Batch { epoch: restore.epoch, changes: Vec::new(), restore: restore.documents });
            let _ = collector_tx.send(CollectorMsg::Closed {
                epoch: restore.epoch,
                changes: 0,
                first_accepted: Instant::now(),
                restored: true,
            });
            for tx in ingest.to_workers.lock().iter() {
                let _ = tx.send(batch.clone());
            }
        }

        let mut threads = Vec::new();
        if process == 0 {
            let collector = std::thread::Builder::new()
                .name("twinflow-collector".into())
                .spawn(move || {
                    run_collector(workers, collector_rx, completed_tx);
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?;
            threads.push(collector);
        }

        let worker_rxs = Arc::new(worker_rxs);
        let chunking = options.chunking.clone();
        let worker_embedder = embedder.clone();
        let worker_cache = cache.clone();
        let drift = options.drift.as_ref().map(|c| Arc::new(crate::drift::DriftFeatures::new(embedder.dim(), c)));
        let guards = timely::execute(timely_config, move |worker| {
            let local = worker.index() - process * workers;
            let rx = if process == 0 { worker_rxs[local].lock().take() } else { None };
            let tx = (process == 0).then(|| collector_tx.clone());
            let emit = move |msg| {
                // The collector outlives the workers; a send error means it gave up.
                if let Some(tx) = &tx {
                    let _ = tx.send(CollectorMsg::Worker(msg));
                }
            };
            let input = graph::build(
                worker,
                chunking.clone(),
                worker_embedder.clone(),
                worker_cache.clone(),
                drift.clone(),
                processes > 1,
                emit,
            );
            match rx {
                Some(rx) => run_worker(worker, input, rx, (local, workers)),
                // Another process's worker: no input of its own; it computes until process 0 stops.
                None => drop(input),
            }
        })
        .map_err(EngineError::Start)?;
        threads.push(
            std::thread::Builder::new()
                .name("twinflow-workers".into())
                .spawn(move || {
                    for result in guards.join() {
                        result?;
                    }
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?,
        );

        let ticker_ingest = ingest.clone();
        let tick = options.tick;
        let (stop_ticker, ticker_stopped) = crossbeam_channel::bounded::<()>(0);
        threads.push(
            std::thread::Builder::new()
                .name("twinflow-ticker".into())
                .spawn(move || {
                    // Wakes every tick; ends when `stop_ticker` is dropped.
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = ticker_stopped.recv_timeout(tick) {
                        let mut open = ticker_ingest.open.lock();
                        ticker_ingest.close(&mut open);
                    }
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?,
        );

        Ok(Engine {
            ingest,
            cache,
            embedder,
            completed: completed_rx,
            workers: workers * processes,
            stop_ticker: Mutex::new(Some(stop_ticker)),
            threads: Mutex::new(threads),
        })
    }

    /// Accepts changes into the open epoch and returns its number. All or
    /// nothing: either every change is accepted or none is.
    pub fn submit(&self, mut changes: Vec<DocumentChange>) -> Result<u64, SubmitError> {
        let now_ms = now_millis();
        for change in &mut changes {
            if let DocumentChange::Upsert(doc) = change {
                doc.fetched_at.get_or_insert(now_ms);
            }
        }
        let mut open = self.ingest.open.lock();
        if self.ingest.stopping.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let pending = self.ingest.pending(&open);
        if pending > 0 && pending + changes.len() > self.ingest.max_pending {
            return Err(SubmitError::Overloaded { pending, limit: self.ingest.max_pending });
        }
        if let Some(lag) = self.ingest.oldest(&open).map(|t| t.elapsed())
            && lag > self.ingest.max_lag
        {
            return Err(SubmitError::Behind { lag, limit: self.ingest.max_lag });
        }
        let epoch = open.epoch;
        if changes.is_empty() {
            return Ok(epoch.saturating_sub(1));
        }
        open.first_accepted.get_or_insert_with(Instant::now);
        open.changes.extend(changes);
        if open.changes.len() >= self.ingest.max_batch {
            self.ingest.close(&mut open);
        }
        Ok(epoch)
    }

    /// Closes the open epoch now (if it holds changes) and returns it.
    pub fn flush(&self) -> Option<u64> {
        let mut open = self.ingest.open.lock();
        self.ingest.close(&mut open)
    }

    /// Completed epochs, in order. Whoever commits them must call
    /// [`Engine::mark_committed`] afterwards.
    pub fn completed(&self) -> Receiver<CompletedEpoch> {
        self.completed.clone()
    }

    /// Records that every epoch up to `epoch` is committed: frees pending
    /// capacity and wakes [`Engine::wait_committed`].
    pub fn mark_committed(&self, epoch: u64) {
        self.ingest.uncommitted.lock().retain(|e, _| *e > epoch);
        let mut committed = self.ingest.committed.lock();
        if epoch > *committed {
            *committed = epoch;
            self.ingest.committed_changed.notify_all();
        }
    }

    /// Waits until `epoch` is committed; false on timeout.
    pub fn wait_committed(&self, epoch: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut committed = self.ingest.committed.lock();
        while *committed < epoch {
            if self.ingest.committed_changed.wait_until(&mut committed, deadline).timed_out() {
                return *committed >= epoch;
            }
        }
        true
    }

    /// The embedder the engine uses.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        let open = self.ingest.open.lock();
        EngineStats {
            workers: self.workers,
            open_epoch: open.epoch,
            committed_epoch: *self.ingest.committed.lock(),
            pending_changes: self.ingest.pending(&open),
            input_lag: self.ingest.oldest(&open).map(|t| t.elapsed()).unwrap_or_default(),
            texts_embedded: self.cache.texts_embedded(),
            texts_queued: self.cache.texts_queued(),
        }
    }

    /// Stops accepting changes, closes the open epoch, lets the workers
    /// finish every epoch, and waits for them. Completed epochs not yet
    /// received stay readable from [`Engine::completed`].
    pub fn shutdown(&self) -> Result<(), EngineError> {
        {
            let mut open = self.ingest.open.lock();
            if self.ingest.stopping.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            self.ingest.close(&mut open);
            // Dropping the senders ends the workers' input once they have
            // taken every batch already sent.
            self.ingest.to_workers.lock().clear();
        }
        self.stop_ticker.lock().take();
        let threads = std::mem::take(&mut *self.threads.lock());
        let mut failure = None;
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("a thread panicked".to_owned()),
            }
        }
        failure.map_or(Ok(()), |e| Err(EngineError::Worker(e)))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The loop of one worker thread: apply batches, step the dataflow.
/// `(index, count)` of the worker among those that take input (the
/// process's): each nets the changes of its share of documents.
fn run_worker(
    worker: &mut timely::worker::Worker,
    mut input: InputSession<u64, DocumentRow, isize>,
    rx: Receiver<Arc<Batch>>,
    (index, peers): (usize, usize),
) {
    let owns = |doc_id: &str| partition_hash(doc_id) % peers as u64 == index as u64;
    let mut docs: HashMap<String, DocumentRow> = HashMap::new();
    let mut apply = |batch: &Batch, input: &mut InputSession<u64, DocumentRow, isize>| {
        input.advance_to(batch.epoch);
        for row in batch.restore.iter().filter(|r| owns(&r.doc_id)) {
            docs.insert(row.doc_id.clone(), row.clone());
            input.insert(row.clone());
        }
        // Net the epoch's changes per document: only the difference between
        // the version before and after the epoch enters the dataflow.
        let mut before: HashMap<&str, Option<DocumentRow>> = HashMap::new();
        for change in batch.changes.iter().filter(|c| owns(c.doc_id())) {
            before.entry(change.doc_id()).or_insert_with(|| docs.get(change.doc_id()).cloned());
            apply_change(&mut docs, change, batch.epoch);
        }
        for (doc_id, old) in before {
            let new = docs.get(doc_id);
            if old.as_ref() != new {
                if let Some(old) = old {
                    input.remove(old);
                }
                if let Some(new) = new {
                    input.insert(new.clone());
                }
            }
        }
        input.advance_to(batch.epoch + 1);
        input.flush();
    };
    loop {
        let mut disconnected = false;
        loop {
            match rx.try_recv() {
                Ok(batch) => apply(&batch, &mut input),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if disconnected {
            break;
        }
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    drop(input);
    while worker.step() {}
}

/// Assembles complete epochs: an epoch is complete once every worker's
/// frontier has passed it.
fn run_collector(workers: usize, rx: Receiver<CollectorMsg>, tx: Sender<CompletedEpoch>) {
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
