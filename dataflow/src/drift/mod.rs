//! Drift of the embedding stream: the features each chunk contributes
//! ([`DriftFeatures`]), and the monitor that keeps windows of them, compares
//! them with a reference and decides when to retrain ([`DriftMonitor`]).
//!
//! ```text
//!  worker: distinct (chunk, text) ─┐  drift operator: per chunk, + or − its features into the
//!          embeddings ─────────────┴▶ bucket of the epoch it entered ─▶ EpochUpdates::drift
//!  committer: DriftMonitor::observe(epoch, drift deltas)
//!     buckets (epoch → DriftStats) ─▶ window = newest buckets holding ≥ `window` chunks
//!     reference (frozen DriftStats) ─┴▶ mean_shift, mmd, oov_rate ─▶ drift rows, trigger?
//! ```
//!
//! Metrics of a window W against the reference R:
//! - `mean_shift` = 1 − cos(mean(R), mean(W));
//! - `mmd` = ‖mean φ(R) − mean φ(W)‖, φ the random Fourier features of a
//!   Gaussian kernel of bandwidth σ (Rahimi & Recht): an estimate of the
//!   kernel maximum mean discrepancy that, unlike the pairwise estimator,
//!   is a sum over chunks and so maintained exactly under inserts and deletes;
//! - `oov_rate` = share of W's words (by occurrence) that R never contains.
//!
//! | file | what it owns |
//! |---|---|
//! | `features.rs` | [`DriftFeatures`]: what one chunk contributes (its vector, random Fourier features, words) |
//! | `metrics.rs` | [`DriftMetricsExt`]: mean shift, MMD and OOV rate of a window against a reference (the [`DriftMetrics`] type is in `schemas`) |
//! | `monitor.rs` | [`DriftMonitor`]: epoch buckets, window, reference, thresholds, trigger, persisted and reported state |
//! | `tests.rs` | the unit tests of all three |

mod features;
mod metrics;
mod monitor;
#[cfg(test)]
mod tests;

pub(crate) use features::mix64;
pub use features::{DriftFeatures, word_hash};
pub use metrics::{DriftMetrics, DriftMetricsExt};
pub use monitor::{DriftEvaluation, DriftMonitor, DriftPersisted, DriftReference, DriftState, DriftTrigger};
