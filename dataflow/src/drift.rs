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

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use twinflow_schemas::config::DriftConfig;
use twinflow_schemas::drift::{DRIFT_METRICS, FIXED_SCALE, to_fixed};
use twinflow_schemas::{DriftRow, DriftStats, Hash128};
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
        let mut rng = SplitMix64(config.seed);
        let sigma = f64::from(config.bandwidth.max(1e-6));
        let omega = (0..features * dim).map(|_| (rng.normal() / sigma) as f32).collect();
        let phase = (0..features).map(|_| (rng.uniform() * std::f64::consts::TAU) as f32).collect();
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

/// A small seeded generator (SplitMix64): reproducible features without a
/// dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The metrics of one window against one reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftMetrics {
    pub mean_shift: f64,
    pub mmd: f64,
    pub oov_rate: f64,
}

impl DriftMetrics {
    /// The metrics of `window` against `reference` (`None` when either holds no vectors).
    ///
    /// Both the mean shift and the MMD use unbiased estimates of the
    /// squared norms of the means (each sample's pairs with itself left out,
    /// `(‖Σx‖² − Σ‖x‖²) / n(n−1)`): the plain estimates grow by about
    /// `1/n` for samples of `n` chunks, which for windows of a few hundred
    /// chunks is as large as the drift between eras.
    pub fn between(reference: &DriftStats, window: &DriftStats) -> Option<DriftMetrics> {
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

    /// `(name, value)` in the table's order.
    pub fn named(&self) -> [(&'static str, f64); 3] {
        [(DRIFT_METRICS[0], self.mean_shift), (DRIFT_METRICS[1], self.mmd), (DRIFT_METRICS[2], self.oov_rate)]
    }
}

/// Share of `window`'s word occurrences whose word `reference` lacks.
fn oov_rate(reference: &[(u64, i64)], window: &[(u64, i64)], words: i64) -> f64 {
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

/// The distribution the windows are compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// `bootstrap@<epoch>` or the model version trained on it.
    pub name: String,
    /// The epoch at which the statistics were taken.
    pub epoch: u64,
    pub stats: DriftStats,
}

/// A retrain request: the drift that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// The monitor's view for `/v1/status` and `twinflow drift`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// What the monitor persists across restarts (the buckets are rebuilt from
/// the replayed state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftPersisted {
    pub reference: Option<DriftReference>,
    pub last_trigger: Option<DriftTrigger>,
    pub triggers: u64,
    pub armed: Option<bool>,
    pub new_samples: u64,
    #[serde(default)]
    pub samples_at_trigger: u64,
    /// The feature configuration the reference was computed with.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

impl DriftPersisted {
    /// Itself, or without its reference when that was computed with other
    /// random features (another seed, count or bandwidth): the metrics would
    /// compare incompatible sums.
    pub fn compatible_with(mut self, config: &DriftConfig) -> Self {
        let expected = fingerprint(config);
        if self.reference.is_some() && self.fingerprint.as_deref().is_some_and(|f| f != expected) {
            tracing::warn!(saved = ?self.fingerprint, now = %expected, "the drift features changed: the saved reference is dropped");
            self.reference = None;
            self.new_samples = 0;
            self.samples_at_trigger = 0;
        }
        self
    }
}

fn fingerprint(config: &DriftConfig) -> String {
    format!("features={},bandwidth={},seed={}", config.features, config.bandwidth, config.seed)
}

/// The result of one observed epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DriftEvaluation {
    /// Rows for the `drift` table (empty when nothing was compared).
    pub rows: Vec<DriftRow>,
    pub trigger: Option<DriftTrigger>,
}

/// Buckets of chunk statistics by the epoch the chunks entered, a frozen
/// reference, and the trigger policy (threshold, minimum new samples,
/// cooldown, hysteresis). Fed by the committer, one epoch at a time.
#[derive(Debug)]
pub struct DriftMonitor {
    config: DriftConfig,
    buckets: BTreeMap<u64, DriftStats>,
    reference: Option<DriftReference>,
    epoch: u64,
    new_samples: u64,
    /// `new_samples` when the last trigger fired.
    samples_at_trigger: u64,
    armed: bool,
    last_trigger: Option<DriftTrigger>,
    triggers: u64,
    last_metrics: Option<(u64, u64, DriftMetrics)>,
}

impl DriftMonitor {
    pub fn new(config: DriftConfig, persisted: DriftPersisted) -> Self {
        Self {
            config,
            buckets: BTreeMap::new(),
            reference: persisted.reference,
            epoch: 0,
            new_samples: persisted.new_samples,
            samples_at_trigger: persisted.samples_at_trigger,
            armed: persisted.armed.unwrap_or(true),
            last_trigger: persisted.last_trigger,
            triggers: persisted.triggers,
            last_metrics: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// What to save so a restart keeps the reference and the trigger history.
    pub fn persisted(&self) -> DriftPersisted {
        DriftPersisted {
            reference: self.reference.clone(),
            last_trigger: self.last_trigger.clone(),
            triggers: self.triggers,
            armed: Some(self.armed),
            new_samples: self.new_samples,
            samples_at_trigger: self.samples_at_trigger,
            fingerprint: Some(fingerprint(&self.config)),
        }
    }

    /// Statistics of every live chunk.
    pub fn live(&self) -> DriftStats {
        let mut total = DriftStats::default();
        for stats in self.buckets.values() {
            total.add(stats, 1);
        }
        total
    }

    /// The current reference.
    pub fn reference(&self) -> Option<&DriftReference> {
        self.reference.as_ref()
    }

    /// Compares future windows with `reference` (a newly promoted model's
    /// training data): new samples restart from zero and the trigger re-arms.
    pub fn set_reference(&mut self, reference: DriftReference) {
        tracing::info!(reference = %reference.name, epoch = reference.epoch, chunks = reference.stats.vectors, "drift reference set");
        self.reference = Some(reference);
        self.new_samples = 0;
        self.samples_at_trigger = 0;
        self.armed = true;
        self.last_metrics = None;
    }

    /// Applies the deltas of a replayed (already committed) epoch: the
    /// buckets are rebuilt, nothing is compared or triggered.
    pub fn absorb(&mut self, epoch: u64, deltas: &[(u64, DriftStats)]) {
        self.epoch = self.epoch.max(epoch);
        for (bucket, delta) in deltas {
            let stats = self.buckets.entry(*bucket).or_default();
            stats.add(delta, 1);
            if stats.is_empty() {
                self.buckets.remove(bucket);
            }
        }
    }

    /// Applies one committed epoch's drift deltas and, when they changed
    /// anything, compares the window with the reference.
    pub fn observe(&mut self, epoch: u64, deltas: &[(u64, DriftStats)], now: SystemTime) -> DriftEvaluation {
        self.epoch = self.epoch.max(epoch);
        if deltas.is_empty() {
            return DriftEvaluation::default();
        }
        for (bucket, delta) in deltas {
            // A bucket merged into an older one's successor: the smallest key at or after it.
            let key = self.buckets.range(bucket..).next().map(|(k, _)| *k).unwrap_or(*bucket);
            let stats = self.buckets.entry(key).or_default();
            stats.add(delta, 1);
            if stats.is_empty() {
                self.buckets.remove(&key);
            }
            if *bucket == epoch {
                self.new_samples = self.new_samples.saturating_add(delta.vectors.max(0) as u64);
            }
        }
        let Some(reference) = &self.reference else {
            let live = self.live();
            if live.vectors >= self.config.min_samples.max(1) as i64 {
                self.set_reference(DriftReference { name: format!("bootstrap@{epoch}"), epoch, stats: live });
            }
            return DriftEvaluation::default();
        };
        let reference_epoch = reference.epoch;
        let (window_start, window) = self.window(reference_epoch);
        let Some(metrics) = DriftMetrics::between(&reference.stats, &window) else {
            return DriftEvaluation::default();
        };
        let reference_name = reference.name.clone();
        self.last_metrics = Some((window_start, window.vectors.max(0) as u64, metrics.clone()));
        self.compact(window_start, reference_epoch);
        let trigger = self.decide(epoch, &metrics, window.vectors.max(0) as u64, &reference_name, now);
        let thresholds = self.thresholds();
        let rows = metrics
            .named()
            .iter()
            .zip(thresholds.named())
            .map(|((metric, value), (_, threshold))| DriftRow {
                epoch,
                window_start,
                window_size: window.vectors.max(0) as u64,
                reference: reference_name.clone(),
                metric: (*metric).to_owned(),
                value: *value,
                threshold,
                triggered: trigger.as_ref().is_some_and(|t| t.crossed.iter().any(|c| c == metric)),
            })
            .collect();
        DriftEvaluation { rows, trigger }
    }

    /// The newest buckets after the reference was taken holding at least
    /// `window` chunks (all of them, if fewer): chunks in the reference are
    /// never in the window, so the two are independent samples.
    fn window(&self, reference_epoch: u64) -> (u64, DriftStats) {
        let mut window = DriftStats::default();
        let mut start = self.epoch;
        for (epoch, stats) in self.buckets.range(reference_epoch + 1..).rev() {
            if window.vectors >= self.config.window as i64 {
                break;
            }
            window.add(stats, 1);
            start = *epoch;
        }
        (start, window)
    }

    /// Merges the buckets older than the window into one (their chunks can
    /// still be deleted, and are subtracted from it): memory stays bounded
    /// however many epochs pass. Buckets up to the reference's epoch and
    /// those after it are merged separately, so the window never takes in
    /// chunks of the reference.
    fn compact(&mut self, window_start: u64, reference_epoch: u64) {
        let before_reference: Vec<u64> =
            self.buckets.range(..window_start.min(reference_epoch + 1)).map(|(k, _)| *k).collect();
        let after_reference: Vec<u64> =
            self.buckets.range(reference_epoch + 1..window_start.max(reference_epoch + 1)).map(|(k, _)| *k).collect();
        for keys in [before_reference, after_reference] {
            if keys.len() < 2 {
                continue;
            }
            let newest = keys[keys.len() - 1];
            let mut merged = DriftStats::default();
            for key in &keys {
                if let Some(stats) = self.buckets.remove(key) {
                    merged.add(&stats, 1);
                }
            }
            self.buckets.insert(newest, merged);
        }
    }

    fn thresholds(&self) -> DriftMetrics {
        DriftMetrics { mean_shift: self.config.mean_shift, mmd: self.config.mmd, oov_rate: self.config.oov_rate }
    }

    /// The trigger policy.
    fn decide(
        &mut self,
        epoch: u64,
        metrics: &DriftMetrics,
        window_size: u64,
        reference: &str,
        now: SystemTime,
    ) -> Option<DriftTrigger> {
        let pairs: Vec<(&str, f64, f64)> = metrics
            .named()
            .iter()
            .zip(self.thresholds().named())
            .map(|((name, value), (_, threshold))| (*name, *value, threshold))
            .collect();
        let crossed: Vec<String> =
            pairs.iter().filter(|(_, v, t)| *t > 0.0 && v >= t).map(|(n, _, _)| (*n).to_owned()).collect();
        if !self.armed {
            // Re-armed when drift falls back (hysteresis), or when as many new chunks as a
            // first trigger needs have arrived since the last one (its retrain did not bring the
            // reference closer, e.g. the candidate was not promoted: try again on more data).
            let calm = pairs.iter().all(|(_, v, t)| *t <= 0.0 || *v < t * self.config.hysteresis);
            let more_data = self.new_samples.saturating_sub(self.samples_at_trigger) >= self.config.min_samples as u64;
            if calm {
                tracing::info!(epoch, "drift back under its thresholds: trigger re-armed");
                self.armed = true;
                return None;
            }
            if !more_data {
                return None;
            }
            tracing::info!(epoch, "enough new data since the last trigger: trigger re-armed");
            self.armed = true;
        }
        if crossed.is_empty() || self.new_samples < self.config.min_samples as u64 {
            return None;
        }
        let at_ms = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        if let Some(last) = &self.last_trigger {
            let since = Duration::from_millis(at_ms.saturating_sub(last.at_ms).max(0) as u64);
            if since < self.config.cooldown {
                return None;
            }
        }
        let trigger = DriftTrigger {
            epoch,
            at_ms,
            reference: reference.to_owned(),
            crossed,
            metrics: metrics.clone(),
            window_size,
            new_samples: self.new_samples,
        };
        tracing::info!(epoch, crossed = ?trigger.crossed, metrics = ?trigger.metrics, "drift triggered a retrain");
        self.armed = false;
        self.samples_at_trigger = self.new_samples;
        self.triggers += 1;
        self.last_trigger = Some(trigger.clone());
        Some(trigger)
    }

    /// The state for status pages.
    pub fn state(&self) -> DriftState {
        let (window_start, window_size, metrics) = match &self.last_metrics {
            Some((s, n, m)) => (*s, *n, Some(m.clone())),
            None => (0, 0, None),
        };
        DriftState {
            enabled: self.config.enabled,
            epoch: self.epoch,
            reference: self.reference.as_ref().map(|r| r.name.clone()),
            reference_epoch: self.reference.as_ref().map(|r| r.epoch),
            reference_size: self.reference.as_ref().map_or(0, |r| r.stats.vectors.max(0) as u64),
            window_start,
            window_size,
            new_samples: self.new_samples,
            metrics,
            thresholds: self.thresholds(),
            armed: self.armed,
            last_trigger: self.last_trigger.clone(),
            triggers: self.triggers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DriftConfig {
        DriftConfig {
            window: 4,
            min_samples: 4,
            features: 64,
            cooldown: Duration::from_secs(60),
            ..DriftConfig::default()
        }
    }

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin(), 0.0, 0.0]
    }

    fn chunk(features: &DriftFeatures, angle: f32, text: &str) -> DriftStats {
        let mut s = features.of_vector(&unit(angle));
        s.add(&DriftFeatures::of_text(text), 1);
        s
    }

    #[test]
    fn the_kernel_estimate_matches_the_exact_gaussian_kernel() {
        let features = DriftFeatures::new(4, &DriftConfig { features: 4096, ..config() });
        let (x, y) = (unit(0.0), unit(0.9));
        let fx = features.of_vector(&x).feature_sum_f64();
        let fy = features.of_vector(&y).feature_sum_f64();
        let estimate: f64 = fx.iter().zip(&fy).map(|(a, b)| a * b).sum();
        let distance2: f32 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
        let exact = f64::from((-distance2 / 2.0).exp());
        assert!((estimate - exact).abs() < 0.05, "k(x, y) ≈ {estimate}, exact {exact}");
    }

    #[test]
    fn oov_counts_occurrences_of_unseen_words() {
        let r = DriftFeatures::of_text("the union is strong");
        let w = DriftFeatures::of_text("The internet is strong, the INTERNET 2020");
        // words: the, internet, is, strong, the, internet (2020 has no letter)
        assert_eq!(w.words, 6);
        assert!((oov_rate(&r.vocabulary, &w.vocabulary, w.words) - 2.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_window_trigger_cooldown_and_hysteresis() {
        let features = DriftFeatures::new(4, &config());
        let mut monitor = DriftMonitor::new(config(), DriftPersisted::default());
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        // Epoch 1: four chunks of the old era become the bootstrap reference.
        let old: Vec<DriftStats> = (0..4).map(|i| chunk(&features, 0.05 * i as f32, "the union is strong")).collect();
        let mut delta = DriftStats::default();
        old.iter().for_each(|s| delta.add(s, 1));
        let eval = monitor.observe(1, &[(1, delta.clone())], t0);
        assert!(eval.rows.is_empty() && eval.trigger.is_none());
        assert_eq!(monitor.reference().map(|r| r.name.as_str()), Some("bootstrap@1"));

        // Epoch 2: more of the same era: no drift.
        let eval = monitor.observe(2, &[(2, delta.clone())], t0);
        assert_eq!(eval.rows.len(), 3);
        assert!(eval.trigger.is_none());
        assert!(eval.rows.iter().all(|r| r.value < 1e-6), "{:?}", eval.rows);

        // Epoch 3: a new era, other directions and words: triggers.
        let mut new = DriftStats::default();
        (0..4).for_each(|i| new.add(&chunk(&features, 1.4 + 0.05 * i as f32, "internet terrorism economy"), 1));
        let eval = monitor.observe(3, &[(3, new.clone())], t0);
        let trigger = eval.trigger.expect("the new era triggers");
        assert_eq!(trigger.crossed, vec!["mean_shift", "mmd", "oov_rate"]);
        assert!(eval.rows.iter().all(|r| r.triggered && r.window_start == 3 && r.window_size == 4));
        assert!((trigger.metrics.oov_rate - 1.0).abs() < 1e-12);

        // Still drifted, but disarmed (hysteresis) with too few new chunks since the trigger: no trigger.
        let mut half = DriftStats::default();
        (0..2).for_each(|i| half.add(&chunk(&features, 1.5 + 0.05 * i as f32, "internet terrorism economy"), 1));
        let eval = monitor.observe(4, &[(4, half.clone())], t0 + Duration::from_secs(20));
        assert!(eval.trigger.is_none());
        assert!(!monitor.state().armed);
        // `min_samples` new chunks since the trigger re-arm it, but the cooldown holds it back…
        let eval = monitor.observe(5, &[(5, half.clone())], t0 + Duration::from_secs(30));
        assert!(eval.trigger.is_none() && monitor.state().armed);
        // … until it has passed.
        let eval = monitor.observe(6, &[(6, half.clone())], t0 + Duration::from_secs(61));
        assert!(eval.trigger.is_some());
        assert_eq!(monitor.state().triggers, 2);

        // Deleting the new era exactly restores the old window: re-armed by hysteresis.
        let deletes = [(3, negate(&new)), (4, negate(&half)), (5, negate(&half)), (6, negate(&half))];
        let eval = monitor.observe(7, &deletes, t0 + Duration::from_secs(180));
        assert!(eval.rows.iter().all(|r| r.value < 1e-6), "{:?}", eval.rows);
        assert!(monitor.state().armed);
        assert_eq!(monitor.live(), {
            let mut two = DriftStats::default();
            two.add(&delta, 2);
            two
        });

        // A new reference (a retrained model) restarts the sample count.
        monitor.set_reference(DriftReference { name: "adapter-v1".into(), epoch: 7, stats: monitor.live() });
        assert_eq!(monitor.state().new_samples, 0);
    }

    #[test]
    fn old_buckets_are_merged_and_still_take_deletes() {
        let features = DriftFeatures::new(4, &config());
        let mut monitor = DriftMonitor::new(config(), DriftPersisted::default());
        let now = SystemTime::UNIX_EPOCH;
        let one = chunk(&features, 0.1, "a b c");
        for epoch in 1..=10 {
            monitor.observe(epoch, &[(epoch, one.clone())], now);
        }
        assert!(monitor.buckets.len() <= 6, "{} buckets", monitor.buckets.len());
        // Delete the chunk of epoch 2 (merged away): lands in the merged bucket.
        monitor.observe(11, &[(2, negate(&one))], now);
        let mut nine = DriftStats::default();
        nine.add(&one, 9);
        assert_eq!(monitor.live(), nine);
    }

    fn negate(s: &DriftStats) -> DriftStats {
        let mut n = DriftStats::default();
        n.add(s, -1);
        n
    }
}
