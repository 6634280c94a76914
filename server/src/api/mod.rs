//! The REST API: `router(app)` builds every route.
//!
//! | file | routes |
//! |---|---|
//! | `documents.rs` | `POST /v1/documents` (NDJSON or JSON changes) |
//! | `search.rs` | `GET /v1/search` |
//! | `embeddings.rs` | `POST /v1/embeddings` (OpenAI's format) |
//! | `sql.rs` | `POST /v1/sql` |
//! | `status.rs` | `GET /v1/status`, `GET /healthz`, `POST /v1/snapshots` |
//! | `error.rs` | `ApiError`: every error as `{ "error": { "code", "message" } }` |

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::app::App;

pub mod documents;
pub mod embeddings;
pub mod error;
pub mod search;
pub mod sql;
pub mod status;

pub use error::ApiError;

/// The application's routes over shared state.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.server.max_body.as_u64() as usize;
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/v1/status", get(status::status))
        .route("/v1/snapshots", post(status::snapshot))
        .route("/v1/documents", post(documents::post_documents))
        .route("/v1/search", get(search::search))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/sql", post(sql::sql))
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}
