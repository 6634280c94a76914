//! What a fine-tuning technique is to the training loop: the example it
//! learns from and the loss of a batch. Everything else — loading the graph
//! on the autodiff device, LoRA on the targets, batching, Adam, progress,
//! reading the factors back — is [`LoraTrainer::train_with`]'s, shared.
//! Adding a technique (ORPO, KTO) is one file implementing this trait.

use burn::tensor::{Device, Tensor};

use super::{LoraTrainer, LoraWeights};
use crate::Result;
use crate::llama::Llama;

/// The loss of one batch, as a graph to differentiate.
#[derive(Debug)]
pub struct BatchLoss {
    /// The batch's mean loss, `[1]`.
    pub loss: Tensor<1>,
    /// What the mean is over (answer tokens, pairs): the weight of this
    /// batch in an epoch's mean loss.
    pub weight: usize,
    /// For preference techniques: the implicit rewards of the batch.
    pub rewards: Option<Rewards>,
}

/// Implicit rewards of preference pairs: `β·(log π(y) − log π_ref(y))` of
/// the chosen and the rejected answer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rewards {
    /// Share of pairs whose chosen answer has the higher reward.
    pub accuracy: f64,
    /// Mean chosen − rejected reward.
    pub margin: f64,
    pub pairs: usize,
}

impl Rewards {
    /// The rewards of pairs from their chosen − rejected differences.
    pub fn of_margins(margins: &[f64]) -> Self {
        let pairs = margins.len();
        if pairs == 0 {
            return Self::default();
        }
        Self {
            accuracy: margins.iter().filter(|m| **m > 0.0).count() as f64 / pairs as f64,
            margin: margins.iter().sum::<f64>() / pairs as f64,
            pairs,
        }
    }

    /// `parts` together, each weighted by its pairs.
    pub fn pooled(parts: &[Rewards]) -> Self {
        let pairs: usize = parts.iter().map(|r| r.pairs).sum();
        let weigh =
            |f: fn(&Rewards) -> f64| parts.iter().map(|r| f(r) * r.pairs as f64).sum::<f64>() / pairs.max(1) as f64;
        Self { accuracy: weigh(|r| r.accuracy), margin: weigh(|r| r.margin), pairs }
    }
}

/// A fine-tuning objective over LoRA adapters.
pub trait Technique {
    type Example: Clone;

    /// Its name in cards and logs (`sft`, `dpo`).
    fn name(&self) -> &'static str;

    /// The longest sequence of `example`, in tokens (longer ones are left out).
    fn tokens(&self, example: &Self::Example) -> usize;

    /// The answer tokens `example` learns from (the report's count).
    fn answer_tokens(&self, example: &Self::Example) -> usize;

    /// Called once before training on the examples it will see, with the
    /// adapter training starts from (`start`, merged into the frozen
    /// weights): what is fixed during training is computed here (DPO's
    /// reference log-probabilities).
    fn prepare(
        &self,
        _trainer: &LoraTrainer,
        _start: Option<&LoraWeights>,
        examples: Vec<Self::Example>,
    ) -> Result<Vec<Self::Example>> {
        Ok(examples)
    }

    /// The loss of `batch` on `network` (the adapted graph, on `device`).
    fn loss(
        &self,
        trainer: &LoraTrainer,
        network: &Llama,
        batch: &[Self::Example],
        device: &Device,
    ) -> Result<BatchLoss>;
}
