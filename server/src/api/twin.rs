//! The LLM twin over HTTP: its versions, fine-tuning runs, promotion and rollback.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/twin` | the answering model, every twin version's card, registry events, the job |
//! | `POST /v1/twin/train` | start a LoRA fine-tuning run (202; 409 `training_running`; 400 `twin_unavailable`) |
//! | `POST /v1/twin/versions/{version}/promote` | make a version answer (built, then swapped in) |
//! | `POST /v1/twin/rollback` | back to the previously active twin, or the base model |

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
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
        app.twin.start(app.store.clone(), app.generator.clone(), json!("manual")).map_err(ApiError::internal)?;
    if !started {
        return Err(ApiError::new(ErrorCode::TrainingRunning, "a fine-tuning run is in progress; see GET /v1/twin"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": true, "training": app.twin.status() }))))
}

/// Handler of `POST /v1/twin/versions/{version}/promote`.
pub async fn promote(State(app): State<Arc<App>>, Path(version): Path<u64>) -> Result<Json<Value>, ApiError> {
    if app.twin.registry.card(version).is_err() {
        return Err(ApiError::new(ErrorCode::ModelNotFound, format!("no twin version {version}")));
    }
    if app.twin.is_running() {
        return Err(ApiError::new(
            ErrorCode::TrainingRunning,
            "a fine-tuning run is in progress; retry when it is done",
        ));
    }
    let blocking = app.clone();
    tokio::task::spawn_blocking(move || blocking.twin.activate(&blocking.generator, version, "promoted by request"))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "active": format!("twin-v{version}"), "answering": app.generator.twin_name() })))
}

/// Handler of `POST /v1/twin/rollback`.
pub async fn rollback(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    if app.twin.is_running() {
        return Err(ApiError::new(
            ErrorCode::TrainingRunning,
            "a fine-tuning run is in progress; retry when it is done",
        ));
    }
    if app.twin.registry.events().map_err(ApiError::internal)?.iter().all(|e| e.action != "promote") {
        return Err(ApiError::new(ErrorCode::NotFound, "no twin was ever promoted: nothing to roll back to"));
    }
    let blocking = app.clone();
    let previous = tokio::task::spawn_blocking(move || blocking.twin.rollback(&blocking.generator))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::NotFound, format!("{e:#}")))?;
    Ok(Json(json!({ "active": previous.map_or("base".to_owned(), |v| format!("twin-v{v}")) })))
}
