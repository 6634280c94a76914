//! What each chunk contributes to the drift statistics: the sums of its
//! embedding vector and of that vector's random Fourier features, and the
//! counts of its words. Statistics of many chunks are the sums of theirs, so
//! they are maintained exactly under inserts and deletes.

use std::collections::BTreeMap;

use twinflow_schemas::config::DriftConfig;
use twinflow_schemas::drift::{FIXED_SCALE, to_fixed};
use twinflow_schemas::rng::SeededRng;
use twinflow_schemas::{DriftStats, Hash128};
use unicode_segmentation::UnicodeSegmentation;

/// The random Fourier features of one configuration: the same seed gives the
/// same features on every worker and after every restart.
#[derive(Clone, Debug)]
pub struct DriftFeatures {
    dim: usize,
    /// `features × dim` frequencies, drawn from N(0, σ⁻²).
    omega: Vec<f32>,
    /// Phases, uniform in [0, 2π).
    phase: Vec<f32>,
    scale: f32,
}

impl DriftFeatures {
    /// Features for vectors of `dim` components.
    pub fn new(dim: usize, config: &DriftConfig) -> Self {
        let features = config.features.max(1);
        // Saved drift references depend on these exact draws: keep the generator and their order.
        let mut rng = SeededRng::new(config.seed);
        let sigma = f64::from(config.bandwidth.max(1e-6));
        let omega = (0..features * dim).map(|_| (normal(&mut rng) / sigma) as f32).collect();
        let phase = (0..features).map(|_| (rng.unit() * std::f64::consts::TAU) as f32).collect();
        Self { dim, omega, phase, scale: (2.0 / features as f32).sqrt() }
    }

    /// The statistics of one embedding vector. A vector of another
    /// dimension (a zero-length fallback) counts but adds nothing.
    pub fn of_vector(&self, vector: &[f32]) -> DriftStats {
        let mut stats = DriftStats { vectors: 1, ..DriftStats::default() };
        if vector.len() != self.dim {
            return stats;
        }
        stats.vector_sum = vector.iter().map(|x| to_fixed(*x)).collect();
        stats.vector_sq = to_fixed(vector.iter().map(|x| x * x).sum());
        stats.feature_sum = self
            .omega
            .chunks_exact(self.dim)
            .zip(&self.phase)
            .map(|(w, b)| {
                let dot: f32 = w.iter().zip(vector).map(|(a, x)| a * x).sum();
                to_fixed(self.scale * (dot + b).cos())
            })
            .collect();
        stats.feature_sq = stats.feature_sum.iter().map(|f| to_fixed(((*f as f64 / FIXED_SCALE).powi(2)) as f32)).sum();
        stats
    }

    /// The statistics of one chunk text: its words, lower-cased, those with
    /// at least one letter (numbers and punctuation are not vocabulary).
    pub fn of_text(text: &str) -> DriftStats {
        let mut counts: BTreeMap<u64, i64> = BTreeMap::new();
        let mut words = 0;
        for word in text.unicode_words().filter(|w| w.chars().any(char::is_alphabetic)) {
            words += 1;
            *counts.entry(word_hash(word)).or_default() += 1;
        }
        DriftStats { texts: 1, words, vocabulary: counts.into_iter().collect(), ..DriftStats::default() }
    }
}

/// SplitMix64's finaliser: a 64-bit bijection that scatters nearby inputs
/// (also the MinHash "permutations" of `text/dataset.rs`).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The vocabulary key of a word (case-folded).
pub fn word_hash(word: &str) -> u64 {
    Hash128::of(word.to_lowercase().as_bytes()).low64()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SeededRng) -> f64 {
    let u = 1.0 - rng.unit();
    let v = rng.unit();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}
