//! `[auth]`: who may call the API, and from which web pages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::Scope;

/// Whether requests must carry a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every route but `/healthz` needs a key with the route's scope.
    #[default]
    Keys,
    /// No keys at all: allowed only when the server listens on a loopback
    /// address (refused at start otherwise), with a warning.
    None,
}

/// One API key, as the SHA-256 of the key (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Who holds it: shown in the log, never secret.
    pub name: String,
    /// What it may do (`admin` may do everything).
    pub scopes: Vec<Scope>,
    /// Lower-case hex SHA-256 of the whole key (`twinflow keys create` prints both).
    pub sha256: String,
    /// The key's SCRAM-SHA-256 verifier, in PostgreSQL's form
    /// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as
    /// `twinflow keys create` prints it). With one, a Postgres client that
    /// logs in as the key's `name` proves it holds the key without sending
    /// it; without one, the key is sent as the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scram: Option<String>,
}

/// Authentication and the browser rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The keys. With none, the first start generates an admin key into
    /// `<data_dir>/_auth/admin.key` (mode 0600), which the CLI reads.
    pub keys: Vec<KeyConfig>,
    /// `GET /metrics` without a key (for a scraper on a trusted network).
    pub open_metrics: bool,
    /// Origins (`https://host:port`) besides the server's own that may send
    /// state-changing requests from a browser.
    pub allowed_origins: Vec<String>,
    /// How long a dashboard session (a cookie made from a key) lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The secret the processes of a cluster share for
    /// `/v1/internal/source-changes`; unset: read from (or created in)
    /// `_cluster.secret` beside the hostfile.
    pub cluster_secret: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Keys,
            keys: Vec::new(),
            open_metrics: false,
            allowed_origins: Vec::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            cluster_secret: None,
        }
    }
}
