//! `GET /v1/sources` (every running source: kind, state, committed
//! position, changes per second, refused records) and
//! `POST /v1/sources/{name}/pause`, `…/resume` (admin): a paused source's
//! changes wait in its channel, and the source waits behind them, so
//! nothing is lost and its position does not move.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};

use twinflow_schemas::api::{ErrorCode, SourceStatus, SourcesResponse};

use super::ApiError;
use crate::app::App;

/// Handler of `GET /v1/sources`.
pub async fn list(State(app): State<Arc<App>>) -> Json<SourcesResponse> {
    let positions = app.store.source_positions();
    let sources = app.sources().iter().map(|gauge| gauge.status(positions.get(&gauge.name).cloned())).collect();
    Json(SourcesResponse { sources })
}

/// Handler of `POST /v1/sources/{name}/pause`.
pub async fn pause(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<SourceStatus>, ApiError> {
    switch(&app, &name, true)
}

/// Handler of `POST /v1/sources/{name}/resume`.
pub async fn resume(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<SourceStatus>, ApiError> {
    switch(&app, &name, false)
}

fn switch(app: &App, name: &str, pause: bool) -> Result<Json<SourceStatus>, ApiError> {
    app.primary()?;
    let sources = app.sources();
    let gauge = sources.iter().find(|g| g.name == name).ok_or_else(|| {
        let names: Vec<&str> = sources.iter().map(|g| g.name.as_str()).collect();
        ApiError::new(ErrorCode::NotFound, format!("no source {name:?}; the sources are {names:?}"))
    })?;
    let changed = if pause { gauge.pause() } else { gauge.resume() };
    if changed {
        tracing::info!(source = %name, paused = pause, "source {}", if pause { "paused" } else { "resumed" });
    }
    Ok(Json(gauge.status(app.store.source_positions().get(name).cloned())))
}
