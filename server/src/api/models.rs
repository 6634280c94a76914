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
use serde_json::{Value, json};

use twinflow_schemas::api::ErrorCode;

use super::ApiError;
use crate::app::App;

/// Drift rows returned by `GET /v1/drift`.
const RECENT_DRIFT_ROWS: usize = 30;

/// Handler of `GET /v1/drift`.
pub async fn drift(State(app): State<Arc<App>>) -> Json<Value> {
    Json(drift_json(&app, RECENT_DRIFT_ROWS))
}

/// The monitor's state and the last `recent` drift rows.
pub(crate) fn drift_json(app: &App, recent: usize) -> Value {
    let Some(monitor) = &app.training.monitor else {
        return json!({ "enabled": false });
    };
    let state = monitor.lock().state();
    json!({ "state": state, "recent": app.store.drift_tail(recent) })
}

/// Handler of `GET /v1/datasets`.
pub async fn datasets(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let data_dir = app.store.data_dir();
    let cards = app.training.registry.list().map_err(ApiError::internal)?;
    let mut versions = Vec::new();
    for version in twinflow_sinks::datasets::versions(data_dir, "instruct") {
        let mut manifest =
            twinflow_sinks::datasets::read_manifest(data_dir, "instruct", version).map_err(ApiError::internal)?;
        if let Some(m) = manifest.as_object_mut() {
            m.remove("lineage");
            m.remove("files");
        }
        let models: Vec<u64> = cards.iter().filter(|c| c.dataset.version == version).map(|c| c.version).collect();
        manifest["models"] = json!(models);
        versions.push(manifest);
    }
    Ok(Json(json!({
        "datasets": [ { "name": "instruct", "versions": versions } ],
        "generations_cached": app.training.datasets.cached(),
    })))
}

/// Handler of `GET /v1/datasets/{name}/versions/{version}`.
pub async fn dataset_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, u64)>,
) -> Result<Json<Value>, ApiError> {
    if name != "instruct" {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no dataset {name:?}; datasets: instruct")));
    }
    let data_dir = app.store.data_dir();
    if !twinflow_sinks::datasets::versions(data_dir, "instruct").contains(&version) {
        return Err(ApiError::new(ErrorCode::NotFound, format!("dataset instruct has no version {version}")));
    }
    let mut manifest =
        twinflow_sinks::datasets::read_manifest(data_dir, "instruct", version).map_err(ApiError::internal)?;
    let cards = app.training.registry.list().map_err(ApiError::internal)?;
    let models: Vec<Value> = cards
        .iter()
        .filter(|c| c.dataset.version == version)
        .map(|c| json!({ "version": c.version, "evaluation": c.evaluation, "decision": c.decision }))
        .collect();
    let dir = twinflow_sinks::datasets::version_dir(data_dir, "instruct", version);
    let files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(ApiError::internal)?
        .flatten()
        .map(|e| e.path().display().to_string())
        .collect();
    manifest["files"] = json!(files);
    manifest["models"] = json!(models);
    manifest["sql"] = json!(format!("SELECT * FROM instruct_dataset WHERE dataset_version = {version}"));
    Ok(Json(manifest))
}

/// Handler of `POST /v1/datasets/snapshot`: writes the next dataset version now.
pub async fn dataset_snapshot(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let blocking = app.clone();
    let version = tokio::task::spawn_blocking(move || blocking.training.datasets.snapshot(&blocking.store))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(json!(version)))
}

/// Body of `POST /v1/datasets/generate`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Extracts sent to the model at most (the rest wait for the next call).
    #[serde(default = "default_generate_limit")]
    pub limit: usize,
}

fn default_generate_limit() -> usize {
    5
}

/// Handler of `POST /v1/datasets/generate`: one incremental generation pass
/// (only extracts the configured generator has not seen are sent).
pub async fn dataset_generate(
    State(app): State<Arc<App>>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: GenerateRequest = match &body {
        Ok(bytes) if bytes.is_empty() => GenerateRequest { limit: default_generate_limit() },
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
    Ok(Json(json!(report)))
}

/// Handler of `GET /v1/models`.
pub async fn models(State(app): State<Arc<App>>) -> Result<Json<Value>, ApiError> {
    let registry = &app.training.registry;
    let cards = registry.list().map_err(ApiError::internal)?;
    let events = registry.events().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "active": app.training.active_name(),
        "base_model": app.engine.embedder().model_id(),
        "search_projection": app.store.projection(),
        "versions": cards,
        "events": events,
        "training": app.training.status(),
    })))
}

/// Handler of `POST /v1/models/train`.
pub async fn train(State(app): State<Arc<App>>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let started = app
        .training
        .start(json!("manual"))
        .map_err(ApiError::internal)?;
    if !started {
        return Err(ApiError::new(ErrorCode::TrainingRunning, "a training run is in progress; see GET /v1/models"));
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "started": true, "training": app.training.status() }))))
}
