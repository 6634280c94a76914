//! `GET /v1/evals`: the `evaluations` table (every `twinflow eval` run and
//! every training run's held-out judgement), filtered, newest rows last.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use twinflow_schemas::api::{ErrorCode, EvalsQuery, EvalsResponse};

use super::error::ApiError;
use crate::app::App;

/// Rows answered when the query names no `limit`.
const DEFAULT_LIMIT: usize = 500;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 10_000;

/// Handler of `GET /v1/evals`.
pub async fn evals(
    State(app): State<Arc<App>>,
    query: Result<Query<EvalsQuery>, QueryRejection>,
) -> Result<Json<EvalsResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("parameter `limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let reader = app.clone();
    let rows = tokio::task::spawn_blocking(move || reader.evaluations.read(reader.store.data_dir()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let wanted = |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
    let mut matching: Vec<_> = rows
        .into_iter()
        .filter(|r| {
            wanted(&query.kind, &r.kind)
                && wanted(&query.model, &r.model)
                && wanted(&query.question_set, &r.question_set)
                && wanted(&query.metric, &r.metric)
        })
        .collect();
    let matched = matching.len();
    let evaluations = matching.split_off(matched.saturating_sub(limit));
    Ok(Json(EvalsResponse { evaluations, matched }))
}
