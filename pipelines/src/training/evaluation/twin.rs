//! `twinflow eval twin`: how well a model writes like the author, on what
//! no version was trained on. For the base model and each twin version:
//! held-out perplexity of the author's answers under LLM-written questions
//! about held-out documents, and preference accuracy, the share of held-out
//! preference triples (question, chosen = the author's text, rejected = the
//! base model's own answer) whose chosen answer the model finds likelier per
//! token than the rejected one.

use serde::{Deserialize, Serialize};

use twinflow_models::{LoraTrainer, LoraWeights, Nll, SftExample};
use twinflow_schemas::InstructRow;
use twinflow_schemas::stats::{Estimate, estimate};
use twinflow_sinks::datasets::PreferenceRow;

use super::super::Error;
use super::super::datasets::{is_evidence, is_evidence_preference};
use super::super::job::even_sample;

/// Examples per forward pass.
const BATCH: usize = 4;
/// Seed of the bootstrap intervals.
const SEED: u64 = 0x7717;

/// One model's held-out scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwinModelReport {
    /// `base` or `twin-v<N>`.
    pub model: String,
    /// Per answer token, over every held-out answer.
    pub nll: Nll,
    pub perplexity: f64,
    /// Share of held-out triples whose chosen (author's) answer has the lower nll per token.
    pub preference_accuracy: Estimate,
}

/// What [`evaluate_twin`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TwinReport {
    pub dataset_version: u64,
    /// Held-out answers scored, and who wrote their questions.
    pub answers: usize,
    pub evidence: Vec<String>,
    /// Held-out preference triples scored.
    pub preference_pairs: usize,
    pub models: Vec<TwinModelReport>,
}

/// Scores each of `models` (a name and its LoRA; `None`: the base model) on
/// the held-out LLM-written samples of `samples` and the held-out triples of
/// `preference` whose question an LLM wrote, at most `max` of each.
pub fn evaluate_twin(
    trainer: &LoraTrainer,
    dataset_version: u64,
    samples: &[InstructRow],
    preference: &[PreferenceRow],
    models: &[(String, Option<LoraWeights>)],
    max: usize,
) -> Result<TwinReport, Error> {
    let mut answers: Vec<SftExample> = Vec::new();
    let mut evidence = std::collections::BTreeSet::new();
    for sample in samples.iter().filter(|s| is_evidence(s)) {
        if let Some(example) = trainer.example(&sample.instruction, &sample.output)? {
            evidence.insert(sample.generator.clone());
            answers.push(example);
        }
    }
    let mut pairs: Vec<(SftExample, SftExample)> = Vec::new();
    for triple in preference.iter().filter(|p| is_evidence_preference(p)) {
        let chosen = trainer.example(&triple.prompt, &triple.chosen)?;
        let rejected = trainer.example(&triple.prompt, &triple.rejected)?;
        if let (Some(chosen), Some(rejected)) = (chosen, rejected) {
            pairs.push((chosen, rejected));
        }
    }
    let answers = even_sample(answers, max);
    let pairs = even_sample(pairs, max);
    if answers.is_empty() {
        return Err(Error::NotEnoughData(format!(
            "dataset version {dataset_version} has no held-out answers under LLM-written questions: \
             `twinflow datasets generate` writes them, then `twinflow datasets snapshot`"
        )));
    }
    let (chosen, rejected): (Vec<SftExample>, Vec<SftExample>) = pairs.iter().cloned().unzip();
    let mut reports = Vec::new();
    for (model, lora) in models {
        let nll = trainer.nll(&answers, lora.as_ref(), BATCH)?;
        let chosen = trainer.nll_each(&chosen, lora.as_ref(), BATCH)?;
        let rejected = trainer.nll_each(&rejected, lora.as_ref(), BATCH)?;
        let wins: Vec<f64> = chosen.iter().zip(&rejected).map(|(c, r)| f64::from(u8::from(c.mean < r.mean))).collect();
        reports.push(TwinModelReport {
            model: model.clone(),
            nll,
            perplexity: nll.perplexity(),
            preference_accuracy: estimate(&wins, SEED),
        });
    }
    Ok(TwinReport {
        dataset_version,
        answers: answers.len(),
        evidence: evidence.into_iter().collect(),
        preference_pairs: pairs.len(),
        models: reports,
    })
}
