//! The training loop over HTTP: drift, dataset versions, the model registry
//! and the training job.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/drift` | the monitor's state and the latest `drift` rows |
//! | `GET /v1/datasets` | dataset versions with their counts and the models trained on them |
//! | `GET /v1/datasets/{name}/versions/{v}` | one version: manifest (lineage, counts), files, models |
//! | `POST /v1/datasets/snapshot` | write the next dataset version now |
//! | `POST /v1/datasets/generate` | one incremental LLM generation pass (`{"limit": n}`) |
//! | `GET /v1/models` | active model, every version's card, registry events, training job |
//! | `POST /v1/models/train` | start a training run (202; 409 `training_running`) |
//!
//! Promotion and rollback of adapter versions are in `versions.rs`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use twinflow_schemas::api::{
    DatasetModel, DatasetSummary, DatasetVersionResponse, DatasetVersions, DatasetsResponse, DriftResponse, ErrorCode,
    GenerateRequest, ModelsResponse, TrainingStarted,
};
use twinflow_schemas::datasets::{DatasetManifest, DatasetVersion, GenerationReport};
use twinflow_schemas::models::Evaluation;

use super::ApiError;
use crate::app::App;

/// Drift rows returned by `GET /v1/drift`.
const RECENT_DRIFT_ROWS: usize = 30;

/// Handler of `GET /v1/drift`.
pub async fn drift(State(app): State<Arc<App>>) -> Json<DriftResponse> {
    Json(drift_response(&app, RECENT_DRIFT_ROWS))
}

/// The monitor's state and the last `recent` drift rows.
pub(crate) fn drift_response(app: &App, recent: usize) -> DriftResponse {
    let Some(monitor) = &app.training.monitor else {
        return DriftResponse { enabled: false, state: None, recent: Vec::new() };
    };
    let state = monitor.lock().state();
    DriftResponse { enabled: true, state: Some(state), recent: app.store.drift_tail(recent) }
}

/// The manifest of the instruct dataset's `version`.
fn manifest(app: &App, version: u64) -> Result<DatasetManifest, ApiError> {
    let value = twinflow_sinks::datasets::read_manifest(app.store.data_dir(), "instruct", version)
        .map_err(ApiError::internal)?;
    serde_json::from_value(value).map_err(ApiError::internal)
}

/// Handler of `GET /v1/datasets`.
pub async fn datasets(State(app): State<Arc<App>>) -> Result<Json<DatasetsResponse>, ApiError> {
    let cards = app.training.registry.list().map_err(ApiError::internal)?;
    let mut versions = Vec::new();
    for version in twinflow_sinks::datasets::versions(app.store.data_dir(), "instruct") {
        let DatasetManifest { version: info, created_at_ms, .. } = manifest(&app, version)?;
        let models = cards.iter().filter(|c| c.dataset.version == version).map(|c| c.version).collect();
        versions.push(DatasetSummary { version: info, created_at_ms, models });
    }
    Ok(Json(DatasetsResponse {
        datasets: vec![DatasetVersions { name: "instruct".into(), versions }],
        generations_cached: app.training.datasets.cached(),
    }))
}

/// Handler of `GET /v1/datasets/{name}/versions/{version}`.
pub async fn dataset_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Json<DatasetVersionResponse>, ApiError> {
    if name != "instruct" {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no dataset {name:?}; datasets: instruct")));
    }
    let data_dir = app.store.data_dir();
    if !twinflow_sinks::datasets::versions(data_dir, "instruct").contains(&version) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("dataset instruct has no version {version}")));
    }
    let mut manifest = manifest(&app, version)?;
    let cards = app.training.registry.list().map_err(ApiError::internal)?;
    let models = cards
        .iter()
        .filter(|c| c.dataset.version == version)
        .map(|c| DatasetModel { version: c.version, evaluation: c.evaluation.clone(), decision: c.decision.clone() })
        .collect();
    let dir = twinflow_sinks::datasets::version_dir(data_dir, "instruct", version);
    manifest.version.files = std::fs::read_dir(&dir)
        .map_err(ApiError::internal)?
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    let sql = format!("SELECT * FROM instruct_dataset WHERE dataset_version = {version}");
    Ok(Json(DatasetVersionResponse { manifest, models, sql }))
}

/// Handler of `POST /v1/datasets/snapshot`: writes the next dataset version now.
pub async fn dataset_snapshot(State(app): State<Arc<App>>) -> Result<Json<DatasetVersion>, ApiError> {
    let blocking = app.clone();
    let version = tokio::task::spawn_blocking(move || blocking.training.datasets.snapshot(&blocking.store))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(version))
}

/// Handler of `POST /v1/datasets/generate`: one incremental generation pass
/// (only extracts the configured generator has not seen are sent).
pub async fn dataset_generate(
    State(app): State<Arc<App>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<GenerationReport>, ApiError> {
    let request: GenerateRequest = match &body {
        Ok(bytes) if bytes.is_empty() => GenerateRequest::default(),
        _ => super::json_body(&app, body, " (expected {\"limit\": <extracts>})")?,
    };
    if request.limit > 10_000 {
        return Err(ApiError::new(ErrorCode::InvalidField, "limit must be at most 10000 extracts per pass"));
    }
    let blocking = app.clone();
    let report = tokio::task::spawn_blocking(move || {
        let generator = blocking.generator.base().map_err(|e| ApiError::new(ErrorCode::GeneratorUnavailable, e))?;
        blocking
            .training
            .datasets
            .generate(&blocking.store, generator.as_ref(), request.limit)
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(report))
}

/// Handler of `GET /v1/models`.
pub async fn models(State(app): State<Arc<App>>) -> Result<Json<ModelsResponse>, ApiError> {
    let registry = &app.training.registry;
    Ok(Json(ModelsResponse {
        active: app.training.active_name(),
        base_model: app.queries.model_id().to_owned(),
        search_projection: app.store.projection(),
        versions: registry.list().map_err(ApiError::internal)?,
        events: registry.events().map_err(ApiError::internal)?,
        training: app.training.status(),
    }))
}

/// Handler of `POST /v1/models/train`.
pub async fn train(State(app): State<Arc<App>>) -> Result<(StatusCode, Json<TrainingStarted<Evaluation>>), ApiError> {
    let started = app.training.start(serde_json::Value::from("manual")).map_err(ApiError::internal)?;
    if !started {
        return Err(ApiError::new(ErrorCode::TrainingRunning, "a training run is in progress; see GET /v1/models"));
    }
    Ok((StatusCode::ACCEPTED, Json(TrainingStarted { started, training: app.training.status() })))
}
