//! `POST /v1/embeddings`: the serving model's vectors in OpenAI's format, so
//! existing clients (the `openai` SDKs, LangChain's `OpenAIEmbeddings`, …)
//! can use twinflow's encoder by pointing their base URL at it.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use base64::Engine as _;

use twinflow_schemas::api::{
    EmbeddingData, EmbeddingVector, EmbeddingsInput, EmbeddingsRequest, EmbeddingsResponse, EmbeddingsUsage, ErrorCode,
};

use super::{ApiError, json_body};
use crate::app::App;

/// Most inputs in one request (OpenAI's limit too).
pub const MAX_INPUTS: usize = 2048;

/// Handler of `POST /v1/embeddings`.
pub async fn embeddings(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let request: EmbeddingsRequest = json_body(&app, body, " (`input` must be a string or an array of strings)")?;
    let embedder = app.queries.clone();
    let model_id = embedder.model_id().to_owned();
    if let Some(model) = &request.model {
        // The full id (with the weights' hash) or the name before the `@`.
        let name = model_id.split('@').next().unwrap_or_default();
        if !model.eq_ignore_ascii_case(&model_id) && !model.eq_ignore_ascii_case(name) {
            return Err(ApiError::new(
                ErrorCode::ModelNotFound,
                format!("model {model:?} is not served here; this server embeds with {model_id:?}"),
            ));
        }
    }
    if let Some(dimensions) = request.dimensions
        && dimensions != embedder.dim()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("`dimensions` must be {} for {model_id} (it cannot be shortened)", embedder.dim()),
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}"),
            ));
        }
    };
    let inputs = match request.input {
        EmbeddingsInput::One(text) => vec![text],
        EmbeddingsInput::Many(texts) => texts,
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("`input` must hold between 1 and {MAX_INPUTS} strings, not {}", inputs.len()),
        ));
    }
    let slot = app.slots.take(&app.slots.answers, "embedding").await?;
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let limit = embedder.max_tokens().unwrap_or(usize::MAX);
        let tokens: u64 = texts.iter().map(|t| embedder.count_tokens(t).min(limit) as u64).sum();
        embedder.embed_batch(&texts).map(|v| (v, tokens)).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingData {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(vector)
            },
        })
        .collect();
    Ok(Json(EmbeddingsResponse {
        object: "list".into(),
        data,
        model: model_id,
        usage: EmbeddingsUsage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}
