//! The feature pipeline as one running thing: the store with its committed
//! state, the engine replaying it, the ingest door, and the committer.
//!
//! ```text
//!  open:     Store::open ─▶ restore (tables, embedding cache) ─▶ input log ─▶ Engine::start ─▶ Ingest
//!  start:    Committer thread (on drift: the caller's trigger) ─▶ replay the input log's acknowledged batches
//!  shutdown: Engine::shutdown ─▶ committer commits the rest ─▶ late positions and errors committed
//! ```

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use twinflow_dataflow::{DriftTrigger, Embedder, Engine, EngineOptions};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::Config;
use twinflow_sinks::{InputLog, LoggedBatch, Store};

use super::publish::ChangePublisher;
use super::{Committer, Error, Ingest, Timeline, check_chunking, open_vector_cache, replay_input_log, restore_from};
use crate::Context;
use crate::training::Training;

/// The store, the engine, the ingest door and the committer of a running twinflow.
#[derive(Debug)]
pub struct FeaturePipeline {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub ingest: Arc<Ingest>,
    /// The most recent commits.
    pub timeline: Arc<Timeline>,
    snapshot_every: u64,
    /// Acknowledged batches of the input log not in the manifest, replayed by [`FeaturePipeline::start`].
    logged: Mutex<Vec<LoggedBatch>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl FeaturePipeline {
    /// Opens the data directory (restoring the committed state and the
    /// embedding cache) and starts the engine; nothing is committed until
    /// [`FeaturePipeline::start`].
    pub fn open(config: &Config, embedder: Arc<dyn Embedder>) -> Result<Self, Error> {
        let namespaces = twinflow_schemas::config::DocIdNamespaces::of(&config.sources).map_err(Error::Config)?;
        let data_dir = &config.storage.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let store = Arc::new(
            Store::open_sharded(data_dir, embedder.dim(), &config.search.ann, config.search.shards_for(&config.engine))
                .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?,
        );
        check_chunking(data_dir, store.committed_epoch(), &config.chunking)?;
        let mut restore = restore_from(&store, embedder.as_ref())?;
        let mut options = EngineOptions::new(&config.engine, &config.chunking).with_drift(&config.drift);
        if config.storage.embedding_cache {
            // Only a cache: a failure to open it costs time, never data.
            match open_vector_cache(data_dir, embedder.as_ref(), store.committed_epoch(), &mut restore) {
                Ok(sink) => options.vector_sink = Some(sink),
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "running without the embedding cache")
                }
            }
        }
        let (input_log, logged) = if config.storage.input_log {
            let (log, logged) = InputLog::open(data_dir)
                .with_context(|| format!("cannot open the input log in {}", data_dir.display()))?;
            (Some(Arc::new(log)), logged)
        } else {
            (None, Vec::new())
        };
        let engine = Arc::new(Engine::start(options, embedder, restore).context("cannot start the engine")?);
        let limits = ChangeLimits {
            max_document_bytes: config.server.max_document.as_u64() as usize,
            ..ChangeLimits::default()
        };
        let ingest = Arc::new(Ingest::new(engine.clone(), limits, input_log).with_namespaces(namespaces));
        Ok(Self {
            store,
            engine,
            ingest,
            timeline: Arc::new(Timeline::default()),
            snapshot_every: config.storage.snapshot_every,
            logged: Mutex::new(logged),
            committer: Mutex::new(None),
        })
    }

    /// Starts committing (drift is monitored by `training`; `on_trigger` is
    /// told when it fires; `publishers` get every committed epoch), then
    /// replays the input log's acknowledged batches before anything else is
    /// accepted.
    pub fn start(
        &self,
        training: Arc<Training>,
        publishers: Vec<ChangePublisher>,
        on_trigger: impl Fn(DriftTrigger) + Send + 'static,
    ) -> Result<(), Error> {
        let committer = Committer {
            engine: self.engine.clone(),
            store: self.store.clone(),
            ingest: self.ingest.clone(),
            training,
            publishers,
            timeline: self.timeline.clone(),
            snapshot_every: self.snapshot_every,
        };
        let thread = std::thread::Builder::new()
            .name("twinflow-committer".into())
            .spawn(move || committer.run(on_trigger))
            .context("cannot start the committer")?;
        *self.committer.lock() = Some(thread);
        if let Some(log) = self.ingest.input_log() {
            let logged = std::mem::take(&mut *self.logged.lock());
            replay_input_log(&self.engine, log, self.store.committed_epoch(), logged)?;
        }
        Ok(())
    }

    /// Closes the open epoch, lets the engine finish and the committer
    /// commit everything. Sources must be stopped first ([`Ingest::stop`]
    /// frees those waiting on a busy engine).
    pub fn finish(&self) -> Result<(), Error> {
        self.ingest.stop();
        self.engine.shutdown().context("the engine did not stop cleanly")?;
        if let Some(committer) = self.committer.lock().take() {
            let _ = committer.join();
        }
        Ok(())
    }

    /// Commits the positions that came with no changes after the last
    /// epoch (their changes are committed) and the last ingest errors.
    pub fn commit_late(&self) {
        let late = self.ingest.positions().take_up_to(self.store.committed_epoch());
        if let Err(e) = self.store.commit_late(late, self.ingest.take_pending_errors(), Vec::new()) {
            tracing::error!(error = %e, "could not record the last source positions and ingest errors");
        }
    }
}
