//! `[server]`: the HTTP (and optional Postgres wire) endpoints and their limits.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// The HTTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Largest request body.
    pub max_body: ByteSize,
    /// Largest `content` of one document.
    pub max_document: ByteSize,
    /// Longest time a SQL query may run.
    #[serde(with = "humantime_serde")]
    pub sql_timeout: Duration,
    /// Where the Postgres wire protocol endpoint (read-only SQL, no
    /// authentication) listens; off when unset.
    pub pg_addr: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: ByteSize::mib(64),
            max_document: ByteSize::mib(8),
            sql_timeout: Duration::from_secs(30),
            pg_addr: None,
        }
    }
}
