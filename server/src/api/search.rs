//! `GET /v1/search?q=&k=[&author=&kind=&source=&doc_id=&since=&until=]`:
//! exact cosine search over the live embeddings of the last committed epoch,
//! with provenance and the `as_of` epoch; the metadata filters apply during
//! the scan, before the top `k` is taken.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use twinflow_schemas::api::{ErrorCode, SearchFilter, SearchQuery, SearchResponse};

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
    let started = Instant::now();
    let engine = app.engine.clone();
    let store = app.store.clone();
    let (as_of, results) = tokio::task::spawn_blocking(move || {
        let embedder = engine.embedder();
        let vector = embedder.embed_batch(&[query.q.as_str()]).map_err(ApiError::internal)?.remove(0);
        Ok::<_, ApiError>(store.search_filtered(&vector, query.k, &filter))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(SearchResponse {
        as_of,
        model_id: app.engine.embedder().model_id().to_owned(),
        results,
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    }))
}
