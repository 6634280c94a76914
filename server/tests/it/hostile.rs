//! Hostile requests at every route: random methods, path parameters, query
//! strings, headers, keys and bodies (random bytes and mutated JSON). The
//! process never panics, never answers `500`, and every refusal is a JSON
//! error with a stable code. (A `503` is allowed only with the codes that
//! mean "try later": the generator here is an endpoint that is not there.)

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use proptest::prelude::*;
use tower::ServiceExt;

use twinflow_schemas::api::{ErrorBody, ErrorCode};
use twinflow_schemas::config::{GeneratorConfig, OpenAiGeneratorConfig};
use twinflow_server::api::{Mounted, table};

use crate::fixtures::{READ_KEY, WRITE_KEY, app_with};

/// Every `(method, path, the key of its scope)` of the table (with `{…}`
/// segments kept, filled per case; no key for admin routes, which start jobs).
fn routes() -> Vec<(String, String, Option<&'static str>)> {
    let (_, document) = table(&Mounted { open_metrics: false, cluster: false, replica: false }).build();
    let mut out = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let key = match operation["x-scope"].as_str() {
                Some("read") => Some(READ_KEY),
                Some("write") => Some(WRITE_KEY),
                _ => None,
            };
            out.push((method.to_uppercase(), path.clone(), key));
        }
    }
    out
}

/// A JSON body the routes take, then mutated.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let seeds = vec![
        r#"{"query":"rivers","k":3,"filters":{"kind":"article"}}"#,
        r#"{"model":"twinflow","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
        r#"{"input":["a","b"],"model":"hashing-v1-384"}"#,
        r#"{"sql":"SELECT COUNT(*) FROM documents","format":"csv"}"#,
        r#"{"doc_id":"h1","content":"hostile text"}"#,
        r#"{"key":"tfk_x"}"#,
        "",
    ];
    let random = prop::collection::vec(any::<u8>(), 0..200).boxed();
    let mutated = (prop::sample::select(seeds), prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..5))
        .prop_map(|(seed, edits)| {
            let mut bytes = seed.as_bytes().to_vec();
            twinflow_schemas::testing::mutate(&mut bytes, &edits);
            bytes
        })
        .boxed();
    prop_oneof![random, mutated]
}

#[derive(Debug, Clone)]
struct Hostile {
    route: usize,
    method: Option<&'static str>,
    param: String,
    query: String,
    content_type: Option<&'static str>,
    key: Option<&'static str>,
    /// Send the key of the route's scope instead of `key` (when it has one below admin).
    right_key: bool,
    origin: Option<&'static str>,
    body: Vec<u8>,
}

fn hostile(routes: usize) -> impl Strategy<Value = Hostile> {
    (
        0..routes,
        prop::option::weighted(0.2, prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "PATCH"])),
        prop_oneof![Just("1".to_owned()), "[0-9]{1,25}", "[a-z%./-]{0,12}", Just("-1".to_owned())],
        "[a-z0-9=&%+._-]{0,40}",
        prop::option::weighted(
            0.9,
            prop::sample::select(vec![
                "application/json",
                "application/json",
                "application/json",
                "application/x-ndjson",
                "application/sql",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/json; charset=utf-16",
            ]),
        ),
        prop::option::weighted(0.8, prop::sample::select(vec![READ_KEY, WRITE_KEY, "tfk_garbage", ""])),
        prop::bool::weighted(0.7),
        prop::option::weighted(0.2, prop::sample::select(vec!["https://evil.example", "null", "http://127.0.0.1"])),
        body(),
    )
        .prop_map(|(route, method, param, query, content_type, key, right_key, origin, body)| Hostile {
            route,
            method,
            param,
            query,
            content_type,
            key,
            right_key,
            origin,
            body,
        })
}

#[test]
fn no_request_makes_a_panic_a_500_or_a_refusal_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    // The generator is an endpoint that is not there: answers fail fast instead of loading a model.
    let app = app_with(dir.path(), |c| {
        c.generator = GeneratorConfig::Openai(OpenAiGeneratorConfig {
            url: "http://127.0.0.1:9/v1".into(),
            api_key_env: None,
            ..OpenAiGeneratorConfig::default()
        });
    });
    let routes = routes();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let router = twinflow_server::router(Arc::clone(&app));
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let config = ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(case in hostile(routes.len()))| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (method, path, scope_key) = &routes[case.route];
        let path = path.replace("{version}", &case.param).replace("{name}", &case.param);
        let uri = if case.query.is_empty() { path } else { format!("{path}?{}", case.query) };
        let Ok(uri) = uri.parse::<axum::http::Uri>() else { return Ok(()) };
        let mut request = Request::builder().method(case.method.unwrap_or(method.as_str())).uri(uri);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        let key = if case.right_key { scope_key.or(case.key) } else { case.key };
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if let Some(origin) = case.origin {
            request = request.header("origin", origin);
        }
        let request = request.body(Body::from(case.body.clone())).unwrap();
        let (status, body) = runtime.block_on(async {
            let response = router.clone().oneshot(request).await.expect("the router answers");
            let status = response.status();
            (status, to_bytes(response.into_body(), 64 << 20).await.unwrap())
        });
        *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
        if status.is_client_error() || status.is_server_error() {
            let error: ErrorBody = serde_json::from_slice(&body).map_err(|e| {
                TestCaseError::fail(format!("{status} is not a JSON error ({e}): {}", String::from_utf8_lossy(&body)))
            })?;
            prop_assert!(status.as_u16() != 500, "500 for {case:?}: {}", error.error.message);
            if status.is_server_error() {
                let later = [ErrorCode::Overloaded, ErrorCode::GeneratorUnavailable, ErrorCode::ShuttingDown];
                prop_assert!(later.contains(&error.error.code), "{status} {:?} for {case:?}", error.error.code);
            }
        }
    });
    let tried = tried.into_inner();
    let statuses = statuses.into_inner().unwrap();
    eprintln!("{tried} hostile requests over {} routes; answers by status: {statuses:?}", routes.len());
    assert!(statuses.keys().any(|s| *s < 300), "some reached a handler and succeeded: {statuses:?}");
    assert!(tried >= 1500);
    app.shutdown().unwrap();
}
