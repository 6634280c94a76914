//! `ApiError`: one error type for every handler, rendered as
//! `{ "error": { "code", "message", "line"? } }` with the code's status.
//! Client errors are logged at info; internal details stay in the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use twinflow_dataflow::SubmitError;
use twinflow_pipelines::feature::AcceptError;
use twinflow_pipelines::inference::RagError;
use twinflow_schemas::ChangeError;
use twinflow_schemas::api::{ErrorBody, ErrorCode, ErrorDetail};

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub line: Option<usize>,
}

impl ApiError {
    /// An error with a code and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), line: None }
    }

    /// A server-side failure: logged in full, answered without details.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        Self { code: e.code, message: e.message, line: Some(e.line) }
    }
}

/// The pipelines' errors, each given its HTTP code here and nowhere else.
impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        let code = match &e {
            RagError::GeneratorUnavailable(_) | RagError::Generation(_) => ErrorCode::GeneratorUnavailable,
            RagError::ContextLengthExceeded(_) => ErrorCode::ContextLengthExceeded,
            RagError::InvalidConversation(_) => ErrorCode::InvalidField,
            RagError::Retrieval(_) => return Self::internal(e),
        };
        Self::new(code, e.to_string())
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        let code = match &e {
            AcceptError::Refused(SubmitError::Overloaded { .. } | SubmitError::Behind { .. }) => ErrorCode::Overloaded,
            AcceptError::Refused(SubmitError::ShuttingDown) => ErrorCode::ShuttingDown,
            AcceptError::NotAShare(_) => ErrorCode::InvalidField,
            AcceptError::NotDurable(_) => ErrorCode::StorageError,
            AcceptError::Encode(_) => return Self::internal(e),
        };
        Self::new(code, e.to_string())
    }
}

impl From<ApiError> for ErrorBody {
    fn from(e: ApiError) -> Self {
        ErrorBody { error: ErrorDetail { code: e.code, message: e.message, line: e.line } }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_client_error() {
            tracing::info!(code = ?self.code, message = %self.message, "client error");
        }
        let overloaded = self.code == ErrorCode::Overloaded;
        let body = ErrorBody::from(self);
        let mut response = (status, Json(body)).into_response();
        if overloaded {
            // Clients (and `twinflow ingest`) wait this long before sending again.
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

/// The answer for routes that do not exist.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {uri}"))
}
