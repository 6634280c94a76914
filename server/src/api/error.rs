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

impl From<twinflow_sinks::Error> for ApiError {
    /// The store's errors with their codes: an epoch outside the window is the
    /// caller's (`epoch_unavailable`), the rest the server's.
    fn from(e: twinflow_sinks::Error) -> Self {
        match e.code() {
            ErrorCode::Internal => Self::internal(e),
            code => Self::new(code, e.to_string()),
        }
    }
}

impl From<crate::app::ReadReplica> for ApiError {
    fn from(e: crate::app::ReadReplica) -> Self {
        Self::new(ErrorCode::ReadReplica, e.to_string())
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
/// A caller without a key learns nothing about which paths exist: 401.
pub async fn not_found(uri: axum::http::Uri, caller: Option<axum::Extension<crate::auth::Caller>>) -> Response {
    crate::auth::hides_routes(caller.as_ref().map(|c| &c.0))
        .unwrap_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no route for {uri}")).into_response())
}

/// Makes every rejection a JSON error with a stable code: axum's own — a
/// method the route does not take (405, `Allow` kept), a body over the
/// limit (413), a path or query that does not parse (400) — come as plain
/// text or empty otherwise.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let deliberate = response.extensions().get::<super::session::Deliberate>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_json || deliberate {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status.as_u16() {
        400 => ErrorCode::InvalidQuery,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        422 => ErrorCode::InvalidJson,
        503 => ErrorCode::Overloaded,
        _ if status.is_client_error() => ErrorCode::InvalidQuery,
        _ => ErrorCode::Internal,
    };
    let message = match code {
        // A server-side failure's text is for the log, not the client.
        ErrorCode::Internal => {
            let mut answer = ApiError::internal(format!("{status}: {text}")).into_response();
            *answer.status_mut() = status;
            return answer;
        }
        ErrorCode::MethodNotAllowed => {
            let allow = parts.headers.get(axum::http::header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            format!("{method} is not allowed here; this route takes: {allow}")
        }
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    let mut answer = ApiError::new(code, message).into_response();
    // The status stays axum's (its code maps to the same one); headers such as `Allow` stay.
    *answer.status_mut() = status;
    for (name, value) in parts.headers.iter() {
        answer.headers_mut().entry(name.clone()).or_insert_with(|| value.clone());
    }
    answer
}
