//! Dashboard sessions: `POST /v1/session` trades a key for an `HttpOnly`,
//! `SameSite=Strict` cookie, `DELETE /v1/session` ends it; and the login
//! page a browser gets instead of a 401 error.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use twinflow_schemas::api::{ErrorCode, SessionEnded, SessionRequest, SessionResponse};
use twinflow_schemas::auth::SESSION_COOKIE;

use super::ApiError;
use crate::app::App;

const LOGIN: &str = include_str!("../../assets/login.html");

/// Marks a non-JSON error answer that is meant as it is (the login page).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deliberate;

/// Handler of `POST /v1/session`.
pub async fn start(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(HeaderMap, Json<SessionResponse>), ApiError> {
    let request: SessionRequest = super::json_body(&app, body, " (send {\"key\": \"tfk_…\"})")?;
    let principal = app
        .gate
        .check_key(request.key.trim())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "the key is not valid"))?;
    let (name, scopes) = (principal.name.clone(), principal.scopes.clone());
    let (token, ttl) = app.gate.start_session(principal).map_err(ApiError::internal)?;
    let answer = SessionResponse { name, scopes, expires_in_s: ttl.as_secs() };
    tracing::info!(key = %answer.name, "dashboard session started");
    Ok((cookie(&app, &format!("{SESSION_COOKIE}={token}; Max-Age={}", ttl.as_secs())), Json(answer)))
}

/// Handler of `DELETE /v1/session`.
pub async fn end(State(app): State<Arc<App>>, headers: HeaderMap) -> (HeaderMap, Json<SessionEnded>) {
    let ended = crate::auth::session_token(&headers).is_some_and(|token| app.gate.end_session(token));
    (cookie(&app, &format!("{SESSION_COOKIE}=; Max-Age=0")), Json(SessionEnded { ended }))
}

/// `Set-Cookie` with the attributes every session cookie has (and
/// `Secure` when the server speaks HTTPS).
fn cookie(app: &App, value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let secure = if app.config.server.tls.is_some() { "; Secure" } else { "" };
    let value = format!("{value}; Path=/; HttpOnly; SameSite=Strict{secure}");
    headers.insert(SET_COOKIE, HeaderValue::from_str(&value).expect("a cookie of base64url and digits"));
    headers
}

/// The login page's policy: its own inline script and style only (by hash).
static LOGIN_POLICY: LazyLock<String> = LazyLock::new(|| {
    let hash = |tag: &str| {
        let open = format!("<{tag}>");
        let start = LOGIN.find(&open).map(|i| i + open.len()).unwrap_or(0);
        let end = LOGIN[start..].find(&format!("</{tag}>")).map(|i| start + i).unwrap_or(start);
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&LOGIN.as_bytes()[start..end]))
    };
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
        hash("script"),
        hash("style")
    )
});

/// What a browser gets instead of a 401 error: a page that asks for a key.
pub(crate) fn login_page() -> Response {
    let policy = HeaderValue::from_str(&LOGIN_POLICY).expect("an ASCII policy");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"))],
        [(CACHE_CONTROL, HeaderValue::from_static("no-store")), (CONTENT_SECURITY_POLICY, policy)],
        LOGIN,
    )
        .into_response();
    response.extensions_mut().insert(Deliberate);
    response
}
