//! Retraining: drift monitoring in the committer, and the training job that
//! turns a dataset snapshot into a registered, evaluated and (when better)
//! promoted embedding adapter.
//!
//! ```text
//!  committer: epoch E ─▶ DriftMonitor::observe ─▶ drift rows (committed with E) ─▶ trigger?
//!                                                                                   │ [training] on_drift
//!  Training::start ◀────────────────────────────── POST /v1/models/train, twinflow train
//!    0. questions: the generator writes questions for `questions_per_run` extracts, held-out documents first
//!    1. the next dataset version (with a snapshot of every table), drift stats of the live data
//!    2. pairs: instruct samples (instruction → encoded with the base encoder, source chunk → stored base vector)
//!    3. train from the active adapter (burn, Adam, in-batch contrastive loss) on the train split
//!       (templated and LLM-written instructions alike)
//!    4. recall@k over the whole corpus on the held-out LLM-written questions only (never templates):
//!       base, active (parent), candidate; the candidate − parent gain per question, bootstrapped
//!    5. register (weights, model card, drift reference); promote only if the gain's 95% interval is above zero:
//!       the store re-projects the stored vectors into a new index and switches at an epoch,
//!       the drift monitor takes the training data as its reference
//! ```

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use twinflow_dataflow::{DriftMonitor, DriftPersisted, DriftReference, Embedder};
use twinflow_models::{
    Adapter, AdapterTraining, DatasetRef, Evaluation, ModelCard, Registry, hits_at_k, train_adapter,
};
use twinflow_schemas::config::{Config, TrainingConfig};
use twinflow_schemas::evaluation::{EvaluationRow, EvaluationRun};
use twinflow_schemas::stats::{MIN_DOCUMENTS, clustered_gain, estimate};
use twinflow_schemas::{Hash128, Split};
use twinflow_sinks::{Store, VectorProjection};

use super::Error;
use super::datasets::{Datasets, is_evidence};
use super::job::{Job, JobStatus, RunOutcome, even_sample};
use super::{question_phase, record_evaluation};
use crate::inference::LazyGenerator;
use crate::{Context, now_ms};

/// Test queries evaluated at most (the corpus is always complete).
const MAX_TEST_QUERIES: usize = 2_000;
/// Instructions encoded per call to the embedder.
const ENCODE_BATCH: usize = 64;
/// Why a run with nothing to be judged on keeps the active model.
pub(crate) const NO_EVIDENCE: &str = "kept the active model: no held-out questions written by an LLM to judge it on \
     (templated instructions train a model but never judge one); `twinflow datasets generate` or \
     `[training] questions_per_run` writes them";
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

/// What the adapter's job is doing, for `/v1/status` and `/v1/models`.
pub type TrainingStatus = JobStatus<Evaluation>;

/// What one adapter run produced.
pub type TrainingOutcome = RunOutcome<Evaluation>;

/// The drift monitor and the training job of a running twinflow.
#[derive(Debug)]
pub struct Training {
    pub config: TrainingConfig,
    /// The store whose vector search the active adapter projects.
    store: Arc<Store>,
    /// The base encoder (instructions are encoded with it).
    embedder: Arc<dyn Embedder>,
    /// Writes the questions a run is judged on (`None`: only those already cached).
    questions: Option<Arc<LazyGenerator>>,
    pub registry: Registry,
    pub datasets: Arc<Datasets>,
    /// `None` when drift is off.
    pub monitor: Option<Mutex<DriftMonitor>>,
    state_file: PathBuf,
    /// Base vectors of instructions encoded by earlier runs (by text hash):
    /// a run encodes only the instructions it has not seen.
    instruction_vectors: Mutex<HashMap<Hash128, Vec<f32>>>,
    /// The training job (a drift trigger that fires during a run starts a run when that one ends).
    job: Arc<Job<Evaluation>>,
    /// Serialises switches of the active model (a run's promotion, promote, rollback).
    switch: Mutex<()>,
    /// Serialises writes of the drift state file; when it was last written.
    save: Mutex<Instant>,
}

impl Training {
    /// Opens the registry and the saved drift state, and activates the
    /// registry's active adapter in `store`.
    pub fn open(
        config: &Config,
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        datasets: Arc<Datasets>,
        questions: Option<Arc<LazyGenerator>>,
    ) -> Result<Training, Error> {
        let data_dir = store.data_dir();
        let registry_dir = registry_dir_in(config, data_dir);
        let registry = Registry::open(&registry_dir)
            .with_context(|| format!("cannot open the model registry {}", registry_dir.display()))?
            .with_retention(twinflow_models::Retention {
                keep: config.training.keep_versions,
                pinned: config.training.pinned_versions.clone(),
            });
        datasets.keep_lineage_of(Box::new(registry.clone()));
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
            store,
            embedder,
            questions,
            registry,
            datasets,
            monitor,
            state_file,
            instruction_vectors: Mutex::new(HashMap::new()),
            job: Arc::new(Job::new("adapter", true)),
            switch: Mutex::new(()),
            save: Mutex::new(Instant::now()),
        };
        if let Some(version) = training.registry.active()? {
            let adapter = training.registry.adapter(version)?;
            let switch = training.store.set_projection(Some(projection(version, adapter)))?;
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
        let result = serde_json::to_vec(&persisted)
            .map_err(std::io::Error::from)
            .and_then(|bytes| twinflow_schemas::fs::write_atomic(&self.state_file, &bytes));
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
        self.job.status()
    }

    /// True while a run is in progress.
    pub fn is_running(&self) -> bool {
        self.job.is_running()
    }

    /// The active model: `base` or `adapter-v<N>`.
    pub fn active_name(&self) -> String {
        match self.registry.active() {
            Ok(Some(v)) => format!("adapter-v{v}"),
            _ => "base".into(),
        }
    }

    /// Starts a run in a background thread; `false` when one is running.
    pub fn start(self: &Arc<Self>, trigger: serde_json::Value) -> Result<bool, Error> {
        let training = Arc::clone(self);
        self.job.start(trigger, Arc::new(move |trigger| training.run(trigger)))
    }

    /// One whole run, synchronously.
    pub fn run(&self, trigger: serde_json::Value) -> Result<TrainingOutcome, Error> {
        let (store, embedder) = (self.store.as_ref(), self.embedder.as_ref());
        let started = Instant::now();
        if let Some(generator) = &self.questions {
            question_phase(&self.job, &self.datasets, store, generator, self.config.questions_per_run);
        }
        self.job.phase("snapshot");
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
        // Judged only on questions an LLM wrote about held-out documents: templates train, never judge.
        let test = even_sample(test.into_iter().filter(|s| is_evidence(s)).collect(), MAX_TEST_QUERIES);
        if train.len() < self.config.batch_size.max(2) {
            return Err(Error::NotEnoughData(format!(
                "not enough instruct samples to train: {} train (need at least one batch of {})",
                train.len(),
                self.config.batch_size
            )));
        }

        self.job.phase("encode");
        let encode = |rows: &[&twinflow_schemas::InstructRow]| -> Result<Vec<Vec<f32>>, Error> {
            let key = |s: &twinflow_schemas::InstructRow| Hash128::of(s.instruction.as_bytes());
            let missing: Vec<&twinflow_schemas::InstructRow> = {
                let cache = self.instruction_vectors.lock();
                let mut seen = std::collections::HashSet::new();
                rows.iter().copied().filter(|s| !cache.contains_key(&key(s)) && seen.insert(key(s))).collect()
            };
            for batch in missing.chunks(ENCODE_BATCH) {
                let texts: Vec<&str> = batch.iter().map(|s| s.instruction.as_str()).collect();
                let vectors = embedder.embed_batch(&texts).context("encoding instructions")?;
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

        self.job.phase("train");
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
                self.job.progress(step, steps, loss)
            })?;

        self.job.phase("evaluate");
        let k = self.config.recall_k.max(1);
        let mean = |hits: &[f64]| if hits.is_empty() { 0.0 } else { hits.iter().sum::<f64>() / hits.len() as f64 };
        let base_hits = hits_at_k(&Adapter::identity(embedder.dim()), &test_queries, &targets, &corpus, k);
        let parent_hits = match parent {
            Some(_) => hits_at_k(&parent_adapter, &test_queries, &targets, &corpus, k),
            None => base_hits.clone(),
        };
        let candidate_hits = hits_at_k(&candidate, &test_queries, &targets, &corpus, k);
        // Judged only on enough questions, resampled by document (a document's questions are one piece of evidence).
        let documents: Vec<&str> = test.iter().map(|s| s.doc_id.as_str()).collect();
        let ones = vec![1.0; test.len()];
        let gain = (test.len() >= self.config.min_questions.max(1))
            .then(|| clustered_gain(&candidate_hits, &parent_hits, &ones, &documents, self.config.seed))
            .flatten();
        let evidence: BTreeSet<String> = test.iter().map(|s| s.generator.clone()).collect();
        let (parent_recall, candidate_recall) = (mean(&parent_hits), mean(&candidate_hits));
        let evaluation = Evaluation {
            k,
            queries: test_queries.len(),
            corpus: corpus.len(),
            base: mean(&base_hits),
            parent: parent_recall,
            candidate: candidate_recall,
            evidence: evidence.into_iter().collect(),
            gain,
        };
        let promotable = gain.is_some_and(|g| g.above_zero());
        let n = test_queries.len();
        let decision = match gain {
            None if !test.is_empty() => format!(
                "kept the active model: {n} held-out LLM-written questions about {} documents; a judgement needs {} \
                 questions ([training] min_questions) from at least {MIN_DOCUMENTS} documents",
                documents.iter().collect::<BTreeSet<_>>().len(),
                self.config.min_questions
            ),
            None => NO_EVIDENCE.to_owned(),
            Some(gain) if promotable => format!(
                "promoted: recall@{k} {parent_recall:.4} → {candidate_recall:.4} on {n} held-out LLM-written questions \
                 about {} documents (gain {gain}, 95% interval by document)",
                documents.iter().collect::<BTreeSet<_>>().len()
            ),
            Some(gain) => format!(
                "kept the active model: recall@{k} {parent_recall:.4} → {candidate_recall:.4} on {n} held-out \
                 LLM-written questions; the gain {gain} (95% interval by document) is not beyond the noise"
            ),
        };

        self.job.phase("register");
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
            Some(r) => vec![(REFERENCE_FILE, serde_json::to_vec(r).context("encoding the drift reference")?)],
            None => Vec::new(),
        };
        let card = self.registry.register_adapter(card, &candidate, &extra)?;
        if let Some(gain) = gain {
            let name = |v: Option<u64>| v.map_or_else(|| "base".to_owned(), |v| format!("adapter-v{v}"));
            let (n, seed, metric) = (test_queries.len() as u64, self.config.seed, format!("recall@{k}"));
            let mut measured = vec![(name(None), &base_hits), (name(Some(card.version)), &candidate_hits)];
            if parent.is_some() {
                measured.push((name(parent), &parent_hits));
            }
            let run = EvaluationRun::new(
                "adapter-run",
                now_ms(),
                &format!("instruct-v{}", dataset.version),
                epoch,
                dataset.version,
            );
            let mut rows: Vec<EvaluationRow> = measured
                .into_iter()
                .map(|(model, hits)| EvaluationRow::estimate(&run, &model, "", &metric, estimate(hits, seed), n))
                .collect();
            let over = format!("{metric} over {}", name(parent));
            rows.push(EvaluationRow::estimate(&run, &name(Some(card.version)), &over, "gain", gain, n));
            record_evaluation(store.data_dir(), &rows);
        }
        let mut switched_at_epoch = None;
        if promotable {
            self.job.phase("switch");
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
    pub fn activate(&self, version: u64, reason: &str) -> Result<u64, Error> {
        let _switch = self.switch.lock();
        self.activate_locked(&self.store, version, reason)
    }

    fn activate_locked(&self, store: &Store, version: u64, reason: &str) -> Result<u64, Error> {
        let adapter = self.registry.adapter(version)?;
        self.registry.promote(version, reason)?;
        let switch = store.set_projection(Some(projection(version, adapter)))?;
        self.set_reference_of(Some(version));
        Ok(switch.epoch)
    }

    /// Makes vector search use the registry's active adapter if it does not
    /// already: a read replica follows the primary's promotions and
    /// rollbacks this way. Returns whether it switched.
    pub fn follow_active(&self) -> Result<bool, Error> {
        let _switch = self.switch.lock();
        let active = self.registry.active()?;
        if self.store.projection() == active.map(|v| format!("adapter-v{v}")) {
            return Ok(false);
        }
        let projection = match active {
            Some(v) => Some(projection(v, self.registry.adapter(v)?)),
            None => None,
        };
        let switch = self.store.set_projection(projection)?;
        tracing::info!(active = ?active, vectors = switch.vectors, "followed the registry's active embedding adapter");
        Ok(true)
    }

    /// Rolls back to the previously active model; returns it (`None`: base).
    pub fn rollback(&self) -> Result<Option<u64>, Error> {
        let store = &self.store;
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

/// Where adapters are registered: `[training] registry`, else `<data>/_models`.
pub fn registry_dir(config: &Config) -> std::path::PathBuf {
    registry_dir_in(config, &config.storage.data_dir)
}

fn registry_dir_in(config: &Config, data_dir: &std::path::Path) -> std::path::PathBuf {
    config.training.registry.clone().unwrap_or_else(|| data_dir.join("_models"))
}

/// Adapter `version` as the store's vector projection.
pub fn projection(version: u64, adapter: Adapter) -> Arc<dyn VectorProjection> {
    Arc::new(AdapterProjection { id: format!("adapter-v{version}"), adapter })
}
