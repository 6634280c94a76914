//! `[subscriptions]`: standing questions (`/v1/subscriptions`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits of standing questions and how their events are delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Subscriptions kept at once (over all keys).
    pub max: usize,
    /// Subscriptions one key may hold.
    pub max_per_key: usize,
    /// Largest `k` of a subscription.
    pub max_k: usize,
    /// Event streams (`GET /v1/subscriptions/{id}/events`) open at once.
    pub max_streams: usize,
    /// Events of each subscription kept for resuming a stream (`Last-Event-ID`).
    pub events_kept: usize,
    /// Share of the live chunks that may change before the BM25 side of a
    /// subscription is searched again whatever the changes were: its scores
    /// move with the corpus's statistics (idf, mean length), not only with
    /// its words, and until then a near-tie they reorder goes unnoticed.
    /// 0 (the default): searched again at every commit, so every kept top-k
    /// is exact; above 0 trades that for fewer searches.
    pub restat_share: f64,
    /// Tries of a webhook delivery before it is given up (logged, counted).
    pub webhook_attempts: u32,
    /// Wait before the first retry, doubled at each next one.
    #[serde(with = "humantime_serde")]
    pub webhook_backoff: Duration,
    /// Longest wait for a webhook's answer.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max: 100_000,
            max_per_key: 20_000,
            max_k: 100,
            max_streams: 1024,
            events_kept: 16,
            restat_share: 0.0,
            webhook_attempts: 6,
            webhook_backoff: Duration::from_millis(500),
            webhook_timeout: Duration::from_secs(5),
        }
    }
}
