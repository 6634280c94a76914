//! # twinflow-server
//!
//! The `twinflow` binary: HTTP, the command line and the wiring of the
//! pipelines (`twinflow-pipelines`) — no pipeline logic lives here. It
//! loads the configuration, builds the parts, connects them, and maps the
//! pipelines' errors to HTTP answers.
//!
//! ```text
//!  cli/ ─▶ settings (schemas::config::layers) ─▶ app.rs: Store, Engine, Ingest, Committer, Training, Twin, generator
//!                                              │
//!  api/ (axum): POST /v1/documents ─▶ Ingest::accept      GET /v1/search, POST /v1/sql ─▶ Store
//!               POST /v1/rag, /v1/chat/completions ─▶ inference::answer (App::rag)
//!               /v1/models, /v1/twin, promote / rollback ─▶ training jobs (versions.rs: one for both)
//!  pgwire.rs: the SQL catalog over the Postgres protocol       cluster.rs: timely's cluster mode
//! ```
//!
//! | file | what it owns |
//! |---|---|
//! | `main.rs` | calls `cli::main` |
//! | `cli/` | the verbs (`args/`), `up` (`up.rs`), client verbs (`verbs.rs`), tables for people (`print.rs`) |
//! | `app.rs` | the running system: builds and connects the parts, starts sources, stops in order |
//! | `auth.rs` | who is calling (keys, sessions, the cluster secret) and whether they may; the browser rules |
//! | `api/` | the route table, one file per group of routes, `error.rs` (every error's code and status) |
//! | `client.rs` | the HTTP client of the CLI verbs |
//! | `cluster.rs` | a process of a timely cluster that is not process 0 |
//! | `listen.rs` | the endpoints on their sockets: HTTP or HTTPS, and pgwire |
//! | `metrics.rs` | the Prometheus recorder, `GET /metrics`, the per-route middleware |
//! | `pgwire.rs` | the Postgres wire protocol over the SQL catalog |
//! | `progress.rs` | the embedding backlog's progress: a bar or log lines |
//! | `tls.rs` | rustls from `[server.tls]`'s PEM files; the listener that hands over finished handshakes |
//! | `ui.rs` | the terminal: colours and bars only on a terminal |

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod listen;
pub mod mcp;
pub mod metrics;
pub mod pgwire;
mod progress;
pub mod scram;
pub mod tls;
pub mod ui;

/// Layered configuration (defaults < `twinflow.toml` < environment < flags).
pub use twinflow_schemas::config::layers as settings;

pub use api::router;
pub use app::App;
