//! `[server]`: the HTTP (and optional Postgres wire) endpoints and their limits.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Where the Postgres wire protocol endpoint (read-only SQL, a `read`
    /// key as the password) listens; off when unset.
    pub pg_addr: Option<SocketAddr>,
    /// TLS for HTTP (HTTPS only) and the Postgres endpoint; off when unset.
    pub tls: Option<TlsConfig>,
    /// Memory all running SQL statements share (HTTP and pgwire); past it
    /// they spill to disk, then fail with `resource_limit`.
    pub sql_memory: ByteSize,
    /// Disk the SQL statements may spill to, together.
    pub sql_spill: ByteSize,
    /// Rows of one SQL answer.
    pub sql_max_rows: usize,
    /// Bytes of one SQL answer (in memory, before encoding).
    pub sql_max_answer: ByteSize,
    /// SQL statements running at once; more wait, then answer `overloaded`.
    pub sql_concurrency: usize,
    /// Answers (`/v1/rag`, chat) and embedding requests running at once; more
    /// wait up to `queue_wait`, then answer `503 overloaded` with `Retry-After`.
    pub answer_concurrency: usize,
    /// How long a request waits for a free slot.
    #[serde(with = "humantime_serde")]
    pub queue_wait: Duration,
}

/// `[server.tls]`: the server's certificate chain and private key, both PEM
/// files. With it, HTTP is served as HTTPS only, and Postgres clients may
/// (and, to log in with a password, must) use TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate, followed by any intermediate certificates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that signed `cert`, when it is not a public one: the other
    /// processes of a cluster trust it (unset: they trust `cert` itself, as
    /// a self-signed certificate).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: ByteSize::mib(64),
            max_document: ByteSize::mib(8),
            sql_timeout: Duration::from_secs(30),
            pg_addr: None,
            tls: None,
            sql_memory: ByteSize::gib(1),
            sql_spill: ByteSize::gib(4),
            sql_max_rows: 1_000_000,
            sql_max_answer: ByteSize::mib(256),
            sql_concurrency: 4,
            answer_concurrency: 2,
            queue_wait: Duration::from_secs(5),
        }
    }
}
