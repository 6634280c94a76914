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
use serde_json::{Value, json};

use twinflow_schemas::api::ErrorCode;

use super::ApiError;
use crate::app::App;

/// Handler of `GET /v1/twin`.
pub async fn twin(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let registry = &app.twin.registry;
    let cards = registry.list().map_err(ApiError::internal)?;
    let events = registry.events().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "active": app.twin.active_name(),
        "answering": app.generator.twin_name(),
        "versions": cards,
        "events": events,
        "training": app.twin.status(),
    })))
}

/// Handler of `POST /v1/twin/train`.
pub async fn train(State(app): State<Arc<App>>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let blocking = app.clone();
    // Resolving the local model may fetch it: off the async runtime.
    tokio::task::spawn_blocking(move || blocking.generator.local_gguf())
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::TwinUnavailable, format!("{e:#}")))?;
    app.twin.training().map_err(|e| ApiError::new(ErrorCode::TwinUnavailable, format!("{e:#}")))?;
    let started =
        app.twin.start(json!("manual")).map_err(ApiError::internal)?;
    if !started {
        return Err(ApiError::new(ErrorCode::TrainingRunning, "a fine-tuning run is in progress; see GET /v1/twin"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": true, "training": app.twin.status() }))))
}
