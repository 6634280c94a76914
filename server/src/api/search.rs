//! `GET /v1/search?q=&k=[&mode=&author=&kind=&source=&doc_id=&since=&until=]`:
//! hybrid search (cosine over the live embeddings — HNSW, or an exact scan for
//! small candidate sets or with `exact=true` — and BM25 over the chunk texts,
//! fused by reciprocal rank; `mode=vector|bm25` for one of them)
//! at the last committed epoch (or `as_of=` a past one, within the
//! time-travel window), with provenance and the `as_of` epoch; the
//! metadata filters apply inside both searches, before the top `k` is taken.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use twinflow_schemas::api::{ErrorCode, SearchFilter, SearchMode, SearchQuery, SearchResponse};

use super::ApiError;
use crate::app::App;

/// Largest `k` accepted.
pub const MAX_K: usize = 1000;

/// Handler of `GET /v1/search`.
pub async fn search(
    State(app): State<Arc<App>>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    if query.q.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "parameter `q` must not be empty"));
    }
    if query.k == 0 || query.k > MAX_K {
        return Err(ApiError::new(ErrorCode::InvalidQuery, format!("parameter `k` must be between 1 and {MAX_K}")));
    }
    let kind = match query.kind.as_deref() {
        None => None,
        Some(kind) => Some(kind.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("`kind` must be article, post, repository or other, not {kind:?}"),
            )
        })?),
    };
    let filter = SearchFilter {
        author: query.author.clone(),
        kind,
        source: query.source.clone(),
        doc_id: query.doc_id.clone(),
        since_ms: query.since,
        until_ms: query.until,
    };
    let mode = match query.mode.as_deref() {
        None | Some("hybrid") => app.retrieval.fusion().mode(),
        Some("vector") => SearchMode::Vector,
        Some("bm25") => SearchMode::Bm25,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("`mode` must be hybrid, vector or bm25, not {other:?}"),
            ));
        }
    };
    super::fresh::caught_up(&app, query.min_as_of).await?;
    let started = Instant::now();
    let queries = app.queries.clone();
    let store = match query.as_of {
        Some(epoch) => {
            let store = app.store.clone();
            tokio::task::spawn_blocking(move || store.as_of(epoch)).await.map_err(ApiError::internal)??
        }
        None => app.store.clone(),
    };
    let (as_of, results) = tokio::task::spawn_blocking(move || {
        let vector = match mode {
            SearchMode::Bm25 => Vec::new(),
            _ => queries.embed_batch(&[query.q.as_str()]).map_err(ApiError::internal)?.remove(0),
        };
        store.search_mode(&query.q, &vector, query.k, &filter, mode, query.exact).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(SearchResponse {
        as_of,
        model_id: app.queries.model_id().to_owned(),
        results,
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}
