//! `POST /v1/documents`.

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
