//! # twinflow-schemas
//!
//! The leaf crate of twinflow: plain record types, the Arrow schema of every
//! table, configuration and API types, and stable error codes. Nothing heavy
//! lives here, so every other crate can depend on it.
//!
//! ```text
//!  DocumentChange ──▶ dataflow ──▶ DocumentRow / ChunkRow / EmbeddingRow / InstructRow
//!   (change.rs)                      (records.rs)      │
//!                                                      ▼
//!                                      Arrow schemas (tables.rs) ─▶ Parquet, SQL
//! ```
//!
//! Where to look next: `records.rs` for the rows, `tables.rs` for their Arrow
//! layout, `config/` for every setting and its default (one file per
//! section, listed in `config/mod.rs`), `api/` for the REST types (one file
//! per route group) and error codes; `models.rs` (model cards and their
//! training settings), `training.rs` (training jobs), `datasets.rs` and
//! `drift.rs` for the records the training loop keeps and the API shows.

pub mod api;
pub mod auth;
pub mod change;
pub mod clock;
pub mod config;
pub mod datasets;
pub mod drift;
pub mod evaluation;
pub mod fs;
pub mod ids;
pub mod ingest;
pub mod models;
pub mod records;
pub mod rng;
pub mod stats;
pub mod tables;
/// Support the test suites and benches share (small, and always compiled:
/// a feature for it would build every crate twice, once for the binary and
/// once for the tests).
pub mod testing;
pub mod trace;
pub mod training;
pub mod updates;

pub use change::{ChangeError, ChangeLimits, parse_change, parse_ndjson};
pub use drift::{DriftRow, DriftStats};
pub use ids::Hash128;
pub use ingest::{IngestError, IngestErrorRow};
pub use records::{
    ChunkRow, ContentFormat, Document, DocumentChange, DocumentKind, DocumentRow, EmbeddingRow, InstructRow, Split,
    Vector,
};
pub use tables::TableName;
pub use trace::TraceRow;
pub use updates::{EpochUpdates, Updates, consolidate};
