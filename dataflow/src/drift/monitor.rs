//! The drift monitor, fed by the committer one epoch at a time: chunk
//! statistics bucketed by the epoch the chunks entered, the window of the
//! newest buckets, the frozen reference, the trigger policy, and what it
//! persists across restarts and reports on status pages.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use twinflow_schemas::config::DriftConfig;
pub use twinflow_schemas::drift::{DriftState, DriftTrigger};
use twinflow_schemas::{DriftRow, DriftStats};

use super::{DriftMetrics, DriftMetricsExt};

/// The distribution the windows are compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftReference {
    /// `bootstrap@<epoch>` or the model version trained on it.
    pub name: String,
    /// The epoch at which the statistics were taken.
    pub epoch: u64,
    pub stats: DriftStats,
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
    pub(super) buckets: BTreeMap<u64, DriftStats>,
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
