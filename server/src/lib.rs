//! # twinflow-server
//!
//! The `twinflow` binary and the only place where every part meets: it
//! loads the configuration, opens the store, starts the engine and the
//! sources, commits completed epochs, and serves the REST API.
//!
//! ```text
//!  sources (connectors) ─┐                        ┌─▶ Store::commit_epoch (sinks: Parquet + live state)
//!  POST /v1/documents ───┴▶ Engine (dataflow) ─▶ committer ─▶ Engine::mark_committed
//!                                                            │
//!  GET /v1/search, POST /v1/sql, GET /v1/status ◀── reads ───┘
//!  POST /v1/rag, /v1/chat/completions ─▶ rag.rs: self-query, expansion, hybrid retrieval,
//!                                         rerank, prompt ─▶ generator.rs (local GGUF or OpenAI-compatible)
//!  committer ─▶ drift monitor ─ trigger ─▶ training.rs: snapshot, train adapter (burn), evaluate,
//!                                          register, promote ─▶ Store::set_projection (atomic switch)
//!  POST /v1/twin/train ─▶ twin.rs: snapshot, LoRA fine-tune (burn), held-out nll, register,
//!                                  promote ─▶ LazyGenerator::set_twin (the merged model answers next)
//! ```
//!
//! Where to look next: `app.rs` (wiring and lifecycle), `api/` (one file
//! per endpoint group, `api/error.rs` for error codes), `rag.rs` (the
//! answer pipeline), `generator.rs`, `training.rs` (drift triggers, the training job, the registry), `twin.rs` (the
//! LLM twin's fine-tuning job), `cli.rs` (the verbs),
//! `settings.rs` (layered configuration).

pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod datasets;
pub mod embedder;
pub mod forward;
pub mod generator;
pub mod metrics;
pub mod pgwire;
pub mod publish;
pub mod rag;
pub mod settings;
pub mod traces;
pub mod training;
pub mod twin;
pub mod ui;

pub use api::router;
pub use app::App;
