//! `GET /v1/status`, `GET /v1/timeline` and `POST /v1/snapshots`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DriftResponse;
use crate::ingest::IngestError;
use crate::models::Evaluation;
use crate::training::JobStatus;

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
    /// The drift monitor's state and its last rows (`enabled: false` when drift is off).
    #[serde(default)]
    pub drift: DriftResponse,
    /// The active embedding model (`base` or an adapter version), the training job and the twin.
    #[serde(default)]
    pub models: StatusModels,
    /// Committed source positions and ingest errors.
    #[serde(default)]
    pub sources: SourcesStatus,
    /// `primary` (runs the dataflow and commits) or `replica` (follows a primary's commits).
    #[serde(default)]
    pub role: Role,
    /// A replica's view of the primary it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaStatus>,
    /// A primary's shipping of commits to an object store (`[storage] object_store`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ShippingStatus>,
}

/// Where a primary's commits are shipped, and how far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ShippingStatus {
    pub url: String,
    /// The committed epoch of the last manifest shipped (`None`: none yet).
    pub shipped_epoch: Option<u64>,
    /// Files and bytes sent since start.
    pub files: u64,
    pub bytes: u64,
    /// The last failure, if the latest try failed (it is tried again at the next commit).
    pub last_error: Option<String>,
}

/// What a process does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the dataflow, commits epochs, takes writes.
    #[default]
    Primary,
    /// Serves reads from a primary's committed tables, following its epochs.
    Replica,
}

/// A replica's lag behind the primary it follows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReplicaStatus {
    /// The primary's data directory.
    pub following: String,
    /// The primary's URL, when configured (`[replica] primary`).
    pub primary: Option<String>,
    /// The newest epoch the primary's manifest named at the last read.
    pub primary_epoch: u64,
    /// Epochs the primary committed that this replica has not applied (as of the last read).
    pub lag_epochs: u64,
    /// Age of the oldest primary commit not applied here, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// Milliseconds since the manifest was last read successfully (`None`: never).
    pub last_read_ms_ago: Option<u64>,
    /// The last failure to follow, if the latest read failed.
    pub last_error: Option<String>,
    /// From the primary's commit to this replica's searches seeing it, over
    /// the last epochs applied: median and 99th percentile, milliseconds.
    pub apply_lag_p50_ms: Option<f64>,
    pub apply_lag_p99_ms: Option<f64>,
    /// Epochs applied since start.
    pub epochs_applied: u64,
    /// Within `[replica] max_lag` (what `/readyz` answers).
    pub ready: bool,
}

/// Answer to `GET /readyz`: 200 when the process should get traffic, else 503.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadyResponse {
    pub ready: bool,
    pub role: Role,
    pub committed_epoch: u64,
    /// Why not, when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The models of `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusModels {
    /// The active adapter (`adapter-v<N>`) or `base`.
    pub active: String,
    /// The projection searches go through, `None` for the base model.
    pub search_projection: Option<String>,
    /// The adapter's training job.
    pub training: JobStatus<Evaluation>,
    /// The active twin (`twin-v<N>`) or `base`.
    pub twin: String,
}

/// The sources of `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourcesStatus {
    /// Committed position of each source (name → position). Free-form: each
    /// kind of source writes its own (a Kafka source its offsets per
    /// partition, a web source its pages' validators), and hands it back
    /// to the same kind of source on restart.
    pub positions: BTreeMap<String, serde_json::Value>,
    pub ingest_errors: IngestErrors,
}

/// Records sources refused since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IngestErrors {
    pub total: u64,
    /// The most recent, newest first (at most 5).
    pub recent: Vec<IngestError>,
}

/// Answer to `POST /v1/snapshots`: a consolidated snapshot of every table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotResponse {
    /// The snapshot version (1, 2, …).
    pub version: u64,
    /// The committed epoch it reflects.
    pub epoch: u64,
    /// Table name → live rows.
    pub rows: BTreeMap<String, u64>,
    /// The files written, relative to the data directory.
    pub files: Vec<String>,
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

/// Answer to `GET /v1/sources`: every running source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourcesResponse {
    pub sources: Vec<SourceStatus>,
}

/// One source: what it is, where it is, how fast changes come from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourceStatus {
    /// Its name (`watch-0`, `kafka-2`, …): the key of its committed position.
    pub name: String,
    /// `watch`, `ndjson`, `web`, `fluvio`, `kafka`, `git` or `demo`.
    pub kind: String,
    pub state: SourceState,
    /// Changes accepted from it since start, and in how many batches.
    pub changes: u64,
    pub batches: u64,
    /// Changes per second over the last minute.
    pub changes_per_second: f64,
    /// When its last change was accepted (ms since the Unix epoch).
    pub last_change_ms: Option<i64>,
    /// Its committed position (what a restart resumes from; free-form per kind).
    pub position: Option<serde_json::Value>,
    /// How far behind its upstream it is, for the sources that can tell.
    pub lag: Option<SourceLag>,
    /// Records it refused since start, and the last one.
    pub errors: u64,
    pub last_error: Option<IngestError>,
}

/// How far a source is behind what its upstream has (the last measurement).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SourceLag {
    pub behind: u64,
    pub unit: LagUnit,
    /// When it was measured (ms since the Unix epoch).
    pub measured_at_ms: i64,
}

/// What a lag counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LagUnit {
    /// Records not yet read (Kafka: the partitions' ends minus the next offsets).
    Records,
    /// Write-ahead log bytes between the server's position and the one
    /// twinflow confirmed (Postgres).
    Bytes,
    /// Pages the crawl has queued and not yet fetched (web).
    Pages,
    /// Changed paths waiting for their writes to settle (watch).
    Files,
}

/// Whether a source's changes come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Running,
    /// Held back by `POST /v1/sources/{name}/pause`: it waits, nothing is lost.
    Paused,
    /// Ended: an NDJSON file replayed to its end, or a source that failed (see the log).
    Finished,
}
