//! `[drift]`: drift statistics of the embedding stream and their retrain triggers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Drift of the embedding stream against the reference (the data the
/// current model was trained on), and when it triggers a retrain (`[drift]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Off: no statistics in the dataflow, no `drift` rows, no triggers.
    pub enabled: bool,
    /// The window: the newest live chunks (at least this many, whole epochs).
    pub window: usize,
    /// Chunks that must have entered since the reference before a trigger
    /// (also the size of the first, bootstrap reference).
    pub min_samples: usize,
    /// Random Fourier features of the MMD estimate.
    pub features: usize,
    /// Bandwidth σ of the Gaussian kernel of the MMD (unit vectors: ~1).
    pub bandwidth: f32,
    /// Seed of the random features (fixed: statistics stay comparable across restarts).
    pub seed: u64,
    /// `1 − cos(mean of the reference, mean of the window)` above which a retrain triggers (0: never).
    pub mean_shift: f64,
    /// Kernel MMD estimate above which a retrain triggers (0: never).
    pub mmd: f64,
    /// Share of the window's words never seen in the reference above which a retrain triggers (0: never).
    pub oov_rate: f64,
    /// After a trigger, metrics must fall below `threshold × hysteresis`, or
    /// `min_samples` more chunks must arrive, before another can fire.
    pub hysteresis: f64,
    /// Least time between two triggers.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 400,
            min_samples: 200,
            features: 256,
            bandwidth: 1.0,
            seed: 0x7769_6e66_6c6f_77,
            mean_shift: 0.03,
            mmd: 0.12,
            oov_rate: 0.10,
            hysteresis: 0.8,
            cooldown: Duration::from_secs(600),
        }
    }
}
