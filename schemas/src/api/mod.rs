//! Request and response types of the REST API, one file per route group,
//! and the stable error codes. Every type is re-exported here: callers
//! write `twinflow_schemas::api::SearchResponse`.
//!
//! | file | types of |
//! |---|---|
//! | `mod.rs` | every error: [`ErrorCode`], [`ErrorBody`] |
//! | `documents.rs` | `POST /v1/documents`, `POST /v1/internal/source-changes` |
//! | `search.rs` | `GET /v1/search` |
//! | `embeddings.rs` | `POST /v1/embeddings` (OpenAI's format) |
//! | `rag.rs` | `POST /v1/rag` |
//! | `chat.rs` | `POST /v1/chat/completions` (OpenAI's format) |
//! | `session.rs` | `POST /v1/session`, `DELETE /v1/session` (a dashboard session from a key) |
//! | `sql.rs` | `POST /v1/sql` |
//! | `subscriptions.rs` | `/v1/subscriptions…` (standing questions and their events) |
//! | `status.rs` | `GET /v1/status`, `GET /v1/timeline`, `POST /v1/snapshots` |
//! | `training.rs` | `GET /v1/drift`, `/v1/datasets…`, `/v1/models…`, `/v1/twin…` |
//! | `openapi.rs` | the OpenAPI 3.1 document built from the routes' [`openapi::Op`]s |
//!
//! The records those answers hold have their own modules, as other crates
//! keep them too ([`crate::models`], [`crate::training`],
//! [`crate::datasets`], [`crate::drift`]); [`Switched`] (the answer of
//! promotion and rollback) is re-exported here.

mod chat;
mod documents;
mod embeddings;
pub mod openapi;
mod rag;
mod search;
mod session;
mod sql;
mod status;
mod subscriptions;
mod training;

pub use chat::*;
pub use documents::*;
pub use embeddings::*;
pub use rag::*;
pub use search::*;
pub use session::*;
pub use sql::*;
pub use status::*;
pub use subscriptions::*;
pub use training::*;

pub use crate::training::Switched;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Clients match on these; the message
/// beside them is for humans and may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON (or not an object where one is needed).
    InvalidJson,
    /// The body is not valid UTF-8.
    InvalidUtf8,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an invalid value.
    InvalidField,
    /// `kind` is not article, post, repository or other.
    UnknownKind,
    /// One document's content is over the per-document limit.
    DocumentTooLarge,
    /// The request body is over the size limit.
    PayloadTooLarge,
    /// The content type is not one the endpoint accepts.
    UnsupportedMediaType,
    /// A query parameter is missing or invalid.
    InvalidQuery,
    /// The SQL statement would change something (DDL, DML, COPY…).
    SqlNotReadOnly,
    /// The SQL statement failed to plan or run.
    SqlError,
    /// No such resource.
    NotFound,
    /// The route exists but not for this method (the `Allow` header lists those it takes).
    MethodNotAllowed,
    /// No key, or a key that is not configured (`Authorization: Bearer <key>`).
    Unauthorized,
    /// The key is valid but lacks the scope the route needs.
    Forbidden,
    /// A state-changing request from a web page of another origin.
    CrossOrigin,
    /// A request over a configured limit of memory, rows or time (SQL memory pool, answer rows, timeout).
    ResourceLimit,
    /// The request names a model this server does not serve.
    ModelNotFound,
    /// The engine is stopping and accepts no more changes.
    ShuttingDown,
    /// The engine is too far behind; retry later.
    Overloaded,
    /// The prompt (question, history and retrieved context) does not fit the generator's context.
    ContextLengthExceeded,
    /// The generator could not be loaded or reached.
    GeneratorUnavailable,
    /// A training run is already in progress.
    TrainingRunning,
    /// The twin needs the local generator (an OpenAI-compatible one cannot be fine-tuned here).
    TwinUnavailable,
    /// Accepted changes could not be made durable (disk full, unwritable data
    /// directory): they may not survive a crash; send them again.
    StorageError,
    /// An `as_of` epoch outside the time-travel window (the message names the oldest and newest available).
    EpochUnavailable,
    /// A write or admin request sent to a read replica (the message names the primary).
    ReadReplica,
    /// A read with `min_as_of` whose epoch this process had not reached within `[replica] max_wait`
    /// (the message says how far behind it is; retry, or read from the primary).
    NotCaughtUp,
    /// Something went wrong on the server; details are in its log.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is returned with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidUtf8
            | Self::MissingField
            | Self::InvalidField
            | Self::UnknownKind
            | Self::InvalidQuery
            | Self::SqlNotReadOnly
            | Self::SqlError
            | Self::ContextLengthExceeded
            | Self::TwinUnavailable
            | Self::EpochUnavailable => 400,
            Self::NotFound | Self::ModelNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::CrossOrigin => 403,
            Self::ResourceLimit => 422,
            Self::DocumentTooLarge | Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TrainingRunning | Self::ReadReplica => 409,
            Self::Overloaded | Self::ShuttingDown | Self::GeneratorUnavailable | Self::NotCaughtUp => 503,
            Self::Internal => 500,
            Self::StorageError => 507,
        }
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The NDJSON line the error refers to, when it refers to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}
