//! Promotion and rollback over HTTP, the same for every registry of
//! versions (the embedding adapter, the twin, retrieval settings): 404 for an unknown version,
//! 409 while a run of that kind is in progress, 404 when nothing was ever
//! promoted to roll back from.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use twinflow_pipelines::training::evaluation::setting::RetrievalSettings;
use twinflow_pipelines::training::{Promotion, Switched};
use twinflow_schemas::api::{ErrorCode, RetrievalResponse};

use super::ApiError;
use crate::app::App;

/// Handler of `POST /v1/models/{version}/promote`.
pub async fn promote_adapter(
    State(app): State<Arc<App>>,
    Path(version): Path<u64>,
) -> Result<Json<Switched>, ApiError> {
    promote(app.training.clone(), version).await
}

/// Handler of `POST /v1/models/rollback`.
pub async fn roll_back_adapter(State(app): State<Arc<App>>) -> Result<Json<Switched>, ApiError> {
    roll_back(app.training.clone()).await
}

/// Handler of `POST /v1/twin/versions/{version}/promote`.
pub async fn promote_twin(State(app): State<Arc<App>>, Path(version): Path<u64>) -> Result<Json<Switched>, ApiError> {
    promote(app.twin.clone(), version).await
}

/// Handler of `POST /v1/twin/rollback`.
pub async fn roll_back_twin(State(app): State<Arc<App>>) -> Result<Json<Switched>, ApiError> {
    roll_back(app.twin.clone()).await
}

/// Handler of `GET /v1/retrieval`.
pub async fn retrieval(State(app): State<Arc<App>>) -> Result<Json<RetrievalResponse>, ApiError> {
    let settings = &app.retrieval;
    let (versions, events) = settings.versions().map_err(ApiError::internal)?;
    let (active, fusion) = settings.current();
    Ok(Json(RetrievalResponse {
        active: RetrievalSettings::name(active),
        fusion,
        configured: settings.configured(),
        versions,
        events,
    }))
}

/// Handler of `POST /v1/retrieval/{version}/promote`.
pub async fn promote_retrieval(
    State(app): State<Arc<App>>,
    Path(version): Path<u64>,
) -> Result<Json<Switched>, ApiError> {
    promote(app.retrieval.clone(), version).await
}

/// Handler of `POST /v1/retrieval/rollback`.
pub async fn roll_back_retrieval(State(app): State<Arc<App>>) -> Result<Json<Switched>, ApiError> {
    roll_back(app.retrieval.clone()).await
}

async fn promote(versions: Arc<dyn Promotion>, version: u64) -> Result<Json<Switched>, ApiError> {
    if !versions.has_version(version) {
        return Err(ApiError::new(ErrorCode::ModelNotFound, format!("no {} version {version}", versions.kind())));
    }
    if versions.is_running() {
        return Err(running(versions.as_ref()));
    }
    // A switch may build a model: off the async runtime.
    let switched = tokio::task::spawn_blocking(move || versions.promote(version, "promoted by request"))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(switched))
}

async fn roll_back(versions: Arc<dyn Promotion>) -> Result<Json<Switched>, ApiError> {
    if versions.is_running() {
        return Err(running(versions.as_ref()));
    }
    if !versions.ever_promoted().map_err(ApiError::internal)? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no {} was ever promoted: nothing to roll back to", versions.kind()),
        ));
    }
    let switched = tokio::task::spawn_blocking(move || versions.roll_back())
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::NotFound, e.to_string()))?;
    Ok(Json(switched))
}

fn running(versions: &dyn Promotion) -> ApiError {
    ApiError::new(
        ErrorCode::TrainingRunning,
        format!("a {} training run is in progress; retry when it is done", versions.kind()),
    )
}
