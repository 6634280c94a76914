//! The stages of a twin's run: its examples from the dataset version, the
//! SFT and DPO fine-tunes, and the held-out judgement of each against what it
//! would replace (nll of the author's answers, chosen-over-rejected pairs).

use std::collections::BTreeSet;

use twinflow_models::{
    Dpo, LoraTrainer, LoraWeights, Nll, PreferenceExample, Rewards, Sft, SftExample, Technique, TwinEvaluation,
};
use twinflow_schemas::models::PreferenceEvaluation;
use twinflow_schemas::stats::{MIN_DOCUMENTS, clustered_gain};
use twinflow_schemas::{InstructRow, Split};
use twinflow_sinks::datasets::PreferenceRow;

use super::{RunContext, RunData, Twin, TwinOutcome};
use crate::training::Error;
use crate::training::adapter::NO_EVIDENCE;
use crate::training::datasets::{is_evidence, is_evidence_preference};
use crate::training::job::even_sample;

/// Examples per forward pass when scoring.
const SCORE_BATCH: usize = 4;

impl Twin {
    /// The run's examples: SFT pairs of the train split; held-out answers
    /// and preference pairs under LLM-written questions about test documents.
    pub(super) fn examples(
        &self,
        trainer: &LoraTrainer,
        samples: &[InstructRow],
        preference: &[PreferenceRow],
    ) -> Result<RunData, Error> {
        let mut data = RunData::default();
        let mut evidence = BTreeSet::new();
        let mut test = Vec::new();
        for sample in samples {
            // Templated instructions train the twin; only LLM-written questions about held-out documents judge it.
            if sample.split != Split::Train && !is_evidence(sample) {
                continue;
            }
            let Some(example) = trainer.example(&sample.instruction, &sample.output)? else { continue };
            if sample.split == Split::Train {
                data.train.push(example);
            } else {
                evidence.insert(sample.generator.clone());
                test.push((example, sample.doc_id.clone()));
            }
        }
        let mut pairs_test = Vec::new();
        for row in preference {
            let held_out = is_evidence_preference(row);
            if !held_out && row.split != Split::Train.as_str() {
                continue;
            }
            let pair = PreferenceExample::from_chat(
                trainer.tokenizer(),
                &row.prompt,
                &row.chosen,
                &row.rejected,
                trainer.max_tokens(),
            )?;
            let Some(pair) = pair else { continue };
            if held_out {
                pairs_test.push((pair, row.doc_id.clone()));
            } else {
                data.pairs_train.push(pair);
            }
        }
        data.train = even_sample(std::mem::take(&mut data.train), self.config.max_examples);
        data.pairs_train = even_sample(std::mem::take(&mut data.pairs_train), self.config.max_examples);
        (data.test, data.documents) = even_sample(test, self.config.max_test).into_iter().unzip();
        (data.pairs_test, data.pair_documents) = even_sample(pairs_test, self.config.max_test).into_iter().unzip();
        data.evidence = evidence.into_iter().collect();
        Ok(data)
    }

    /// Held-out nll of the base model, `parent` and `candidate`, and the
    /// parent − candidate gain per token (resampled by document), judged
    /// only on enough answers.
    pub(super) fn nll_evaluation(
        &self,
        run: &RunContext<'_>,
        parent: Option<&LoraWeights>,
        candidate: &LoraWeights,
    ) -> Result<TwinEvaluation, Error> {
        let (trainer, test) = (run.trainer, &run.data.test);
        let base_each = trainer.nll_each(test, None, SCORE_BATCH)?;
        let parent_each = match parent {
            Some(lora) => trainer.nll_each(test, Some(lora), SCORE_BATCH)?,
            None => base_each.clone(),
        };
        let candidate_each = trainer.nll_each(test, Some(candidate), SCORE_BATCH)?;
        let means = |each: &[Nll]| each.iter().map(|n| n.mean).collect::<Vec<f64>>();
        let tokens: Vec<f64> = candidate_each.iter().map(|n| n.tokens as f64).collect();
        let groups: Vec<&str> = run.data.documents.iter().map(String::as_str).collect();
        let gain = (test.len() >= self.min_questions.max(1))
            .then(|| clustered_gain(&means(&parent_each), &means(&candidate_each), &tokens, &groups, self.config.seed))
            .flatten();
        Ok(TwinEvaluation {
            base: Nll::pooled(&base_each),
            parent: Nll::pooled(&parent_each),
            candidate: Nll::pooled(&candidate_each),
            evidence: run.data.evidence.clone(),
            gain,
            preference: None,
        })
    }

    /// SFT from the base model on the train split; judged against the active twin.
    pub(super) fn sft_stage(&self, run: &RunContext<'_>) -> Result<(TwinOutcome, LoraWeights), Error> {
        let training = self.training()?;
        let train = &run.data.train;
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
            run.trainer.train_with(&Sft, train.clone(), &run.data.test, &training, None, |step, steps, loss| {
                self.job.progress(step, steps, loss)
            })?;

        self.job.phase("evaluate");
        let parent = self.registry.active()?;
        let parent_lora = parent.map(|v| self.registry.lora(v)).transpose()?;
        let evaluation = self.nll_evaluation(run, parent_lora.as_ref(), &candidate)?;
        let promotable = evaluation.gain.is_some_and(|g| g.above_zero());
        let documents = distinct(&run.data.documents);
        let decision = nll_decision(&evaluation, run.data.test.len(), documents, self.min_questions, promotable);
        let outcome =
            self.register(run, "llm-lora", parent, training, report, evaluation, &candidate, promotable, decision)?;
        Ok((outcome, candidate))
    }

    /// DPO on the train split's preference pairs, on top of `start` (the
    /// version `parent`, `None`: the base model), which is also its
    /// reference and what it is judged against.
    pub(super) fn dpo_stage(
        &self,
        run: &RunContext<'_>,
        parent: Option<u64>,
        start: Option<LoraWeights>,
    ) -> Result<TwinOutcome, Error> {
        let training = self.dpo_training()?;
        let dpo = Dpo { beta: self.config.beta };
        let pairs = &run.data.pairs_train;
        if pairs.len() < training.batch_size.max(1) {
            return Err(Error::NotEnoughData(format!(
                "{} preference pairs in the train split fit {} tokens (need one batch of {}); \
                 LLM-written questions and the model's answers make them (`twinflow datasets generate`)",
                pairs.len(),
                training.max_tokens,
                training.batch_size
            )));
        }
        self.job.phase("train dpo");
        let (candidate, report) = run.trainer.train_with(
            &dpo,
            pairs.clone(),
            &run.data.pairs_test,
            &training,
            start.as_ref(),
            |step, steps, loss| self.job.progress(step, steps, loss),
        )?;

        self.job.phase("evaluate dpo");
        let mut evaluation = self.nll_evaluation(run, start.as_ref(), &candidate)?;
        let preference = self.preference_evaluation(run, &dpo, start.as_ref(), &candidate)?;
        let nll_holds = evaluation.gain.is_some_and(|g| g.high >= 0.0);
        let preferred = preference.gain.is_some_and(|g| g.above_zero());
        let promotable = nll_holds && preferred;
        let decision = match (preference.gain, evaluation.gain) {
            (None, _) | (_, None) => format!(
                "kept the active twin: {} held-out preference pairs about {} documents and {} held-out answers \
                 about {} under LLM-written questions; a judgement needs {} of each ([training] min_questions), \
                 from at least {MIN_DOCUMENTS} documents",
                preference.pairs,
                distinct(&run.data.pair_documents),
                run.data.test.len(),
                distinct(&run.data.documents),
                self.min_questions
            ),
            (Some(margin), Some(nll)) => format!(
                "{}: on {} held-out pairs the chosen answer's log-likelihood over the rejected one rose by {margin} \
                 (95% interval by document; reward accuracy {:.2}, per-token preference {:.2} → {:.2}); \
                 held-out nll {:.4} → {:.4}, gain {nll} ({})",
                if promotable { "promoted" } else { "kept the active twin" },
                preference.pairs,
                preference.reward_accuracy,
                preference.parent_accuracy,
                preference.candidate_accuracy,
                evaluation.parent.mean,
                evaluation.candidate.mean,
                if nll_holds { "not worse beyond the noise" } else { "worse beyond the noise" },
            ),
        };
        evaluation.preference = Some(preference);
        self.register(run, "llm-lora-dpo", parent, training, report, evaluation, &candidate, promotable, decision)
    }

    /// Held-out preference pairs under the stage's reference (`start`) and its candidate.
    pub(super) fn preference_evaluation(
        &self,
        run: &RunContext<'_>,
        dpo: &Dpo,
        start: Option<&LoraWeights>,
        candidate: &LoraWeights,
    ) -> Result<PreferenceEvaluation, Error> {
        let pairs = dpo.prepare(run.trainer, start, run.data.pairs_test.clone())?;
        let (chosen, rejected): (Vec<SftExample>, Vec<SftExample>) =
            pairs.iter().map(|p| (p.chosen.clone(), p.rejected.clone())).unzip();
        // Whether the chosen answer is likelier per token than the rejected one.
        let accuracy = |lora: Option<&LoraWeights>| -> Result<f64, Error> {
            let c = run.trainer.nll_each(&chosen, lora, SCORE_BATCH)?;
            let r = run.trainer.nll_each(&rejected, lora, SCORE_BATCH)?;
            Ok(c.iter().zip(&r).filter(|(c, r)| c.mean < r.mean).count() as f64 / pairs.len().max(1) as f64)
        };
        let margins = dpo.margins(run.trainer, &pairs, Some(candidate))?;
        let rewards = Rewards::of_margins(&margins);
        // The reference is the parent: the candidate's reward margin over β is its gain over the parent.
        let gains: Vec<f64> = margins.iter().map(|m| m / dpo.beta).collect();
        let groups: Vec<&str> = run.data.pair_documents.iter().map(String::as_str).collect();
        let gain = (pairs.len() >= self.min_questions.max(1))
            .then(|| {
                clustered_gain(&gains, &vec![0.0; gains.len()], &vec![1.0; gains.len()], &groups, self.config.seed)
            })
            .flatten();
        Ok(PreferenceEvaluation {
            pairs: pairs.len(),
            beta: dpo.beta,
            parent_accuracy: accuracy(start)?,
            candidate_accuracy: accuracy(Some(candidate))?,
            reward_accuracy: rewards.accuracy,
            reward_margin: rewards.margin,
            gain,
        })
    }
}

/// The decision of a stage judged by held-out nll alone (SFT).
fn nll_decision(
    evaluation: &TwinEvaluation,
    answers: usize,
    documents: usize,
    min_questions: usize,
    promotable: bool,
) -> String {
    let (parent, candidate) = (evaluation.parent, evaluation.candidate);
    match evaluation.gain {
        None if answers > 0 => format!(
            "kept the active twin: {answers} held-out answers about {documents} documents under LLM-written \
             questions; a judgement needs {min_questions} ([training] min_questions) from at least \
             {MIN_DOCUMENTS} documents"
        ),
        None => NO_EVIDENCE.replace("active model", "active twin"),
        Some(gain) => format!(
            "{}: held-out nll {:.4} → {:.4} (perplexity {:.2} → {:.2}) on {answers} answers, {} tokens, \
             under LLM-written questions; the gain per token {gain} (95% interval by document) {}",
            if promotable { "promoted" } else { "kept the active twin" },
            parent.mean,
            candidate.mean,
            parent.perplexity(),
            candidate.perplexity(),
            candidate.tokens,
            if promotable { "is above zero" } else { "is not beyond the noise" },
        ),
    }
}

/// How many different documents `documents` names.
fn distinct(documents: &[String]) -> usize {
    documents.iter().collect::<BTreeSet<_>>().len()
}
