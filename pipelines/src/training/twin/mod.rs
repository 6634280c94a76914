//! The LLM twin: LoRA fine-tunes of the local generator — supervised on the
//! author's answers, then aligned to the author over the model's own answers
//! (DPO) — evaluated on held-out data, registered, and switched in for
//! answering without downtime.
//!
//! ```text
//!  Twin::start ◀── POST /v1/twin/train, twinflow twin train, drift ([twin] on_drift)
//!    0. questions: the base generator writes questions (and its own answer) for `[training] questions_per_run` extracts
//!    1. the next dataset version; its train/test splits (split by document); instruct and preference rows
//!    2. examples: chat template(user: instruction) ++ the author's text ++ end of turn; pairs: the same
//!       prompt with the author's text (chosen) and the base model's answer (rejected)
//!    3. the stages of [twin] method (sft, dpo, sft+dpo), each its own registry version:
//!       sft  LoRA on Q/K/V/O fresh from the base model; judged against the active twin by held-out nll
//!            (the test split's LLM-written questions, never templates): the gain per answer token, bootstrapped
//!            by document, must be above zero
//!       dpo  fresh LoRA on top of the SFT stage (or the active twin), which is frozen as the reference;
//!            the adapters stack into one; judged against that reference on held-out pairs: the chosen −
//!            rejected log-likelihood gain above zero and the held-out nll not worse beyond the noise
//!    4. register (lora.safetensors, card; parent = the stage it builds on); promote only when judged better
//!       and its parent is the active twin: build the merged model first, then swap it in
//! ```
//!
//! This file holds the run (0–1, 4) and the registry; `stages.rs` the examples and the stages (2–3).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use twinflow_models::{
    DatasetRef, LoraTarget, LoraTrainer, LoraTraining, LoraWeights, PreferenceExample, Registry, SftExample, TwinCard,
    TwinEvaluation, cpu_device,
};
use twinflow_schemas::config::{Config, TwinConfig, TwinStage};
use twinflow_schemas::evaluation::{EvaluationRow, EvaluationRun};
use twinflow_sinks::Store;

use super::Error;
use super::datasets::Datasets;
use super::job::{Job, JobStatus, RunOutcome};
use super::{question_phase, record_evaluation};
use crate::inference::generator::LazyGenerator;
use crate::{Context, now_ms};

mod stages;

/// What the twin's job is doing, for `GET /v1/twin`.
pub type TwinStatus = JobStatus<TwinEvaluation>;

/// What one fine-tuning run produced.
pub type TwinOutcome = RunOutcome<TwinEvaluation>;

/// The twin's registry and fine-tuning job.
#[derive(Debug)]
pub struct Twin {
    pub config: TwinConfig,
    /// Extracts the generator writes questions for at the start of a run (`[training]`).
    questions_per_run: usize,
    /// Held-out answers a run needs before its gain is judged (`[training]`).
    min_questions: usize,
    pub registry: Registry<TwinCard>,
    datasets: Arc<Datasets>,
    store: Arc<Store>,
    /// Answers with the active twin; the local model it fine-tunes.
    generator: Arc<LazyGenerator>,
    job: Arc<Job<TwinEvaluation>>,
    /// Serialises switches of the active twin.
    switch: Mutex<()>,
}

/// Where the twin's versions are kept: `[twin] registry`, else `<data_dir>/_models/twin`.
pub fn registry_dir(config: &Config) -> std::path::PathBuf {
    config.twin.registry.clone().unwrap_or_else(|| config.storage.data_dir.join("_models").join("twin"))
}

impl Twin {
    /// Opens the twin registry; the active twin (if any) is handed to
    /// `generator`, which builds it on first use.
    pub fn open(
        config: &Config,
        store: Arc<Store>,
        datasets: Arc<Datasets>,
        generator: Arc<LazyGenerator>,
    ) -> Result<Twin, Error> {
        let dir = registry_dir(config);
        let registry = Registry::<TwinCard>::open(&dir)
            .with_context(|| format!("cannot open the twin registry {}", dir.display()))?
            .with_retention(twinflow_models::Retention {
                keep: config.twin.keep_versions,
                pinned: config.twin.pinned_versions.clone(),
            });
        datasets.keep_lineage_of(Box::new(registry.clone()));
        let twin = Twin {
            config: config.twin.clone(),
            questions_per_run: config.training.questions_per_run,
            min_questions: config.training.min_questions,
            registry,
            datasets,
            store,
            generator,
            job: Arc::new(Job::new("twin", false)),
            switch: Mutex::new(()),
        };
        if let Some(version) = twin.registry.active()? {
            let card = twin.registry.card(version)?;
            let lora = twin.registry.lora(version)?;
            twin.generator.set_twin(Some((twin_name(&card), Arc::new(lora), None)));
            tracing::info!(version, "active twin registered (built on first use)");
        }
        Ok(twin)
    }

    /// Hands the generator the registry's active twin if it does not have
    /// it already (a read replica follows the primary's switches this
    /// way). Returns whether it switched.
    pub fn follow_active(&self) -> Result<bool, Error> {
        let _switch = self.switch.lock();
        let active = match self.registry.active()? {
            Some(version) => Some((version, self.registry.card(version)?)),
            None => None,
        };
        let name = active.as_ref().map(|(_, card)| twin_name(card));
        if self.generator.twin_name() == name {
            return Ok(false);
        }
        match active {
            Some((version, card)) => {
                let lora = self.registry.lora(version)?;
                self.generator.set_twin(Some((twin_name(&card), Arc::new(lora), None)));
            }
            None => self.generator.set_twin(None),
        }
        tracing::info!(twin = ?name, "followed the registry's active twin");
        Ok(true)
    }

    /// The job's status.
    pub fn status(&self) -> TwinStatus {
        self.job.status()
    }

    /// True while a run is in progress.
    pub fn is_running(&self) -> bool {
        self.job.is_running()
    }

    /// The training configuration of a run's SFT stage (a DPO stage takes
    /// [`Self::dpo_training`]).
    pub fn training(&self) -> Result<LoraTraining, Error> {
        let targets = self
            .config
            .targets
            .iter()
            .map(|t| {
                LoraTarget::ALL
                    .into_iter()
                    .find(|x| x.name() == t.as_str())
                    .ok_or_else(|| Error::Config(format!("[twin] targets: {t:?} is not one of q, k, v, o")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LoraTraining {
            rank: self.config.rank,
            alpha: self.config.alpha,
            targets,
            epochs: self.config.epochs,
            batch_size: self.config.batch_size,
            learning_rate: self.config.learning_rate,
            max_tokens: self.config.max_tokens,
            seed: self.config.seed,
            technique: "sft".into(),
            beta: None,
            eval_every: self.config.eval_every,
        })
    }

    /// The training configuration of a DPO stage.
    pub fn dpo_training(&self) -> Result<LoraTraining, Error> {
        if !(self.config.beta > 0.0 && self.config.beta.is_finite()) {
            return Err(Error::Config(format!("[twin] beta must be a positive number, not {}", self.config.beta)));
        }
        Ok(LoraTraining {
            learning_rate: self.config.dpo_learning_rate,
            technique: "dpo".into(),
            beta: Some(self.config.beta),
            ..self.training()?
        })
    }

    /// Starts a run in a background thread; `false` when one is running.
    pub fn start(self: &Arc<Self>, trigger: serde_json::Value) -> Result<bool, Error> {
        let twin = Arc::clone(self);
        self.job.start(trigger, Arc::new(move |trigger| twin.run(trigger)))
    }

    /// One whole run, synchronously: the stages of `[twin] method`, each
    /// registered as its own version; the outcome is the last stage's.
    pub fn run(&self, trigger: serde_json::Value) -> Result<TwinOutcome, Error> {
        let (store, generator) = (self.store.as_ref(), self.generator.as_ref());
        let started = Instant::now();
        let stages = self.config.method.stages();
        // Configuration errors surface before minutes of work.
        self.training()?;
        if stages.contains(&TwinStage::Dpo) {
            self.dpo_training()?;
        }
        let (gguf, _) = generator.local_gguf().map_err(|e| Error::GeneratorUnavailable(crate::error_chain(&e)))?;
        question_phase(&self.job, &self.datasets, store, generator, self.questions_per_run);
        self.job.phase("snapshot");
        let dataset = self.datasets.snapshot(store).context("the dataset snapshot failed")?;
        let samples = twinflow_sinks::datasets::read_instruct_version(store.data_dir(), dataset.version)
            .context("reading the dataset version")?;
        let preference = twinflow_sinks::datasets::read_preference_version(store.data_dir(), dataset.version)
            .context("reading the preference dataset version")?;

        self.job.phase("load");
        let max_tokens = self.config.max_tokens;
        let trainer = LoraTrainer::load(&gguf, max_tokens, &cpu_device())
            .with_context(|| format!("cannot load {} for fine-tuning", gguf.display()))?;
        let data = self.examples(&trainer, &samples, &preference)?;
        let run = RunContext {
            trainer: &trainer,
            data: &data,
            trigger,
            dataset: DatasetRef {
                name: "instruct".into(),
                version: dataset.version,
                epoch: dataset.source_epoch,
                content_hash: dataset.content_hash,
                train_pairs: data.train.len(),
                test_pairs: data.test.len(),
            },
            base_model: gguf.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            base_sha256: twinflow_models::fetch::sha256_file(&gguf)?,
        };
        // The model a DPO stage starts from: this run's SFT stage, else the active twin.
        let mut previous: Option<(Option<u64>, Option<LoraWeights>)> = None;
        let mut outcome: Option<TwinOutcome> = None;
        for stage in stages {
            match stage {
                TwinStage::Sft => {
                    let (stage_outcome, lora) = self.sft_stage(&run)?;
                    previous = Some((Some(stage_outcome.version), Some(lora)));
                    outcome = Some(stage_outcome);
                }
                TwinStage::Dpo => {
                    let (parent, start) = match previous.take() {
                        Some(previous) => previous,
                        None => {
                            let active = self.registry.active()?;
                            (active, active.map(|v| self.registry.lora(v)).transpose()?)
                        }
                    };
                    match self.dpo_stage(&run, parent, start) {
                        Ok(stage_outcome) => outcome = Some(stage_outcome),
                        // Too few pairs after an SFT stage: the SFT stage stands, and its decision says so.
                        Err(Error::NotEnoughData(reason)) if outcome.is_some() => {
                            if let Some(outcome) = &mut outcome {
                                outcome.decision = format!("{}; no DPO stage: {reason}", outcome.decision);
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let mut outcome = outcome.ok_or_else(|| Error::Config("[twin] method has no stage".into()))?;
        outcome.seconds = started.elapsed().as_secs_f64();
        Ok(outcome)
    }

    /// Registers a stage's candidate, records its evaluation rows, and
    /// switches to it when promotable and its parent is still the active twin.
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        run: &RunContext<'_>,
        kind: &str,
        parent: Option<u64>,
        training: LoraTraining,
        report: twinflow_schemas::models::LoraReport,
        evaluation: TwinEvaluation,
        candidate: &LoraWeights,
        promotable: bool,
        decision: String,
    ) -> Result<TwinOutcome, Error> {
        self.job.phase("register");
        let card = TwinCard {
            version: 0,
            kind: kind.into(),
            base_model: run.base_model.clone(),
            base_sha256: run.base_sha256.clone(),
            created_at_ms: now_ms(),
            parent,
            dataset: run.dataset.clone(),
            trigger: run.trigger.clone(),
            training,
            report,
            evaluation: evaluation.clone(),
            promotable,
            decision: decision.clone(),
        };
        let card = self.registry.register_lora(card, candidate, &[])?;
        self.record(run, &card, parent);
        let mut promoted = false;
        let mut decision = decision;
        if promotable {
            self.job.phase("switch");
            let _switch = self.switch.lock();
            if self.registry.active()? == parent {
                self.activate_locked(&self.generator, card.version, Some(candidate.clone()), &decision)?;
                promoted = true;
            } else {
                decision = format!("{decision}; not switched: the version it builds on is not the active twin");
                tracing::warn!(version = card.version, "the active twin is not this version's parent: not promoted");
            }
        }
        Ok(TwinOutcome {
            version: card.version,
            promoted,
            decision,
            evaluation,
            dataset: run.dataset.clone(),
            seconds: 0.0,
            switched_at_epoch: None,
        })
    }

    /// The stage's rows of the `evaluations` table (only for judged runs).
    fn record(&self, run: &RunContext<'_>, card: &TwinCard, parent: Option<u64>) {
        let evaluation = &card.evaluation;
        let Some(gain) = evaluation.gain else { return };
        let name = |v: Option<u64>| v.map_or_else(|| "base".to_owned(), |v| format!("twin-v{v}"));
        let n = run.data.test.len() as u64;
        let mut measured = vec![(name(None), evaluation.base), (name(Some(card.version)), evaluation.candidate)];
        if parent.is_some() {
            measured.push((name(parent), evaluation.parent));
        }
        let set = format!("instruct-v{}", run.dataset.version);
        let eval_run = EvaluationRun::new("twin-run", now_ms(), &set, run.dataset.epoch, run.dataset.version);
        let mut rows: Vec<EvaluationRow> = measured
            .into_iter()
            .map(|(model, nll)| EvaluationRow::point(&eval_run, &model, "per answer token", "nll", nll.mean, n))
            .collect();
        let over = format!("nll over {}", name(parent));
        rows.push(EvaluationRow::estimate(&eval_run, &name(Some(card.version)), &over, "gain", gain, n));
        if let Some(preference) = &evaluation.preference {
            let pairs = preference.pairs as u64;
            let candidate = name(Some(card.version));
            rows.push(EvaluationRow::point(
                &eval_run,
                &name(parent),
                "pairs",
                "preference accuracy",
                preference.parent_accuracy,
                pairs,
            ));
            rows.push(EvaluationRow::point(
                &eval_run,
                &candidate,
                "pairs",
                "preference accuracy",
                preference.candidate_accuracy,
                pairs,
            ));
            let reference = format!("reference {}", name(parent));
            rows.push(EvaluationRow::point(
                &eval_run,
                &candidate,
                &reference,
                "reward accuracy",
                preference.reward_accuracy,
                pairs,
            ));
            if let Some(margin) = preference.gain {
                rows.push(EvaluationRow::estimate(&eval_run, &candidate, &reference, "preference gain", margin, pairs));
            }
        }
        record_evaluation(self.store.data_dir(), &rows);
    }

    /// Makes `version` the twin that answers.
    pub fn activate(&self, version: u64, reason: &str) -> Result<(), Error> {
        let _switch = self.switch.lock();
        self.activate_locked(&self.generator, version, None, reason)
    }

    /// Builds the merged model before the switch, so that no request waits for it.
    fn activate_locked(
        &self,
        generator: &LazyGenerator,
        version: u64,
        lora: Option<LoraWeights>,
        reason: &str,
    ) -> Result<(), Error> {
        let card = self.registry.card(version)?;
        let lora = Arc::new(match lora {
            Some(lora) => lora,
            None => self.registry.lora(version)?,
        });
        let name = twin_name(&card);
        let built = generator.build_twin(&name, &lora).context("building the twin")?;
        self.registry.promote(version, reason)?;
        generator.set_twin(Some((name, lora, Some(built))));
        Ok(())
    }

    /// Back to the previously active twin (or the base model); returns it.
    pub fn rollback(&self) -> Result<Option<u64>, Error> {
        let generator = &self.generator;
        let _switch = self.switch.lock();
        let previous = self.registry.rollback("rollback requested")?;
        match previous {
            Some(version) => {
                let card = self.registry.card(version)?;
                let lora = Arc::new(self.registry.lora(version)?);
                let name = twin_name(&card);
                let built = generator.build_twin(&name, &lora).context("building the twin")?;
                generator.set_twin(Some((name, lora, Some(built))));
            }
            None => generator.set_twin(None),
        }
        Ok(previous)
    }

    /// The model answering questions now (the active twin's name), if a twin is active.
    pub fn answering(&self) -> Option<String> {
        self.generator.twin_name()
    }

    /// `twin-v<N>` or `base`.
    pub fn active_name(&self) -> String {
        match self.registry.active() {
            Ok(Some(v)) => format!("twin-v{v}"),
            _ => "base".into(),
        }
    }
}

/// The generator name of a twin: `<base model>+twin-v<N>`.
fn twin_name(card: &TwinCard) -> String {
    format!("{}+twin-v{}", card.base_model, card.version)
}

/// What a run's stages share.
struct RunContext<'a> {
    trainer: &'a LoraTrainer,
    data: &'a RunData,
    trigger: serde_json::Value,
    dataset: DatasetRef,
    base_model: String,
    base_sha256: String,
}

/// A run's examples (see [`Twin::examples`]).
#[derive(Default)]
struct RunData {
    train: Vec<SftExample>,
    test: Vec<SftExample>,
    /// The document of each held-out answer (what the gain resamples).
    documents: Vec<String>,
    /// Who wrote the held-out questions.
    evidence: Vec<String>,
    pairs_train: Vec<PreferenceExample>,
    pairs_test: Vec<PreferenceExample>,
    pair_documents: Vec<String>,
}
