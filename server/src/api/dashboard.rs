//! The dashboard: one page, its script and style sheet, compiled into the
//! binary (no CDN, nothing fetched from elsewhere). The page polls
//! `/v1/status`, `/v1/timeline`, `/v1/drift`, `/v1/models` and `/v1/twin`,
//! and searches or asks through `/v1/search` and `/v1/rag`.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// Only this server's own assets and API: document text shown on the page can never load anything.
const POLICY: &str =
    "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(media: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, media), (CACHE_CONTROL, "no-cache"), (CONTENT_SECURITY_POLICY, POLICY)], body)
}

/// Handler of `GET /`.
pub async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", PAGE)
}

/// Handler of `GET /dashboard.js`.
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// Handler of `GET /dashboard.css`.
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
