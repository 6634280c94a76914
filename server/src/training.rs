//! Retraining: drift monitoring in the committer, and the training job that
//! turns a dataset snapshot into a registered, evaluated and (when better)
//! promoted embedding adapter.
//!
//! ```text
//!  committer: epoch E ─▶ DriftMonitor::observe ─▶ drift rows (committed with E) ─▶ trigger?
//!                                                                                   │ [training] on_drift
//!  Training::start ◀────────────────────────────── POST /v1/models/train, twinflow train
//!    1. the next dataset version (with a snapshot of every table), drift stats of the live data
//!    2. pairs: instruct samples (instruction → encoded with the base encoder, source chunk → stored base vector)
//!    3. train from the active adapter (burn, Adam, in-batch contrastive loss) on the train split
//!    4. recall@k on the test split over the whole corpus: base, active (parent), candidate
//!    5. register (weights, model card, drift reference); promote only if better:
//!       the store re-projects the stored vectors into a new index and switches at an epoch,
//!       the drift monitor takes the training data as its reference
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use parking_lot::Mutex;
use serde::Serialize;

use twinflow_dataflow::{DriftMonitor, DriftPersisted, DriftReference, Embedder};
use twinflow_models::{
    Adapter, AdapterTraining, DatasetRef, Evaluation, ModelCard, Registry, recall_at_k, train_adapter,
};
use twinflow_schemas::config::{Config, TrainingConfig};
use twinflow_schemas::{Hash128, Split};
use twinflow_sinks::{Store, VectorProjection};

use crate::datasets::Datasets;

/// Test queries evaluated at most (the corpus is always complete).
const MAX_TEST_QUERIES: usize = 2_000;
/// Instructions encoded per call to the embedder.
const ENCODE_BATCH: usize = 64;
/// The drift reference file of a model version.
const REFERENCE_FILE: &str = "drift_reference.json";

/// An adapter as the store's vector projection.
#[derive(Debug)]
pub struct AdapterProjection {
    id: String,
    adapter: Adapter,
}

impl VectorProjection for AdapterProjection {
    fn id(&self) -> &str {
        &self.id
    }

    fn project(&self, vector: &[f32]) -> Vec<f32> {
        self.adapter.apply(vector)
    }
}

/// What the training job is doing, for `/v1/status` and `/v1/models`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainingStatus {
    /// `idle` or `running`.
    pub state: String,
    /// `snapshot`, `encode`, `train`, `evaluate`, `register`, `switch`.
    pub phase: String,
    pub step: usize,
    pub steps: usize,
    pub loss: Option<f32>,
    pub started_at_ms: Option<i64>,
    pub trigger: serde_json::Value,
    /// The outcome of the last finished run.
    pub last: Option<TrainingOutcome>,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    pub runs: u64,
}

/// What one training run produced.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingOutcome {
    pub version: u64,
    pub promoted: bool,
    pub decision: String,
    pub evaluation: Evaluation,
    pub dataset: DatasetRef,
    pub seconds: f64,
    /// The epoch from which searches use the new adapter (when promoted).
    pub switched_at_epoch: Option<u64>,
}

/// The drift monitor and the training job of a running twinflow.
#[derive(Debug)]
pub struct Training {
    pub config: TrainingConfig,
    pub registry: Registry,
    pub datasets: Arc<Datasets>,
    /// `None` when drift is off.
    pub monitor: Option<Mutex<DriftMonitor>>,
    state_file: PathBuf,
    /// Base vectors of instructions encoded by earlier runs (by text hash):
    /// a run encodes only the instructions it has not seen.
    instruction_vectors: Mutex<HashMap<Hash128, Vec<f32>>>,
    status: Mutex<TrainingStatus>,
    running: AtomicBool,
    /// A drift trigger that fired during a run: a run starts for it when that one ends.
    pending: Mutex<Option<serde_json::Value>>,
    /// Serialises switches of the active model (a run's promotion, promote, rollback).
    switch: Mutex<()>,
    /// Serialises writes of the drift state file; when it was last written.
    save: Mutex<Instant>,
}

impl Training {
    /// Opens the registry and the saved drift state, and activates the
    /// registry's active adapter in `store`.
    pub fn open(config: &Config, store: &Store, datasets: Arc<Datasets>) -> anyhow::Result<Training> {
        let data_dir = store.data_dir();
        let registry_dir = config.training.registry.clone().unwrap_or_else(|| data_dir.join("_models"));
        let registry = Registry::open(&registry_dir)
            .with_context(|| format!("cannot open the model registry {}", registry_dir.display()))?;
        let state_file = data_dir.join("_drift").join("state.json");
        let persisted: DriftPersisted = match std::fs::read(&state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %state_file.display(), error = %e, "the drift state is damaged; starting without a reference");
                DriftPersisted::default()
            }),
            Err(_) => DriftPersisted::default(),
        };
        let persisted = persisted.compatible_with(&config.drift);
        let monitor = config.drift.enabled.then(|| Mutex::new(DriftMonitor::new(config.drift.clone(), persisted)));
        let training = Training {
            config: config.training.clone(),
            registry,
            datasets,
            monitor,
            state_file,
            instruction_vectors: Mutex::new(HashMap::new()),
            status: Mutex::new(TrainingStatus { state: "idle".into(), ..TrainingStatus::default() }),
            running: AtomicBool::new(false),
            pending: Mutex::new(None),
            switch: Mutex::new(()),
            save: Mutex::new(Instant::now()),
        };
        if let Some(version) = training.registry.active()? {
            let adapter = training.registry.adapter(version)?;
            let switch = store.set_projection(Some(projection(version, adapter)))?;
            tracing::info!(
                version,
                vectors = switch.vectors,
                seconds = switch.seconds,
                "active embedding adapter loaded"
            );
        }
        Ok(training)
    }

    /// Saves the drift monitor's reference and trigger history.
    pub fn save_drift_state(&self) {
        let Some(monitor) = &self.monitor else { return };
        let mut saved_at = self.save.lock();
        *saved_at = Instant::now();
        let persisted = monitor.lock().persisted();
        let result = (|| -> anyhow::Result<()> {
            if let Some(dir) = self.state_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = self.state_file.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&persisted)?)?;
            std::fs::rename(&tmp, &self.state_file)?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(error = %e, file = %self.state_file.display(), "could not save the drift state");
        }
    }

    /// True when the drift state was last saved longer than `every` ago.
    pub fn drift_state_due(&self, every: std::time::Duration) -> bool {
        self.save.lock().elapsed() >= every
    }

    /// The job's status.
    pub fn status(&self) -> TrainingStatus {
        self.status.lock().clone()
    }

    /// True while a run is in progress.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The active model: `base` or `adapter-v<N>`.
    pub fn active_name(&self) -> String {
        match self.registry.active() {
            Ok(Some(v)) => format!("adapter-v{v}"),
            _ => "base".into(),
        }
    }

    /// Starts a run in a background thread; `false` when one is running.
    pub fn start(
        self: &Arc<Self>,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        trigger: serde_json::Value,
    ) -> anyhow::Result<bool> {
        if self.running.swap(true, Ordering::SeqCst) {
            if trigger.get("drift").is_some() {
                *self.pending.lock() = Some(trigger);
            }
            return Ok(false);
        }
        {
            let mut status = self.status.lock();
            status.state = "running".into();
            status.phase = "snapshot".into();
            status.step = 0;
            status.steps = 0;
            status.loss = None;
            status.started_at_ms = Some(now_ms());
            status.trigger = trigger.clone();
        }
        let training = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("twinflow-training".into()).spawn(move || {
            // A panic in a run (the model, the backend) is a failed run, not a job stuck "running".
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                training.run(&store, embedder.as_ref(), trigger)
            }))
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("the training run panicked: {}", panic_message(&*panic))));
            let mut status = training.status.lock();
            status.state = "idle".into();
            status.phase = String::new();
            status.runs += 1;
            match result {
                Ok(outcome) => {
                    tracing::info!(
                        version = outcome.version,
                        promoted = outcome.promoted,
                        candidate = outcome.evaluation.candidate,
                        parent = outcome.evaluation.parent,
                        base = outcome.evaluation.base,
                        seconds = outcome.seconds,
                        "training run finished: {}",
                        outcome.decision
                    );
                    crate::metrics::training_run("adapter", if outcome.promoted { "promoted" } else { "kept" });
                    status.last = Some(outcome);
                    status.last_error = None;
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "training run failed");
                    crate::metrics::training_run("adapter", "failed");
                    status.last_error = Some(format!("{e:#}"));
                }
            }
            drop(status);
            training.running.store(false, Ordering::SeqCst);
            if let Some(trigger) = training.pending.lock().take() {
                tracing::info!("starting the retrain a drift trigger asked for during the last run");
                if let Err(e) = training.start(store.clone(), embedder.clone(), trigger) {
                    tracing::error!(error = %e, "could not start the pending training run");
                }
            }
        });
        if let Err(e) = spawned {
            self.running.store(false, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(true)
    }

    fn set_phase(&self, phase: &str) {
        self.status.lock().phase = phase.into();
    }

    /// One whole run, synchronously.
    pub fn run(
        &self,
        store: &Store,
        embedder: &dyn Embedder,
        trigger: serde_json::Value,
    ) -> anyhow::Result<TrainingOutcome> {
        let started = Instant::now();
        self.set_phase("snapshot");
        let dataset = self.datasets.snapshot(store).context("the dataset snapshot failed")?;
        let live_stats = self.monitor.as_ref().map(|m| m.lock().live());
        let epoch = dataset.source_epoch;
        let samples = twinflow_sinks::datasets::read_instruct_version(store.data_dir(), dataset.version)
            .context("reading the dataset version")?;
        let vectors: HashMap<Hash128, Vec<f32>> =
            store.current_embeddings().into_iter().map(|e| (e.chunk_id, e.vector.0)).collect();
        let mut corpus_ids: Vec<Hash128> = vectors.keys().copied().collect();
        corpus_ids.sort_unstable();
        let position: HashMap<Hash128, usize> = corpus_ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();

        // Pairs: each sample's instruction and its source chunk.
        let usable: Vec<_> =
            samples.iter().filter(|s| s.chunk_ids.first().is_some_and(|id| vectors.contains_key(id))).collect();
        let (train, test): (Vec<_>, Vec<_>) = usable.into_iter().partition(|s| s.split == Split::Train);
        // An even sample of the training pairs (the dataset is in sample-id order: no era is favoured).
        let train = even_sample(train, self.config.max_pairs);
        let test: Vec<_> = test.into_iter().take(MAX_TEST_QUERIES).collect();
        anyhow::ensure!(
            train.len() >= self.config.batch_size.max(2) && !test.is_empty(),
            "not enough instruct samples to train: {} train, {} test (need at least one batch of {} and one test sample)",
            train.len(),
            test.len(),
            self.config.batch_size
        );

        self.set_phase("encode");
        let encode = |rows: &[&twinflow_schemas::InstructRow]| -> anyhow::Result<Vec<Vec<f32>>> {
            let key = |s: &twinflow_schemas::InstructRow| Hash128::of(s.instruction.as_bytes());
            let missing: Vec<&twinflow_schemas::InstructRow> = {
                let cache = self.instruction_vectors.lock();
                let mut seen = std::collections::HashSet::new();
                rows.iter().copied().filter(|s| !cache.contains_key(&key(s)) && seen.insert(key(s))).collect()
            };
            for batch in missing.chunks(ENCODE_BATCH) {
                let texts: Vec<&str> = batch.iter().map(|s| s.instruction.as_str()).collect();
                let vectors =
                    embedder.embed_batch(&texts).map_err(|e| anyhow::anyhow!("encoding instructions: {e}"))?;
                let mut cache = self.instruction_vectors.lock();
                for (s, v) in batch.iter().zip(vectors) {
                    cache.insert(key(s), v);
                }
            }
            let cache = self.instruction_vectors.lock();
            Ok(rows.iter().map(|s| cache.get(&key(s)).cloned().unwrap_or_default()).collect())
        };
        let train_queries = encode(&train)?;
        let test_queries = encode(&test)?;
        let pairs: Vec<(Vec<f32>, Vec<f32>)> =
            train.iter().zip(train_queries).map(|(s, q)| (q, vectors[&s.chunk_ids[0]].clone())).collect();
        let targets: Vec<usize> = test.iter().map(|s| position[&s.chunk_ids[0]]).collect();
        let corpus: Vec<Vec<f32>> = corpus_ids.iter().map(|id| vectors[id].clone()).collect();
        drop(vectors);

        self.set_phase("train");
        let parent = self.registry.active()?;
        let parent_adapter = match parent {
            Some(v) => self.registry.adapter(v)?,
            None => Adapter::identity(embedder.dim()),
        };
        let training = AdapterTraining {
            epochs: self.config.epochs,
            batch_size: self.config.batch_size,
            learning_rate: self.config.learning_rate,
            temperature: self.config.temperature,
            identity_weight: self.config.identity_weight,
            anchor_to_init: self.config.anchor_to_parent,
            seed: self.config.seed,
        };
        let (candidate, report) =
            train_adapter(&pairs, &parent_adapter, &training, &twinflow_models::cpu_device(), |step, steps, loss| {
                let mut status = self.status.lock();
                status.step = step;
                status.steps = steps;
                status.loss = Some(loss);
            })?;

        self.set_phase("evaluate");
        let k = self.config.recall_k.max(1);
        let base = recall_at_k(&Adapter::identity(embedder.dim()), &test_queries, &targets, &corpus, k);
        let parent_recall = match parent {
            Some(_) => recall_at_k(&parent_adapter, &test_queries, &targets, &corpus, k),
            None => base,
        };
        let candidate_recall = recall_at_k(&candidate, &test_queries, &targets, &corpus, k);
        let evaluation = Evaluation {
            k,
            queries: test_queries.len(),
            corpus: corpus.len(),
            base,
            parent: parent_recall,
            candidate: candidate_recall,
        };
        let promotable = candidate_recall > parent_recall;
        let decision = if promotable {
            format!(
                "promoted: recall@{k} {parent_recall:.4} → {candidate_recall:.4} on {} held-out queries",
                test_queries.len()
            )
        } else {
            format!(
                "kept the active model: recall@{k} {candidate_recall:.4} is not above {parent_recall:.4} on {} held-out queries",
                test_queries.len()
            )
        };

        self.set_phase("register");
        let dataset = DatasetRef {
            name: "instruct".into(),
            version: dataset.version,
            epoch,
            content_hash: dataset.content_hash,
            train_pairs: pairs.len(),
            test_pairs: test_queries.len(),
        };
        let card = ModelCard {
            version: 0,
            kind: "embedding-adapter".into(),
            base_model: embedder.model_id().to_owned(),
            dim: embedder.dim(),
            created_at_ms: now_ms(),
            parent,
            dataset: dataset.clone(),
            trigger,
            training,
            report,
            evaluation: evaluation.clone(),
            promotable,
            decision: decision.clone(),
        };
        let reference = live_stats.map(|stats| DriftReference { name: String::new(), epoch, stats });
        let extra: Vec<(&str, Vec<u8>)> = match &reference {
            Some(r) => vec![(REFERENCE_FILE, serde_json::to_vec(r)?)],
            None => Vec::new(),
        };
        let card = self.registry.register_adapter(card, &candidate, &extra)?;
        let mut switched_at_epoch = None;
        if promotable {
            self.set_phase("switch");
            // Promoted only if the active model is still the one it was compared with.
            let _switch = self.switch.lock();
            if self.registry.active()? == parent {
                switched_at_epoch = Some(self.activate_locked(store, card.version, &decision)?);
            } else {
                tracing::warn!(version = card.version, "the active model changed during the run: not promoted");
            }
        }
        Ok(TrainingOutcome {
            version: card.version,
            promoted: switched_at_epoch.is_some(),
            decision,
            evaluation,
            dataset,
            seconds: started.elapsed().as_secs_f64(),
            switched_at_epoch,
        })
    }

    /// Makes `version` active: registry, vector search (re-projected at an
    /// epoch), drift reference. Returns the epoch of the switch.
    pub fn activate(&self, store: &Store, version: u64, reason: &str) -> anyhow::Result<u64> {
        let _switch = self.switch.lock();
        self.activate_locked(store, version, reason)
    }

    fn activate_locked(&self, store: &Store, version: u64, reason: &str) -> anyhow::Result<u64> {
        let adapter = self.registry.adapter(version)?;
        self.registry.promote(version, reason)?;
        let switch = store.set_projection(Some(projection(version, adapter)))?;
        self.set_reference_of(Some(version));
        Ok(switch.epoch)
    }

    /// Rolls back to the previously active model; returns it (`None`: base).
    pub fn rollback(&self, store: &Store) -> anyhow::Result<Option<u64>> {
        let _switch = self.switch.lock();
        let previous = self.registry.rollback("rollback requested")?;
        let projection = match previous {
            Some(v) => Some(projection(v, self.registry.adapter(v)?)),
            None => None,
        };
        store.set_projection(projection)?;
        self.set_reference_of(previous);
        Ok(previous)
    }

    /// Compares drift with the training data of `version` from now on (the
    /// base model keeps the current reference).
    fn set_reference_of(&self, version: Option<u64>) {
        let (Some(monitor), Some(version)) = (&self.monitor, version) else { return };
        let path = self.registry.version_dir(version).join(REFERENCE_FILE);
        let reference = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<DriftReference>(&b).ok());
        match reference {
            Some(mut reference) => {
                reference.name = format!("adapter-v{version}");
                monitor.lock().set_reference(reference);
                self.save_drift_state();
            }
            None => tracing::warn!(version, "the model has no drift reference; drift keeps the previous one"),
        }
    }
}

fn projection(version: u64, adapter: Adapter) -> Arc<dyn VectorProjection> {
    Arc::new(AdapterProjection { id: format!("adapter-v{version}"), adapter })
}

/// What a caught panic said.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// At most `limit` of `items`, evenly spread (0 = all).
pub(crate) fn even_sample<T: Clone>(items: Vec<T>, limit: usize) -> Vec<T> {
    if limit == 0 || items.len() <= limit {
        return items;
    }
    let step = items.len() as f64 / limit as f64;
    (0..limit).map(|i| items[(i as f64 * step) as usize].clone()).collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
