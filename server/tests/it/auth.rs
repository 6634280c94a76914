//! Who may do what: every route but `/healthz` needs a key with its scope,
//! a page of another site can change nothing (with a key or without), a
//! dashboard session is a cookie the page cannot read, and `mode = "none"`
//! is refused off loopback.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;

use twinflow_schemas::api::{ErrorBody, ErrorCode, IngestResponse};
use twinflow_server::api::{Mounted, table};

use crate::fixtures::{ADMIN_KEY, READ_KEY, WRITE_KEY, app, app_with, upsert_line};
use crate::router::{expect_error, post, send, send_as_is};

/// Every route of the table with a concrete path (`{version}` → 1), its
/// method, and whether it is open (`security: []`).
fn routes() -> Vec<(String, String, bool)> {
    let (_, document) = table(&Mounted { open_metrics: false, cluster: true, replica: false }).build();
    let mut out = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let open = operation["security"] == Value::Array(Vec::new());
            let path = path.replace("{version}", "1").replace("{name}", "instruct");
            out.push((method.to_uppercase(), path, open));
        }
    }
    out
}

fn request(method: &str, path: &str, key: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    if method == "GET" {
        builder.body(Body::empty()).unwrap()
    } else {
        builder.header("content-type", "application/json").body(Body::from("{}")).unwrap()
    }
}

fn code(body: &[u8]) -> ErrorCode {
    let error: ErrorBody =
        serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    error.error.code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_every_route_but_healthz_is_401_and_scopes_decide_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let routes = routes();
    let open: Vec<&str> = routes.iter().filter(|r| r.2).map(|r| r.1.as_str()).collect();
    assert_eq!(open, ["/healthz", "/v1/session", "/v1/session"], "only liveness and the login are open");
    for (method, path, is_open) in &routes {
        if *is_open {
            continue;
        }
        let (status, body) = send_as_is(&app, request(method, path, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(code(&body), ErrorCode::Unauthorized, "{method} {path}");
        let (status, body) = send_as_is(&app, request(method, path, Some("tfk_not-a-key"))).await;
        assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized), "{method} {path}");
    }
    // An unknown path says nothing to a caller without a key.
    let (status, _) = send_as_is(&app, request("GET", "/v1/no-such-route", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send_as_is(&app, request("GET", "/healthz", None)).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, b"ok".as_slice()));

    // A `read` key: reads; every write and admin route is 403.
    for path in ["/v1/status", "/v1/search?q=x", "/v1/models", "/openapi.json", "/metrics", "/"] {
        let (status, body) = send(&app, request("GET", path, Some(READ_KEY))).await;
        assert_eq!(status, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let sql = Request::post("/v1/sql")
        .header("authorization", format!("Bearer {READ_KEY}"))
        .header("content-type", "application/sql")
        .body(Body::from("SELECT COUNT(*) FROM documents"))
        .unwrap();
    assert_eq!(send(&app, sql).await.0, StatusCode::OK);
    for path in ["/v1/documents", "/v1/models/train", "/v1/snapshots", "/v1/twin/rollback", "/v1/datasets/snapshot"] {
        let (status, body) = send(&app, request("POST", path, Some(READ_KEY))).await;
        assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, ErrorCode::Forbidden), "{path}");
    }
    // A `write` key: ingests, and reads nothing.
    let ndjson = upsert_line("w1", "Wells", "Wells draw water from deep below the ground.");
    let ingest = Request::post("/v1/documents?wait=true")
        .header("authorization", format!("Bearer {WRITE_KEY}"))
        .header("content-type", "application/x-ndjson")
        .body(Body::from(ndjson))
        .unwrap();
    let (status, body) = send(&app, ingest).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let accepted: IngestResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(accepted.accepted, 1);
    let (status, _) = send(&app, request("GET", "/v1/search?q=wells", Some(WRITE_KEY))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&app, request("POST", "/v1/models/rollback", Some(WRITE_KEY))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_changes_nothing_even_with_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |c| c.auth.allowed_origins = vec!["https://console.example".into()]);
    let ingest = |content_type: &str, headers: &[(&str, &str)]| {
        let mut builder = Request::post("/v1/documents?wait=true")
            .header("host", "127.0.0.1:8080")
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", content_type);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::from(upsert_line("x", "X", "Cross-site text that must never be committed."))).unwrap()
    };
    let refusals = [
        (ingest("application/x-ndjson", &[("origin", "https://evil.example")]), ErrorCode::CrossOrigin),
        (ingest("application/x-ndjson", &[("origin", "null")]), ErrorCode::CrossOrigin),
        (ingest("application/x-ndjson", &[("origin", "http://127.0.0.1:9999")]), ErrorCode::CrossOrigin),
        (ingest("application/x-ndjson", &[("sec-fetch-site", "cross-site")]), ErrorCode::CrossOrigin),
        // The body types a cross-site form or `fetch` may send without a preflight.
        (ingest("text/plain", &[]), ErrorCode::UnsupportedMediaType),
        (ingest("application/x-www-form-urlencoded", &[]), ErrorCode::UnsupportedMediaType),
        (ingest("multipart/form-data; boundary=x", &[]), ErrorCode::UnsupportedMediaType),
    ];
    for (request, want) in refusals {
        let (status, body) = send(&app, request).await;
        assert_eq!(code(&body), want, "{status}: {}", String::from_utf8_lossy(&body));
        assert!(status == StatusCode::FORBIDDEN || status == StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    assert_eq!(app.store.committed_epoch(), 0, "nothing was committed");
    // The server's own origin, an allowed one, and a client that is no browser (no Origin) may.
    for headers in [&[("origin", "http://127.0.0.1:8080")][..], &[("origin", "https://console.example")], &[]] {
        let (status, body) = send(&app, ingest("application/x-ndjson", headers)).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}: {}", String::from_utf8_lossy(&body));
    }
    // Reads are not state changes: another origin may read with a key (the browser keeps the answer from it).
    let read = Request::get("/v1/status")
        .header("origin", "https://evil.example")
        .header("authorization", format!("Bearer {READ_KEY}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, read).await.0, StatusCode::OK);
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_is_an_httponly_cookie_with_its_keys_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    // A browser without a session gets the login page (still a 401), with a strict policy.
    let page = Request::get("/").header("accept", "text/html,application/xhtml+xml").body(Body::empty()).unwrap();
    let response = tower::ServiceExt::oneshot(twinflow_server::router(app.clone()), page).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'sha256-"), "{policy}");
    let html = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    assert!(String::from_utf8_lossy(&html).contains("id=\"login\""));

    let login = |key: &str| {
        Request::post("/v1/session")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::json!({ "key": key }).to_string()))
            .unwrap()
    };
    let (status, body) = send_as_is(&app, login("tfk_wrong")).await;
    assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized));
    let response = tower::ServiceExt::oneshot(twinflow_server::router(app.clone()), login(READ_KEY)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |method: &str, path: &str| {
        let builder = Request::builder().method(method).uri(path).header("cookie", session.as_str());
        if method == "GET" {
            builder.body(Body::empty()).unwrap()
        } else {
            builder.header("content-type", "application/json").body(Body::from("[]")).unwrap()
        }
    };
    assert_eq!(send_as_is(&app, with_cookie("GET", "/v1/status")).await.0, StatusCode::OK);
    assert_eq!(send_as_is(&app, with_cookie("GET", "/")).await.0, StatusCode::OK);
    let (status, body) = send_as_is(&app, with_cookie("POST", "/v1/documents")).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, ErrorCode::Forbidden), "a read key's session");
    let (status, body) = send_as_is(&app, with_cookie("DELETE", "/v1/session")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["ended"], true);
    assert_eq!(send_as_is(&app, with_cookie("GET", "/v1/status")).await.0, StatusCode::UNAUTHORIZED);
    app.shutdown().unwrap();
}

#[test]
fn a_first_start_makes_the_admin_key_and_none_is_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = app_with(&data, |c| c.auth.keys.clear());
    let key = twinflow_schemas::auth::read_admin_key(&data).expect("an admin key was written");
    assert!(app.gate.check_key(&key).is_some_and(|p| p.allows(twinflow_schemas::auth::Scope::Admin)));
    assert!(app.gate.check_key(ADMIN_KEY).is_none(), "only the generated key when none is configured");
    let (_, principal) = app.gate.scram_login("admin").expect("Postgres clients log in as admin with SCRAM");
    assert!(principal.allows(twinflow_schemas::auth::Scope::Admin));
    app.shutdown().unwrap();

    // A malformed verifier, or two keys of one name with verifiers, stop the start naming the key.
    let mut config = twinflow_schemas::config::Config::default();
    config.storage.data_dir = dir.path().join("scram");
    config.auth.keys = crate::fixtures::test_keys();
    config.auth.keys[1].scram = Some("SCRAM-SHA-256$4096:c2FsdA==$AA==:AA==".into());
    let refused = twinflow_server::auth::Gate::open(&config).unwrap_err().to_string();
    assert!(refused.contains("\"reader\"") && refused.contains("32 bytes"), "{refused}");
    crate::fixtures::give_scram_verifiers(&mut config);
    config.auth.keys[2].name = "reader".into();
    let refused = twinflow_server::auth::Gate::open(&config).unwrap_err().to_string();
    assert!(refused.contains("two keys named \"reader\""), "{refused}");

    let mut config = twinflow_schemas::config::Config::default();
    config.storage.data_dir = dir.path().join("open");
    config.auth.mode = twinflow_schemas::config::AuthMode::None;
    config.server.addr = "0.0.0.0:8080".parse().unwrap();
    let refused = twinflow_server::auth::Gate::open(&config).unwrap_err().to_string();
    assert!(refused.contains("loopback"), "{refused}");
    config.server.addr = "127.0.0.1:8080".parse().unwrap();
    let gate = twinflow_server::auth::Gate::open(&config).unwrap();
    assert!(!gate.needs_keys());
}

/// `/v1/internal/source-changes` exists only in cluster mode, and only the
/// cluster's secret opens it: an admin key is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_route_takes_only_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let single = app(&dir.path().join("single"));
    let body = serde_json::json!({ "source": "kafka-0@p1", "changes": [] }).to_string();
    let request = || post("/v1/internal/source-changes", "application/json", body.clone());
    expect_error(&single, request(), StatusCode::NOT_FOUND, ErrorCode::NotFound).await;
    single.shutdown().unwrap();

    // A cluster of one process (process 0 of a one-line hostfile).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = crate::fixtures::app_with(&dir.path().join("cluster"), |c| {
        c.engine.cluster =
            Some(twinflow_schemas::config::ClusterConfig { process: 0, hosts: vec![format!("127.0.0.1:{port}")] });
        c.auth.cluster_secret = Some("cluster-secret-for-tests".into());
    });
    expect_error(&app, request(), StatusCode::FORBIDDEN, ErrorCode::Forbidden).await;
    let (status, _) = send_as_is(&app, request()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let as_cluster = |body: String| {
        let mut request = post("/v1/internal/source-changes", "application/json", body);
        request.headers_mut().insert("authorization", "Bearer cluster-secret-for-tests".parse().unwrap());
        request
    };
    // Another process's source batches: only its own share's name, changes checked like any others.
    let forwarded = |source: &str, change: serde_json::Value| {
        serde_json::json!({ "source": source, "changes": [change], "position": { "offsets": { "1": 5 } } }).to_string()
    };
    let change = serde_json::json!({ "doc_id": "f", "content": "forwarded" });
    for (body, code) in [
        (forwarded("kafka-0", change.clone()), ErrorCode::InvalidField),
        (forwarded("kafka-0@p0", change.clone()), ErrorCode::InvalidField),
        (forwarded("kafka-0@p1", serde_json::json!({ "doc_id": "f" })), ErrorCode::MissingField),
        ("{\"source\": 3}".to_owned(), ErrorCode::InvalidJson),
    ] {
        expect_error(&app, as_cluster(body), StatusCode::BAD_REQUEST, code).await;
    }
    assert!(app.store.source_positions().is_empty(), "no position recorded from a refused batch");
    let (status, text) = send(&app, as_cluster(forwarded("kafka-0@p1", change))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&text));
    // The secret reads what the other processes need (their committed positions), and nothing more.
    let get = |path: &str| {
        let mut request = Request::get(path).body(Body::empty()).unwrap();
        request.headers_mut().insert("authorization", "Bearer cluster-secret-for-tests".parse().unwrap());
        request
    };
    assert_eq!(send(&app, get("/v1/status")).await.0, StatusCode::OK);
    let train = {
        let mut request = post("/v1/models/train", "application/json", "");
        request.headers_mut().insert("authorization", "Bearer cluster-secret-for-tests".parse().unwrap());
        request
    };
    expect_error(&app, train, StatusCode::FORBIDDEN, ErrorCode::Forbidden).await;
    app.shutdown().unwrap();
}
