//! `GET /metrics`: scraped after ingesting and searching, parsed as the
//! Prometheus text format, with the metrics of each stage present and
//! consistent with what happened.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::fixtures::{app, article, upsert_line};
use crate::router::{post, send};

/// Samples by `name{labels}` (labels sorted as exposed), after checking every line's syntax.
fn parse(text: &str) -> (HashMap<String, f64>, HashMap<String, String>) {
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    let name_ok = |n: &str| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
            assert!(name_ok(name), "metric name {name:?}");
            assert!(["counter", "gauge", "histogram", "summary"].contains(&kind), "{line:?}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "a counter without _total: {name}");
            }
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "metric name in {line:?}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "labels in {line:?}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(series.to_owned(), value);
    }
    (samples, types)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_every_stage_in_prometheus_format() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let body: String =
        (0..5).map(|i| upsert_line(&format!("m-{i}"), &format!("Doc {i}"), &article("harbours", 3)) + "\n").collect();
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, Request::get("/v1/search?q=harbours&k=2").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, Request::get("/v1/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, bytes) = send(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    let (samples, types) = parse(&text);
    let get = |series: &str| samples.get(series).copied().unwrap_or_else(|| panic!("no {series} in\n{text}"));

    assert!(get(r#"twinflow_source_changes_total{source="http"}"#) >= 5.0);
    assert!(get("twinflow_epochs_committed_total") >= 1.0);
    assert!(get(r#"twinflow_rows_committed_total{table="documents"}"#) >= 5.0);
    assert_eq!(get(r#"twinflow_table_rows{table="documents"}"#), 5.0);
    assert!(get(r#"twinflow_http_requests_total{method="GET",route="/v1/search",status="200"}"#) >= 1.0);
    assert!(get(r#"twinflow_http_requests_total{method="GET",route="unmatched",status="404"}"#) >= 1.0);
    assert_eq!(types["twinflow_http_request_duration_seconds"], "histogram");
    assert!(get(r#"twinflow_http_request_duration_seconds_count{method="POST",route="/v1/documents"}"#) >= 1.0);
    assert_eq!(types["twinflow_freshness_seconds"], "histogram");
    let freshness = get("twinflow_freshness_seconds_count");
    assert!(freshness >= 1.0 && get(r#"twinflow_freshness_seconds_bucket{le="+Inf"}"#) == freshness);
    assert!(get("twinflow_embed_batch_size_count") >= 1.0);
    assert!(get("twinflow_embedded_texts_total") >= 1.0);
    assert_eq!(get(r#"twinflow_active_model_version{kind="adapter"}"#), 0.0);
    assert!(get("twinflow_committed_epoch") >= 1.0);
    assert!(get("process_resident_memory_bytes") > 1e6);
    app.shutdown().unwrap();
}
