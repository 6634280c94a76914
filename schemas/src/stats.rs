//! Means with their uncertainty: percentile-bootstrap intervals over a
//! question set (2,000 resamples, seeded). A difference between two models
//! or settings is measured per question and resampled in pairs, so what
//! both get equally right or wrong cancels. Questions written about one
//! document are not independent (an extract yields three, a document
//! several extracts): [`clustered_gain`] resamples whole documents.
//! Promotion asks that the whole interval of the gain lie above zero: a
//! gain beyond the measurement noise.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// Resamples of a bootstrap.
const RESAMPLES: usize = 2_000;

/// A mean and its 95% interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// Whether the whole interval lies above zero (for a difference: a gain beyond the noise).
    pub fn above_zero(&self) -> bool {
        self.low > 0.0
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} [{:.3}, {:.3}]", self.mean, self.low, self.high)
    }
}

/// The mean of `values` with its 95% percentile-bootstrap interval.
pub fn estimate(values: &[f64], seed: u64) -> Estimate {
    if values.is_empty() {
        return Estimate { mean: 0.0, low: 0.0, high: 0.0 };
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let mut rng = SeededRng::new(seed);
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..values.len()).map(|_| values[rng.index(values.len())]).sum::<f64>() / values.len() as f64)
        .collect();
    means.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| means[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Estimate { mean, low: at(0.025), high: at(0.975) }
}

/// The mean per-question difference `a − b` (the same questions, in the
/// same order) with its 95% paired-bootstrap interval.
pub fn paired_difference(a: &[f64], b: &[f64], seed: u64) -> Estimate {
    let differences: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    estimate(&differences, seed)
}

/// Documents a clustered gain needs before it has an interval.
pub const MIN_DOCUMENTS: usize = 2;

/// The weighted mean per-question gain `Σ w·(a − b) / Σ w` (the same
/// questions, in the same order) with its 95% interval from a cluster
/// bootstrap: whole `groups` (a question's document) are resampled, so
/// correlated questions count as the one piece of evidence they are.
/// Weights make a token-weighted difference (an nll per token) exact; use 1
/// for a plain mean. `None` when the weights sum to zero, or when the
/// questions come from fewer than [`MIN_DOCUMENTS`] documents: resampling one
/// document gives an interval of zero width, which measures no noise at all.
pub fn clustered_gain(a: &[f64], b: &[f64], weights: &[f64], groups: &[&str], seed: u64) -> Option<Estimate> {
    let n = a.len().min(b.len()).min(weights.len()).min(groups.len());
    let mut clusters: std::collections::BTreeMap<&str, (f64, f64)> = std::collections::BTreeMap::new();
    for i in 0..n {
        let cluster = clusters.entry(groups[i]).or_default();
        cluster.0 += weights[i] * (a[i] - b[i]);
        cluster.1 += weights[i];
    }
    let sums: Vec<(f64, f64)> = clusters.into_values().collect();
    if sums.len() < MIN_DOCUMENTS {
        return None;
    }
    let ratio = |picked: &mut dyn Iterator<Item = (f64, f64)>| {
        let (gain, weight) = picked.fold((0.0, 0.0), |(g, w), (dg, dw)| (g + dg, w + dw));
        (weight > 0.0).then(|| gain / weight)
    };
    let mean = ratio(&mut sums.iter().copied())?;
    let mut rng = SeededRng::new(seed);
    let mut means: Vec<f64> =
        (0..RESAMPLES).filter_map(|_| ratio(&mut (0..sums.len()).map(|_| sums[rng.index(sums.len())]))).collect();
    means.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Some(Estimate { mean, low: at(0.025), high: at(0.975) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_is_no_interval() {
        let (a, b, w) = ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]);
        assert_eq!(clustered_gain(&a, &b, &w, &["d", "d", "d"], 1), None);
        let two = clustered_gain(&a, &b, &w, &["d", "d", "e"], 1).unwrap();
        assert!(two.low < two.high, "{two}");
    }

    #[test]
    fn intervals_cover_the_mean_and_shrink_with_agreement() {
        let noisy: Vec<f64> = (0..200).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let e = estimate(&noisy, 1);
        assert_eq!(e.mean, 0.5);
        assert!(e.low < 0.5 && e.high > 0.5 && e.high - e.low < 0.2, "{e}");
        assert_eq!(estimate(&noisy, 1), e, "seeded");
        // b is a everywhere but one question: the paired difference is tiny and not above zero.
        let a: Vec<f64> = noisy.clone();
        let mut b = noisy.clone();
        b[0] = 0.0;
        let d = paired_difference(&a, &b, 2);
        assert!((d.mean - 1.0 / 200.0).abs() < 1e-12, "{d}");
        assert!(!d.above_zero(), "one question in 200 is within the noise: {d}");
        let better: Vec<f64> = noisy.iter().map(|v| v + 0.1).collect();
        assert!(paired_difference(&better, &noisy, 3).above_zero());
        assert!(!estimate(&[], 4).above_zero(), "nothing measured is no gain");
    }

    #[test]
    fn clustered_gains_count_documents_not_questions() {
        // 60 questions, +1 each, but all about 2 documents of 30: as 60 independent
        // questions they look certain; as 2 documents, also certain (both gain).
        let (a, b, w) = (vec![1.0; 60], vec![0.0; 60], vec![1.0; 60]);
        let two: Vec<&str> = (0..60).map(|i| if i < 30 { "d1" } else { "d2" }).collect();
        assert!(clustered_gain(&a, &b, &w, &two, 1).unwrap().above_zero());
        // One document gains on all its 100 questions, the other loses on 60 of its 100:
        // per question +0.2, but two documents pulling apart are not evidence.
        let a: Vec<f64> = (0..200).map(|i| if i < 100 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f64> = (0..200).map(|i| if (100..160).contains(&i) { 1.0 } else { 0.0 }).collect();
        let (w, two): (Vec<f64>, Vec<&str>) = (0..200).map(|i| (1.0, if i < 100 { "d1" } else { "d2" })).unzip();
        assert!(paired_difference(&a, &b, 2).above_zero(), "as independent questions");
        let clustered = clustered_gain(&a, &b, &w, &two, 2).unwrap();
        assert!((clustered.mean - 0.2).abs() < 1e-12 && !clustered.above_zero(), "{clustered}");
        // Weights: the token-weighted difference of two nll means, exactly.
        let (a, b, tokens) = ([2.0, 4.0], [1.0, 1.0], [1.0, 3.0]);
        let g = clustered_gain(&a, &b, &tokens, &["x", "y"], 3).unwrap();
        assert!((g.mean - (1.0 * 1.0 + 3.0 * 3.0) / 4.0).abs() < 1e-12, "{g}");
        assert_eq!(clustered_gain(&[], &[], &[], &[], 4), None);
    }
}
