//! Ranking measures over one query's ranked document ids, and the
//! uncertainty of their means over a question set.
//!
//! Graded gains as in BEIR's `pytrec_eval`: nDCG@k sums `(2^rel − 1) /
//! log2(rank + 1)` over the top `k` and divides by the same sum of the
//! ideal order. Intervals are percentile bootstraps over queries
//! (`twinflow_schemas::stats`, shared with the training runs' promotion).

use std::collections::BTreeMap;

pub use twinflow_schemas::stats::{Estimate, estimate, paired_difference};

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
}
