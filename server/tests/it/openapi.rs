//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route
//! table. Checked for shape (every route, every `$ref` resolves), by the
//! `openapi-spec-validator` package when it is installed (`.ci/run` installs
//! it), and against the server's own answers: live responses of several
//! routes validate against the schemas the document gives them.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};

use crate::fixtures::{app, article, upsert_line};
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
    let app = app(dir.path());
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
        ("/v1/datasets/{name}/versions/{version}", "get"),
        ("/v1/models/{version}/promote", "post"),
        ("/v1/twin/train", "post"),
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
