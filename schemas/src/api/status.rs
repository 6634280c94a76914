//! `GET /v1/status` and `GET /v1/timeline`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Answer to `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusResponse {
    /// Last epoch whose outputs are committed and visible.
    pub committed_epoch: u64,
    /// The epoch new changes are being stamped with.
    pub open_epoch: u64,
    /// Changes accepted but not yet committed.
    pub pending_changes: u64,
    /// Age of the oldest uncommitted change, in milliseconds.
    pub input_lag_ms: f64,
    pub workers: usize,
    pub embedder: String,
    /// Live rows per table at `committed_epoch`.
    pub tables: BTreeMap<String, u64>,
    /// Texts embedded since start (the embedding cache's misses).
    pub texts_embedded: u64,
    /// Texts waiting for the embedding model.
    #[serde(default)]
    pub texts_waiting: u64,
    pub uptime_s: f64,
    pub data_dir: String,
    /// The drift monitor's state (`null` when drift is off).
    #[serde(default)]
    pub drift: serde_json::Value,
    /// The active embedding model (`base` or an adapter version) and the training job.
    #[serde(default)]
    pub models: serde_json::Value,
    /// Committed source positions (name → position) and ingest errors (total, most recent).
    #[serde(default)]
    pub sources: serde_json::Value,
}

/// One committed epoch, as `GET /v1/timeline` lists it: the history behind
/// the dashboard's throughput and freshness plots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelinePoint {
    pub epoch: u64,
    /// When the commit finished, in milliseconds since the Unix epoch.
    pub committed_at_ms: i64,
    /// Changes in the epoch.
    pub changes: u64,
    /// From the epoch's first accepted change until it was committed (searchable), in milliseconds.
    pub freshness_ms: f64,
    /// Texts embedded since start, at the commit.
    pub texts_embedded: u64,
    /// Live rows per table after the commit.
    pub tables: BTreeMap<String, u64>,
}

/// Answer to `GET /v1/timeline`: the most recent commits, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TimelineResponse {
    pub points: Vec<TimelinePoint>,
}
