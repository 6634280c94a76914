//! `[engine]`: the dataflow engine's workers, epochs and admission limits,
//! and the timely cluster a process may be one of.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The dataflow engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// timely worker threads in this process.
    pub workers: usize,
    /// How often an epoch with pending changes is closed.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// An epoch is closed early once it holds this many changes.
    pub max_batch: usize,
    /// Changes accepted but not yet committed above which ingest is refused
    /// (HTTP 503 `overloaded`) or sources wait: bounded memory.
    pub max_pending: usize,
    /// Age of the oldest uncommitted change above which ingest is refused
    /// (HTTP 503 `overloaded`, with `Retry-After`) or sources wait: bounded
    /// freshness when changes arrive faster than they can be committed.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// timely's cluster mode: this process is one of several, each with
    /// `workers` threads. `None`: a single process.
    pub cluster: Option<ClusterConfig>,
}

/// One process of a timely cluster. Process 0 serves HTTP, runs the sources
/// and commits; every process chunks and embeds its share (documents are
/// exchanged by `doc_id`, chunk texts by hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's index in `hosts`.
    pub process: usize,
    /// `host:port` of every process, in order (timely's hostfile).
    pub hosts: Vec<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            tick: Duration::from_millis(50),
            max_batch: 10_000,
            max_pending: 200_000,
            max_lag: Duration::from_secs(60),
            cluster: None,
        }
    }
}
