//! Supervised fine-tuning: the mean negative log-likelihood of the answer
//! tokens (the author's text) given the question.

use burn::tensor::Device;

use super::technique::{BatchLoss, Technique};
use super::{LoraTrainer, SftExample};
use crate::Result;
use crate::llama::Llama;

/// Supervised fine-tuning on (question, answer) examples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sft;

impl Technique for Sft {
    type Example = SftExample;

    fn name(&self) -> &'static str {
        "sft"
    }

    fn tokens(&self, example: &SftExample) -> usize {
        example.ids.len()
    }

    fn answer_tokens(&self, example: &SftExample) -> usize {
        example.answer_tokens()
    }

    fn loss(&self, trainer: &LoraTrainer, network: &Llama, batch: &[SftExample], device: &Device) -> Result<BatchLoss> {
        let (log_probs, rows) = trainer.answer_log_probs(network, batch, device)?;
        let n = rows.len();
        Ok(BatchLoss { loss: log_probs.sum().neg().div_scalar(n as f32), weight: n, rewards: None })
    }
}
