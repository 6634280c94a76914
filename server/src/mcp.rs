//! The Model Context Protocol face of the API: its capabilities as tools,
//! its tables as resources, for agents (the `rmcp` SDK).
//!
//! ```text
//!  agent ── MCP ─┬─ streamable HTTP: POST /mcp on this server (the request's key) ─┐
//!                └─ stdio: `twinflow mcp` beside a running server (the CLI's key) ─┴─▶ McpServer
//!  McpServer: each tool call is one request to the API's own route, with the caller's credentials
//!             ─▶ the same validation, scopes (ingest needs `write`), limits and errors as HTTP
//! ```
//!
//! A tool's answer is the route's JSON; a route's 4xx or 5xx is a tool
//! error carrying the API's error body, so an agent reads the same codes a
//! client of the REST API does.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

use crate::app::App;

/// The tables an agent can read as resources (`twinflow://tables/<name>`).
const TABLES: &[(&str, &str)] = &[
    ("documents", "The live documents: one row per doc_id, with author, kind, title and content"),
    ("chunks", "The live chunks of every document, with their positions"),
    ("embeddings", "The search encoder's vector of every live chunk"),
    ("instruct", "Instruction and answer pairs derived from the live chunks"),
    ("evaluations", "Every evaluation run: metric, value, model, dataset and index epoch"),
    ("drift", "Drift measurements per epoch"),
    ("ingest_errors", "Changes that were refused, with the reason"),
];

/// Rows a table resource shows (a sample: `sql` reads the rest).
const RESOURCE_ROWS: usize = 50;
/// Largest answer body a tool passes on.
const MAX_ANSWER: usize = 16 << 20;

/// Where a tool's request goes.
enum Backend {
    /// This process's router, called with the MCP request's own credentials.
    Local { app: Arc<App>, router: OnceLock<Router> },
    /// A server over the network, with one key (`twinflow mcp`).
    Remote { base: String, key: Option<String>, http: reqwest::Client },
}

/// One request to the API.
#[derive(Debug)]
struct Call {
    method: Method,
    /// Path and query.
    uri: String,
    /// `(content type, body)`.
    body: Option<(&'static str, Vec<u8>)>,
}

impl Call {
    fn get(uri: impl Into<String>) -> Self {
        Self { method: Method::GET, uri: uri.into(), body: None }
    }

    fn post_json(uri: impl Into<String>, body: &Value) -> Self {
        Self { method: Method::POST, uri: uri.into(), body: Some(("application/json", body.to_string().into_bytes())) }
    }

    fn delete(uri: impl Into<String>) -> Self {
        Self { method: Method::DELETE, uri: uri.into(), body: None }
    }
}

/// The MCP server: tools and resources over the API.
#[derive(Clone)]
pub struct McpServer(Arc<Backend>);

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("McpServer")
    }
}

impl McpServer {
    /// Tools answered by `app`'s own routes (the `/mcp` endpoint).
    pub fn local(app: Arc<App>) -> Self {
        Self(Arc::new(Backend::Local { app, router: OnceLock::new() }))
    }

    /// Tools answered by the server at `base` with `key` (`twinflow mcp`),
    /// trusting `roots` (PEM) besides the public CAs.
    pub fn remote(base: &str, key: Option<String>, roots: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(600));
        if let Some(pem) = roots {
            for certificate in reqwest::Certificate::from_pem_bundle(pem)? {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http.build()?;
        Ok(Self(Arc::new(Backend::Remote { base: base.trim_end_matches('/').to_owned(), key, http })))
    }

    /// Sends `call` and returns the status and the body.
    async fn send(&self, call: Call, context: &RequestContext<RoleServer>) -> Result<(u16, String), McpError> {
        match self.0.as_ref() {
            Backend::Local { app, router } => {
                let mut request = Request::builder().method(call.method).uri(&call.uri);
                // The MCP request's credentials: the route checks them as it checks any caller's.
                if let Some(parts) = context.extensions.get::<axum::http::request::Parts>() {
                    for name in [header::AUTHORIZATION, header::COOKIE] {
                        if let Some(value) = parts.headers.get(&name) {
                            request = request.header(name, value);
                        }
                    }
                }
                let request = match call.body {
                    Some((content_type, body)) => {
                        request.header(header::CONTENT_TYPE, content_type).body(Body::from(body))
                    }
                    None => request.body(Body::empty()),
                }
                .map_err(|e| McpError::invalid_params(format!("the request: {e}"), None))?;
                let router = router.get_or_init(|| crate::router(app.clone())).clone();
                let response =
                    router.oneshot(request).await.map_err(|e| McpError::internal_error(e.to_string(), None))?;
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
                    .await
                    .map_err(|e| McpError::internal_error(format!("the answer: {e}"), None))?;
                Ok((status, String::from_utf8_lossy(&body).into_owned()))
            }
            Backend::Remote { base, key, http } => {
                let mut request = http.request(call.method, format!("{base}{}", call.uri));
                if let Some(key) = key {
                    request = request.bearer_auth(key);
                }
                if let Some((content_type, body)) = call.body {
                    request = request.header(header::CONTENT_TYPE, content_type).body(body);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| McpError::internal_error(format!("the server at {base}: {e}"), None))?;
                let status = response.status().as_u16();
                let body = response.text().await.map_err(|e| McpError::internal_error(e.to_string(), None))?;
                Ok((status, body))
            }
        }
    }

    /// The request a tool call makes; a bad argument is the caller's error.
    fn call_for(name: &str, args: &Map<String, Value>) -> Result<Vec<Call>, String> {
        let text = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_owned);
        let required = |key: &str| text(key).ok_or_else(|| format!("`{key}` (a string) is required"));
        Ok(match name {
            "search" => {
                let mut query = vec![("q".to_owned(), required("query")?)];
                if let Some(k) = args.get("k") {
                    query.push(("k".into(), k.as_u64().ok_or("`k` must be a whole number")?.to_string()));
                }
                for key in ["mode", "author", "kind", "doc_id"] {
                    if let Some(value) = text(key) {
                        query.push((key.into(), value));
                    }
                }
                if let Some(epoch) = args.get("as_of") {
                    query.push(("as_of".into(), epoch.as_u64().ok_or("`as_of` must be an epoch")?.to_string()));
                }
                let url = reqwest::Url::parse_with_params("http://api/v1/search", &query).map_err(|e| e.to_string())?;
                vec![Call::get(format!("/v1/search?{}", url.query().unwrap_or_default()))]
            }
            "sql" => vec![Call::post_json("/v1/sql", &json!({"sql": required("sql")?, "format": "json"}))],
            "rag" => {
                let mut body = json!({"query": required("question")?});
                for key in ["k", "answer", "filters", "max_tokens", "as_of"] {
                    if let Some(value) = args.get(key) {
                        body[key] = value.clone();
                    }
                }
                vec![Call::post_json("/v1/rag", &body)]
            }
            "ingest" => {
                let changes = args.get("changes").and_then(Value::as_array).ok_or("`changes` (a list) is required")?;
                let mut ndjson = Vec::new();
                for change in changes {
                    ndjson.extend_from_slice(change.to_string().as_bytes());
                    ndjson.push(b'\n');
                }
                vec![Call {
                    method: Method::POST,
                    uri: "/v1/documents?wait=true".into(),
                    body: Some(("application/x-ndjson", ndjson)),
                }]
            }
            "subscribe" => {
                let mut body = json!({"query": required("question")?});
                for key in ["k", "mode", "answer", "filters"] {
                    if let Some(value) = args.get(key) {
                        body[key] = value.clone();
                    }
                }
                vec![Call::post_json("/v1/subscriptions", &body)]
            }
            "subscriptions" => match text("id") {
                Some(id) => vec![Call::get(format!("/v1/subscriptions/{}", path_segment(&id)?))],
                None => vec![Call::get("/v1/subscriptions")],
            },
            "unsubscribe" => vec![Call::delete(format!("/v1/subscriptions/{}", path_segment(&required("id")?)?))],
            "status" => vec![Call::get("/v1/status")],
            "datasets" => vec![Call::get("/v1/datasets")],
            "models" => vec![Call::get("/v1/models"), Call::get("/v1/twin"), Call::get("/v1/retrieval")],
            other => return Err(format!("no tool named {other:?}")),
        })
    }
}

/// A subscription id as one path segment (ids are letters, digits and `_`).
fn path_segment(id: &str) -> Result<&str, String> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(id)
    } else {
        Err(format!("{id:?} is not a subscription id"))
    }
}

/// The tools: (name, description, JSON schema of the arguments).
fn tools() -> Vec<(&'static str, &'static str, Value)> {
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    vec![
        (
            "search",
            "Search the live index (hybrid by default: vectors and BM25 fused) for the chunks closest to a query, with their documents",
            object(
                json!({
                    "query": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
                    "mode": {"type": "string", "enum": ["hybrid", "vector", "bm25"]},
                    "author": {"type": "string"}, "kind": {"type": "string"}, "doc_id": {"type": "string"},
                    "as_of": {"type": "integer", "minimum": 0, "description": "search a past committed epoch"}
                }),
                &["query"],
            ),
        ),
        (
            "sql",
            "Run one read-only SQL statement (DataFusion) over the live tables, their change logs, the datasets and \
             evaluations; knn(q, k), bm25(q, k) and hybrid(q, k) are table functions joinable with every table",
            object(json!({"sql": {"type": "string"}}), &["sql"]),
        ),
        (
            "rag",
            "Answer a question from the live index with the local generator, citing the passages ([n] markers)",
            object(
                json!({
                    "question": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 50},
                    "answer": {"type": "string", "enum": ["generated", "extractive"]},
                    "filters": {"type": "object"},
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "as_of": {"type": "integer", "minimum": 0, "description": "answer from a past committed epoch"}
                }),
                &["question"],
            ),
        ),
        (
            "ingest",
            "Add, change or delete documents (needs a key with the write scope); returns once the change is searchable",
            object(
                json!({"changes": {"type": "array", "items": {"type": "object"},
                    "description": "document changes as POST /v1/documents takes them: {\"op\": \"upsert\", \"doc_id\", \"content\", \"title\", \"author\", \"kind\"} or {\"op\": \"delete\", \"doc_id\"}"}}),
                &["changes"],
            ),
        ),
        (
            "subscribe",
            "Register a standing question: its top-k is kept answered as documents change (events at \
             GET /v1/subscriptions/{id}/events); returns the subscription and its current top-k",
            object(
                json!({
                    "question": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "mode": {"type": "string", "enum": ["hybrid", "vector", "bm25"]},
                    "answer": {"type": "boolean", "description": "also keep an answer, rewritten when its evidence changes"},
                    "filters": {"type": "object"}
                }),
                &["question"],
            ),
        ),
        (
            "subscriptions",
            "The caller's standing questions with their current top-k (one, with `id`)",
            object(json!({"id": {"type": "string"}}), &[]),
        ),
        ("unsubscribe", "Forget a standing question", object(json!({"id": {"type": "string"}}), &["id"])),
        ("status", "The committed epoch, rows per table, sources and models", object(json!({}), &[])),
        ("datasets", "The instruct and preference dataset versions", object(json!({}), &[])),
        (
            "models",
            "The registered embedding adapters, twin versions and retrieval settings, with the active ones",
            object(json!({}), &[]),
        ),
    ]
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, McpError> {
    serde_json::from_value(value).map_err(|e| McpError::internal_error(format!("building an MCP answer: {e}"), None))
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            serde_json::from_value(json!({"tools": {}, "resources": {}})).expect("capabilities are well formed"),
        );
        info.server_info = serde_json::from_value(json!({"name": "twinflow", "version": env!("CARGO_PKG_VERSION")}))
            .expect("server info");
        info.instructions = Some(
            "twinflow keeps a live index of an author's documents: search it, query its tables with SQL, \
             ask it questions (rag), and add documents (ingest)."
                .into(),
        );
        info
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let tools: Vec<Value> = tools()
            .into_iter()
            .map(|(name, description, schema)| json!({"name": name, "description": description, "inputSchema": schema}))
            .collect();
        from_json(json!({"tools": tools}))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let args = request.arguments.clone().unwrap_or_default();
        let calls = match Self::call_for(&request.name, &args) {
            Ok(calls) => calls,
            Err(reason) => return Ok(from_json::<CallToolResult>(tool_result(&reason, true))?.into()),
        };
        let mut texts = Vec::new();
        for call in calls {
            let (status, body) = self.send(call, &context).await?;
            if status >= 400 {
                return Ok(from_json::<CallToolResult>(tool_result(&body, true))?.into());
            }
            texts.push(body);
        }
        let text = if texts.len() == 1 { texts.remove(0) } else { format!("[{}]", texts.join(",")) };
        Ok(from_json::<CallToolResult>(tool_result(&text, false))?.into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resources: Vec<Value> = TABLES
            .iter()
            .map(|(name, description)| {
                json!({"uri": format!("twinflow://tables/{name}"), "name": name, "description": description,
                       "mimeType": "application/json"})
            })
            .collect();
        from_json(json!({"resources": resources}))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.clone();
        let Some((name, _)) = uri.strip_prefix("twinflow://tables/").and_then(|n| TABLES.iter().find(|(t, _)| *t == n))
        else {
            return Err(McpError::resource_not_found(format!("no resource {uri}: see resources/list"), None));
        };
        let sql = format!("SELECT * FROM {name} LIMIT {RESOURCE_ROWS}");
        let (status, body) =
            self.send(Call::post_json("/v1/sql", &json!({"sql": sql, "format": "json"})), &context).await?;
        if status >= 400 {
            return Err(McpError::internal_error(format!("reading {uri}: {body}"), None));
        }
        let result: ReadResourceResult = from_json(json!({
            "contents": [{"uri": uri, "mimeType": "application/json", "text": body}]
        }))?;
        Ok(result.into())
    }
}

fn tool_result(text: &str, error: bool) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": error})
}

/// The `/mcp` endpoint: streamable HTTP, one session per client. The API's
/// key check runs before it (the router's layers); the host check of the
/// SDK is off, as every request carries a key.
pub fn http_service(
    app: Arc<App>,
) -> rmcp::transport::StreamableHttpService<
    McpServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    let config = rmcp::transport::StreamableHttpServerConfig::default().disable_allowed_hosts();
    let server = McpServer::local(app);
    rmcp::transport::StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config)
}

/// `twinflow mcp`: MCP over stdin and stdout, answered by the server at
/// `base` (see [`McpServer::remote`]).
pub fn stdio(base: &str, key: Option<String>, roots: Option<&[u8]>) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let server = McpServer::remote(base, key, roots)?;
        let running = server.serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_become_the_routes_requests() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let calls =
            McpServer::call_for("search", &args(json!({"query": "rivers & boats", "k": 3, "mode": "bm25"}))).unwrap();
        assert_eq!(calls[0].uri, "/v1/search?q=rivers+%26+boats&k=3&mode=bm25");
        let calls =
            McpServer::call_for("ingest", &args(json!({"changes": [{"op": "delete", "doc_id": "a"}]}))).unwrap();
        let (content_type, body) = calls[0].body.as_ref().unwrap();
        assert_eq!(*content_type, "application/x-ndjson");
        let line: Value = serde_json::from_slice(body.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(line, json!({"op": "delete", "doc_id": "a"}));
        assert!(McpServer::call_for("search", &args(json!({"k": 3}))).unwrap_err().contains("`query`"));
        assert!(McpServer::call_for("search", &args(json!({"query": "x", "k": "many"}))).unwrap_err().contains("`k`"));
        assert!(McpServer::call_for("drop_tables", &args(json!({}))).unwrap_err().contains("no tool"));
        assert_eq!(McpServer::call_for("models", &args(json!({}))).unwrap().len(), 3);
        assert_eq!(tools().len(), 10);
        let calls = McpServer::call_for("unsubscribe", &args(json!({"id": "sub_abc123"}))).unwrap();
        assert_eq!((calls[0].method.clone(), calls[0].uri.as_str()), (Method::DELETE, "/v1/subscriptions/sub_abc123"));
        let refused = McpServer::call_for("subscriptions", &args(json!({"id": "../v1/sql"}))).unwrap_err();
        assert!(refused.contains("not a subscription id"), "{refused}");
        let calls = McpServer::call_for("search", &args(json!({"query": "x", "as_of": 7}))).unwrap();
        assert_eq!(calls[0].uri, "/v1/search?q=x&as_of=7");
    }
}
