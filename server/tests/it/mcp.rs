//! The MCP server with a real client: the official Python SDK (`mcp` 2.3.0,
//! in the venv `.ci/run` makes) drives every tool and reads a table resource
//! over streamable HTTP (`/mcp`, behind the API's keys) and over stdio
//! (`twinflow mcp`, a client of the running server). A read key's ingest is
//! refused with the API's own error.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use twinflow_schemas::{ChangeLimits, parse_change};

use crate::fixtures::{ADMIN_KEY, READ_KEY, app, article, upsert_line};

const BIN: &str = env!("CARGO_BIN_EXE_twinflow");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mcp_client.py");

/// The venv's Python with the `mcp` package (`.ci/run` makes it).
fn python() -> String {
    std::env::var("TWINFLOW_MCP_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").expect("HOME");
        format!("{home}/.cache/twinflow/mcp-venv/bin/python")
    })
}

fn run_client(args: &[&str]) -> Value {
    let out = Command::new(python()).arg(CLIENT).args(args).output().unwrap_or_else(|e| {
        panic!(
            "{} is missing ({e}): python3 -m venv ~/.cache/twinflow/mcp-venv && its pip install mcp==2.3.0",
            python()
        )
    });
    assert!(out.status.success(), "the MCP client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The answer of the `i`-th call: (error, text).
fn call(report: &Value, i: usize) -> (bool, String) {
    let c = &report["calls"][i];
    (c["error"].as_bool().unwrap(), c["text"].as_str().unwrap().to_owned())
}

#[test]
fn an_mcp_client_drives_every_tool_over_http_and_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let lines = [
        upsert_line("rivers", "Rivers", &article("rivers and boats", 8)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 8)),
    ];
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });

    // Streamable HTTP with the admin key.
    let report = run_client(&["http", &format!("{base}/mcp"), ADMIN_KEY]);
    assert_eq!(report["server"], "twinflow");
    let tools: Vec<&str> = report["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(
        tools,
        ["datasets", "ingest", "models", "rag", "search", "sql", "status", "subscribe", "subscriptions", "unsubscribe"]
    );
    assert!(report["resources"].as_array().unwrap().iter().any(|r| r == "twinflow://tables/chunks"), "{report}");

    let json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let (error, status) = call(&report, 0);
    assert!(!error && json(&status)["committed_epoch"].as_u64().unwrap() >= epoch, "{status}");
    let (error, search) = call(&report, 1);
    assert!(!error, "{search}");
    assert_eq!(json(&search)["results"][0]["sources"][0]["doc_id"], "rivers");
    let (error, text) = call(&report, 2);
    assert!(error && text.contains("`query`"), "a missing argument is a tool error: {text}");
    let (error, sql) = call(&report, 3);
    assert!(!error, "{sql}");
    assert_eq!(json(&sql)["rows"][0]["doc_id"], "taxes");
    let (error, text) = call(&report, 4);
    assert!(error && json(&text)["error"]["code"] == "sql_not_read_only", "the API's error body: {text}");
    let (error, text) = call(&report, 5);
    assert!(!error, "ingest with the admin key: {text}");
    let (error, search) = call(&report, 6);
    assert!(!error, "{search}");
    assert_eq!(json(&search)["results"][0]["sources"][0]["doc_id"], "canals", "the ingested document is searchable");
    for i in [7, 8] {
        let (error, text) = call(&report, i);
        assert!(!error, "{}: {text}", report["calls"][i]["tool"]);
        json(&text);
    }
    let (error, rag) = call(&report, 9);
    assert!(!error, "{rag}");
    assert!(json(&rag)["answer"].as_str().unwrap().contains('['), "an extractive answer cites: {rag}");
    let (error, created) = call(&report, 10);
    assert!(!error, "{created}");
    let created = json(&created);
    assert_eq!(created["event"]["hits"][0]["sources"][0]["doc_id"], "canals", "{created}");
    let (_, listed) = call(&report, 11);
    assert_eq!(json(&listed)["subscriptions"][0]["id"], created["subscription"]["id"]);
    let (error, deleted) = call(&report, 12);
    assert!(!error && json(&deleted)["deleted"] == true, "{deleted}");
    let (_, listed) = call(&report, 13);
    assert_eq!(json(&listed)["subscriptions"].as_array().unwrap().len(), 0);
    let documents = json(report["documents_resource"].as_str().unwrap());
    assert_eq!(documents["row_count"], 3, "{documents}");

    // Without a key, /mcp is refused before MCP begins.
    let refused = reqwest::blocking::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);

    // stdio: `twinflow mcp` as the client's subprocess, with a read key: reads
    // answer, the ingest is refused by the route's scope.
    let report = run_client(&["stdio", BIN, &base, READ_KEY]);
    let (error, search) = call(&report, 1);
    assert!(!error, "{search}");
    assert_eq!(json(&search)["results"][0]["sources"][0]["doc_id"], "rivers");
    let (error, text) = call(&report, 5);
    assert!(error && json(&text)["error"]["code"] == "forbidden", "a read key cannot ingest: {text}");
    let (error, search) = call(&report, 6);
    assert!(!error, "{search}");
    assert_eq!(json(&search)["results"][0]["sources"][0]["doc_id"], "canals", "still the first ingest's");
    app.shutdown().unwrap();
}
