//! The REST API: `router(app)` builds every route.
//!
//! | file | routes |
//! |---|---|
//! | `documents.rs` | `POST /v1/documents` (NDJSON or JSON changes) |
//! | `search.rs` | `GET /v1/search` |
//! | `embeddings.rs` | `POST /v1/embeddings` (OpenAI's format) |
//! | `rag.rs` | `POST /v1/rag` (answers with citations and step timings) |
//! | `chat.rs` | `POST /v1/chat/completions` (OpenAI's format, SSE streaming, answered by RAG) |
//! | `sql.rs` | `POST /v1/sql` |
//! | `models.rs` | `GET /v1/drift`, `GET /v1/datasets[/{name}/versions/{v}]`, `GET /v1/models`, `POST /v1/models/train`, `POST /v1/models/{v}/promote`, `POST /v1/models/rollback` |
//! | `twin.rs` | `GET /v1/twin`, `POST /v1/twin/train`, `POST /v1/twin/versions/{v}/promote`, `POST /v1/twin/rollback` |
//! | `../metrics.rs` | `GET /metrics` (Prometheus), and the middleware timing every route |
//! | `status.rs` | `GET /v1/status`, `GET /healthz`, `POST /v1/snapshots` |
//! | `error.rs` | `ApiError`: every error as `{ "error": { "code", "message" } }` |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use twinflow_schemas::api::ErrorCode;

use crate::app::App;

pub mod chat;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod rag;
pub mod search;
pub mod sql;
pub mod status;
pub mod twin;

pub use error::ApiError;

/// The application's routes over shared state.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.server.max_body.as_u64() as usize;
    Router::new()
        .route("/healthz", get(status::healthz))
        .route("/metrics", get(crate::metrics::render))
        .route("/v1/status", get(status::status))
        .route("/v1/snapshots", post(status::snapshot))
        .route("/v1/documents", post(documents::post_documents))
        .route("/v1/search", get(search::search))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/rag", post(rag::rag))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/sql", post(sql::sql))
        .route("/v1/drift", get(models::drift))
        .route("/v1/datasets", get(models::datasets))
        .route("/v1/datasets/{name}/versions/{version}", get(models::dataset_version))
        .route("/v1/datasets/snapshot", post(models::dataset_snapshot))
        .route("/v1/datasets/generate", post(models::dataset_generate))
        .route("/v1/models", get(models::models))
        .route("/v1/models/train", post(models::train))
        .route("/v1/models/{version}/promote", post(models::promote))
        .route("/v1/models/rollback", post(models::rollback))
        .route("/v1/twin", get(twin::twin))
        .route("/v1/twin/train", post(twin::train))
        .route("/v1/twin/versions/{version}/promote", post(twin::promote))
        .route("/v1/twin/rollback", post(twin::rollback))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(app)
}

/// A JSON request body as `T`: too large → `payload_too_large`, a missing
/// field → `missing_field`, a wrong type or value → `invalid_field` (with
/// `hint` appended), anything else → `invalid_json`.
pub(crate) fn json_body<T: DeserializeOwned>(
    app: &App,
    body: Result<Bytes, BytesRejection>,
    hint: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {}", app.config.server.max_body),
        ),
        other => ApiError::new(ErrorCode::InvalidJson, format!("could not read the body: {other}")),
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let code = match () {
            _ if e.to_string().starts_with("missing field") => ErrorCode::MissingField,
            _ if e.is_data() => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
        };
        let hint = if e.is_data() { hint } else { "" };
        ApiError::new(code, format!("{e}{hint}"))
    })
}
