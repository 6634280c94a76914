//! The running system: the pipelines of `twinflow-pipelines` built from
//! the configuration and connected, with an orderly start and stop. A
//! primary ([`App::start`]) runs all three; a read replica
//! ([`App::start_replica`]) runs the inference pipeline alone over a
//! primary's committed tables, following its epochs and registries.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use twinflow_connectors::SourceEvent;
use twinflow_dataflow::{Embedder, Engine};
use twinflow_pipelines::feature::publish::ChangePublisher;
use twinflow_pipelines::feature::sources::SourceGauge;
use twinflow_pipelines::feature::{FeaturePipeline, Ingest, Timeline};
use twinflow_pipelines::inference::replica::Replica;
use twinflow_pipelines::inference::subscriptions::{Spec, Subscriptions};
use twinflow_pipelines::inference::{LazyGenerator, Rag, RagQuestion, Traces};
use twinflow_pipelines::training::evaluation::setting::{FOLLOW_EVERY, RetrievalSettings};
use twinflow_pipelines::training::{Datasets, Training, Twin};
use twinflow_schemas::config::Config;
use twinflow_sinks::Store;

pub use crate::progress::ProgressDisplay;

/// Everything a running twinflow holds. Shared by the HTTP handlers.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    /// The embedder for search queries: concurrent requests' queries
    /// embedded in one batch.
    pub queries: Arc<dyn Embedder>,
    /// Writes answers (the active twin, else the configured generator); built on first use.
    pub generator: Arc<LazyGenerator>,
    /// Drift monitor, model registry and the training job.
    pub training: Arc<Training>,
    /// The twin's registry and fine-tuning job.
    pub twin: Arc<Twin>,
    /// Hybrid search's fusion and the registry of retrieval settings it follows.
    pub retrieval: Arc<RetrievalSettings>,
    pub started: Instant,
    /// Answered questions waiting to be written to `traces`.
    pub traces: Arc<Traces>,
    /// The most recent commits (`GET /v1/timeline`).
    pub timeline: Arc<Timeline>,
    /// The `evaluations` table's rows, each file decoded once (`GET /v1/evals`).
    pub evaluations: Arc<twinflow_sinks::evaluations::EvaluationReader>,
    /// Slots of the requests that cost the most (SQL; answers and embeddings).
    pub slots: crate::api::limits::Slots,
    /// Keys, sessions and the browser rules.
    pub gate: Arc<crate::auth::Gate>,
    /// Subscription event streams open now.
    pub streams: std::sync::atomic::AtomicUsize,
    role: Role,
    /// Dropping a sender stops its thread: the progress reporter, the traces flusher, a replica's follower.
    helpers: Mutex<Vec<(crossbeam_channel::Sender<()>, JoinHandle<()>)>>,
}

/// What a process is: the primary, with the dataflow, or a read replica.
#[derive(Debug)]
enum Role {
    Primary(Primary),
    Replica(Arc<Replica>),
}

/// What only the primary has: the feature pipeline and what writes.
#[derive(Debug)]
pub struct Primary {
    pub engine: Arc<Engine>,
    /// The one door changes enter by (HTTP, sources, other processes).
    pub ingest: Arc<Ingest>,
    /// Standing questions, followed across commits (kept in the primary's data directory).
    pub subscriptions: Arc<Subscriptions>,
    /// Commits shipped to an object store (`[storage] object_store`).
    pub shipping: Option<Arc<twinflow_pipelines::feature::ship::Shipping>>,
    feature: FeaturePipeline,
    sources: Mutex<Vec<SourcePump>>,
}

/// What one read of `store` may use (SQL's memory, rows and bytes) and how far back it may read.
fn limit_reads(store: &Store, config: &Config) -> anyhow::Result<()> {
    let server = &config.server;
    store.set_sql_limits(twinflow_sinks::SqlLimits {
        memory: server.sql_memory.as_u64() as usize,
        spill: server.sql_spill.as_u64(),
        max_rows: server.sql_max_rows,
        max_bytes: server.sql_max_answer.as_u64() as usize,
    })?;
    store.set_time_travel(config.storage.time_travel);
    Ok(())
}

/// A request only the primary can answer, sent to a read replica.
#[derive(Clone, Debug)]
pub struct ReadReplica {
    /// The primary's URL (`[replica] primary`), when configured.
    pub primary: Option<String>,
}

impl std::fmt::Display for ReadReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.primary {
            Some(url) => write!(f, "this is a read replica: send writes and admin requests to the primary at {url}"),
            None => write!(f, "this is a read replica: send writes and admin requests to its primary"),
        }
    }
}

impl std::error::Error for ReadReplica {}

#[derive(Debug)]
struct SourcePump {
    name: String,
    handle: Option<twinflow_connectors::SourceHandle>,
    pump: Option<JoinHandle<()>>,
    gauge: Arc<SourceGauge>,
}

/// The query encoder of SQL's search functions: the queries' embedder, and
/// the active retrieval setting's fusion for `hybrid(…)` (what `/v1/search`
/// uses).
struct SqlEncoder {
    embedder: Arc<dyn Embedder>,
    retrieval: Arc<RetrievalSettings>,
}

impl twinflow_sinks::QueryEncoder for SqlEncoder {
    fn encode(&self, text: &str) -> Result<Vec<f32>, String> {
        let mut vectors = self.embedder.embed_batch(&[text]).map_err(|e| format!("embedding the query: {e}"))?;
        vectors.pop().ok_or_else(|| "the encoder returned no vector".to_owned())
    }

    fn hybrid(&self) -> twinflow_schemas::api::SearchMode {
        self.retrieval.fusion().mode()
    }
}

impl App {
    /// The primary's parts, or [`ReadReplica`] on a replica.
    pub fn primary(&self) -> Result<&Primary, ReadReplica> {
        match &self.role {
            Role::Primary(primary) => Ok(primary),
            Role::Replica(replica) => Err(ReadReplica { primary: replica.config().primary.clone() }),
        }
    }

    /// The primary's engine, or [`ReadReplica`] on a replica.
    pub fn engine(&self) -> Result<&Arc<Engine>, ReadReplica> {
        self.primary().map(|p| &p.engine)
    }

    /// The follower, on a read replica.
    pub fn replica(&self) -> Option<&Replica> {
        match &self.role {
            Role::Primary(_) => None,
            Role::Replica(replica) => Some(replica),
        }
    }

    /// What SQL statements search with (`knn`, `bm25`, `hybrid`, `embed`).
    pub fn sql_encoder(&self) -> Arc<dyn twinflow_sinks::QueryEncoder> {
        Arc::new(SqlEncoder { embedder: self.queries.clone(), retrieval: self.retrieval.clone() })
    }

    /// Opens the store (restoring committed state), starts the engine and
    /// the committer. Sources are started separately ([`App::attach_source`]).
    pub fn start(config: Config) -> anyhow::Result<Arc<App>> {
        Self::start_showing(config, ProgressDisplay::Log)
    }

    /// [`App::start`], showing the embedding backlog's progress as `display` says.
    pub fn start_showing(config: Config, display: ProgressDisplay) -> anyhow::Result<Arc<App>> {
        crate::metrics::install();
        // Before anything is opened: a refused `[auth]` stops the start.
        let gate = Arc::new(crate::auth::Gate::open(&config)?);
        let embedder: Arc<dyn Embedder> = Arc::new(twinflow_pipelines::metrics::MeteredEmbedder(
            twinflow_pipelines::feature::embedder::build_embedder(&config.embedder)?,
        ));
        let feature = FeaturePipeline::open(&config, embedder.clone())?;
        let store = feature.store.clone();
        limit_reads(&store, &config)?;
        store.set_snapshot_retention(twinflow_sinks::SnapshotRetention {
            keep: config.storage.keep_snapshots,
            pinned: config.storage.pinned_snapshots.clone(),
        });
        let datasets =
            Arc::new(Datasets::open(&store)?.with_retention(twinflow_pipelines::training::DatasetRetention {
                keep: config.storage.keep_datasets,
                pinned: config.storage.pinned_datasets.clone(),
            }));
        let generator = Arc::new(LazyGenerator::new(config.generator.clone()));
        let training =
            Arc::new(Training::open(&config, store.clone(), embedder, datasets.clone(), Some(generator.clone()))?);
        let twin = Arc::new(Twin::open(&config, store.clone(), datasets, generator.clone())?);
        // Outputs besides Parquet: started before the committer, which feeds them.
        let publishers = ChangePublisher::start_all(&config.publish)?;
        let on_drift = twinflow_pipelines::training::on_drift(
            training.clone(),
            twin.clone(),
            config.training.on_drift,
            config.twin.on_drift,
        );
        let slots = crate::api::limits::Slots::new(&config.server);
        // The fusion hybrid search runs with: the active registered setting's, else `[search]`'s.
        let retrieval = Arc::new(RetrievalSettings::open(&config)?);
        let queries: Arc<dyn Embedder> =
            Arc::new(twinflow_pipelines::inference::CombiningEmbedder::new(feature.engine.embedder().clone()));
        // Following commits from the first one on (the input log's replay included).
        let fusion = retrieval.clone();
        let subscriptions = Subscriptions::open(
            store.clone(),
            queries.clone(),
            Arc::new(move || fusion.fusion().mode()),
            config.subscriptions.clone(),
        )?;
        let timeline = feature.timeline.clone();
        let engine = feature.engine.clone();
        // Commits shipped to an object store, by a thread of its own (stopped with the helpers).
        let shipping = match &config.storage.object_store {
            Some(url) => {
                let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
                let (shipping, thread) = twinflow_pipelines::feature::ship::Shipping::start(
                    url,
                    &config.storage.object_store_options,
                    &store,
                    stopped,
                )?;
                Some((shipping, stop, thread))
            }
            None => None,
        };
        let primary = Primary {
            engine: feature.engine.clone(),
            ingest: feature.ingest.clone(),
            subscriptions,
            shipping: shipping.as_ref().map(|(shipping, _, _)| shipping.clone()),
            feature,
            sources: Mutex::new(Vec::new()),
        };
        let app = Arc::new(App {
            streams: Default::default(),
            retrieval,
            queries,
            traces: Arc::new(Traces::new(config.traces.clone())),
            evaluations: Arc::default(),
            config,
            store,
            generator,
            training: training.clone(),
            twin,
            started: Instant::now(),
            timeline,
            slots,
            gate,
            role: Role::Primary(primary),
            helpers: Mutex::new(Vec::new()),
        });
        if let Some((_, stop, thread)) = shipping {
            app.helpers.lock().push((stop, thread));
        }
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let mut display = display.build(Duration::from_secs(5), engine.embedder().model_id());
        let reporter = std::thread::Builder::new().name("twinflow-progress".into()).spawn(move || {
            twinflow_pipelines::feature::progress::follow_backlog(&engine, &stopped, display.as_mut())
        })?;
        app.helpers.lock().push((stop, reporter));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (traces, store) = (app.traces.clone(), app.store.clone());
        let every = app.config.traces.flush_every.max(Duration::from_millis(10));
        let flusher = std::thread::Builder::new().name("twinflow-traces".into()).spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                traces.flush(&store);
            }
        })?;
        app.helpers.lock().push((stop, flusher));
        // A setting promoted by another process (`twinflow eval retrieval --promote`) applies without a restart.
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let retrieval = app.retrieval.clone();
        let follower = std::thread::Builder::new().name("twinflow-retrieval".into()).spawn(move || {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(FOLLOW_EVERY) {
                if let Err(e) = retrieval.refresh() {
                    tracing::warn!(error = %e, "the retrieval settings' registry could not be read; the fusion stays");
                }
            }
        })?;
        app.helpers.lock().push((stop, follower));
        // Standing answers are written by the RAG pipeline, as `/v1/rag` writes them.
        let weak = Arc::downgrade(&app);
        let primary = app.primary()?;
        primary.subscriptions.set_answerer(Arc::new(move |spec: &Spec| {
            let app = weak.upgrade().ok_or_else(|| "the server is stopping".to_owned())?;
            app.standing_answer(spec)
        }));
        // Commits start, and the input log's acknowledged batches are replayed, before anything is served.
        primary.feature.start(training, publishers, on_drift)?;
        Ok(app)
    }

    /// Starts a read replica of the primary whose data directory is
    /// `config.storage.data_dir`: its committed state is restored (nothing
    /// re-encoded), and a thread applies every epoch it commits and follows
    /// its registries (the active adapter, twin and retrieval setting).
    /// Nothing is written to the directory: answers are not traced here.
    pub fn start_replica(mut config: Config) -> anyhow::Result<Arc<App>> {
        use anyhow::Context;
        crate::metrics::install();
        let gate = Arc::new(crate::auth::Gate::open(&config)?);
        let embedder: Arc<dyn Embedder> = Arc::new(twinflow_pipelines::metrics::MeteredEmbedder(
            twinflow_pipelines::feature::embedder::build_embedder(&config.embedder)?,
        ));
        let data_dir = config.storage.data_dir.clone();
        // Following an object store: its committed state is fetched into the data directory first.
        let mirror = match config.replica.follow.as_deref().filter(|f| twinflow_sinks::is_remote(f)) {
            Some(url) => {
                let mirror = twinflow_sinks::Mirror::new(
                    twinflow_sinks::Remote::open(url, &config.storage.object_store_options)?,
                    &data_dir,
                )?;
                mirror.pull_others().with_context(|| format!("cannot fetch from {url}"))?;
                mirror.pull_tables().with_context(|| format!("cannot fetch from {url}"))?;
                Some(mirror)
            }
            None => None,
        };
        let shards = config.search.shards_for(&config.engine);
        let store = Arc::new(
            twinflow_sinks::Store::open_follower(&data_dir, embedder.dim(), &config.search.ann, shards)
                .with_context(|| format!("cannot follow the data directory {}", data_dir.display()))?,
        );
        limit_reads(&store, &config)?;
        let datasets = Arc::new(Datasets::open(&store)?);
        let generator = Arc::new(LazyGenerator::new(config.generator.clone()));
        let training = Arc::new(Training::open(&config, store.clone(), embedder.clone(), datasets.clone(), None)?);
        let twin = Arc::new(Twin::open(&config, store.clone(), datasets, generator.clone())?);
        let retrieval = Arc::new(RetrievalSettings::open(&config)?);
        let queries: Arc<dyn Embedder> = Arc::new(twinflow_pipelines::inference::CombiningEmbedder::new(embedder));
        let replica = Arc::new(Replica::new(store.clone(), config.replica.clone(), mirror));
        // The traces table is the primary's: a replica records none.
        config.traces.enabled = false;
        let app = Arc::new(App {
            streams: Default::default(),
            retrieval,
            queries,
            traces: Arc::new(Traces::new(config.traces.clone())),
            evaluations: Arc::default(),
            slots: crate::api::limits::Slots::new(&config.server),
            config,
            store,
            generator,
            training,
            twin,
            started: Instant::now(),
            timeline: Arc::default(),
            gate,
            role: Role::Replica(replica.clone()),
            helpers: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let weak = Arc::downgrade(&app);
        let follower = std::thread::Builder::new().name("twinflow-replica".into()).spawn(move || {
            let registries = || {
                if let Some(app) = weak.upgrade() {
                    replica.follow_registries(&app.training, &app.twin, &app.retrieval);
                }
            };
            replica.run(&stopped, &registries, FOLLOW_EVERY);
        })?;
        app.helpers.lock().push((stop, follower));
        Ok(app)
    }

    /// What answering reads, for the inference pipeline.
    pub fn rag(&self) -> Rag<'_> {
        self.rag_at(&self.store)
    }

    /// [`App::rag`] over `store` (a past epoch's, say).
    pub fn rag_at<'a>(&'a self, store: &'a Store) -> Rag<'a> {
        Rag {
            config: &self.config.rag,
            search: self.retrieval.fusion(),
            store,
            embedder: self.queries.as_ref(),
            generator: &self.generator,
            traces: &self.traces,
            adapter: self.training.active_name(),
        }
    }

    /// A subscription's answer, written as `POST /v1/rag` would write it.
    fn standing_answer(&self, spec: &Spec) -> Result<twinflow_schemas::api::RagResponse, String> {
        let params = twinflow_models::GenerateParams {
            max_tokens: self.config.rag.max_tokens,
            temperature: self.config.rag.temperature,
            repetition_penalty: self.config.rag.repetition_penalty,
            ..twinflow_models::GenerateParams::default()
        };
        let question = RagQuestion {
            question: spec.asked.query.clone(),
            history: Vec::new(),
            system: None,
            filter: spec.asked.filter.clone(),
            k: self.config.rag.k,
            params,
            answer: self.config.rag.answer,
        };
        twinflow_pipelines::inference::answer(&self.rag(), &question, &mut |_| std::ops::ControlFlow::Continue(()))
            .map_err(|e| e.to_string())
    }

    /// Starts a thread that feeds a source's events through the ingest door.
    pub fn attach_source(
        self: &Arc<Self>,
        name: String,
        kind: &str,
        handle: Option<twinflow_connectors::SourceHandle>,
        events: crossbeam_channel::Receiver<SourceEvent>,
    ) -> anyhow::Result<()> {
        let primary = self.primary()?;
        if let Some(handle) = &handle {
            primary.ingest.positions().listen(&name, handle.committed_sender());
        }
        let ingest = primary.ingest.clone();
        let mut gauge = SourceGauge::new(name.clone(), kind);
        if let Some(handle) = &handle {
            gauge = gauge.with_lag(handle.lag());
        }
        let gauge = Arc::new(gauge);
        let counted = gauge.clone();
        let pump = std::thread::Builder::new()
            .name(format!("source-{name}"))
            .spawn(move || twinflow_pipelines::feature::sources::pump(&ingest, events, &counted))?;
        primary.sources.lock().push(SourcePump { name, handle, pump: Some(pump), gauge });
        Ok(())
    }

    /// Every attached source's gauge (what `/v1/sources` shows and pauses).
    pub fn sources(&self) -> Vec<Arc<SourceGauge>> {
        match &self.role {
            Role::Primary(primary) => primary.sources.lock().iter().map(|s| s.gauge.clone()).collect(),
            Role::Replica(_) => Vec::new(),
        }
    }

    /// Stops the sources, closes the open epoch, lets the engine finish and
    /// the committer commit everything, then returns. A replica stops following.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        let primary = match &self.role {
            Role::Primary(primary) => primary,
            Role::Replica(_) => {
                for (stop, thread) in self.helpers.lock().drain(..) {
                    drop(stop);
                    let _ = thread.join();
                }
                return Ok(());
            }
        };
        primary.ingest.stop();
        for mut source in primary.sources.lock().drain(..) {
            tracing::info!(source = %source.name, "stopping source");
            if let Some(handle) = source.handle.take() {
                handle.stop();
            }
            if let Some(pump) = source.pump.take() {
                let _ = pump.join();
            }
        }
        primary.feature.finish()?;
        for (stop, thread) in self.helpers.lock().drain(..) {
            drop(stop);
            let _ = thread.join();
        }
        self.traces.flush(&self.store);
        // Subscriptions follow the last commits before their rankings are saved.
        let committed = self.store.committed_epoch();
        let deadline = Instant::now() + Duration::from_secs(10);
        while primary.subscriptions.stats().followed < committed && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        primary.subscriptions.save_all();
        primary.feature.commit_late();
        // The last commits reach the object store before the process ends.
        if let Some(shipping) = &primary.shipping {
            shipping.ship();
        }
        // The monitor's counters (new samples, trigger state) with its reference.
        self.training.save_drift_state();
        Ok(())
    }
}
