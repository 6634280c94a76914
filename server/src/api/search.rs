//! `GET /v1/search?q=&k=[&mode=&author=&kind=&source=&doc_id=&since=&until=]`:
//! hybrid search (cosine over the live embeddings — HNSW, or an exact scan for
//! small candidate sets or with `exact=true` — and BM25 over the chunk texts,
//! fused by reciprocal rank with the active retrieval setting's weights, or
//! those the request gives: `vector_weight`, `bm25_weight`, `lead_weight`,
//! `rrf_k`; `mode=vector|bm25` for one of them)
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

/// Largest fusion weight a request may give.
pub const MAX_WEIGHT: f32 = 100.0;
/// Largest `rrf_k` a request may give.
pub const MAX_RRF_K: f32 = 10_000.0;

/// The fusion parameters `query` gives, by name.
fn overrides(query: &SearchQuery) -> impl Iterator<Item = (&'static str, f32)> {
    [
        ("vector_weight", query.vector_weight),
        ("bm25_weight", query.bm25_weight),
        ("lead_weight", query.lead_weight),
        ("rrf_k", query.rrf_k),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
}

/// `active` (a hybrid fusion) with the parameters `query` gives in place
/// of its own; out-of-range values are a 400.
fn fused(active: SearchMode, query: &SearchQuery) -> Result<SearchMode, ApiError> {
    let SearchMode::Hybrid { mut vector_weight, mut bm25_weight, mut lead_weight, mut rrf_k } = active else {
        return Ok(active);
    };
    for (name, value) in overrides(query) {
        let (in_range, range) = match name {
            "rrf_k" => (value > 0.0 && value <= MAX_RRF_K, format!("above 0 and at most {MAX_RRF_K}")),
            _ => ((0.0..=MAX_WEIGHT).contains(&value), format!("between 0 and {MAX_WEIGHT}")),
        };
        if !in_range {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("`{name}` must be {range}, not {value}")));
        }
        match name {
            "vector_weight" => vector_weight = value,
            "bm25_weight" => bm25_weight = value,
            "lead_weight" => lead_weight = value,
            _ => rrf_k = value,
        }
    }
    if vector_weight == 0.0 && bm25_weight == 0.0 {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "`vector_weight` or `bm25_weight` must be above 0: with both at 0 nothing ranks the candidates",
        ));
    }
    Ok(SearchMode::Hybrid { vector_weight, bm25_weight, lead_weight, rrf_k })
}

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
        None | Some("hybrid") => fused(app.retrieval.fusion().mode(), &query)?,
        Some("vector") => SearchMode::Vector,
        Some("bm25") => SearchMode::Bm25,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("`mode` must be hybrid, vector or bm25, not {other:?}"),
            ));
        }
    };
    if !matches!(mode, SearchMode::Hybrid { .. }) && overrides(&query).next().is_some() {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "`vector_weight`, `bm25_weight`, `lead_weight` and `rrf_k` apply to hybrid search only",
        ));
    }
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
