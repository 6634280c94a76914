//! `POST /v1/session` and `DELETE /v1/session`: a dashboard session made
//! from an API key (the key is sent once; the browser keeps an `HttpOnly`
//! cookie it cannot read).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Scope;

/// The key a session is made from.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// An API key (`tfk_…`).
    pub key: String,
}

impl std::fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionRequest { key: <hidden> }")
    }
}

/// A session that started: whose key it was made from, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionResponse {
    /// The key's name.
    pub name: String,
    /// What the session may do.
    pub scopes: Vec<Scope>,
    /// Seconds until it ends.
    pub expires_in_s: u64,
}

/// The answer of `DELETE /v1/session`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionEnded {
    /// Whether the cookie named a session that was still open.
    pub ended: bool,
}
