//! The model registry's records: the cards of embedding adapters
//! ([`ModelCard`]), of LoRA fine-tunes of the generator ([`TwinCard`]) and
//! of hybrid-search fusions ([`RetrievalCard`]),
//! the dataset version each was trained on, its held-out evaluation, the
//! training settings and what the run did, and the registry's events.
//! Plain data: `models` trains, scores and stores them, the API lists them.
//!
//! ```text
//!  ModelCard / TwinCard ─ dataset: DatasetRef ─ training: AdapterTraining / LoraTraining
//!                       ─ report: TrainingReport / LoraReport ─ evaluation: Evaluation / TwinEvaluation
//!  RetrievalCard: fusion weights ─ dataset: the question set ─ gain over the active setting
//!  RegistryEvent: register, promote, rollback
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stats::Estimate;

/// The dataset version a model was trained on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetRef {
    pub name: String,
    pub version: u64,
    /// The committed epoch the dataset reflects.
    pub epoch: u64,
    pub content_hash: String,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

/// Held-out evaluation of a candidate against the base model and the
/// model it would replace, on the same test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evaluation {
    /// k of recall@k.
    pub k: usize,
    /// Test queries evaluated.
    pub queries: usize,
    /// Chunks searched (the whole live corpus at the dataset's epoch).
    pub corpus: usize,
    /// recall@k of the base model (no adapter).
    pub base: f64,
    /// recall@k of the active model when training started (the base model if none).
    pub parent: f64,
    /// recall@k of the candidate.
    pub candidate: f64,
    /// Who wrote the questions the recalls were measured on: the generators of
    /// the held-out (test-split) samples judged, e.g. `llm:SmolLM2-135M-Instruct@p1`.
    /// Templated instructions (`offline-v1`) train an adapter but never judge one.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// recall@k of the candidate minus the parent's, with its 95% interval
    /// from resampling the questions' documents; `None` when too few
    /// questions could judge it. Promotion needs the whole interval above zero.
    #[serde(default)]
    pub gain: Option<Estimate>,
}

/// Everything known about one model version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelCard {
    pub version: u64,
    /// `embedding-adapter`.
    pub kind: String,
    /// The frozen encoder it adapts.
    pub base_model: String,
    pub dim: usize,
    pub created_at_ms: i64,
    /// The version active when it was trained (`None`: the base model).
    pub parent: Option<u64>,
    pub dataset: DatasetRef,
    /// Why it was trained: the drift trigger, or `manual`. Free-form: the
    /// trigger as its source described it (`"manual"`, `{"drift": …}`).
    pub trigger: serde_json::Value,
    pub training: AdapterTraining,
    pub report: TrainingReport,
    pub evaluation: Evaluation,
    /// Whether evaluation allowed promotion, and why.
    pub promotable: bool,
    pub decision: String,
}

/// Held-out scores of a twin: mean negative log-likelihood per answer token
/// of the test split's answers (the author's own text) under each model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TwinEvaluation {
    pub base: Nll,
    /// The twin active when training started (the base model if none).
    pub parent: Nll,
    pub candidate: Nll,
    /// Who wrote the held-out questions the answers were scored under (as in
    /// [`Evaluation::evidence`]: never the templates).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// The parent's nll per answer token minus the candidate's, over every
    /// held-out answer token (positive: the candidate predicts the author's
    /// text better), with its 95% interval from resampling documents;
    /// promotion needs it above zero.
    #[serde(default)]
    pub gain: Option<Estimate>,
    /// A preference stage's held-out pairs (DPO): promotion needs their
    /// margin gain above zero and `gain` not below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<PreferenceEvaluation>,
}

/// Held-out preference pairs (an LLM's question about a held-out document,
/// the author's text chosen, the model's answer rejected) under a DPO
/// stage's parent (its reference) and candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PreferenceEvaluation {
    pub pairs: usize,
    pub beta: f64,
    /// Share of pairs whose chosen answer is likelier per token than the rejected one.
    pub parent_accuracy: f64,
    pub candidate_accuracy: f64,
    /// Share of pairs whose implicit reward β·(log π − log π_ref) is higher for the chosen answer.
    pub reward_accuracy: f64,
    /// Mean chosen − rejected implicit reward.
    pub reward_margin: f64,
    /// The candidate's log π(chosen) − log π(rejected) minus the parent's,
    /// with its 95% interval from resampling documents; `None` when fewer
    /// pairs than a judgement needs.
    pub gain: Option<Estimate>,
}

/// Everything known about one LoRA fine-tune of the generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TwinCard {
    pub version: u64,
    /// `llm-lora`.
    pub kind: String,
    /// The GGUF model it fine-tunes (file name and sha256).
    pub base_model: String,
    pub base_sha256: String,
    pub created_at_ms: i64,
    pub parent: Option<u64>,
    pub dataset: DatasetRef,
    /// Why it was trained (free-form, as [`ModelCard::trigger`]).
    pub trigger: serde_json::Value,
    pub training: LoraTraining,
    pub report: LoraReport,
    pub evaluation: TwinEvaluation,
    pub promotable: bool,
    pub decision: String,
}

/// One change of the active version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryEvent {
    pub at_ms: i64,
    /// `register`, `promote` or `rollback`.
    pub action: String,
    pub version: Option<u64>,
    pub reason: String,
}

/// How to train an adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AdapterTraining {
    /// Passes over the pairs.
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Softmax temperature.
    pub temperature: f32,
    /// Weight of `‖W − A‖²`, A the anchor.
    pub identity_weight: f32,
    /// The anchor A of the regulariser: the adapter training starts from
    /// (continual learning: stay near the model being replaced) rather than I.
    #[serde(default)]
    pub anchor_to_init: bool,
    /// Seed of the batch order.
    pub seed: u64,
}

impl Default for AdapterTraining {
    fn default() -> Self {
        Self {
            epochs: 8,
            batch_size: 64,
            learning_rate: 2e-3,
            temperature: 0.05,
            identity_weight: 0.1,
            anchor_to_init: false,
            seed: 7,
        }
    }
}

/// What an adapter's training run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainingReport {
    pub pairs: usize,
    pub steps: usize,
    /// Mean loss of each epoch.
    pub epoch_losses: Vec<f32>,
    pub seconds: f64,
    /// `‖W − I‖_F` of the result.
    pub distance_from_identity: f32,
}

/// An attention projection LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O];

    /// `q`, `k`, `v` or `o`: the field of the burn attention module.
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
        }
    }
}

/// How to fine-tune.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct LoraTraining {
    /// Rank r of each adapter.
    pub rank: usize,
    /// α: the adapter's update is scaled by α / r.
    pub alpha: f64,
    pub targets: Vec<LoraTarget>,
    /// Passes over the training examples.
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Longest example in tokens (prompt and answer; longer answers are cut).
    pub max_tokens: usize,
    /// Seed of the batch order and of A's initialisation.
    pub seed: u64,
    /// The technique: `sft` (the answers' likelihood) or `dpo` (preference pairs).
    pub technique: String,
    /// DPO's β (how far the policy may move from its reference per unit of preference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Held-out examples are scored every this many steps, and after every
    /// epoch (0: after every epoch only).
    pub eval_every: usize,
}

impl Default for LoraTraining {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            targets: LoraTarget::ALL.to_vec(),
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-3,
            max_tokens: 192,
            seed: 7,
            technique: "sft".into(),
            beta: None,
            eval_every: 0,
        }
    }
}

/// What a fine-tuning run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LoraReport {
    pub examples: usize,
    /// Answer tokens learned per epoch.
    pub answer_tokens: usize,
    pub steps: usize,
    /// Mean loss of each epoch (SFT: nll per answer token; DPO: the preference loss per pair).
    pub epoch_losses: Vec<f32>,
    /// Preference techniques: each epoch's training reward accuracy and mean reward margin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epoch_rewards: Vec<[f32; 2]>,
    /// The steps after which the held-out examples were scored: every
    /// `eval_every` steps and at the end of each epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_steps: Vec<usize>,
    /// The held-out examples' mean loss at each of `held_out_steps`, on the
    /// model being trained: the learning curve on data it never trains on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_losses: Vec<f32>,
    /// Preference techniques: the held-out reward accuracy and mean margin at each of `held_out_steps`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_rewards: Vec<[f32; 2]>,
    pub trainable_parameters: usize,
    pub seconds: f64,
}

/// Mean negative log-likelihood of the answer tokens of a set of examples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Nll {
    pub examples: usize,
    pub tokens: usize,
    /// Per token, in nats.
    pub mean: f64,
}

impl Nll {
    /// `e^nll`.
    pub fn perplexity(&self) -> f64 {
        self.mean.exp()
    }

    /// The nll per token of all of `parts` together (each weighted by its tokens).
    pub fn pooled(parts: &[Nll]) -> Nll {
        let tokens: usize = parts.iter().map(|n| n.tokens).sum();
        let sum: f64 = parts.iter().map(|n| n.mean * n.tokens as f64).sum();
        let examples = parts.iter().map(|n| n.examples).sum();
        Nll { examples, tokens, mean: if tokens == 0 { 0.0 } else { sum / tokens as f64 } }
    }
}

/// One registered retrieval setting and the evidence it was judged on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetrievalCard {
    pub version: u64,
    pub created_at_ms: i64,
    pub vector_weight: f32,
    pub bm25_weight: f32,
    /// 0 when absent (settings registered before leads counted).
    #[serde(default)]
    pub lead_weight: f32,
    pub rrf_k: f32,
    /// The held-out queries it was judged on (the dev half chose it).
    pub test_queries: usize,
    pub dev_queries: usize,
    /// nDCG@10 on the held-out queries: this setting's, and the one active when it was judged.
    pub ndcg_at_10: Estimate,
    pub active_ndcg_at_10: Estimate,
    /// This setting's nDCG@10 minus the active one's, per held-out query (95% interval).
    pub gain: Estimate,
    /// The version active when it was judged (`None`: `[search]`'s weights).
    pub parent: Option<u64>,
    pub promoted: bool,
    pub decision: String,
    /// The question set (name) and the index epoch it was measured at.
    pub dataset: DatasetRef,
}
