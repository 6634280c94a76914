//! `POST /v1/documents`, and `POST /v1/internal/source-changes` (batches
//! another process of a cluster read from its share of a source).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Answer to `POST /v1/documents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IngestResponse {
    /// How many changes were accepted (all of the body, or none).
    pub accepted: usize,
    /// The epoch the changes were stamped with.
    pub epoch: u64,
    /// Whether the epoch was already committed when the response was sent
    /// (`?wait=true` waits for it).
    pub committed: bool,
}

/// Body of `POST /v1/internal/source-changes`: a batch another process of
/// the cluster read from its share of a partitioned source. That process's
/// forwarder writes it, process 0 reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardedBatch {
    /// The source's name there (`kafka-0@p1`: source 0's partitions read by process 1).
    pub source: String,
    /// The changes, in the order the source read them, each in the NDJSON
    /// line format: free-form here, checked one by one on arrival like the
    /// lines of `POST /v1/documents` (a bad one is refused with its index).
    #[serde(default)]
    pub changes: Vec<serde_json::Value>,
    /// Where the source has read to; committed with the changes' epoch.
    /// Free-form: the source's own position (as in `GET /v1/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<serde_json::Value>,
    /// Records the source refused; committed as `ingest_errors` rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ForwardedError>,
}

/// A record another process's source refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardedError {
    pub location: String,
    pub reason: String,
    pub at_ms: i64,
}
