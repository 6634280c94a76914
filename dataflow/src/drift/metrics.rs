//! The distances between the reference and a window, computed from their
//! summed statistics alone (see the module documentation of `drift` for the
//! formulas).

use twinflow_schemas::DriftStats;
pub use twinflow_schemas::drift::DriftMetrics;
use twinflow_schemas::drift::FIXED_SCALE;

/// How [`DriftMetrics`] (a plain type of `schemas`) are computed.
pub trait DriftMetricsExt {
    /// The metrics of `window` against `reference` (`None` when either holds no vectors).
    fn between(reference: &DriftStats, window: &DriftStats) -> Option<DriftMetrics>;
}

impl DriftMetricsExt for DriftMetrics {
    /// The metrics of `window` against `reference` (`None` when either holds no vectors).
    ///
    /// Both the mean shift and the MMD use unbiased estimates of the
    /// squared norms of the means (each sample's pairs with itself left out,
    /// `(‖Σx‖² − Σ‖x‖²) / n(n−1)`): the plain estimates grow by about
    /// `1/n` for samples of `n` chunks, which for windows of a few hundred
    /// chunks is as large as the drift between eras.
    fn between(reference: &DriftStats, window: &DriftStats) -> Option<DriftMetrics> {
        if reference.vectors <= 0 || window.vectors <= 0 {
            return None;
        }
        let (nr, nw) = (reference.vectors as f64, window.vectors as f64);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        // ‖mean‖², unbiased when there are two or more samples.
        let mean_sq = |sum: &[f64], sq: i64, n: f64| {
            let plain = dot(sum, sum);
            if n >= 2.0 { (plain - sq as f64 / FIXED_SCALE) / (n * (n - 1.0)) } else { plain / (n * n) }
        };
        let (sr, sw) = (reference.vector_sum_f64(), window.vector_sum_f64());
        let cross = dot(&sr, &sw) / (nr * nw);
        let (r2, w2) = (mean_sq(&sr, reference.vector_sq, nr), mean_sq(&sw, window.vector_sq, nw));
        let mean_shift = if r2 > 0.0 && w2 > 0.0 { (1.0 - cross / (r2 * w2).sqrt()).clamp(0.0, 2.0) } else { 0.0 };
        let (fr, fw) = (reference.feature_sum_f64(), window.feature_sum_f64());
        let mmd2 = mean_sq(&fr, reference.feature_sq, nr) + mean_sq(&fw, window.feature_sq, nw)
            - 2.0 * dot(&fr, &fw) / (nr * nw);
        let mmd = mmd2.max(0.0).sqrt();
        let oov_rate = oov_rate(&reference.vocabulary, &window.vocabulary, window.words);
        Some(DriftMetrics { mean_shift, mmd, oov_rate })
    }
}

/// Share of `window`'s word occurrences whose word `reference` lacks.
pub(super) fn oov_rate(reference: &[(u64, i64)], window: &[(u64, i64)], words: i64) -> f64 {
    if words <= 0 {
        return 0.0;
    }
    let mut unseen = 0i64;
    let mut r = reference.iter().peekable();
    for (word, count) in window {
        while r.next_if(|(k, _)| k < word).is_some() {}
        let known = r.peek().is_some_and(|(k, c)| k == word && *c > 0);
        if !known {
            unseen += count;
        }
    }
    unseen as f64 / words as f64
}
