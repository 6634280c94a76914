//! `[traces]`: which answered questions are recorded in the `traces` table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Prompt monitoring (`[traces]`): answered questions recorded in the
/// `traces` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    pub enabled: bool,
    /// Share of answers recorded (0 to 1), chosen by a hash of the trace id.
    pub sample_rate: f64,
    /// Keep questions and answers out of the table (a hash of each instead).
    pub redact: bool,
    /// Longest time a trace waits before it is written.
    #[serde(with = "humantime_serde")]
    pub flush_every: Duration,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self { enabled: true, sample_rate: 1.0, redact: false, flush_every: Duration::from_secs(1) }
    }
}
