//! Drift: the sufficient statistics of a set of embedded chunks, the rows
//! of the `drift` table, and the monitor's metrics, triggers and state.
//!
//! A [`DriftStats`] sums, over a set of chunks, what the drift metrics need:
//! the vectors (for the mean), their random Fourier features (for a kernel
//! MMD estimate) and the words of the texts (for the out-of-vocabulary rate).
//! Every sum is an integer (vectors and features in fixed point), so adding
//! a chunk and later subtracting it restores the exact previous value in any
//! order: the statistics of a window stay exact under inserts and deletes.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Fixed-point scale of vector and feature sums (2^24: a unit vector's
/// components keep 7 significant digits; 2^39 rows before an i64 overflows).
pub const FIXED_SCALE: f64 = 16_777_216.0;

/// A value in fixed point.
pub fn to_fixed(x: f32) -> i64 {
    (f64::from(x) * FIXED_SCALE).round() as i64
}

/// Sums over a set of chunks. The empty set is `DriftStats::default()`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DriftStats {
    /// Embedding rows counted.
    pub vectors: i64,
    /// Σ vector, fixed point (empty until a vector is added).
    pub vector_sum: Vec<i64>,
    /// Σ random Fourier features of the vectors, fixed point.
    pub feature_sum: Vec<i64>,
    /// Σ ‖vector‖², fixed point (for the unbiased estimates: a sample's own
    /// pairs are left out of its mean's norm).
    pub vector_sq: i64,
    /// Σ ‖features‖², fixed point.
    pub feature_sq: i64,
    /// Texts counted.
    pub texts: i64,
    /// Σ words over the texts.
    pub words: i64,
    /// Occurrences per word hash, sorted by hash, no zero counts.
    pub vocabulary: Vec<(u64, i64)>,
}

impl DriftStats {
    /// True for the statistics of the empty set.
    pub fn is_empty(&self) -> bool {
        self.vectors == 0
            && self.texts == 0
            && self.words == 0
            && self.vocabulary.is_empty()
            && self.vector_sq == 0
            && self.feature_sq == 0
            && self.vector_sum.iter().all(|v| *v == 0)
            && self.feature_sum.iter().all(|v| *v == 0)
    }

    /// Adds `sign × other` (sign is +1 or −1, or a multiplicity).
    pub fn add(&mut self, other: &DriftStats, sign: i64) {
        self.vectors += sign * other.vectors;
        add_vec(&mut self.vector_sum, &other.vector_sum, sign);
        add_vec(&mut self.feature_sum, &other.feature_sum, sign);
        self.vector_sq += sign * other.vector_sq;
        self.feature_sq += sign * other.feature_sq;
        self.texts += sign * other.texts;
        self.words += sign * other.words;
        if !other.vocabulary.is_empty() {
            self.vocabulary = merge_counts(&self.vocabulary, &other.vocabulary, sign);
        }
    }

    /// `Σ vector` in floating point.
    pub fn vector_sum_f64(&self) -> Vec<f64> {
        self.vector_sum.iter().map(|s| *s as f64 / FIXED_SCALE).collect()
    }

    /// `Σ features` in floating point.
    pub fn feature_sum_f64(&self) -> Vec<f64> {
        self.feature_sum.iter().map(|s| *s as f64 / FIXED_SCALE).collect()
    }
}

fn add_vec(into: &mut Vec<i64>, other: &[i64], sign: i64) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(other) {
        *a += sign * b;
    }
}

/// `a + sign × b` for sorted (key, count) lists, dropping zero counts.
fn merge_counts(a: &[(u64, i64)], b: &[(u64, i64)], sign: i64) -> Vec<(u64, i64)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let (key, count) = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                j += 1;
                (x.0, x.1 + sign * y.1)
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                i += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                (y.0, sign * y.1)
            }
            (None, None) => break,
        };
        if count != 0 {
            out.push((key, count));
        }
    }
    out
}

/// The drift metrics, in the order the `drift` table lists them.
pub const DRIFT_METRICS: [&str; 3] = ["mean_shift", "mmd", "oov_rate"];

/// One row of the `drift` table: one metric of one window at one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftRow {
    /// The epoch the window ends at.
    pub epoch: u64,
    /// The oldest epoch whose chunks are in the window.
    pub window_start: u64,
    /// Chunks in the window.
    pub window_size: u64,
    /// What the window is compared with (`bootstrap@<epoch>` or a model version).
    pub reference: String,
    /// `mean_shift`, `mmd` or `oov_rate`.
    pub metric: String,
    pub value: f64,
    /// The metric's threshold (0 = never triggers).
    pub threshold: f64,
    /// True on the row whose crossing fired a retrain trigger.
    pub triggered: bool,
}

/// The metrics of one window against one reference (`dataflow` computes
/// them from two [`DriftStats`]), or their thresholds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftMetrics {
    pub mean_shift: f64,
    pub mmd: f64,
    pub oov_rate: f64,
}

impl DriftMetrics {
    /// `(name, value)` in the table's order.
    pub fn named(&self) -> [(&'static str, f64); 3] {
        [(DRIFT_METRICS[0], self.mean_shift), (DRIFT_METRICS[1], self.mmd), (DRIFT_METRICS[2], self.oov_rate)]
    }
}

/// A retrain request: the drift that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftTrigger {
    pub epoch: u64,
    pub at_ms: i64,
    pub reference: String,
    /// The metrics over their thresholds.
    pub crossed: Vec<String>,
    pub metrics: DriftMetrics,
    pub window_size: u64,
    /// Chunks that entered since the reference was taken.
    pub new_samples: u64,
}

/// The drift monitor's view for `/v1/status`, `/v1/drift` and `twinflow drift`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftState {
    pub enabled: bool,
    pub epoch: u64,
    pub reference: Option<String>,
    pub reference_epoch: Option<u64>,
    pub reference_size: u64,
    pub window_start: u64,
    pub window_size: u64,
    pub new_samples: u64,
    pub metrics: Option<DriftMetrics>,
    pub thresholds: DriftMetrics,
    /// False after a trigger until the metrics fall below `threshold × hysteresis`
    /// or `min_samples` more chunks have arrived.
    pub armed: bool,
    pub last_trigger: Option<DriftTrigger>,
    pub triggers: u64,
}

/// The Arrow schema of the `drift` table.
pub fn drift_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::UInt64, false),
        Field::new("window_start", DataType::UInt64, false),
        Field::new("window_size", DataType::UInt64, false),
        Field::new("reference", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("threshold", DataType::Float64, false),
        Field::new("triggered", DataType::Boolean, false),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(vector: &[f32], words: &[(u64, i64)]) -> DriftStats {
        DriftStats {
            vectors: 1,
            vector_sum: vector.iter().map(|x| to_fixed(*x)).collect(),
            feature_sum: vector.iter().map(|x| to_fixed(x.cos())).collect(),
            vector_sq: to_fixed(vector.iter().map(|x| x * x).sum()),
            feature_sq: 0,
            texts: 1,
            words: words.iter().map(|(_, c)| c).sum(),
            vocabulary: words.to_vec(),
        }
    }

    #[test]
    fn adding_then_subtracting_restores_exactly() {
        let a = stats(&[0.1, -0.7, 0.3], &[(1, 2), (5, 1)]);
        let b = stats(&[0.333, 0.2, -0.9], &[(2, 1), (5, 3)]);
        let mut total = DriftStats::default();
        total.add(&a, 1);
        total.add(&b, 1);
        assert_eq!(total.vocabulary, vec![(1, 2), (2, 1), (5, 4)]);
        total.add(&a, -1);
        assert_eq!(total, {
            let mut only_b = DriftStats::default();
            only_b.add(&b, 1);
            only_b.vector_sum.resize(3, 0);
            only_b
        });
        total.add(&b, -1);
        assert!(total.is_empty());
        assert!(total.vocabulary.is_empty());
    }

    #[test]
    fn sums_come_back_in_floating_point() {
        let mut total = DriftStats::default();
        total.add(&stats(&[1.0, 0.0], &[]), 1);
        total.add(&stats(&[0.0, 0.5], &[]), 1);
        assert_eq!(total.vectors, 2);
        assert_eq!(total.vector_sum_f64(), vec![1.0, 0.5]);
        assert!(DriftStats::default().vector_sum_f64().is_empty());
    }
}
