//! `POST /v1/rag {query, k?, filters?, max_tokens?, temperature?, as_of?}`:
//! an answer from the live index (or the state of epoch `as_of`) with
//! citations, the `as_of` epoch, the filters and phrasings used, and the
//! time of every step (see `rag.rs`).

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;

use twinflow_models::GenerateParams;
use twinflow_schemas::api::{ErrorCode, RagRequest, RagResponse};

use super::{ApiError, json_body};
use crate::app::App;
use twinflow_pipelines::inference::{RagQuestion, answer};

/// Longest question accepted, in bytes.
pub const MAX_QUESTION_BYTES: usize = 8 * 1024;
/// Most passages in one prompt.
pub const MAX_K: usize = 50;

/// Checks the generation settings a request may override.
pub(crate) fn checked_params(
    app: &App,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
) -> Result<GenerateParams, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidField, m);
    let max_tokens = max_tokens.unwrap_or(app.config.rag.max_tokens);
    if max_tokens == 0 || max_tokens > 4096 {
        return Err(invalid(format!("`max_tokens` must be between 1 and 4096, not {max_tokens}")));
    }
    let temperature = temperature.unwrap_or(app.config.rag.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(invalid(format!("`temperature` must be between 0 and 2, not {temperature}")));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&top_p) {
        return Err(invalid(format!("`top_p` must be between 0 and 1, not {top_p}")));
    }
    Ok(GenerateParams {
        max_tokens,
        temperature,
        top_p,
        repetition_penalty: app.config.rag.repetition_penalty,
        ..GenerateParams::default()
    })
}

/// Checks a question's size and content.
pub(crate) fn checked_question(question: &str) -> Result<String, ApiError> {
    if question.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidField, "the question must not be empty"));
    }
    if question.len() > MAX_QUESTION_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("the question has {} bytes; the limit is {MAX_QUESTION_BYTES}", question.len()),
        ));
    }
    Ok(question.trim().to_owned())
}

/// Handler of `POST /v1/rag`.
pub async fn rag(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RagResponse>, ApiError> {
    let request: RagRequest = json_body(&app, body, "")?;
    let question = checked_question(&request.query)?;
    let k = request.k.unwrap_or(app.config.rag.k);
    if k == 0 || k > MAX_K {
        return Err(ApiError::new(ErrorCode::InvalidField, format!("`k` must be between 1 and {MAX_K}")));
    }
    let params = checked_params(&app, request.max_tokens, request.temperature, None)?;
    let ask = RagQuestion {
        question,
        history: Vec::new(),
        system: None,
        filter: (&request.filters).into(),
        k,
        params,
        answer: request.answer.unwrap_or(app.config.rag.answer),
    };
    super::fresh::caught_up(&app, request.min_as_of).await?;
    let slot = app.slots.take(&app.slots.answers, "answer").await?;
    let as_of = request.as_of;
    let answer = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        match as_of {
            None => answer(&app.rag(), &ask, &mut |_| ControlFlow::Continue(())).map_err(ApiError::from),
            Some(epoch) => {
                let past = app.store.as_of(epoch)?;
                answer(&app.rag_at(&past), &ask, &mut |_| ControlFlow::Continue(())).map_err(ApiError::from)
            }
        }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(answer))
}
