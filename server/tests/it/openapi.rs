//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route
//! table. Checked for shape (every route, every `$ref` resolves), by the
//! `openapi-spec-validator` package when it is installed (`.ci/run` installs
//! it), and against the server's own answers: live responses of every
//! route but the twin's fine-tuning (LoRA training is left to `twin.rs`)
//! validate against the schemas the document gives them, the pipeline's,
//! the training loop's (drift, datasets, an adapter run, promotion,
//! rollback) and the chat's (plain, and each streamed event).

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use serde::de::DeserializeOwned;
use twinflow_schemas::api::{
    ChatCompletion, ChatCompletionChunk, DatasetVersionResponse, DatasetsResponse, DriftResponse, EvalsResponse,
    ModelsResponse, SnapshotResponse, StatusResponse, Switched, TrainingStarted, TwinResponse,
};
use twinflow_schemas::datasets::{DatasetVersion, GenerationReport};
use twinflow_schemas::models::Evaluation;
use twinflow_schemas::rng::SeededRng;

use crate::fixtures::{app_with, article, upsert_line};
use crate::router::{post, send};

/// The schema at a local `$ref` (`#/components/schemas/X`).
fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

/// Every way `value` breaks `schema`, each with its JSON path. Covers what
/// the generated schemas use: `$ref`, `type` (one or several), `properties`,
/// `required`, `additionalProperties`, `items`, `enum`, `const`, `anyOf`,
/// `oneOf`, `allOf`, `minimum`.
fn violations(document: &Value, schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some(schema) = schema.as_object() else { return found };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        match resolve(document, reference) {
            Some(target) => found.extend(violations(document, target, value, path)),
            None => found.push(format!("{path}: unresolved $ref {reference}")),
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => false,
        };
        if !types.iter().any(|t| is(t)) {
            found.push(format!("{path}: {value} is not of type {types:?}"));
            return found;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            found.push(format!("{path}: {value} is not one of {values:?}"));
        }
    }
    if let Some(constant) = schema.get("const") {
        if constant != value {
            found.push(format!("{path}: {value} is not {constant}"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema.get("minimum").and_then(Value::as_f64), value.as_f64()) {
        if number < minimum {
            found.push(format!("{path}: {number} is below {minimum}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                found.push(format!("{path}: required property {name:?} is missing"));
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(property) => found.extend(violations(document, property, item, &format!("{path}.{name}"))),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => found.push(format!("{path}: unexpected property {name:?}")),
                    Some(additional @ Value::Object(_)) => {
                        found.extend(violations(document, additional, item, &format!("{path}.{name}")))
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            found.extend(violations(document, items, item, &format!("{path}[{i}]")));
        }
    }
    for all in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        found.extend(violations(document, all, value, path));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let matching = options.iter().filter(|o| violations(document, o, value, path).is_empty()).count();
            let ok = if key == "anyOf" { matching >= 1 } else { matching == 1 };
            if !ok {
                found.push(format!("{path}: {matching} of the {} {key} options match {value}", options.len()));
            }
        }
    }
    found
}

/// The JSON schema of `method path`'s answer with `status` (or `default`).
fn answer_schema<'a>(document: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    let responses = &document["paths"][path][method]["responses"];
    let response = if responses[status].is_null() { &responses["default"] } else { &responses[status] };
    let schema = &response["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{method} {path} has no JSON schema for {status}");
    schema
}

fn assert_conforms(document: &Value, method: &str, path: &str, status: StatusCode, body: &[u8]) {
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let schema = answer_schema(document, method, path, status.as_str());
    let found = violations(document, schema, &value, "$");
    assert!(found.is_empty(), "{method} {path} ({status}) does not match its schema:\n{}", found.join("\n"));
}

/// Sends `request` and checks the answer against the document; `expected` is the status it must have.
async fn check(
    app: &std::sync::Arc<twinflow_server::App>,
    document: &Value,
    request: Request<Body>,
    expected: StatusCode,
) -> Vec<u8> {
    let (method, uri) = (request.method().as_str().to_lowercase(), request.uri().path().to_owned());
    let (status, answer) = send(app, request).await;
    assert_eq!(status, expected, "{method} {uri}: {}", String::from_utf8_lossy(&answer));
    // The described path: the route whose template matches `uri`.
    let path = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|template| {
            let (t, u): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), uri.split('/').collect());
            t.len() == u.len() && t.iter().zip(&u).all(|(t, u)| t == u || t.starts_with('{'))
        })
        .unwrap_or_else(|| panic!("{uri} is not described"))
        .clone();
    assert_conforms(document, &method, &path, status, &answer);
    answer
}

/// An answer read back as the type the CLI reads it as.
fn typed<T: DeserializeOwned>(answer: &[u8]) -> T {
    serde_json::from_slice(answer)
        .unwrap_or_else(|e| panic!("{e} reading {} as {}", String::from_utf8_lossy(answer), std::any::type_name::<T>()))
}

/// `n` documents of random words (templated texts would be curated out of a dataset as near-duplicates).
fn varied_reports(n: usize) -> String {
    let vocabulary = [
        "rivers", "taxes", "ships", "farms", "roads", "mines", "banks", "forts", "ports", "mills", "courts", "schools",
        "wheat", "cotton", "iron", "coal", "treaty", "navy", "army", "tariff", "credit", "debt", "harbour", "canal",
    ];
    let mut rng = SeededRng::new(7);
    (0..n)
        .map(|i| {
            let paragraphs: Vec<String> = (0..4)
                .map(|_| (0..40).map(|_| vocabulary[rng.index(vocabulary.len())]).collect::<Vec<_>>().join(" ") + ".")
                .collect();
            upsert_line(&format!("report-{i}"), &format!("Report {i}"), &paragraphs.join("\n\n")) + "\n"
        })
        .collect()
}

/// Every `$ref` anywhere in `value`.
fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                out.insert(r.to_owned());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_every_route_and_the_answers_match_it() {
    let dir = tempfile::tempdir().unwrap();
    // Runs only when asked for (no drift trigger starts one), small enough to train in a moment.
    let app = app_with(dir.path(), |config| {
        config.training.on_drift = false;
        config.twin.on_drift = false;
        config.training.batch_size = 8;
        config.training.epochs = 2;
        config.rag.expansions = 0;
    });
    let (status, body) = send(&app, Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let document: Value = serde_json::from_slice(&body).unwrap();

    // Shape: the version, every route with its methods, operation ids unique, refs resolvable.
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/", "get"),
        ("/openapi.json", "get"),
        ("/metrics", "get"),
        ("/v1/status", "get"),
        ("/v1/timeline", "get"),
        ("/v1/documents", "post"),
        ("/v1/search", "get"),
        ("/v1/embeddings", "post"),
        ("/v1/rag", "post"),
        ("/v1/chat/completions", "post"),
        ("/v1/sql", "post"),
        ("/v1/drift", "get"),
        ("/v1/evals", "get"),
        ("/v1/datasets", "get"),
        ("/v1/datasets/{name}/versions/{version}", "get"),
        ("/v1/datasets/snapshot", "post"),
        ("/v1/datasets/generate", "post"),
        ("/v1/models", "get"),
        ("/v1/models/train", "post"),
        ("/v1/models/{version}/promote", "post"),
        ("/v1/models/rollback", "post"),
        ("/v1/retrieval", "get"),
        ("/v1/retrieval/{version}/promote", "post"),
        ("/v1/retrieval/rollback", "post"),
        ("/v1/twin", "get"),
        ("/v1/twin/train", "post"),
        ("/v1/twin/versions/{version}/promote", "post"),
        ("/v1/twin/rollback", "post"),
        ("/v1/snapshots", "post"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not described");
    }
    let ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|o| o["operationId"].as_str())
        .collect();
    assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "operation ids are not unique: {ids:?}");
    let mut all_refs = BTreeSet::new();
    refs(&document, &mut all_refs);
    assert!(all_refs.contains("#/components/schemas/SearchResponse"), "{all_refs:?}");
    for r in &all_refs {
        assert!(resolve(&document, r).is_some(), "{r} does not resolve");
    }
    // Each instance of a generic answer is its own component, named after it.
    for name in ["JobStatusOfEvaluation", "JobStatusOfTwinEvaluation", "TrainingStartedOfTwinEvaluation"] {
        assert!(document["components"]["schemas"].get(name).is_some(), "no component {name}");
    }
    let search = &paths["/v1/search"]["get"]["parameters"];
    let q = search.as_array().unwrap().iter().find(|p| p["name"] == "q").expect("parameter q");
    assert_eq!((q["in"].as_str(), q["required"].as_bool()), (Some("query"), Some(true)));
    let version = &paths["/v1/models/{version}/promote"]["post"]["parameters"][0];
    assert_eq!((version["in"].as_str(), version["schema"]["type"].as_str()), (Some("path"), Some("integer")));
    let kinds: Vec<&Value> = document["components"]["schemas"]["DocumentKind"]["oneOf"]
        .as_array()
        .expect("document kinds, each with its description")
        .iter()
        .map(|kind| &kind["const"])
        .collect();
    assert_eq!(kinds, [&json!("article"), &json!("post"), &json!("repository"), &json!("other")]);

    // The server's answers match the schemas the document gives them.
    let body: String = (0..3)
        .map(|i| upsert_line(&format!("o-{i}"), &format!("Doc {i}"), &article("lighthouses", 3)) + "\n")
        .collect();
    let (status, answer) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_conforms(&document, "post", "/v1/documents", status, &answer);
    for uri in ["/v1/status", "/v1/timeline", "/v1/search?q=lighthouses&k=3", "/v1/search?q=lighthouses&k=0"] {
        let (status, answer) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_conforms(&document, "get", uri.split('?').next().unwrap(), status, &answer);
    }
    let (status, answer) =
        send(&app, post("/v1/sql", "application/json", r#"{"sql": "SELECT doc_id, title FROM documents"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "post", "/v1/sql", status, &answer);
    let (status, answer) =
        send(&app, post("/v1/embeddings", "application/json", r#"{"input": ["a lighthouse", "a harbour"]}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert_conforms(&document, "post", "/v1/embeddings", status, &answer);

    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let empty = |uri: &str| post(uri, "application/json", "");
    check(&app, &document, get("/openapi.json"), StatusCode::OK).await;
    typed::<SnapshotResponse>(&check(&app, &document, empty("/v1/snapshots"), StatusCode::OK).await);

    // Every answer is typed: none is described as just "an object".
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let ok = operation["responses"].as_object().unwrap().iter().find(|(code, _)| code.starts_with('2'));
            let schema = &ok.unwrap().1["content"]["application/json"]["schema"];
            assert_ne!(schema, &json!({ "type": "object" }), "{method} {path} is described as any object");
        }
    }

    // The training loop: drift, a dataset version, an adapter run, its registry, promotion and rollback.
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", varied_reports(40))).await;
    assert_eq!(status, StatusCode::OK);
    let drift: DriftResponse = typed(&check(&app, &document, get("/v1/drift"), StatusCode::OK).await);
    assert!(drift.enabled && drift.state.is_some(), "{drift:?}");
    typed::<DatasetsResponse>(&check(&app, &document, get("/v1/datasets"), StatusCode::OK).await);
    let evals: EvalsResponse = typed(&check(&app, &document, get("/v1/evals?kind=retrieval"), StatusCode::OK).await);
    assert_eq!(evals.matched, 0, "nothing evaluated yet: {evals:?}");
    check(&app, &document, get("/v1/evals?limit=0"), StatusCode::BAD_REQUEST).await;
    typed::<TwinResponse>(&check(&app, &document, get("/v1/twin"), StatusCode::OK).await);
    check(&app, &document, empty("/v1/models/rollback"), StatusCode::NOT_FOUND).await;
    typed::<DatasetVersion>(&check(&app, &document, empty("/v1/datasets/snapshot"), StatusCode::OK).await);
    typed::<DatasetVersionResponse>(
        &check(&app, &document, get("/v1/datasets/instruct/versions/1"), StatusCode::OK).await,
    );
    let started = check(&app, &document, empty("/v1/models/train"), StatusCode::ACCEPTED).await;
    assert!(typed::<TrainingStarted<Evaluation>>(&started).started);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let trained_on = loop {
        let answer = check(&app, &document, get("/v1/models"), StatusCode::OK).await;
        let models: ModelsResponse = serde_json::from_slice(&answer).unwrap();
        if models.training.runs == 1 {
            assert_eq!(models.training.last_error, None);
            assert_eq!(models.versions.len(), 1);
            break models.versions[0].dataset.version;
        }
        assert!(std::time::Instant::now() < deadline, "the run did not finish: {:?}", models.training);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let datasets: DatasetsResponse = typed(&check(&app, &document, get("/v1/datasets"), StatusCode::OK).await);
    assert!(datasets.datasets[0].versions.iter().any(|v| v.models == [1]), "{datasets:?}");
    let version = check(&app, &document, get(&format!("/v1/datasets/instruct/versions/{trained_on}")), StatusCode::OK);
    let version: DatasetVersionResponse = typed(&version.await);
    assert_eq!(version.models[0].version, 1, "{version:?}");
    let promoted: Switched = typed(&check(&app, &document, empty("/v1/models/1/promote"), StatusCode::OK).await);
    assert_eq!(promoted.active, "adapter-v1");
    let rolled_back: Switched = typed(&check(&app, &document, empty("/v1/models/rollback"), StatusCode::OK).await);
    let status: StatusResponse = typed(&check(&app, &document, get("/v1/status"), StatusCode::OK).await);
    assert_eq!((status.models.training.runs, status.models.active), (1, rolled_back.active));

    // Chat completions, plain and streamed (each event against the stream's event schema), and a generation pass.
    let ask = |stream: bool| {
        let body = json!({
            "messages": [{"role": "user", "content": "Which rivers carry ships?"}],
            "max_tokens": 6, "stream": stream, "stream_options": {"include_usage": true},
        });
        post("/v1/chat/completions", "application/json", body.to_string())
    };
    let chat: ChatCompletion = typed(&check(&app, &document, ask(false), StatusCode::OK).await);
    assert_eq!(chat.object, "chat.completion");
    let (status, answer) = send(&app, ask(true)).await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<&str> =
        std::str::from_utf8(&answer).unwrap().lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{events:?}");
    let event_schema = &document["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]["text/event-stream"]
        ["x-event-schema"];
    assert!(event_schema.get("$ref").is_some(), "{event_schema}");
    for event in &events[..events.len() - 1] {
        let found = violations(&document, event_schema, &serde_json::from_str::<Value>(event).unwrap(), "$");
        assert!(found.is_empty(), "streamed event {event} does not match its schema:\n{}", found.join("\n"));
        typed::<ChatCompletionChunk>(event.as_bytes());
    }
    let generate = post("/v1/datasets/generate", "application/json", r#"{"limit": 1}"#);
    typed::<GenerationReport>(&check(&app, &document, generate, StatusCode::OK).await);

    // And the check can fail: a wrong answer is caught.
    let (_, answer) = send(&app, Request::get("/v1/status").body(Body::empty()).unwrap()).await;
    let mut wrong: Value = serde_json::from_slice(&answer).unwrap();
    wrong["committed_epoch"] = json!("seven");
    wrong.as_object_mut().unwrap().remove("tables");
    let found = violations(&document, answer_schema(&document, "get", "/v1/status", "200"), &wrong, "$");
    assert_eq!(found.len(), 2, "{found:?}");

    // The reference validator, when installed.
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let script =
        "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))";
    let checked = std::process::Command::new("python3").args(["-c", script]).arg(&file).output();
    match checked {
        Ok(out) if out.status.success() => {}
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'openapi_spec_validator'") => {
            twinflow_schemas::testing::tool_missing(
                "openapi-validator",
                "python3 -m pip install openapi-spec-validator==0.9.0",
            );
        }
        Ok(out) => panic!("openapi-spec-validator rejects the document:\n{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            twinflow_schemas::testing::tool_missing("openapi-validator", &format!("python3 could not run ({e})"));
        }
    }
}
