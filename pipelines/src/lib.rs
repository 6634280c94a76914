//! # twinflow-pipelines
//!
//! The three pipelines of the design as library code, each with explicit
//! dependencies (store, engine, generator, registry, config) and its own
//! error type; the server only wires them and maps their errors to HTTP.
//!
//! ```text
//!  feature/   changes ─▶ Ingest::accept ─▶ Engine ─▶ Committer ─▶ Store (tables, live index)
//!                                                        │ drift trigger
//!  training/  Datasets (versions) ─▶ adapter job / twin job ─▶ evaluate ─▶ register ─▶ promote / rollback
//!                                                        │ the active adapter and twin
//!  inference/ question ─▶ self-query ─▶ expansion ─▶ retrieval ─▶ fusion ─▶ rerank ─▶ prompt ─▶ generate ─▶ trace
//! ```
//!
//! Where to look next: `feature/ingest.rs` (the one door every change
//! enters by), `feature/committer.rs`, `training/adapter.rs`,
//! `inference/rag.rs`; `metrics.rs` records their events.

mod failure;
pub mod feature;
pub mod http;
pub mod inference;
pub mod metrics;
pub mod training;

pub use failure::Failure;
pub(crate) use failure::{Context, error_chain};
pub(crate) use twinflow_schemas::clock::now_ms;
