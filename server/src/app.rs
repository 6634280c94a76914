//! The running system: store, engine, committer and sources, wired
//! together, with an orderly start and stop.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;

use twinflow_connectors::{IngestError, SourceEvent};
use twinflow_dataflow::{CompletedEpoch, Embedder, Engine, EngineOptions, Restore, SubmitError};
use twinflow_schemas::DocumentChange;
use twinflow_schemas::config::Config;
use twinflow_sinks::Store;

use crate::generator::LazyGenerator;
use crate::training::Training;
use crate::twin::Twin;

/// Longest time between two saves of the drift monitor's state while data flows.
const DRIFT_SAVE_EVERY: Duration = Duration::from_secs(30);

/// How many recent ingest errors are kept for `/v1/status`.
const RECENT_ERRORS: usize = 100;

/// Ingest errors recorded since the last commit: committed (as the
/// `ingest_errors` table) with the next epoch.
#[derive(Debug, Default)]
pub struct PendingErrors {
    pending: Mutex<Vec<twinflow_schemas::IngestErrorRow>>,
}

impl PendingErrors {
    fn push(&self, error: &IngestError) {
        self.pending.lock().push(twinflow_schemas::IngestErrorRow {
            epoch: 0,
            source: error.source.clone(),
            location: error.location.clone(),
            reason: error.reason.clone(),
            at_ms: error.at_ms,
        });
    }

    fn take(&self) -> Vec<twinflow_schemas::IngestErrorRow> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Source positions waiting for the epoch of their changes to commit: each
/// is committed in the manifest of the first commit at or after that epoch
/// (never before its changes; a position recorded late goes with a later commit).
#[derive(Debug, Default)]
pub struct PendingPositions {
    pending: Mutex<std::collections::BTreeMap<String, Vec<(u64, serde_json::Value)>>>,
    /// Sources to tell when their positions are committed.
    listeners: Mutex<std::collections::BTreeMap<String, crossbeam_channel::Sender<serde_json::Value>>>,
}

impl PendingPositions {
    /// `source` stands at `position` once `epoch` is committed.
    pub fn record(&self, source: &str, epoch: u64, position: serde_json::Value) {
        self.pending.lock().entry(source.to_owned()).or_default().push((epoch, position));
    }

    /// The newest position of each source whose epoch is at most `epoch`;
    /// those (and older ones) leave the queue.
    pub fn take_up_to(&self, epoch: u64) -> std::collections::BTreeMap<String, serde_json::Value> {
        let mut pending = self.pending.lock();
        let mut ready = std::collections::BTreeMap::new();
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
    pub fn listen(&self, source: &str, to: crossbeam_channel::Sender<serde_json::Value>) {
        self.listeners.lock().insert(source.to_owned(), to);
    }

    /// Tells each source its newly committed position.
    pub fn committed(&self, positions: &std::collections::BTreeMap<String, serde_json::Value>) {
        let listeners = self.listeners.lock();
        for (source, position) in positions {
            if let Some(to) = listeners.get(source) {
                let _ = to.send(position.clone());
            }
        }
    }
}

/// Everything a running twinflow holds. Shared by the HTTP handlers.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub engine: Arc<Engine>,
    pub store: Arc<Store>,
    /// Writes answers (the active twin, else the configured generator); built on first use.
    pub generator: Arc<LazyGenerator>,
    /// Drift monitor, model registry and the training job.
    pub training: Arc<Training>,
    /// The twin's registry and fine-tuning job.
    pub twin: Arc<Twin>,
    pub started: Instant,
    committer: Mutex<Option<JoinHandle<()>>>,
    /// Dropping the sender stops the progress reporter.
    progress: Mutex<Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>>,
    sources: Mutex<Vec<SourcePump>>,
    /// Positions of sources, committed with the epochs of their changes.
    pub positions: Arc<PendingPositions>,
    /// Refused records waiting for the next commit.
    errors: Arc<PendingErrors>,
    /// Answered questions waiting to be written to `traces`.
    pub traces: Arc<crate::traces::Traces>,
    /// Dropping the sender stops the traces flusher.
    traces_flusher: Mutex<Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>>,
    ingest_errors: Mutex<VecDeque<IngestError>>,
    ingest_error_count: AtomicU64,
    /// Set when the shutdown begins: source pumps waiting on a busy engine give up.
    stopping: AtomicBool,
    /// The most recent commits (`GET /v1/timeline`).
    pub timeline: Arc<Timeline>,
    /// Changes accepted over HTTP, fsynced before they are acknowledged (`storage.input_log`).
    pub input_log: Option<Arc<twinflow_sinks::InputLog>>,
}

/// The most recent commits, for the dashboard's plots: bounded, oldest first.
#[derive(Debug, Default)]
pub struct Timeline(Mutex<VecDeque<twinflow_schemas::api::TimelinePoint>>);

impl Timeline {
    /// Commits kept.
    pub const CAPACITY: usize = 720;

    fn record(&self, point: twinflow_schemas::api::TimelinePoint) {
        let mut points = self.0.lock();
        if points.len() == Self::CAPACITY {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// The kept commits, oldest first.
    pub fn points(&self) -> Vec<twinflow_schemas::api::TimelinePoint> {
        self.0.lock().iter().cloned().collect()
    }
}

#[derive(Debug)]
struct SourcePump {
    name: String,
    handle: Option<twinflow_connectors::SourceHandle>,
    pump: Option<JoinHandle<()>>,
}

impl App {
    /// Opens the store (restoring committed state), starts the engine and
    /// the committer. Sources are started separately ([`App::start_sources`]).
    pub fn start(config: Config) -> anyhow::Result<Arc<App>> {
        Self::start_showing(config, ProgressDisplay::Log)
    }

    /// [`App::start`], showing the embedding backlog's progress as `display` says.
    pub fn start_showing(config: Config, display: ProgressDisplay) -> anyhow::Result<Arc<App>> {
        crate::metrics::install();
        let embedder: Arc<dyn Embedder> =
            Arc::new(crate::metrics::MeteredEmbedder(crate::embedder::build_embedder(&config.embedder)?));
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let store = Arc::new(
            Store::open_sharded(data_dir, embedder.dim(), &config.search.ann, config.search.shards_for(&config.engine))
                .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?,
        );
        let mut restore = restore_from(&store, embedder.as_ref())?;
        let vector_sink = if config.storage.embedding_cache {
            // Only a cache: a failure to open it costs time, never data.
            match open_vector_cache(data_dir, embedder.as_ref(), store.committed_epoch(), &mut restore) {
                Ok(sink) => Some(sink),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "running without the embedding cache");
                    None
                }
            }
        } else {
            None
        };
        let (input_log, logged) = if config.storage.input_log {
            let (log, logged) = twinflow_sinks::InputLog::open(data_dir)
                .with_context(|| format!("cannot open the input log in {}", data_dir.display()))?;
            (Some(Arc::new(log)), logged)
        } else {
            (None, Vec::new())
        };
        let datasets = Arc::new(crate::datasets::Datasets::open(&store)?);
        let training = Arc::new(Training::open(&config, &store, datasets.clone())?);
        let generator = Arc::new(LazyGenerator::new(config.generator.clone()));
        let twin = Arc::new(Twin::open(&config, data_dir, datasets, &generator)?);
        let positions = Arc::new(PendingPositions::default());
        let config_traces = config.traces.clone();
        let errors = Arc::new(PendingErrors::default());
        let mut options = EngineOptions::new(&config.engine, &config.chunking).with_drift(&config.drift);
        options.vector_sink = vector_sink;
        let engine = Arc::new(Engine::start(options, embedder, restore)?);
        let app = Arc::new(App {
            config,
            engine: engine.clone(),
            store: store.clone(),
            generator: generator.clone(),
            training: training.clone(),
            twin: twin.clone(),
            started: Instant::now(),
            committer: Mutex::new(None),
            progress: Mutex::new(None),
            sources: Mutex::new(Vec::new()),
            positions: positions.clone(),
            errors: errors.clone(),
            traces: Arc::new(crate::traces::Traces::new(config_traces)),
            traces_flusher: Mutex::new(None),
            ingest_errors: Mutex::new(VecDeque::new()),
            ingest_error_count: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            timeline: Arc::new(Timeline::default()),
            input_log,
        });
        let snapshot_every = app.config.storage.snapshot_every;
        let retrain_on_drift = app.config.training.on_drift;
        let twin_on_drift = app.config.twin.on_drift;
        // Outputs besides Parquet: started before the committer, which feeds them.
        let publishers = crate::publish::ChangePublisher::start_all(&app.config.publish)?;
        let timeline = app.timeline.clone();
        let input_log = app.input_log.clone();
        let committer = std::thread::Builder::new().name("twinflow-committer".into()).spawn(move || {
            let on_trigger = |trigger: twinflow_dataflow::DriftTrigger| {
                let value = serde_json::json!({ "drift": trigger });
                if twin_on_drift {
                    match twin.start(store.clone(), generator.clone(), value.clone()) {
                        Ok(started) => {
                            tracing::info!(epoch = trigger.epoch, started, "twin fine-tuning asked by drift")
                        }
                        Err(e) => tracing::error!(error = %e, "could not start the twin fine-tuning"),
                    }
                }
                if !retrain_on_drift {
                    return;
                }
                match training.start(store.clone(), engine.embedder().clone(), value) {
                    Ok(true) => tracing::info!(epoch = trigger.epoch, "retraining started by drift"),
                    Ok(false) => {
                        tracing::info!(epoch = trigger.epoch, "drift triggered while a training run is in progress")
                    }
                    Err(e) => tracing::error!(error = %e, "could not start the training run"),
                }
            };
            let pending: (&PendingPositions, &PendingErrors) = (&positions, &errors);
            let outputs =
                CommitOutputs { publishers: &publishers, timeline: &timeline, input_log: input_log.as_deref() };
            run_committer(&engine, &store, snapshot_every, &training, pending, outputs, on_trigger)
            // Dropping the publishers publishes what is queued.
        })?;
        *app.committer.lock() = Some(committer);
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let engine = app.engine.clone();
        let reporter = std::thread::Builder::new()
            .name("twinflow-progress".into())
            .spawn(move || report_progress(&engine, &stopped, Duration::from_secs(5), display))?;
        *app.progress.lock() = Some((stop, reporter));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (traces, store) = (app.traces.clone(), app.store.clone());
        let every = app.config.traces.flush_every.max(Duration::from_millis(10));
        let flusher = std::thread::Builder::new().name("twinflow-traces".into()).spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                traces.flush(&store);
            }
        })?;
        *app.traces_flusher.lock() = Some((stop, flusher));
        app.replay_input_log(logged)?;
        Ok(app)
    }

    /// Replays the input log's batches that the manifest does not hold
    /// (acknowledged before a crash, not committed), in order, one epoch
    /// each, before any source or request is served. They are written back
    /// to the log with those epochs (`committed + 1`, `+ 2`, …) before the
    /// first is submitted, so a crash during the replay loses none.
    fn replay_input_log(&self, logged: Vec<twinflow_sinks::LoggedBatch>) -> anyhow::Result<()> {
        let Some(log) = &self.input_log else { return Ok(()) };
        let committed = self.store.committed_epoch();
        let total = logged.len();
        let pending: Vec<_> = logged.into_iter().filter(|b| b.epoch > committed && !b.changes.is_empty()).collect();
        let mut renumbered = Vec::with_capacity(pending.len());
        for (i, batch) in pending.iter().enumerate() {
            renumbered.push((committed + 1 + i as u64, twinflow_sinks::EncodedBatch::new(&batch.changes)?));
        }
        log.adopt(&renumbered).with_context(|| format!("cannot rewrite the input log in {}", log.dir().display()))?;
        let changes: usize = pending.iter().map(|b| b.changes.len()).sum();
        for ((expected, encoded), batch) in renumbered.iter().zip(pending) {
            let epoch = self
                .submit_patiently(batch.changes, Duration::from_secs(3600))
                .map_err(|e| anyhow::anyhow!("replaying the input log: {e}"))?;
            self.engine.flush();
            if epoch != *expected {
                // Not the epoch it was logged with: logged again with this one, so truncation keeps it.
                tracing::warn!(epoch, expected, "a replayed batch got another epoch than logged; logging it again");
                log.append(epoch, encoded)?;
            }
        }
        if !renumbered.is_empty() {
            tracing::info!(
                batches = renumbered.len(),
                changes,
                skipped_committed = total - renumbered.len(),
                after_epoch = committed,
                "replayed acknowledged changes from the input log"
            );
        }
        Ok(())
    }

    /// Submits changes, waiting (bounded by `patience`) while the engine
    /// is overloaded. Used by sources, which must not drop changes.
    pub fn submit_patiently(&self, changes: Vec<DocumentChange>, patience: Duration) -> Result<u64, SubmitError> {
        let deadline = Instant::now() + patience;
        loop {
            match self.engine.submit(changes.clone()) {
                Err(SubmitError::Overloaded { .. } | SubmitError::Behind { .. })
                    if Instant::now() < deadline && !self.stopping.load(Ordering::Acquire) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Records a malformed record from a source.
    pub fn record_ingest_error(&self, error: IngestError) {
        tracing::warn!(source = %error.source, location = %error.location, reason = %error.reason, "ingest error");
        self.ingest_error_count.fetch_add(1, Ordering::Relaxed);
        crate::metrics::ingest_error(&error.source);
        self.errors.push(&error);
        let mut errors = self.ingest_errors.lock();
        if errors.len() == RECENT_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// The most recent ingest errors, oldest first, and the total count.
    pub fn ingest_errors(&self) -> (Vec<IngestError>, u64) {
        (self.ingest_errors.lock().iter().cloned().collect(), self.ingest_error_count.load(Ordering::Relaxed))
    }

    /// Starts a thread that feeds a source's events into the engine.
    pub fn attach_source(
        self: &Arc<Self>,
        name: String,
        handle: Option<twinflow_connectors::SourceHandle>,
        events: crossbeam_channel::Receiver<SourceEvent>,
    ) -> anyhow::Result<()> {
        if let Some(handle) = &handle {
            self.positions.listen(&name, handle.committed_sender());
        }
        let app = Arc::clone(self);
        let pump = std::thread::Builder::new().name(format!("source-{name}")).spawn(move || {
            for event in events {
                match event {
                    SourceEvent::Changes { source, changes, position } => {
                        let count = changes.len();
                        let span = tracing::info_span!("source_batch", %source, changes = count, epoch = tracing::field::Empty);
                        let _span = span.enter();
                        // Waits as long as the engine is behind (a minute at a time, said in the log);
                        // stops only when the engine does.
                        let submitted = loop {
                            match app.submit_patiently(changes.clone(), Duration::from_secs(60)) {
                                Err(e @ (SubmitError::Overloaded { .. } | SubmitError::Behind { .. }))
                                    if !app.stopping.load(Ordering::Acquire) =>
                                {
                                    tracing::warn!(%source, error = %e, "source waiting: the engine is behind");
                                }
                                other => break other,
                            }
                        };
                        match submitted {
                            Ok(epoch) => {
                                span.record("epoch", epoch);
                                crate::metrics::changes_accepted(&source, count);
                                if let Some(position) = position {
                                    app.positions.record(&source, epoch, position);
                                }
                            }
                            Err(e) => {
                                tracing::info!(%source, error = %e, "source stopped: shutting down");
                                return;
                            }
                        }
                    }
                    SourceEvent::Error(error) => app.record_ingest_error(error),
                }
            }
        })?;
        self.sources.lock().push(SourcePump { name, handle, pump: Some(pump) });
        Ok(())
    }

    /// Stops the sources, closes the open epoch, lets the engine finish and
    /// the committer commit everything, then returns.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        self.stopping.store(true, Ordering::Release);
        for mut source in self.sources.lock().drain(..) {
            tracing::info!(source = %source.name, "stopping source");
            if let Some(handle) = source.handle.take() {
                handle.stop();
            }
            if let Some(pump) = source.pump.take() {
                let _ = pump.join();
            }
        }
        self.engine.shutdown()?;
        if let Some((stop, reporter)) = self.progress.lock().take() {
            drop(stop);
            let _ = reporter.join();
        }
        if let Some(committer) = self.committer.lock().take() {
            let _ = committer.join();
        }
        if let Some((stop, flusher)) = self.traces_flusher.lock().take() {
            drop(stop);
            let _ = flusher.join();
        }
        self.traces.flush(&self.store);
        // Positions that came with no changes after the last epoch (their changes are committed).
        let late = self.positions.take_up_to(self.store.committed_epoch());
        if let Err(e) = self.store.commit_late(late, self.errors.take(), Vec::new()) {
            tracing::error!(error = %e, "could not record the last source positions and ingest errors");
        }
        // The monitor's counters (new samples, trigger state) with its reference.
        self.training.save_drift_state();
        Ok(())
    }
}

/// How the progress through an embedding backlog is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// A log line every few seconds (for logs that are kept or parsed).
    Log,
    /// A progress bar on stderr (for a person at a terminal).
    Bar,
}

/// Shows the progress of the embedding model through a backlog (the initial
/// load of a corpus, a large batch of changes): a log line every `every`, or a
/// bar; and how long it took once it is through. Small backlogs (under 100
/// texts) finish quietly.
fn report_progress(engine: &Engine, stop: &crossbeam_channel::Receiver<()>, every: Duration, display: ProgressDisplay) {
    struct Backlog {
        since: Instant,
        embedded_at_start: u64,
        last_report: Instant,
        bar: Option<indicatif::ProgressBar>,
    }
    let mut backlog: Option<Backlog> = None;
    loop {
        match stop.recv_timeout(Duration::from_millis(250)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let stats = engine.stats();
        let waiting = stats.texts_queued.saturating_sub(stats.texts_embedded);
        let busy = waiting > 0 || stats.pending_changes > 0;
        match &mut backlog {
            None if waiting > 0 => {
                let now = Instant::now();
                let bar = (display == ProgressDisplay::Bar).then(|| crate::ui::bar(waiting, "texts"));
                backlog = Some(Backlog { since: now, embedded_at_start: stats.texts_embedded, last_report: now, bar });
            }
            Some(b) if busy => {
                if let Some(bar) = &b.bar {
                    bar.set_length(stats.texts_queued - b.embedded_at_start);
                    bar.set_position(stats.texts_embedded - b.embedded_at_start);
                    bar.set_message(format!("embedding ({} changes not yet committed)", stats.pending_changes));
                } else if b.last_report.elapsed() >= every {
                    b.last_report = Instant::now();
                    let done = stats.texts_embedded - b.embedded_at_start;
                    let total = stats.texts_queued - b.embedded_at_start;
                    let rate = done as f64 / b.since.elapsed().as_secs_f64().max(1e-9);
                    tracing::info!(
                        "embedding: {done}/{total} texts ({:.0}%), {rate:.0} texts/s, about {:.0} s left; {} changes not yet committed",
                        100.0 * done as f64 / total.max(1) as f64,
                        waiting as f64 / rate.max(1e-9),
                        stats.pending_changes,
                    );
                }
            }
            Some(b) => {
                if let Some(bar) = &b.bar {
                    bar.finish_and_clear();
                }
                let done = stats.texts_embedded - b.embedded_at_start;
                let seconds = b.since.elapsed().as_secs_f64();
                if done >= 100 {
                    tracing::info!(
                        "embedding backlog done: {done} texts in {seconds:.1} s ({:.0} texts/s, model {})",
                        done as f64 / seconds.max(1e-9),
                        engine.embedder().model_id()
                    );
                }
                backlog = None;
            }
            None => {}
        }
    }
}

/// What to replay into the engine so it continues from the committed state.
fn restore_from(store: &Store, embedder: &dyn Embedder) -> anyhow::Result<Option<Restore>> {
    let epoch = store.committed_epoch();
    if epoch == 0 {
        return Ok(None);
    }
    let embeddings = store.current_embeddings();
    if let Some(other) = embeddings.iter().find(|e| e.model_id != embedder.model_id()) {
        anyhow::bail!(
            "the data directory holds embeddings of model {:?} but the configured embedder is {:?}; \
             use another data directory (storage.data_dir) or configure the same embedder",
            other.model_id,
            embedder.model_id()
        );
    }
    let documents = store.current_documents();
    tracing::info!(epoch, documents = documents.len(), vectors = embeddings.len(), "restoring committed state");
    Ok(Some(Restore { epoch, documents, embeddings }))
}

/// The persistent embedding cache, as the engine's sink of computed vectors.
#[derive(Debug)]
struct PersistentVectors {
    cache: twinflow_sinks::VectorCache,
    warned: std::sync::atomic::AtomicBool,
}

impl twinflow_dataflow::ComputedVectors for PersistentVectors {
    fn computed(&self, vectors: &[(twinflow_schemas::ids::Hash128, &[f32])]) {
        // A zero vector is the stand-in for a text the model failed on: not kept, so it is tried again.
        let vectors: Vec<_> = vectors.iter().filter(|(_, v)| v.iter().any(|x| *x != 0.0)).copied().collect();
        if let Err(e) = self.cache.append(&vectors) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "could not append to the embedding cache (only a cache: nothing is lost)");
            }
        }
    }
}

/// Opens the persistent embedding cache; its vectors (of chunks not in the
/// committed `embeddings` table) join the restored ones in seeding the engine.
pub(crate) fn open_vector_cache(
    data_dir: &std::path::Path,
    embedder: &dyn Embedder,
    committed_epoch: u64,
    restore: &mut Option<Restore>,
) -> anyhow::Result<Arc<dyn twinflow_dataflow::ComputedVectors>> {
    let live = restore.as_ref().map(|r| r.embeddings.iter().map(|e| e.chunk_id).collect()).unwrap_or_default();
    let (cache, kept) = twinflow_sinks::VectorCache::open(data_dir, embedder.model_id(), embedder.dim(), &live)
        .with_context(|| format!("cannot open the embedding cache in {}", data_dir.display()))?;
    if !kept.is_empty() {
        tracing::info!(vectors = kept.len(), file = %cache.path().display(), "embedding cache loaded");
        let restore = restore.get_or_insert_with(|| Restore { epoch: committed_epoch, ..Restore::default() });
        restore.embeddings.extend(kept.into_iter().map(|(chunk_id, vector)| twinflow_schemas::EmbeddingRow {
            chunk_id,
            model_id: embedder.model_id().to_owned(),
            vector: twinflow_schemas::Vector(vector),
        }));
    }
    Ok(Arc::new(PersistentVectors { cache, warned: std::sync::atomic::AtomicBool::new(false) }))
}

/// What the committer feeds after each commit besides the tables.
struct CommitOutputs<'a> {
    publishers: &'a [crate::publish::ChangePublisher],
    timeline: &'a Timeline,
    input_log: Option<&'a twinflow_sinks::InputLog>,
}

/// Commits completed epochs in order. A failed commit is retried (the
/// engine's pending limit pushes back on ingest meanwhile); nothing is
/// marked committed until it is.
fn run_committer(
    engine: &Engine,
    store: &Store,
    snapshot_every: u64,
    training: &Training,
    (positions, errors): (&PendingPositions, &PendingErrors),
    CommitOutputs { publishers, timeline, input_log }: CommitOutputs<'_>,
    on_trigger: impl Fn(twinflow_dataflow::DriftTrigger),
) {
    for completed in engine.completed() {
        let epoch = completed.epoch;
        let (drift_rows, trigger) = observe_drift(training, &completed);
        let (sources, ingest_errors) =
            if completed.restored { Default::default() } else { (positions.take_up_to(epoch), errors.take()) };
        let span =
            tracing::info_span!("epoch_commit", epoch, changes = completed.changes, restored = completed.restored);
        let entered = span.enter();
        commit_with_retry(store, &completed, drift_rows, sources.clone(), ingest_errors);
        positions.committed(&sources);
        drop(entered);
        if let Some(trigger) = trigger {
            on_trigger(trigger);
        }
        engine.mark_committed(epoch);
        if let Some(log) = input_log.filter(|_| !completed.restored) {
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
            timeline.record(twinflow_schemas::api::TimelinePoint {
                epoch,
                committed_at_ms: crate::training::now_ms(),
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

/// Feeds the epoch's drift deltas to the monitor: the rows to commit with
/// the epoch, and a trigger when one fired. A replayed epoch only rebuilds
/// the monitor's buckets.
fn observe_drift(
    training: &Training,
    completed: &CompletedEpoch,
) -> (Vec<twinflow_schemas::DriftRow>, Option<twinflow_dataflow::DriftTrigger>) {
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
    drift: Vec<twinflow_schemas::DriftRow>,
    sources: std::collections::BTreeMap<String, serde_json::Value>,
    ingest_errors: Vec<twinflow_schemas::IngestErrorRow>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        match store.commit_epoch_full(
            completed.epoch,
            completed.parts.clone(),
            sources.clone(),
            drift.clone(),
            ingest_errors.clone(),
        ) {
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
