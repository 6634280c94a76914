//! `[replica]`: a read replica (`twinflow serve --follow DIR`) — which
//! primary it follows, how often it looks, and when it counts as caught up.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A read replica's settings (ignored by `twinflow up`, the primary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicaConfig {
    /// What to follow: the primary's data directory (a shared filesystem)
    /// or the object store it ships to (`s3://bucket/prefix`); `twinflow
    /// serve --follow` sets it.
    pub follow: Option<String>,
    /// Where a replica of an object store keeps its copy (default: under
    /// the cache, one folder per URL).
    pub cache: Option<PathBuf>,
    /// The primary's base URL, named in the answer to a write sent here.
    pub primary: Option<String>,
    /// How often the primary's manifest is read for new epochs.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// `/readyz` answers 503 while the replica is further behind than this
    /// (or has not read the manifest for this long).
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// The longest a read with `min_as_of` waits for its epoch, on any role,
    /// before a `503 not_caught_up`.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            follow: None,
            cache: None,
            primary: None,
            poll: Duration::from_millis(100),
            max_lag: Duration::from_secs(10),
            max_wait: Duration::from_secs(10),
        }
    }
}
