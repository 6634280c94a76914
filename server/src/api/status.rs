//! `GET /healthz`, `GET /readyz`, `GET /v1/status` (epochs, lag, table sizes),
//! `GET /v1/timeline` (the most recent commits) and
//! `POST /v1/snapshots` (write a consolidated snapshot now).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use twinflow_schemas::api::{
    IngestErrors, ReadyResponse, Role, SnapshotResponse, SourcesStatus, StatusModels, StatusResponse, TimelineResponse,
};

use super::ApiError;
use crate::app::App;

/// Liveness: answers while the process serves.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness, for a load balancer: 200 while the process should get
/// traffic — a primary once it serves, a replica while it is within
/// `[replica] max_lag` of its primary — else 503 with the reason.
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, Json<ReadyResponse>) {
    let committed_epoch = app.store.committed_epoch();
    let (role, reason) = match app.replica() {
        None => (Role::Primary, None),
        Some(replica) => {
            let status = replica.status();
            let reason = (!status.ready).then(|| match (&status.last_error, status.last_read_ms_ago) {
                (Some(error), _) => format!("cannot follow the primary: {error}"),
                (None, None) => "the primary's manifest was not read yet".to_owned(),
                (None, Some(_)) => format!(
                    "{} epochs ({:.1} s) behind the primary, over [replica] max_lag",
                    status.lag_epochs, status.lag_seconds
                ),
            });
            (Role::Replica, reason)
        }
    };
    let ready = reason.is_none();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(ReadyResponse { ready, role, committed_epoch, reason }))
}

/// Handler of `GET /v1/status`.
pub async fn status(State(app): State<Arc<App>>) -> Json<StatusResponse> {
    let stats = app.engine().ok().map(|engine| engine.stats());
    let (_, counts) = app.store.counts();
    Json(StatusResponse {
        committed_epoch: stats.as_ref().map_or_else(|| app.store.committed_epoch(), |s| s.committed_epoch),
        open_epoch: stats.as_ref().map_or(0, |s| s.open_epoch),
        pending_changes: stats.as_ref().map_or(0, |s| s.pending_changes as u64),
        input_lag_ms: stats.as_ref().map_or(0.0, |s| s.input_lag.as_secs_f64() * 1e3),
        workers: stats.as_ref().map_or(0, |s| s.workers),
        embedder: app.queries.model_id().to_owned(),
        tables: counts,
        texts_embedded: stats.as_ref().map_or(0, |s| s.texts_embedded),
        texts_waiting: stats.as_ref().map_or(0, |s| s.texts_queued.saturating_sub(s.texts_embedded)),
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
            let (recent, total) = app.primary().map(|p| p.ingest.recent_errors()).unwrap_or_default();
            SourcesStatus {
                positions: app.store.source_positions(),
                ingest_errors: IngestErrors { total, recent: recent.into_iter().rev().take(5).collect() },
            }
        },
        role: if app.replica().is_some() { Role::Replica } else { Role::Primary },
        replica: app.replica().map(|r| r.status()),
        object_store: app.primary().ok().and_then(|p| p.shipping.as_ref()).map(|s| s.status()),
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
