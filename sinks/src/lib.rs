//! # twinflow-sinks
//!
//! Where the dataflow's outputs land: versioned Parquet change logs per epoch
//! and consolidated snapshots, the `_manifest.json` that says what is
//! committed, the live state (current rows of every table) with its search
//! indexes (HNSW vectors via USearch, BM25 via tantivy, exact scans for small
//! or filtered candidate sets), and read-only DataFusion SQL over the live tables and the stored
//! change logs — all at one committed epoch.
//!
//! ```text
//!  dataflow ── Vec<(worker, EpochUpdates)> per epoch E ──▶ Store::commit(EpochCommit E)
//!                                                            │ 1. part files  <data>/<table>/epoch=E/part-<w>.parquet
//!                                                            │ 2. manifest    <data>/_manifest.json (atomic replace)
//!                                                            ▼ 3. live state (write lock: readers see whole epochs)
//!  server ── counts / search / sql / current_documents ──▶ Store (read lock, as_of = committed epoch)
//!  Store::snapshot ──▶ <data>/<table>/_snapshots/v<N>/part-0.parquet     Store::open ──▶ restore from manifest
//! ```
//!
//! Where to look next (`src/README.md` lists every file):
//!
//! - `store/`: the public entry points — `mod.rs` opening and restoring,
//!   `commit.rs` the commit protocol and snapshots, `query.rs` the reads,
//!   `projection.rs` the embedding adapter;
//! - search: `search.rs` plans vector search over `vector_index/` (HNSW) or
//!   an exact scan, `text_index.rs` is BM25, `fusion.rs` merges rankings;
//! - files: `parquet_io.rs`, `manifest.rs`, `convert.rs` (row ↔ Arrow),
//!   `restore.rs`, and `sql.rs` for the SQL catalog and the read-only checks.

mod drift_log;
mod encode;
mod error;
mod error_log;
mod fusion;
mod live;
mod remote;
mod restore;
mod search;
mod shards;
mod sql;
mod sql_as_of;
mod sql_search;
mod store;
mod text_index;
mod trace_log;
mod vector_index;

pub mod convert;
pub mod datasets;
pub mod evaluations;
pub mod input_log;
pub mod manifest;
pub mod parquet_io;
pub mod vector_cache;

pub use encode::{encode_arrow_ipc, encode_csv, encode_json_rows, encode_parquet};
pub use error::{Error, Result};
pub use fusion::reciprocal_rank;
pub use input_log::{EncodedBatch, InputLog, LoggedBatch};
pub use manifest::Manifest;
pub use remote::{Mirror, Remote, Shipped, Shipper, is_remote};
pub use sql::{SqlAnswer, SqlLimits, SqlRuntime};
pub use sql_search::{QueryEncoder, search_schema};
pub use store::{
    CommitNotice, CommitObserver, CommitStats, EpochCommit, Followed, ProjectionSwitch, Ranked, SnapshotInfo,
    SnapshotRetention, Store, VectorProjection,
};
pub use text_index::Bm25Query;
pub use vector_cache::VectorCache;
pub use vector_index::{VectorIndex, VectorIndexStats};
