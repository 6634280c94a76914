//! `POST /v1/documents`: document changes as NDJSON (one change per line),
//! or as JSON (one change or an array of changes). Every change is
//! validated before any is accepted: a body is taken whole or not at all.
//! `?wait=true` answers only once the changes are committed (searchable).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::Deserialize;

use twinflow_pipelines::feature::{Accepted, Origin};
use twinflow_schemas::api::{ErrorCode, ForwardedBatch, IngestResponse};
use twinflow_schemas::change::{change_from_value, parse_ndjson};
use twinflow_schemas::{ChangeLimits, DocumentChange};

use super::ApiError;
use crate::app::App;

/// The longest `?wait=true` may wait for a commit (the answer then says `committed: false`).
const MAX_WAIT_MS: u64 = 120_000;

/// Query parameters of `POST /v1/documents`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct IngestParams {
    /// Answer after the changes are committed.
    #[serde(default)]
    pub wait: bool,
    /// Longest wait, in milliseconds (default 30 s, at most 120 s).
    pub timeout_ms: Option<u64>,
}

/// Handler of `POST /v1/documents`.
pub async fn post_documents(
    State(app): State<Arc<App>>,
    params: Result<Query<IngestParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestResponse>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than the limit of {}", app.config.server.max_body),
            )
        } else {
            ApiError::new(ErrorCode::InvalidJson, format!("could not read the body: {rejection}"))
        }
    })?;
    let primary = app.primary()?;
    let changes = parse_body(&headers, &body, primary.ingest.limits())?;
    let ingest = primary.ingest.clone();
    // Durable before acknowledged: the door fsyncs HTTP changes to the input log before it returns.
    let Accepted { changes: accepted, epoch } =
        tokio::task::spawn_blocking(move || ingest.accept(changes, Origin::Http, Vec::new()))
            .await
            .map_err(ApiError::internal)??;
    let mut committed = primary.engine.stats().committed_epoch >= epoch;
    if params.wait && !committed && accepted > 0 {
        let engine = primary.engine.clone();
        // Each waiting request holds a blocking thread: the wait is capped.
        let timeout = Duration::from_millis(params.timeout_ms.unwrap_or(30_000).min(MAX_WAIT_MS));
        committed = tokio::task::spawn_blocking(move || engine.wait_committed(epoch, timeout))
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(Json(IngestResponse { accepted, epoch, committed }))
}

fn parse_body(headers: &HeaderMap, body: &[u8], limits: &ChangeLimits) -> Result<Vec<DocumentChange>, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match content_type.as_str() {
        "application/x-ndjson" | "application/jsonl" | "application/ndjson" => Ok(parse_ndjson(body, limits)?),
        "application/json" => parse_json(body, limits),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("content type {other:?} is not accepted: send application/x-ndjson or application/json"),
        )),
    }
}

fn parse_json(body: &[u8], limits: &ChangeLimits) -> Result<Vec<DocumentChange>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {e}")))?;
    match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| change_from_value(item, i + 1, limits).map_err(ApiError::from))
            .collect(),
        single => Ok(vec![change_from_value(single, 1, limits)?]),
    }
}

/// Handler of `POST /v1/internal/source-changes`: the changes are checked
/// like any others and accepted as a source's (no input log: the source
/// resumes from its committed position); the position is committed with
/// their epoch. 503 `overloaded` (with `Retry-After`) pushes back.
pub async fn post_source_changes(
    State(app): State<Arc<App>>,
    body: Result<Json<ForwardedBatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<IngestResponse>, ApiError> {
    let Json(batch) = body.map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.body_text()))?;
    let origin = Origin::forwarded(batch.source.clone(), batch.position.clone())?;
    let ingest = app.primary()?.ingest.clone();
    let changes = batch
        .changes
        .into_iter()
        .enumerate()
        .map(|(i, value)| change_from_value(value, i + 1, ingest.limits()))
        .collect::<Result<Vec<_>, _>>()?;
    let errors: Vec<_> = batch
        .errors
        .into_iter()
        .map(|error| twinflow_connectors::IngestError {
            source: batch.source.clone(),
            location: error.location,
            reason: error.reason,
            at_ms: error.at_ms,
        })
        .collect();
    // Refused records only: recorded, and already as committed as they will be.
    let committed = changes.is_empty() && batch.position.is_none();
    let Accepted { changes: accepted, epoch } =
        tokio::task::spawn_blocking(move || ingest.accept(changes, origin, errors))
            .await
            .map_err(ApiError::internal)??;
    Ok(Json(IngestResponse { accepted, epoch, committed }))
}
