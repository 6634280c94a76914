//! Prometheus metrics: `GET /metrics` in the text exposition format.
//!
//! ```text
//!  events (as they happen)                      state (read at each scrape)
//!  HTTP requests by route ─┐                    ┌─ epochs, pending changes, input lag
//!  source changes, errors ─┤                    ├─ rows per table, texts embedded/waiting
//!  epoch commits, freshness┼─▶ metrics facade ◀─┼─ latest drift values and thresholds
//!  embed batches, latency ─┤   (one recorder    ├─ active model versions, jobs running
//!  LLM tokens, latency ────┤    per process)    └─ resident memory, uptime
//!  training runs ──────────┘        │
//!                                   ▼
//!                      PrometheusHandle::render ─▶ GET /metrics
//! ```
//!
//! Names follow Prometheus conventions: a `twinflow_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` for counters; latency histograms have
//! fixed buckets.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds.
const SECONDS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Batch size buckets.
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The process's recorder (installed once; `None` if another recorder was installed first).
pub(crate) fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("twinflow_embed_batch_size".into()), SIZES))
                .and_then(|b| b.install_recorder())
                .map_err(|e| tracing::warn!(error = %e, "metrics are off: no recorder"))
                .ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Installs the recorder (called when the app starts, so that events before
/// the first scrape are counted).
pub fn install() {
    handle();
}

fn describe() {
    describe_counter!("twinflow_http_requests_total", "HTTP requests answered, by method, route and status");
    describe_histogram!("twinflow_http_request_duration_seconds", Unit::Seconds, "HTTP request latency by route");
    describe_counter!("twinflow_source_changes_total", "Changes accepted from each source");
    describe_counter!("twinflow_ingest_errors_total", "Records refused by each source");
    describe_counter!("twinflow_epochs_committed_total", "Epochs committed");
    describe_counter!("twinflow_rows_committed_total", "Updates committed per table");
    describe_histogram!("twinflow_commit_seconds", Unit::Seconds, "Time to write and publish one epoch");
    describe_histogram!(
        "twinflow_freshness_seconds",
        Unit::Seconds,
        "From the first change of an epoch accepted to the epoch committed (searchable)"
    );
    describe_histogram!("twinflow_embed_batch_size", "Texts per call to the embedding model");
    describe_histogram!("twinflow_embed_seconds", Unit::Seconds, "Time per call to the embedding model");
    describe_counter!("twinflow_embedded_texts_total", "Texts sent to the embedding model");
    describe_counter!(
        "twinflow_generated_tokens_total",
        "LLM tokens, by model and kind (prompt, completion; cached: prompt tokens reused from the previous generation)"
    );
    describe_histogram!("twinflow_generation_seconds", Unit::Seconds, "LLM time by phase (prefill, decode)");
    describe_counter!("twinflow_training_runs_total", "Training runs by kind (adapter, twin) and outcome");
    describe_gauge!("twinflow_committed_epoch", "The last committed epoch");
    describe_gauge!("twinflow_pending_changes", "Changes accepted but not committed");
    describe_gauge!("twinflow_input_lag_seconds", Unit::Seconds, "Age of the oldest uncommitted change");
    describe_gauge!("twinflow_table_rows", "Live rows per table");
    describe_gauge!("twinflow_texts_waiting", "Texts waiting for the embedding model");
    describe_gauge!("twinflow_drift", "Latest drift value per metric");
    describe_gauge!("twinflow_drift_threshold", "Trigger threshold per drift metric");
    describe_gauge!("twinflow_active_model_version", "Active model version by kind (0: the base model)");
    describe_gauge!("twinflow_training_running", "1 while a run of that kind is in progress");
    describe_gauge!("process_resident_memory_bytes", Unit::Bytes, "Resident memory of the process");
    describe_gauge!("twinflow_uptime_seconds", Unit::Seconds, "Seconds since the app started");
}

/// Middleware: counts and times every request by its route pattern (not the
/// raw path, so label values stay few).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    counter!("twinflow_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!("twinflow_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
