//! Direct preference optimisation (Rafailov et al., 2023) on (prompt,
//! chosen, rejected) triples — chosen is the author's text, rejected the
//! model's own answer:
//!
//! ```text
//!  loss = −log σ(β·[(log π(chosen) − log π_ref(chosen)) − (log π(rejected) − log π_ref(rejected))])
//! ```
//!
//! π is the model being trained (the frozen start — the SFT'd model — with
//! fresh LoRA adapters), π_ref the start itself: its log-probabilities of
//! every answer are computed once, before training ([`Technique::prepare`]),
//! and kept with the example. `log π(y)` sums the answer tokens' log-probabilities.
//! The bracket times β is each pair's implicit reward margin; the share of
//! pairs where it is positive is the reward accuracy.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Tensor, TensorData};

use super::technique::{BatchLoss, Rewards, Technique};
use super::{LoraTrainer, LoraWeights, SftExample};
use crate::llama::Llama;
use crate::llama::tokenizer::ChatTokenizer;
use crate::{Error, Result};

/// Sequences per forward pass when computing reference log-probabilities.
const SCORE_BATCH: usize = 4;

/// One preference pair: the same prompt with the chosen and the rejected answer.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceExample {
    pub chosen: SftExample,
    pub rejected: SftExample,
    /// `log π_ref` of the chosen and the rejected answer, once [`Dpo`] has prepared it.
    pub reference: Option<[f64; 2]>,
}

impl PreferenceExample {
    /// `prompt` with each answer (see [`SftExample::from_chat`]); `None`
    /// when either does not fit `max_tokens`.
    pub fn from_chat(
        tokenizer: &ChatTokenizer,
        prompt: &str,
        chosen: &str,
        rejected: &str,
        max_tokens: usize,
    ) -> Result<Option<Self>> {
        let chosen = SftExample::from_chat(tokenizer, prompt, chosen, max_tokens)?;
        let rejected = SftExample::from_chat(tokenizer, prompt, rejected, max_tokens)?;
        Ok(chosen.zip(rejected).map(|(chosen, rejected)| Self { chosen, rejected, reference: None }))
    }
}

/// DPO with temperature β (how far from the reference the policy may move
/// for a given preference: larger keeps it closer).
#[derive(Clone, Copy, Debug)]
pub struct Dpo {
    pub beta: f64,
}

impl Dpo {
    /// Each pair's reward margin under `lora` merged into the base model
    /// (`None`: the base model), for pairs [prepared](Technique::prepare)
    /// from the reference.
    pub fn margins(
        &self,
        trainer: &LoraTrainer,
        pairs: &[PreferenceExample],
        lora: Option<&LoraWeights>,
    ) -> Result<Vec<f64>> {
        let (chosen, rejected) = answers(pairs);
        let chosen = trainer.log_probs_each(&chosen, lora, SCORE_BATCH)?;
        let rejected = trainer.log_probs_each(&rejected, lora, SCORE_BATCH)?;
        pairs
            .iter()
            .zip(chosen.iter().zip(&rejected))
            .map(|(pair, (c, r))| {
                let [c_ref, r_ref] = reference(pair)?;
                Ok(self.beta * ((c - c_ref) - (r - r_ref)))
            })
            .collect()
    }

    /// [`Rewards`] of `pairs` under `lora` (see [`Self::margins`]).
    pub fn rewards(
        &self,
        trainer: &LoraTrainer,
        pairs: &[PreferenceExample],
        lora: Option<&LoraWeights>,
    ) -> Result<Rewards> {
        Ok(Rewards::of_margins(&self.margins(trainer, pairs, lora)?))
    }
}

fn answers(pairs: &[PreferenceExample]) -> (Vec<SftExample>, Vec<SftExample>) {
    pairs.iter().map(|p| (p.chosen.clone(), p.rejected.clone())).unzip()
}

fn reference(pair: &PreferenceExample) -> Result<[f64; 2]> {
    pair.reference.ok_or_else(|| Error::Inference("a preference pair without reference log-probabilities".into()))
}

impl Technique for Dpo {
    type Example = PreferenceExample;

    fn name(&self) -> &'static str {
        "dpo"
    }

    fn tokens(&self, example: &PreferenceExample) -> usize {
        example.chosen.ids.len().max(example.rejected.ids.len())
    }

    fn answer_tokens(&self, example: &PreferenceExample) -> usize {
        example.chosen.answer_tokens() + example.rejected.answer_tokens()
    }

    fn prepare(
        &self,
        trainer: &LoraTrainer,
        start: Option<&LoraWeights>,
        mut examples: Vec<PreferenceExample>,
    ) -> Result<Vec<PreferenceExample>> {
        let (chosen, rejected) = answers(&examples);
        let chosen = trainer.log_probs_each(&chosen, start, SCORE_BATCH)?;
        let rejected = trainer.log_probs_each(&rejected, start, SCORE_BATCH)?;
        for (example, (c, r)) in examples.iter_mut().zip(chosen.into_iter().zip(rejected)) {
            example.reference = Some([c, r]);
        }
        Ok(examples)
    }

    fn loss(
        &self,
        trainer: &LoraTrainer,
        network: &Llama,
        batch: &[PreferenceExample],
        device: &Device,
    ) -> Result<BatchLoss> {
        let b = batch.len();
        let (chosen, rejected) = answers(batch);
        let sequences: Vec<SftExample> = chosen.into_iter().chain(rejected).collect();
        let (log_probs, rows) = trainer.answer_log_probs(network, &sequences, device)?;
        // Each sequence's sum: a [2b, n] one-hot of the token rows times the [n, 1] log-probabilities.
        let n = rows.len();
        let mut onehot = vec![0f32; 2 * b * n];
        for (j, row) in rows.iter().enumerate() {
            onehot[row * n + j] = 1.0;
        }
        let sums =
            Tensor::<2>::from_data(TensorData::new(onehot, [2 * b, n]), device).matmul(log_probs).reshape([2 * b]);
        let references =
            batch.iter().map(|pair| reference(pair).map(|[c, r]| (c - r) as f32)).collect::<Result<Vec<f32>>>()?;
        let references = Tensor::<1>::from_data(TensorData::new(references, [b]), device);
        let margins = (sums.clone().narrow(0, 0, b) - sums.narrow(0, b, b) - references).mul_scalar(self.beta as f32);
        let values = margins
            .clone()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Inference(format!("reading the reward margins: {e:?}")))?;
        let loss = log_sigmoid(margins).neg().mean();
        let margins: Vec<f64> = values.into_iter().map(f64::from).collect();
        Ok(BatchLoss { loss, weight: b, rewards: Some(Rewards::of_margins(&margins)) })
    }
}
