//! The router in process: good requests work end to end, every bad input is
//! a 4xx with a stable code, and nothing is accepted half-way.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use twinflow_schemas::api::{ErrorBody, ErrorCode, IngestResponse, SearchResponse, SqlResponse, StatusResponse};
use twinflow_schemas::rng::SeededRng;
use twinflow_server::router;

use crate::fixtures::{app, article, upsert_line};

/// Sends `request` with the admin key, unless it carries its own `Authorization`.
pub(crate) async fn send(
    app: &std::sync::Arc<twinflow_server::App>,
    mut request: Request<Body>,
) -> (StatusCode, Vec<u8>) {
    if !request.headers().contains_key("authorization") {
        let bearer = format!("Bearer {}", crate::fixtures::ADMIN_KEY).parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
    }
    send_as_is(app, request).await
}

/// Sends `request` as it is (no key added).
pub(crate) async fn send_as_is(
    app: &std::sync::Arc<twinflow_server::App>,
    request: Request<Body>,
) -> (StatusCode, Vec<u8>) {
    let response = router(app.clone()).oneshot(request).await.expect("router answers");
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.expect("body");
    (status, body.to_vec())
}

pub(crate) fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header("content-type", content_type).body(body.into()).expect("request")
}

pub(crate) async fn expect_error(
    app: &std::sync::Arc<twinflow_server::App>,
    request: Request<Body>,
    status: StatusCode,
    code: ErrorCode,
) {
    let (got, body) = send(app, request).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(got, status, "{text}");
    let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("error body {text}: {e}"));
    assert_eq!(error.error.code, code, "{text}");
}

async fn documents(app: &std::sync::Arc<twinflow_server::App>) -> u64 {
    let (_, body) = send(app, Request::get("/v1/status").body(Body::empty()).unwrap()).await;
    let status: StatusResponse = serde_json::from_slice(&body).unwrap();
    status.tables.get("documents").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_search_sql_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let body = format!(
        "{}\n{}\n",
        upsert_line("rivers", "Rivers", &article("rivers and boats", 6)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 6))
    );
    let (status, bytes) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let ingest: IngestResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(ingest.accepted, 2);
    assert!(ingest.committed);

    let (status, bytes) =
        send(&app, Request::get("/v1/search?q=boats%20on%20rivers&k=3").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let search: SearchResponse = serde_json::from_slice(&bytes).unwrap();
    assert!(search.as_of >= ingest.epoch);
    assert_eq!(search.results[0].sources[0].doc_id, "rivers", "{search:?}");
    assert_eq!(search.results[0].sources[0].title, "Rivers");
    assert!(search.results.len() <= 3);

    let sql = r#"{"sql": "SELECT doc_id, COUNT(*) AS n FROM chunks GROUP BY doc_id ORDER BY doc_id"}"#;
    let (status, bytes) = send(&app, post("/v1/sql", "application/json", sql)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let answer: SqlResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer.row_count, 2);
    assert_eq!(answer.rows[0]["doc_id"], "rivers");

    let (status, bytes) =
        send(&app, post("/v1/sql?format=csv", "application/sql", "SELECT COUNT(*) AS n FROM documents")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(bytes).unwrap().trim(), "n\n2");

    // Deleting removes the document from every view.
    let (status, _) =
        send(&app, post("/v1/documents?wait=true", "application/json", r#"{"op":"delete","doc_id":"taxes"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(documents(&app).await, 1);
    let (_, bytes) =
        send(&app, post("/v1/sql", "application/sql", "SELECT COUNT(*) AS n FROM instruct WHERE doc_id = 'taxes'"))
            .await;
    let answer: SqlResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer.rows[0]["n"], 0);
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_documents_chunks_say_their_pages() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    // What the watch, git and web sources make of a PDF: its pages, a form feed between them.
    let pages = [article("lighthouses and harbours", 4), article("orchards and apple harvests", 4)];
    let body = upsert_line("file:report.pdf", "Report", &pages.join("\n\n\u{c}\n\n"));
    let (status, bytes) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body + "\n")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));

    let (status, bytes) =
        send(&app, Request::get("/v1/search?q=orchards%20apple%20harvests&k=1").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let search: SearchResponse = serde_json::from_slice(&bytes).unwrap();
    let source = &search.results[0].sources[0];
    assert_eq!((source.page_start, source.page_end), (Some(2), Some(2)), "{search:?}");
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["results"][0]["sources"][0]["page_start"], 2);

    let sql = "SELECT MIN(page_start) AS first, MAX(page_end) AS last, COUNT(*) AS n, \
               COUNT(*) FILTER (WHERE page_start IS NULL) AS unpaged FROM chunks";
    let (status, bytes) = send(&app, post("/v1/sql", "application/sql", sql)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let answer: SqlResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((&answer.rows[0]["first"], &answer.rows[0]["last"]), (&1.into(), &2.into()), "{answer:?}");
    assert_eq!(answer.rows[0]["unpaged"], 0);
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_4xx_with_codes_and_accept_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let good = upsert_line("good", "Good", "Some fine content that would be accepted on its own.");
    let cases: Vec<(Vec<u8>, &str, StatusCode, ErrorCode)> = vec![
        (
            format!("{good}\n{{\"op\":\"upsert\",").into_bytes(),
            "application/x-ndjson",
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
        ),
        (
            format!("{good}\n{{\"op\":\"upsert\",\"doc_id\":\"x\"}}").into_bytes(),
            "application/x-ndjson",
            StatusCode::BAD_REQUEST,
            ErrorCode::MissingField,
        ),
        (
            [good.as_bytes(), b"\n{\"doc_id\":\"\xff\xfe\",\"content\":\"x\"}"].concat(),
            "application/x-ndjson",
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidUtf8,
        ),
        (
            format!("{good}\n{{\"doc_id\":\"k\",\"content\":\"x\",\"kind\":\"tweet\"}}").into_bytes(),
            "application/x-ndjson",
            StatusCode::BAD_REQUEST,
            ErrorCode::UnknownKind,
        ),
        (
            b"[{\"doc_id\":\"a\",\"content\":\"x\"}, 3]".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
        ),
        (
            good.clone().into_bytes(),
            "application/xml",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
        ),
    ];
    for (body, content_type, status, code) in cases {
        expect_error(&app, post("/v1/documents", content_type, body), status, code).await;
    }
    // A 50 MB document: over the per-document limit (8 MiB), under the body limit.
    let huge = format!("{{\"doc_id\":\"huge\",\"content\":\"{}\"}}", "a".repeat(50 << 20));
    expect_error(
        &app,
        post("/v1/documents", "application/x-ndjson", huge),
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::DocumentTooLarge,
    )
    .await;
    // Over the body limit (64 MiB).
    let body = vec![b' '; 65 << 20];
    expect_error(
        &app,
        post("/v1/documents", "application/x-ndjson", body),
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
    )
    .await;

    for sql in [
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE chunks",
        "INSERT INTO documents SELECT * FROM documents",
        "COPY chunks TO '/tmp/twinflow-copy-test.csv'",
    ] {
        let body = serde_json::json!({ "sql": sql }).to_string();
        expect_error(
            &app,
            post("/v1/sql", "application/json", body),
            StatusCode::BAD_REQUEST,
            ErrorCode::SqlNotReadOnly,
        )
        .await;
    }
    assert!(!std::path::Path::new("/tmp/twinflow-copy-test.csv").exists());
    expect_error(&app, post("/v1/sql", "application/sql", "SELEC 1"), StatusCode::BAD_REQUEST, ErrorCode::SqlError)
        .await;
    expect_error(
        &app,
        post("/v1/sql", "application/json", "{\"query\":1}"),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidField,
    )
    .await;
    expect_error(
        &app,
        Request::get("/v1/search?q=&k=3").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidQuery,
    )
    .await;
    expect_error(
        &app,
        Request::get("/v1/search?q=x&k=many").body(Body::empty()).unwrap(),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidQuery,
    )
    .await;
    expect_error(
        &app,
        Request::get("/v1/nope").body(Body::empty()).unwrap(),
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;

    // Nothing of the rejected bodies was accepted: a good request afterwards
    // commits exactly one document.
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(documents(&app).await, 1);
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_in_the_openai_format() {
    use base64::Engine as _;
    use twinflow_schemas::api::{EmbeddingVector, EmbeddingsResponse};

    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let model = app.engine().unwrap().embedder().model_id().to_owned();
    let json = |v: serde_json::Value| post("/v1/embeddings", "application/json", v.to_string());

    let (status, body) = send(&app, json(serde_json::json!({"input": "hello world", "model": model}))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let one: EmbeddingsResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!((one.object.as_str(), one.data.len(), one.model.as_str()), ("list", 1, model.as_str()));
    let EmbeddingVector::Float(hello) = &one.data[0].embedding else { panic!("floats by default") };
    assert_eq!(hello.len(), 384);
    assert_eq!(*hello, app.engine().unwrap().embedder().embed_batch(&["hello world"]).unwrap()[0]);
    assert_eq!(one.usage.prompt_tokens, app.engine().unwrap().embedder().count_tokens("hello world") as u64);

    let request = serde_json::json!({"input": ["a", "hello world", ""], "encoding_format": "base64"});
    let (status, body) = send(&app, json(request)).await;
    assert_eq!(status, StatusCode::OK);
    let many: EmbeddingsResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(many.data.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1, 2]);
    let EmbeddingVector::Base64(encoded) = &many.data[1].embedding else { panic!("base64 asked for") };
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let decoded: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(decoded, *hello);
    assert_eq!(many.usage.total_tokens, many.usage.prompt_tokens);

    let bad = [
        (
            serde_json::json!({"input": "x", "model": "text-embedding-3-small"}),
            StatusCode::NOT_FOUND,
            ErrorCode::ModelNotFound,
        ),
        (serde_json::json!({"input": [[101, 102]]}), StatusCode::BAD_REQUEST, ErrorCode::InvalidField),
        (serde_json::json!({"input": []}), StatusCode::BAD_REQUEST, ErrorCode::InvalidField),
        (serde_json::json!({"model": model}), StatusCode::BAD_REQUEST, ErrorCode::MissingField),
        (
            serde_json::json!({"input": "x", "encoding_format": "int8"}),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidField,
        ),
        (serde_json::json!({"input": "x", "dimensions": 128}), StatusCode::BAD_REQUEST, ErrorCode::InvalidField),
    ];
    for (request, status, code) in bad {
        expect_error(&app, json(request), status, code).await;
    }
    expect_error(
        &app,
        post("/v1/embeddings", "application/json", "{\"input\": "),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidJson,
    )
    .await;
    let too_many = vec!["x"; 2049];
    expect_error(
        &app,
        json(serde_json::json!({ "input": too_many })),
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidField,
    )
    .await;
    app.shutdown().unwrap();
}

/// The training loop over HTTP with the hashing embedder: a manual run on a
/// dataset snapshot, registry listing, promote and rollback switching the
/// search projection, and the errors of each endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_datasets_models_train_promote_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::fixtures::app_with(dir.path(), |config| {
        config.drift.min_samples = 10;
        config.drift.window = 10;
        config.training.batch_size = 8;
        config.training.epochs = 2;
    });
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();

    // Nothing to roll back, no such version, no such dataset, too little data to train.
    expect_error(&app, post("/v1/models/rollback", "application/json", ""), StatusCode::NOT_FOUND, ErrorCode::NotFound)
        .await;
    expect_error(
        &app,
        post("/v1/models/7/promote", "application/json", ""),
        StatusCode::NOT_FOUND,
        ErrorCode::ModelNotFound,
    )
    .await;
    expect_error(&app, get("/v1/datasets/posts/versions/1"), StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    expect_error(&app, get("/v1/datasets/instruct/versions/1"), StatusCode::NOT_FOUND, ErrorCode::NotFound).await;

    // Varied texts (templated ones would be removed as near-duplicates by the dataset curation).
    let vocabulary = [
        "rivers", "taxes", "ships", "farms", "roads", "mines", "banks", "forts", "ports", "mills", "courts", "schools",
        "wheat", "cotton", "iron", "coal", "treaty", "navy", "army", "tariff", "credit", "debt", "harbour", "canal",
    ];
    let mut rng = SeededRng::new(7);
    let mut word = move || vocabulary[rng.index(vocabulary.len())];
    let body: String = (0..40)
        .map(|i| {
            let paragraphs: Vec<String> =
                (0..4).map(|_| (0..40).map(|_| word()).collect::<Vec<_>>().join(" ") + ".").collect();
            upsert_line(&format!("doc-{i}"), &format!("Report {i}"), &paragraphs.join("\n\n")) + "\n"
        })
        .collect();
    let (status, bytes) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));

    let (status, bytes) = send(&app, get("/v1/drift")).await;
    assert_eq!(status, StatusCode::OK);
    let drift = json(&bytes);
    assert!(drift["state"]["reference"].as_str().is_some_and(|r| r.starts_with("bootstrap@")), "{drift}");

    let (status, bytes) = send(&app, post("/v1/models/train", "application/json", "")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&bytes));
    let models = loop {
        let (_, bytes) = send(&app, get("/v1/models")).await;
        let models = json(&bytes);
        if models["training"]["runs"] == 1 {
            break models;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(models["training"]["last_error"].is_null(), "{models}");
    let card = &models["versions"][0];
    assert_eq!(card["version"], 1);
    assert_eq!(card["dataset"]["version"], 1, "the run snapshots the dataset first: {card}");
    assert_eq!(card["trigger"], "manual");
    let promoted = card["promotable"].as_bool().unwrap_or(false);
    assert_eq!(models["active"], if promoted { "adapter-v1" } else { "base" });

    let (status, bytes) = send(&app, get("/v1/datasets")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&bytes)["datasets"][0]["versions"][0]["models"][0], 1);
    let (status, bytes) = send(&app, get("/v1/datasets/instruct/versions/1")).await;
    assert_eq!(status, StatusCode::OK);
    let version = json(&bytes);
    let files = version["files"].as_array().cloned().unwrap_or_default();
    for name in ["samples.parquet", "preference.parquet", "train.jsonl", "test.jsonl", "manifest.json"] {
        assert!(files.iter().any(|f| f.as_str().is_some_and(|f| f.ends_with(name))), "{name} in {version}");
    }
    assert_eq!(version["models"][0]["version"], 1);

    // Promote by hand (whatever evaluation said), search through it, roll back.
    let (status, bytes) = send(&app, post("/v1/models/1/promote", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(app.store.projection().as_deref(), Some("adapter-v1"));
    let (status, bytes) = send(&app, get("/v1/search?q=rivers%20and%20the%20nation&k=3&mode=vector")).await;
    assert_eq!(status, StatusCode::OK);
    let hits: SearchResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(hits.results.len(), 3);
    let (status, bytes) = send(&app, post("/v1/models/rollback", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(json(&bytes)["active"], "base", "back to what was active before adapter-v1");
    assert_eq!(app.store.projection(), None);

    let (_, bytes) = send(&app, get("/v1/status")).await;
    let status: StatusResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status.models.training.state, "idle");
    assert!(status.drift.state.as_ref().is_some_and(|s| s.epoch >= 1), "{:?}", status.drift);

    // Promoted again, then a restart: the active adapter, its search projection and the drift
    // reference of its training data come back.
    let (status, _) = send(&app, post("/v1/models/1/promote", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK);
    let reference = app.training.monitor.as_ref().unwrap().lock().state().reference;
    assert_eq!(reference.as_deref(), Some("adapter-v1"));
    app.shutdown().unwrap();
    drop(app);
    let app = crate::fixtures::app_with(dir.path(), |_| {});
    assert_eq!(app.store.projection().as_deref(), Some("adapter-v1"));
    let (_, bytes) = send(&app, get("/v1/models")).await;
    assert_eq!(json(&bytes)["active"], "adapter-v1");
    let state = app.training.monitor.as_ref().unwrap().lock().state();
    assert_eq!(state.reference.as_deref(), Some("adapter-v1"), "{state:?}");
    let (status, bytes) = send(&app, get("/v1/search?q=rivers%20and%20the%20nation&k=3&mode=vector")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_a_json_error_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::fixtures::app_with(dir.path(), |c| {
        c.server.max_body = bytesize::ByteSize::kib(4);
        c.server.sql_max_rows = 1000;
    });
    // A method the route does not take: 405 with `Allow`, as JSON.
    let response = router(app.clone())
        .oneshot(
            Request::delete("/v1/search")
                .header("authorization", format!("Bearer {}", crate::fixtures::ADMIN_KEY))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().get("allow").is_some_and(|v| v.to_str().unwrap().contains("GET")));
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.error.code, ErrorCode::MethodNotAllowed);
    // A path parameter that does not parse.
    let promote = Request::post("/v1/models/abc/promote").body(Body::empty()).unwrap();
    expect_error(&app, promote, StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery).await;
    // A body over the limit on a route that reads it whole.
    let big = format!("SELECT '{}'", "x".repeat(8 * 1024));
    expect_error(
        &app,
        post("/v1/sql", "application/sql", big),
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
    )
    .await;
    // An unknown route.
    let unknown = Request::get("/v1/nothing-here").body(Body::empty()).unwrap();
    expect_error(&app, unknown, StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    // An answer over the row limit: refused, and the server answers the next query.
    let cross = r#"{"sql": "SELECT a, b FROM (SELECT unnest(range(0, 2000)) AS a) x CROSS JOIN (SELECT unnest(range(0, 2000)) AS b) y"}"#;
    expect_error(
        &app,
        post("/v1/sql", "application/json", cross),
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::ResourceLimit,
    )
    .await;
    let (status, _) = send(&app, post("/v1/sql", "application/json", r#"{"sql": "SELECT 1 AS one"}"#)).await;
    assert_eq!(status, StatusCode::OK);
}
