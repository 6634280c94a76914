//! Unit tests of the drift features, metrics and monitor.

use std::time::{Duration, SystemTime};

use twinflow_schemas::DriftStats;
use twinflow_schemas::config::DriftConfig;

use super::metrics::oov_rate;
use super::{DriftFeatures, DriftMonitor, DriftPersisted, DriftReference};

fn config() -> DriftConfig {
    DriftConfig { window: 4, min_samples: 4, features: 64, cooldown: Duration::from_secs(60), ..DriftConfig::default() }
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
