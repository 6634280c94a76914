//! `GET /metrics`: the Prometheus text exposition of every recorded event
//! (see `../metrics.rs`), with the gauges that describe the app's state
//! set at each scrape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics::gauge;

use crate::app::App;

/// Handler of `GET /metrics`.
pub async fn render(State(app): State<Arc<App>>) -> Response {
    let Some(handle) = crate::metrics::handle() else {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "metrics are not available in this process")
            .into_response();
    };
    observe(&app);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// Sets the gauges that describe the app's state now.
fn observe(app: &App) {
    gauge!("twinflow_committed_epoch").set(app.store.committed_epoch() as f64);
    if let Ok(engine) = app.engine() {
        let stats = engine.stats();
        gauge!("twinflow_pending_changes").set(stats.pending_changes as f64);
        gauge!("twinflow_input_lag_seconds").set(stats.input_lag.as_secs_f64());
        gauge!("twinflow_texts_waiting").set(stats.texts_queued.saturating_sub(stats.texts_embedded) as f64);
    }
    if let Some(replica) = app.replica() {
        let status = replica.status();
        gauge!("twinflow_replica_lag_epochs").set(status.lag_epochs as f64);
        gauge!("twinflow_replica_lag_seconds").set(status.lag_seconds);
        gauge!("twinflow_replica_epochs_applied").set(status.epochs_applied as f64);
        if let Some(p50) = status.apply_lag_p50_ms {
            gauge!("twinflow_replica_apply_lag_seconds", "quantile" => "0.5").set(p50 / 1e3);
        }
        if let Some(p99) = status.apply_lag_p99_ms {
            gauge!("twinflow_replica_apply_lag_seconds", "quantile" => "0.99").set(p99 / 1e3);
        }
        gauge!("twinflow_ready").set(f64::from(u8::from(status.ready)));
    }
    gauge!("twinflow_uptime_seconds").set(app.started.elapsed().as_secs_f64());
    let (_, counts) = app.store.counts();
    for (table, rows) in counts {
        gauge!("twinflow_table_rows", "table" => table).set(rows as f64);
    }
    let drift = app.store.drift_tail(8);
    if let Some(last) = drift.last().map(|r| r.epoch) {
        for row in drift.iter().filter(|r| r.epoch == last) {
            gauge!("twinflow_drift", "metric" => row.metric.clone()).set(row.value);
            gauge!("twinflow_drift_threshold", "metric" => row.metric.clone()).set(row.threshold);
        }
    }
    let adapter = app.training.registry.active().ok().flatten().unwrap_or(0);
    let twin = app.twin.registry.active().ok().flatten().unwrap_or(0);
    gauge!("twinflow_active_model_version", "kind" => "adapter").set(adapter as f64);
    gauge!("twinflow_active_model_version", "kind" => "twin").set(twin as f64);
    gauge!("twinflow_training_running", "kind" => "adapter").set(f64::from(u8::from(app.training.is_running())));
    gauge!("twinflow_training_running", "kind" => "twin").set(f64::from(u8::from(app.twin.is_running())));
    if let Some(bytes) = resident_bytes() {
        gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
}

/// Resident set size from `/proc/self/statm` (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
