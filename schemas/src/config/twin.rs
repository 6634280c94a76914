//! `[twin]`: LoRA fine-tunes of the local generator (the LLM twin).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The LLM twin (`[twin]`): LoRA fine-tunes of the local generator on the
/// instruct dataset (questions → the author's own text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinConfig {
    /// Fine-tune in the background of `twinflow up` when drift triggers
    /// (minutes of CPU per run: off by default; `twinflow twin train` runs one).
    pub on_drift: bool,
    /// Where twin versions are kept (default: `<data_dir>/_models/twin`).
    pub registry: Option<PathBuf>,
    /// Versions kept after each new one: the newest this many (0: all), plus
    /// `pinned_versions`, the active one and those a rollback returns to.
    pub keep_versions: usize,
    /// Versions never removed.
    pub pinned_versions: Vec<u64>,
    /// The fine-tune's stages: `sft` (the author's answers), `dpo` (preference
    /// pairs, on top of the active twin), or `sft+dpo` (the book's way: DPO
    /// on top of the SFT stage; one registry version per stage).
    pub method: TwinMethod,
    /// DPO's β: larger keeps the policy closer to its reference.
    pub beta: f64,
    /// DPO's learning rate (the SFT stage uses `learning_rate`).
    pub dpo_learning_rate: f64,
    /// LoRA rank r of every adapted projection.
    pub rank: usize,
    /// The update is scaled by alpha / rank.
    pub alpha: f64,
    /// Adapted attention projections: any of `q`, `k`, `v`, `o`.
    pub targets: Vec<String>,
    pub epochs: usize,
    /// Examples per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Longest example (prompt and answer) in tokens; longer answers are cut.
    pub max_tokens: usize,
    /// Largest number of training examples (an even sample of the train split); 0 = all.
    pub max_examples: usize,
    /// Largest number of held-out examples scored per model.
    pub max_test: usize,
    /// The held-out examples are scored during training every this many
    /// steps (and after each epoch): the learning curve in the card (0:
    /// after each epoch only).
    pub eval_every: usize,
    pub seed: u64,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            on_drift: false,
            registry: None,
            keep_versions: 5,
            pinned_versions: Vec::new(),
            method: TwinMethod::SftDpo,
            beta: 0.1,
            dpo_learning_rate: 5e-4,
            rank: 8,
            alpha: 16.0,
            targets: ["q", "k", "v", "o"].map(String::from).to_vec(),
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-3,
            max_tokens: 192,
            max_examples: 256,
            max_test: 64,
            eval_every: 16,
            seed: 7,
        }
    }
}

/// `[twin] method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TwinMethod {
    #[serde(rename = "sft")]
    Sft,
    #[serde(rename = "dpo")]
    Dpo,
    #[serde(rename = "sft+dpo")]
    SftDpo,
}

/// One stage of a twin run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwinStage {
    Sft,
    Dpo,
}

impl TwinMethod {
    /// Its stages, in order.
    pub fn stages(self) -> &'static [TwinStage] {
        match self {
            Self::Sft => &[TwinStage::Sft],
            Self::Dpo => &[TwinStage::Dpo],
            Self::SftDpo => &[TwinStage::Sft, TwinStage::Dpo],
        }
    }
}
