//! Ranking measures over one query's ranked document ids, and the
//! uncertainty of their means over a question set.
//!
//! Graded gains as in BEIR's `pytrec_eval`: nDCG@k sums `(2^rel − 1) /
//! log2(rank + 1)` over the top `k` and divides by the same sum of the
//! ideal order. Intervals are percentile bootstraps over queries (2,000
//! resamples, seeded): a difference between two settings is measured
//! per query and resampled in pairs, so what both find equally cancels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use twinflow_schemas::rng::SeededRng;

/// Resamples of a bootstrap.
const RESAMPLES: usize = 2_000;

/// nDCG@`k` of `ranked` (document ids, best first) against `relevant`.
pub fn ndcg_at(ranked: &[&str], relevant: &BTreeMap<String, u32>, k: usize) -> f64 {
    let gain = |rel: u32| 2f64.powi(rel as i32) - 1.0;
    let discount = |i: usize| (i as f64 + 2.0).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| relevant.get(*id).map_or(0.0, |r| gain(*r) / discount(i)))
        .sum();
    let mut ideal: Vec<u32> = relevant.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(k).enumerate().map(|(i, r)| gain(*r) / discount(i)).sum();
    if idcg > 0.0 { dcg / idcg } else { 0.0 }
}

/// The share of `relevant` documents in the top `k` of `ranked`.
pub fn recall_at(ranked: &[&str], relevant: &BTreeMap<String, u32>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    ranked.iter().take(k).filter(|id| relevant.contains_key(**id)).count() as f64 / relevant.len() as f64
}

/// 1 / the rank of the first relevant document in the top `k` (0 if none).
pub fn reciprocal_rank_at(ranked: &[&str], relevant: &BTreeMap<String, u32>, k: usize) -> f64 {
    ranked.iter().take(k).position(|id| relevant.contains_key(*id)).map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// A mean and its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
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

/// The mean per-query difference `a − b` (the same queries, in the same
/// order) with its 95% paired-bootstrap interval.
pub fn paired_difference(a: &[f64], b: &[f64], seed: u64) -> Estimate {
    let differences: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    estimate(&differences, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(id, r)| ((*id).to_owned(), *r)).collect()
    }

    #[test]
    fn measures_by_hand() {
        let relevant = judged(&[("a", 1), ("b", 1)]);
        // Relevant at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3).
        let ndcg = ndcg_at(&["a", "x", "b"], &relevant, 10);
        assert!((ndcg - 1.5 / (1.0 + 1.0 / 3f64.log2())).abs() < 1e-12, "{ndcg}");
        assert_eq!(ndcg_at(&["a", "b"], &relevant, 10), 1.0);
        assert_eq!(ndcg_at(&["x", "y"], &relevant, 10), 0.0);
        assert_eq!(ndcg_at(&["x", "a"], &relevant, 1), 0.0, "cut at k");
        assert_eq!(recall_at(&["a", "x", "b"], &relevant, 2), 0.5);
        assert_eq!(reciprocal_rank_at(&["x", "y", "b"], &relevant, 10), 1.0 / 3.0);
        assert_eq!(reciprocal_rank_at(&["x", "y", "b"], &relevant, 2), 0.0);
        // Graded: the more relevant first is ideal.
        let graded = judged(&[("a", 2), ("b", 1)]);
        assert!(ndcg_at(&["b", "a"], &graded, 10) < ndcg_at(&["a", "b"], &graded, 10));
    }

    #[test]
    fn intervals_cover_the_mean_and_shrink_with_agreement() {
        let noisy: Vec<f64> = (0..200).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let e = estimate(&noisy, 1);
        assert_eq!(e.mean, 0.5);
        assert!(e.low < 0.5 && e.high > 0.5 && e.high - e.low < 0.2, "{e}");
        assert_eq!(estimate(&noisy, 1), e, "seeded");
        // b is a everywhere but one query: the paired difference is tiny and not above zero.
        let a: Vec<f64> = noisy.clone();
        let mut b = noisy.clone();
        b[0] = 0.0;
        let d = paired_difference(&a, &b, 2);
        assert!((d.mean - 1.0 / 200.0).abs() < 1e-12, "{d}");
        assert!(!d.above_zero(), "one query in 200 is within the noise: {d}");
        let better: Vec<f64> = noisy.iter().map(|v| v + 0.1).collect();
        assert!(paired_difference(&better, &noisy, 3).above_zero());
    }
}
