//! The REST API: [`table`] lists every route with its description;
//! `router(app)` serves them, `GET /openapi.json` describes them. Each
//! route names who may call it ([`Access`]); `crate::auth` enforces it.
//!
//! | file | routes |
//! |---|---|
//! | `documents.rs` | `POST /v1/documents` (NDJSON or JSON changes), `POST /v1/internal/source-changes` (another process's source batches) |
//! | `search.rs` | `GET /v1/search` |
//! | `embeddings.rs` | `POST /v1/embeddings` (OpenAI's format) |
//! | `rag.rs` | `POST /v1/rag` (answers with citations and step timings) |
//! | `chat.rs` | `POST /v1/chat/completions` (OpenAI's format, SSE streaming, answered by RAG) |
//! | `sources.rs` | `GET /v1/sources`, `POST /v1/sources/{name}/pause`, `POST /v1/sources/{name}/resume` |
//! | `sql.rs` | `POST /v1/sql` |
//! | `subscriptions.rs` | `POST`, `GET /v1/subscriptions`, `GET`, `DELETE /v1/subscriptions/{id}`, `GET /v1/subscriptions/{id}/events` (SSE) |
//! | `models.rs` | `GET /v1/drift`, `GET /v1/datasets[/{name}/versions/{v}]`, `GET /v1/models`, `POST /v1/models/train` |
//! | `twin.rs` | `GET /v1/twin`, `POST /v1/twin/train` |
//! | `evals.rs` | `GET /v1/evals` (the `evaluations` table) |
//! | `versions.rs` | `POST /v1/models/{v}/promote`, `POST /v1/models/rollback`, `POST /v1/twin/versions/{v}/promote`, `POST /v1/twin/rollback`, `GET /v1/retrieval`, `POST /v1/retrieval/{v}/promote`, `POST /v1/retrieval/rollback` (one implementation for every registry) |
//! | `prometheus.rs` | `GET /metrics` (Prometheus text, with the state's gauges set at each scrape) |
//! | `../metrics.rs` | the recorder, and the middleware timing every route |
//! | `status.rs` | `GET /v1/status`, `GET /v1/timeline`, `GET /healthz`, `GET /readyz`, `POST /v1/snapshots` |
//! | `fresh.rs` | read your writes: `min_as_of` waits for an epoch, else `503 not_caught_up` |
//! | `dashboard.rs` | `GET /` (the dashboard page), `GET /dashboard.js`, `GET /dashboard.css` |
//! | `session.rs` | `POST /v1/session`, `DELETE /v1/session` (a dashboard session from a key), the login page |
//! | `openapi.rs` | the route table's description, served at `GET /openapi.json` |
//! | `error.rs` | `ApiError`: every error as `{ "error": { "code", "message" } }`, and the layer that makes every rejection one |
//! | `limits.rs` | slots of the costly routes (SQL; answers and embeddings): wait, then `503 overloaded` |

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use serde::de::DeserializeOwned;
use twinflow_schemas::api::ErrorCode;

use crate::app::App;

pub mod chat;
pub mod dashboard;
pub mod documents;
pub mod embeddings;
pub mod error;
pub mod evals;
pub mod fresh;
pub mod limits;
pub mod models;
pub mod openapi;
pub mod prometheus;
pub mod rag;
pub mod search;
pub mod session;
pub mod sources;
pub mod sql;
pub mod status;
pub mod subscriptions;
pub mod twin;
pub mod versions;

pub use error::ApiError;
pub use openapi::{Api, Op};

/// The application's routes over shared state.
pub fn router(app: Arc<App>) -> Router {
    let max_body = app.config.server.max_body.as_u64() as usize;
    let mounted = Mounted { replica: app.replica().is_some(), ..Mounted::of(&app.config) };
    let (routes, document) = table(&mounted).build();
    // MCP (streamable HTTP), for a key with the read scope; its tools call the
    // routes above with the same key, so writes need what POST /v1/documents needs.
    let mcp = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(twinflow_schemas::auth::Access::READ, crate::auth::require))
        .service(crate::mcp::http_service(app.clone()));
    routes
        .route_service("/mcp", mcp)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn_with_state(app.clone(), crate::auth::authenticate))
        .layer(axum::Extension(Arc::new(document)))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(app)
}

/// Handler of `GET /openapi.json`.
async fn openapi_json(
    axum::Extension(document): axum::Extension<Arc<serde_json::Value>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(document.as_ref().clone())
}

/// What the configuration changes in the route table.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mounted {
    /// `GET /metrics` without a key (`[auth] open_metrics`).
    pub open_metrics: bool,
    /// The cluster's route (`/v1/internal/source-changes`): only in cluster mode.
    pub cluster: bool,
    /// A read replica: routes that write or administer answer `409 read_replica`.
    pub replica: bool,
}

impl Mounted {
    /// What `config` mounts.
    pub fn of(config: &twinflow_schemas::config::Config) -> Self {
        Self {
            open_metrics: config.auth.open_metrics,
            cluster: config.engine.cluster.is_some(),
            replica: config.replica.follow.is_some(),
        }
    }
}

/// Every route with its description and who may call it: the router and
/// `/openapi.json` both come from here.
pub fn table(mounted: &Mounted) -> Api {
    use twinflow_schemas::DocumentChange;
    use twinflow_schemas::api::*;
    use twinflow_schemas::auth::Access;
    use twinflow_schemas::datasets::{DatasetVersion, GenerationReport};
    use twinflow_schemas::models::{Evaluation, TwinEvaluation};
    let api = Api::new().on_replica(mounted.replica)
        .route(
            "/",
            Op::get("dashboard", "The dashboard (HTML); without a session, a page that asks for a key")
                .access(Access::READ)
                .ok_text("text/html", "The page"),
            dashboard::page,
        )
        .route(
            "/dashboard.js",
            Op::get("dashboard", "The dashboard's script")
                .access(Access::READ)
                .ok_text("text/javascript", "The script"),
            dashboard::script,
        )
        .route(
            "/dashboard.css",
            Op::get("dashboard", "The dashboard's style sheet")
                .access(Access::READ)
                .ok_text("text/css", "The style sheet"),
            dashboard::style,
        )
        .route(
            "/v1/session",
            Op::post("session", "Start a dashboard session from a key (an `HttpOnly`, `SameSite=Strict` cookie)")
                .access(Access::Open)
                .body::<SessionRequest>()
                .ok::<SessionResponse>("The session's key name, scopes and lifetime (401 for a key that is not valid)"),
            session::start,
        )
        .route(
            "/v1/session",
            Op::delete("session", "End the dashboard session of the cookie")
                .access(Access::Open)
                .ok::<SessionEnded>("Whether a session ended; the cookie is cleared"),
            session::end,
        )
        .route(
            "/openapi.json",
            Op::get("meta", "This description (OpenAPI 3.1)")
                .access(Access::READ)
                .ok::<serde_json::Map<String, serde_json::Value>>("The document"),
            openapi_json,
        )
        .route(
            "/healthz",
            Op::get("meta", "Liveness").access(Access::Open).ok_text("text/plain", "`ok` while the process serves"),
            status::healthz,
        )
        .route(
            "/readyz",
            Op::get("meta", "Readiness for a load balancer: a primary once it serves, a read replica while within `[replica] max_lag` of its primary (else 503 with the reason)")
                .access(Access::READ)
                .ok::<ReadyResponse>("Ready (503: not ready, with the reason)"),
            status::readyz,
        )
        .route(
            "/metrics",
            Op::get("meta", "Prometheus metrics of every stage")
                .access(if mounted.open_metrics { Access::Open } else { Access::READ })
                .ok_text("text/plain; version=0.0.4", "The Prometheus text format"),
            prometheus::render,
        )
        .route(
            "/v1/status",
            Op::get("pipeline", "Epochs, lag, table sizes, drift, models and sources")
                .access(Access::READ)
                .ok::<StatusResponse>("The status"),
            status::status,
        )
        .route(
            "/v1/sources",
            Op::get("pipeline", "Every running source: kind, state, committed position, changes per second, refused records")
                .access(Access::READ)
                .ok::<SourcesResponse>("The sources"),
            sources::list,
        )
        .route(
            "/v1/sources/{name}/pause",
            Op::post("pipeline", "Hold a source's changes back (it waits; nothing is lost) until it is resumed")
                .access(Access::ADMIN)
                .ok::<SourceStatus>("The source, paused (404 for an unknown name)"),
            sources::pause,
        )
        .route(
            "/v1/sources/{name}/resume",
            Op::post("pipeline", "Let a paused source's changes in again")
                .access(Access::ADMIN)
                .ok::<SourceStatus>("The source, running (404 for an unknown name)"),
            sources::resume,
        )
        .route(
            "/v1/timeline",
            Op::get("pipeline", "The most recent commits: throughput, freshness and table sizes over time")
                .access(Access::READ)
                .ok::<TimelineResponse>("Commits, oldest first"),
            status::timeline,
        )
        .route(
            "/v1/snapshots",
            Op::post("pipeline", "Write a consolidated snapshot of every table now")
                .ok::<SnapshotResponse>("The snapshot's version, epoch, rows per table and files"),
            status::snapshot,
        )
        .route(
            "/v1/documents",
            Op::post("pipeline", "Ingest document changes")
                .access(Access::WRITE)
                .describe(
                    "NDJSON (one change per line, `application/x-ndjson`) or JSON (one change or an array). \
                     Every change is validated before any is accepted; `op` defaults to `upsert`.",
                )
                .query::<documents::IngestParams>()
                .bodies(vec![
                    ("application/x-ndjson", openapi::schema_fn::<DocumentChange>()),
                    ("application/json", openapi::schema_fn::<Vec<DocumentChange>>()),
                ])
                .ok::<IngestResponse>("The changes were accepted (and committed, with `wait=true`)"),
            documents::post_documents,
        )
        .route(
            "/v1/search",
            Op::get("search", "Hybrid search (vectors + BM25) at the last committed epoch")
                .access(Access::READ)
                .query::<SearchQuery>()
                .ok::<SearchResponse>("Ranked chunks with provenance"),
            search::search,
        )
        .route(
            "/v1/embeddings",
            Op::post("search", "Embeddings, as OpenAI's API")
                .access(Access::READ)
                .body::<EmbeddingsRequest>()
                .ok::<EmbeddingsResponse>("One vector per input"),
            embeddings::embeddings,
        )
        .route(
            "/v1/rag",
            Op::post("rag", "Answer a question with citations (retrieval-augmented generation)")
                .access(Access::READ)
                .body::<RagRequest>()
                .ok::<RagResponse>("The answer, its citations and the time of each step"),
            rag::rag,
        )
        .route(
            "/v1/chat/completions",
            Op::post("rag", "Chat completions, as OpenAI's API, answered by RAG")
                .access(Access::READ)
                .body::<ChatCompletionRequest>()
                .ok_or_events::<ChatCompletion, ChatCompletionChunk>("A completion, or with `stream: true` its chunks"),
            chat::chat_completions,
        )
        .route(
            "/v1/sql",
            Op::post("sql", "A read-only SQL query over every table, at one committed epoch")
                .access(Access::READ)
                .query::<sql::SqlParams>()
                .bodies(vec![
                    ("application/json", openapi::schema_fn::<SqlRequest>()),
                    ("application/sql", openapi::schema_fn::<String>()),
                ])
                .ok_many(
                    "Rows as JSON, CSV, Arrow IPC or Parquet (`format`)",
                    vec![
                        ("application/json", Some(openapi::schema_fn::<SqlResponse>())),
                        ("text/csv", None),
                        ("application/vnd.apache.arrow.stream", None),
                        ("application/vnd.apache.parquet", None),
                    ],
                ),
            sql::sql,
        )
        .route(
            "/v1/drift",
            Op::get("models", "The drift monitor's state and its latest values and thresholds")
                .access(Access::READ)
                .ok::<DriftResponse>("`state` and `recent` drift rows, or `enabled: false`"),
            models::drift,
        )
        .route(
            "/v1/evals",
            Op::get("models", "The evaluations table: every `eval` run's and training run's measured figures")
                .access(Access::READ)
                .query::<EvalsQuery>()
                .ok::<EvalsResponse>("The matching rows, oldest first, with the 95% intervals and lineage"),
            evals::evals,
        )
        .route(
            "/v1/datasets",
            Op::get("models", "Dataset versions with their counts and the models trained on them")
                .access(Access::READ)
                .ok::<DatasetsResponse>("Every dataset's versions, and the LLM generations cached"),
            models::datasets,
        )
        .route(
            "/v1/datasets/{name}/versions/{version}",
            Op::get("models", "One dataset version: manifest, lineage, files, models")
                .access(Access::READ)
                .integer_path(&["version"])
                .ok::<DatasetVersionResponse>("The version's manifest, files and models"),
            models::dataset_version,
        )
        .route(
            "/v1/datasets/snapshot",
            Op::post("models", "Write the next dataset version now").ok::<DatasetVersion>("The new version"),
            models::dataset_snapshot,
        )
        .route(
            "/v1/datasets/generate",
            Op::post("models", "One incremental LLM generation pass (`{\"limit\": n}`, optional)")
                .ok::<GenerationReport>("What was generated"),
            models::dataset_generate,
        )
        .route(
            "/v1/subscriptions",
            Op::post("subscriptions", "Register a standing question: its top-k is kept answered as chunks change")
                .access(Access::READ)
                .describe(
                    "The question is searched now (the `initial` event) and again after each commit that can \
                     change its top-k (a commit touches only those: see the README's *Standing questions*). \
                     A `webhook` needs the `write` scope; its secret, when twinflow makes it, is shown once.",
                )
                .body::<SubscriptionRequest>()
                .status(201)
                .ok::<SubscriptionCreated>("The subscription and its initial top-k"),
            subscriptions::create,
        )
        .route(
            "/v1/subscriptions",
            Op::get("subscriptions", "The caller's subscriptions (every one for an admin key)")
                .access(Access::READ)
                .ok::<SubscriptionList>("Subscriptions, oldest first"),
            subscriptions::list,
        )
        .route(
            "/v1/subscriptions/{id}",
            Op::get("subscriptions", "One subscription with its current top-k")
                .access(Access::READ)
                .ok::<Subscription>("The subscription"),
            subscriptions::get,
        )
        .route(
            "/v1/subscriptions/{id}",
            Op::delete("subscriptions", "Forget a subscription")
                .access(Access::READ)
                .ok::<serde_json::Value>("`{\"id\", \"deleted\"}`"),
            subscriptions::delete,
        )
        .route(
            "/v1/subscriptions/{id}/events",
            Op::get("subscriptions", "The subscription's events as server-sent events (id: the epoch)")
                .access(Access::READ)
                .describe(
                    "First the current top-k (or, with `Last-Event-ID: <epoch>`, every kept event after that \
                     epoch), then each `changed` (and `answer`) event as it happens.",
                )
                .ok_events::<SubscriptionEvent>("Events of kind `initial`, `changed` or `answer`"),
            subscriptions::events,
        )
        .route(
            "/v1/models",
            Op::get("models", "Embedding adapter versions, registry events and the training job")
                .access(Access::READ)
                .ok::<ModelsResponse>("The active adapter, every version's card, the events, the job"),
            models::models,
        )
        .route(
            "/v1/models/train",
            Op::post("models", "Start training an embedding adapter")
                .status(202)
                .ok::<TrainingStarted<Evaluation>>("The run started (409 `training_running` while one runs)"),
            models::train,
        )
        .route(
            "/v1/models/{version}/promote",
            Op::post("models", "Make an adapter version active")
                .integer_path(&["version"])
                .ok::<Switched>("The active adapter after the change"),
            versions::promote_adapter,
        )
        .route(
            "/v1/models/rollback",
            Op::post("models", "Back to the previously active adapter")
                .ok::<Switched>("The active adapter after the change"),
            versions::roll_back_adapter,
        )
        .route(
            "/v1/retrieval",
            Op::get("models", "Retrieval settings: hybrid search's fusion, its registered versions and their evidence")
                .access(Access::READ)
                .ok::<RetrievalResponse>("The active fusion, every version's card, the events"),
            versions::retrieval,
        )
        .route(
            "/v1/retrieval/{version}/promote",
            Op::post("models", "Make a retrieval setting active (the next search uses its fusion)")
                .integer_path(&["version"])
                .ok::<Switched>("The active setting after the change"),
            versions::promote_retrieval,
        )
        .route(
            "/v1/retrieval/rollback",
            Op::post("models", "Back to the previously active retrieval setting")
                .ok::<Switched>("The active setting after the change"),
            versions::roll_back_retrieval,
        )
        .route(
            "/v1/twin",
            Op::get("twin", "The twin's versions and training job").access(Access::READ).ok::<TwinResponse>("The twin"),
            twin::twin,
        )
        .route(
            "/v1/twin/train",
            Op::post("twin", "Fine-tune the twin (LoRA) on the latest dataset version")
                .status(202)
                .ok::<TrainingStarted<TwinEvaluation>>("The run started"),
            twin::train,
        )
        .route(
            "/v1/twin/versions/{version}/promote",
            Op::post("twin", "Make a twin version active")
                .integer_path(&["version"])
                .ok::<Switched>("The twin after the change"),
            versions::promote_twin,
        )
        .route(
            "/v1/twin/rollback",
            Op::post("twin", "Back to the previously active twin").ok::<Switched>("The twin after the change"),
            versions::roll_back_twin,
        );
    if !mounted.cluster {
        return api;
    }
    api.route(
        "/v1/internal/source-changes",
        Op::post("pipeline", "Changes another process of the cluster read from its share of a source")
            .access(Access::Cluster)
            .describe(
                "Internal to a cluster: a process other than 0 reads its share of the partitions of \
                     each Kafka and Fluvio source and sends each batch here with the position it has read to, \
                     which is committed with the batch's epoch. Mounted only in cluster mode; the caller presents \
                     the cluster's shared secret as its Bearer token.",
            )
            .body::<ForwardedBatch>()
            .ok::<IngestResponse>("The changes were accepted"),
        documents::post_source_changes,
    )
}

/// A JSON request body as `T`: too large → `payload_too_large`, a missing
/// field → `missing_field`, a wrong type or value → `invalid_field` (with
/// `hint` appended), anything else → `invalid_json`.
pub(crate) fn json_body<T: DeserializeOwned>(
    app: &App,
    body: Result<Bytes, BytesRejection>,
    hint: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {}", app.config.server.max_body),
        ),
        other => ApiError::new(ErrorCode::InvalidJson, format!("could not read the body: {other}")),
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let code = match () {
            _ if e.to_string().starts_with("missing field") => ErrorCode::MissingField,
            _ if e.is_data() => ErrorCode::InvalidField,
            _ => ErrorCode::InvalidJson,
        };
        let hint = if e.is_data() { hint } else { "" };
        ApiError::new(code, format!("{e}{hint}"))
    })
}
