//! The LLM twin: LoRA fine-tunes of the local generator on the instruct
//! dataset, evaluated on held-out answers, registered, and switched in for
//! answering without downtime.
//!
//! ```text
//!  Twin::start ◀── POST /v1/twin/train, twinflow twin train, drift ([twin] on_drift)
//!    0. questions: the base generator writes questions for `[training] questions_per_run` extracts
//!    1. the next dataset version; its train/test splits (split by document)
//!    2. examples: chat template(user: instruction) ++ the author's text ++ end of turn
//!    3. LoRA on Q/K/V/O of every layer, fresh from the base model (burn autodiff, Adam)
//!    4. held-out nll per answer token under the test split's LLM-written questions (never templates):
//!       base, active twin (parent), candidate; the parent − candidate gain per answer, bootstrapped
//!    5. register (lora.safetensors, card); promote only if the gain's 95% interval is above zero:
//!       build the merged model first, then swap it in (requests in flight finish on the old one)
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use twinflow_models::{
    DatasetRef, LoraTarget, LoraTrainer, LoraTraining, LoraWeights, Nll, Registry, TwinCard, TwinEvaluation, cpu_device,
};
use twinflow_schemas::Split;
use twinflow_schemas::config::{Config, TwinConfig};
use twinflow_schemas::evaluation::{EvaluationRow, EvaluationRun};
use twinflow_schemas::stats::clustered_gain;
use twinflow_sinks::Store;

use super::Error;
use super::adapter::NO_EVIDENCE;
use super::datasets::{Datasets, is_evidence};
use super::job::{Job, JobStatus, RunOutcome, even_sample};
use super::{question_phase, record_evaluation};
use crate::inference::generator::LazyGenerator;
use crate::{Context, now_ms};

/// Examples per forward pass when scoring.
const SCORE_BATCH: usize = 4;

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

    /// The job's status.
    pub fn status(&self) -> TwinStatus {
        self.job.status()
    }

    /// True while a run is in progress.
    pub fn is_running(&self) -> bool {
        self.job.is_running()
    }

    /// The training configuration of a run.
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
        })
    }

    /// Starts a run in a background thread; `false` when one is running.
    pub fn start(self: &Arc<Self>, trigger: serde_json::Value) -> Result<bool, Error> {
        let twin = Arc::clone(self);
        self.job.start(trigger, Arc::new(move |trigger| twin.run(trigger)))
    }

    /// One whole run, synchronously.
    pub fn run(&self, trigger: serde_json::Value) -> Result<TwinOutcome, Error> {
        let (store, generator) = (self.store.as_ref(), self.generator.as_ref());
        let started = Instant::now();
        let training = self.training()?;
        let (gguf, _) = generator.local_gguf().map_err(|e| Error::GeneratorUnavailable(crate::error_chain(&e)))?;
        question_phase(&self.job, &self.datasets, store, generator, self.questions_per_run);
        self.job.phase("snapshot");
        let dataset = self.datasets.snapshot(store).context("the dataset snapshot failed")?;
        let samples = twinflow_sinks::datasets::read_instruct_version(store.data_dir(), dataset.version)
            .context("reading the dataset version")?;

        self.job.phase("load");
        let trainer = LoraTrainer::load(&gguf, training.max_tokens, &cpu_device())
            .with_context(|| format!("cannot load {} for fine-tuning", gguf.display()))?;
        let mut train = Vec::new();
        let mut test = Vec::new();
        let mut evidence = BTreeSet::new();
        for sample in &samples {
            // Templated instructions train the twin; only LLM-written questions about held-out documents judge it.
            if sample.split != Split::Train && !is_evidence(sample) {
                continue;
            }
            let Some(example) = trainer.example(&sample.instruction, &sample.output)? else { continue };
            if sample.split == Split::Train {
                train.push(example);
            } else {
                evidence.insert(sample.generator.clone());
                test.push((example, sample.doc_id.clone()));
            }
        }
        let train = even_sample(train, self.config.max_examples);
        let (test, documents): (Vec<_>, Vec<String>) = even_sample(test, self.config.max_test).into_iter().unzip();
        if train.len() < training.batch_size.max(1) {
            return Err(Error::NotEnoughData(format!(
                "not enough instruct samples to fine-tune: {} train that fit {} tokens (need one batch of {})",
                train.len(),
                training.max_tokens,
                training.batch_size
            )));
        }

        self.job.phase("train");
        let (candidate, report) =
            trainer.train(&train, &training, |step, steps, loss| self.job.progress(step, steps, loss))?;

        self.job.phase("evaluate");
        let parent = self.registry.active()?;
        let base_each = trainer.nll_each(&test, None, SCORE_BATCH)?;
        let parent_each = match parent {
            Some(v) => trainer.nll_each(&test, Some(&self.registry.lora(v)?), SCORE_BATCH)?,
            None => base_each.clone(),
        };
        let candidate_each = trainer.nll_each(&test, Some(&candidate), SCORE_BATCH)?;
        drop(trainer);
        // The pooled nll's difference (token-weighted), resampled by document; judged only on enough answers.
        let means = |each: &[Nll]| each.iter().map(|n| n.mean).collect::<Vec<f64>>();
        let tokens: Vec<f64> = candidate_each.iter().map(|n| n.tokens as f64).collect();
        let groups: Vec<&str> = documents.iter().map(String::as_str).collect();
        let gain = (test.len() >= self.min_questions.max(1))
            .then(|| clustered_gain(&means(&parent_each), &means(&candidate_each), &tokens, &groups, self.config.seed))
            .flatten();
        let (base, parent_nll, candidate_nll) =
            (Nll::pooled(&base_each), Nll::pooled(&parent_each), Nll::pooled(&candidate_each));
        let evaluation = TwinEvaluation {
            base,
            parent: parent_nll,
            candidate: candidate_nll,
            evidence: evidence.into_iter().collect(),
            gain,
        };
        let promotable = gain.is_some_and(|g| g.above_zero());
        let decision = match gain {
            None if !test.is_empty() => format!(
                "kept the active twin: {} held-out answers under LLM-written questions are fewer than the {} \
                 a judgement needs ([training] min_questions)",
                test.len(),
                self.min_questions
            ),
            None => NO_EVIDENCE.replace("active model", "active twin"),
            Some(gain) => format!(
                "{}: held-out nll {:.4} → {:.4} (perplexity {:.2} → {:.2}) on {} answers, {} tokens, \
                 under LLM-written questions; the gain per token {gain} (95% interval by document) {}",
                if promotable { "promoted" } else { "kept the active twin" },
                parent_nll.mean,
                candidate_nll.mean,
                parent_nll.perplexity(),
                candidate_nll.perplexity(),
                test.len(),
                candidate_nll.tokens,
                if promotable { "is above zero" } else { "is not beyond the noise" },
            ),
        };

        self.job.phase("register");
        let dataset = DatasetRef {
            name: "instruct".into(),
            version: dataset.version,
            epoch: dataset.source_epoch,
            content_hash: dataset.content_hash,
            train_pairs: train.len(),
            test_pairs: test.len(),
        };
        let card = TwinCard {
            version: 0,
            kind: "llm-lora".into(),
            base_model: gguf.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
            base_sha256: twinflow_models::fetch::sha256_file(&gguf)?,
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
        let card = self.registry.register_lora(card, &candidate, &[])?;
        if let Some(gain) = gain {
            let name = |v: Option<u64>| v.map_or_else(|| "base".to_owned(), |v| format!("twin-v{v}"));
            let n = test.len() as u64;
            let mut measured = vec![(name(None), base), (name(Some(card.version)), candidate_nll)];
            if parent.is_some() {
                measured.push((name(parent), parent_nll));
            }
            let set = format!("instruct-v{}", dataset.version);
            let run = EvaluationRun::new("twin-run", now_ms(), &set, dataset.epoch, dataset.version);
            let mut rows: Vec<EvaluationRow> = measured
                .into_iter()
                .map(|(model, nll)| EvaluationRow::point(&run, &model, "per answer token", "nll", nll.mean, n))
                .collect();
            let over = format!("nll over {}", name(parent));
            rows.push(EvaluationRow::estimate(&run, &name(Some(card.version)), &over, "gain", gain, n));
            record_evaluation(store.data_dir(), &rows);
        }
        let mut promoted = false;
        if promotable {
            self.job.phase("switch");
            let _switch = self.switch.lock();
            if self.registry.active()? == parent {
                self.activate_locked(generator, card.version, Some(candidate), &decision)?;
                promoted = true;
            } else {
                tracing::warn!(version = card.version, "the active twin changed during the run: not promoted");
            }
        }
        Ok(TwinOutcome {
            version: card.version,
            promoted,
            decision,
            evaluation,
            dataset,
            seconds: started.elapsed().as_secs_f64(),
            switched_at_epoch: None,
        })
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
