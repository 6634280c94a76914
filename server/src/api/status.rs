//! `GET /healthz`, `GET /v1/status` (epochs, lag, table sizes),
//! `GET /v1/timeline` (the most recent commits) and
//! `POST /v1/snapshots` (write a consolidated snapshot now).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use twinflow_schemas::api::{
    IngestErrors, SnapshotResponse, SourcesStatus, StatusModels, StatusResponse, TimelineResponse,
};

use super::ApiError;
use crate::app::App;

/// Liveness: answers while the process serves.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Handler of `GET /v1/status`.
pub async fn status(State(app): State<Arc<App>>) -> Json<StatusResponse> {
    let stats = app.engine.stats();
    let (_, counts) = app.store.counts();
    Json(StatusResponse {
        committed_epoch: stats.committed_epoch,
        open_epoch: stats.open_epoch,
        pending_changes: stats.pending_changes as u64,
        input_lag_ms: stats.input_lag.as_secs_f64() * 1e3,
        workers: stats.workers,
        embedder: app.engine.embedder().model_id().to_owned(),
        tables: counts,
        texts_embedded: stats.texts_embedded,
        texts_waiting: stats.texts_queued.saturating_sub(stats.texts_embedded),
        uptime_s: app.started.elapsed().as_secs_f64(),
        data_dir: app.config.storage.data_dir.display().to_string(),
        drift: super::models::drift_response(&app, 3),
        models: StatusModels {
            active: app.training.active_name(),
            search_projection: app.store.projection(),
            training: app.training.status(),
            twin: app.twin.active_name(),
        },
        sources: {
            let (recent, total) = app.ingest.recent_errors();
            SourcesStatus {
                positions: app.store.source_positions(),
                ingest_errors: IngestErrors { total, recent: recent.into_iter().rev().take(5).collect() },
            }
        },
    })
}

/// Handler of `GET /v1/timeline`.
pub async fn timeline(State(app): State<Arc<App>>) -> Json<TimelineResponse> {
    Json(TimelineResponse { points: app.timeline.points() })
}

/// Handler of `POST /v1/snapshots`.
pub async fn snapshot(State(app): State<Arc<App>>) -> Result<Json<SnapshotResponse>, ApiError> {
    let store = app.store.clone();
    let info = tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(Json(SnapshotResponse { version: info.version, epoch: info.epoch, rows: info.rows, files: info.files }))
}
