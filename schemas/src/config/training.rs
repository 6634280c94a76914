//! `[training]`: retraining the embedding adapter, and its model registry.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Retraining (`[training]`): the embedding adapter and the model registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Retrain in the background of `twinflow up` when drift triggers.
    pub on_drift: bool,
    /// Where model versions are kept (default: `<data_dir>/_models`).
    pub registry: Option<PathBuf>,
    /// Versions kept after each new one: the newest this many (0: all), plus
    /// `pinned_versions`, the active one and those a rollback returns to.
    pub keep_versions: usize,
    /// Versions never removed.
    pub pinned_versions: Vec<u64>,
    /// Passes over the training pairs.
    pub epochs: usize,
    /// Pairs per step (each pair's chunk is a negative for the others).
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Softmax temperature of the contrastive loss.
    pub temperature: f32,
    /// Weight of `‖W − A‖²` in the loss: keeps the adapter near its anchor A.
    pub identity_weight: f32,
    /// The anchor A: the active adapter a run starts from (true), or the base model I (false).
    pub anchor_to_parent: bool,
    /// Recall@k reported and compared for promotion.
    pub recall_k: usize,
    /// Extracts the generator writes questions for at the start of each run
    /// (adapter and twin), held-out documents first: those questions are the
    /// only evidence a run is judged on. 0: only what `twinflow datasets
    /// generate` wrote.
    pub questions_per_run: usize,
    /// Held-out questions (adapter) or answers (twin) a run needs before its
    /// gain is judged at all; with fewer it keeps the active model.
    pub min_questions: usize,
    /// Largest number of training pairs (an even sample of the train split); 0 = all.
    pub max_pairs: usize,
    /// Seed of shuffling and initialisation.
    pub seed: u64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            on_drift: true,
            registry: None,
            keep_versions: 20,
            pinned_versions: Vec::new(),
            epochs: 8,
            batch_size: 64,
            learning_rate: 2e-3,
            temperature: 0.05,
            identity_weight: 0.1,
            anchor_to_parent: true,
            recall_k: 10,
            questions_per_run: 32,
            min_questions: 30,
            max_pairs: 20_000,
            seed: 7,
        }
    }
}
