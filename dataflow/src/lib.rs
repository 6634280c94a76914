//! # twinflow-dataflow
//!
//! The continuous timely/differential dataflow that turns document changes
//! into incrementally maintained feature tables.
//!
//! ```text
//!  DocumentChange ─▶ Ingest (epochs) ─▶ workers: docs by doc_id
//!                                        │
//!         documents ─ clean ─ chunk ─┬─ distinct texts (by chunk hash) ─ embed ─▶ embeddings
//!              │                     │     └─ + embeddings ─ drift stats ─────▶ drift deltas (monitor)
//!              │                     ├─────────────────────────────────────────▶ chunks
//!              │                     └─ instruct (offline generator) ──────────▶ instruct
//!              └──────────────────────────────────────────────────────────────▶ documents
//!                                        │
//!                    per-worker EpochUpdates ─▶ Committed epochs (all workers past E)
//! ```
//!
//! Where to look next: `engine/` (threads, epochs, commit protocol),
//! `graph.rs` (the dataflow itself), `operators/` (one operator per file),
//! `text/` (the pure functions the operators call: clean, chunk, instruct),
//! `embed.rs` (the `Embedder` trait), `drift/` (what each chunk contributes
//! to drift, the metrics, and the monitor that triggers retraining).

pub mod drift;
pub mod embed;
pub mod engine;
pub mod features;
mod graph;
pub mod operators;
pub mod reference;
pub mod text;

pub use drift::{DriftFeatures, DriftMetrics, DriftMonitor, DriftPersisted, DriftReference, DriftState, DriftTrigger};
pub use embed::{EmbedError, Embedder, HashingEmbedder, cosine};
pub use engine::{CompletedEpoch, Engine, EngineError, EngineOptions, EngineStats, Restore, SubmitError};
pub use operators::{ComputedVectors, EmbedFailure};
