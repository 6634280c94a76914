//! The LLM twin over HTTP: its versions, fine-tuning runs, promotion and rollback.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/twin` | the answering model, every twin version's card, registry events, the job |
//! | `POST /v1/twin/train` | start a LoRA fine-tuning run (202; 409 `training_running`; 400 `twin_unavailable`) |
//!
//! Promotion (the twin is built, then swapped in) and rollback are in `versions.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use twinflow_schemas::api::{ErrorCode, TrainingStarted, TwinResponse};
use twinflow_schemas::models::TwinEvaluation;

use super::ApiError;
use crate::app::App;

/// Handler of `GET /v1/twin`.
pub async fn twin(State(app): State<Arc<App>>) -> Result<Json<TwinResponse>, ApiError> {
    let registry = &app.twin.registry;
    Ok(Json(TwinResponse {
        active: app.twin.active_name(),
        answering: app.generator.twin_name(),
        versions: registry.list().map_err(ApiError::internal)?,
        events: registry.events().map_err(ApiError::internal)?,
        training: app.twin.status(),
    }))
}

/// Handler of `POST /v1/twin/train`.
pub async fn train(
    State(app): State<Arc<App>>,
) -> Result<(StatusCode, Json<TrainingStarted<TwinEvaluation>>), ApiError> {
    let blocking = app.clone();
    // Resolving the local model may fetch it: off the async runtime.
    tokio::task::spawn_blocking(move || blocking.generator.local_gguf())
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::TwinUnavailable, format!("{e:#}")))?;
    app.twin.training().map_err(|e| ApiError::new(ErrorCode::TwinUnavailable, format!("{e:#}")))?;
    let started = app.twin.start(serde_json::Value::from("manual")).map_err(ApiError::internal)?;
    if !started {
        return Err(ApiError::new(ErrorCode::TrainingRunning, "a fine-tuning run is in progress; see GET /v1/twin"));
    }
    Ok((StatusCode::ACCEPTED, Json(TrainingStarted { started, training: app.twin.status() })))
}
