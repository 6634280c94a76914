//! `POST /v1/sql`: read-only SQL (DataFusion) over the current state of
//! every table and their change logs, at one committed epoch. The body is
//! `{"sql": "...", "format": "json" | "csv" | "arrow" | "parquet"}`, or the bare
//! statement as `application/sql` with `?format=`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use twinflow_schemas::api::{ErrorCode, SqlColumn, SqlFormat, SqlRequest, SqlResponse};
use twinflow_sinks::{Error as SinkError, encode_arrow_ipc, encode_csv, encode_json_rows, encode_parquet};

use super::ApiError;
use crate::app::App;

/// Query parameters of `POST /v1/sql`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct SqlParams {
    pub format: Option<SqlFormat>,
    /// Read your writes (for a plain-text body): wait for this epoch (see the JSON body's `min_as_of`).
    pub min_as_of: Option<u64>,
}

/// Handler of `POST /v1/sql`.
pub async fn sql(
    State(app): State<Arc<App>>,
    params: Result<Query<SqlParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let request = parse_request(&headers, &body, params.format)?;
    super::fresh::caught_up(&app, request.min_as_of.or(params.min_as_of)).await?;
    let _slot = app.slots.take(&app.slots.sql, "SQL").await?;
    let started = Instant::now();
    let timeout = app.config.server.sql_timeout;
    let answer = tokio::time::timeout(timeout, app.store.sql_with(&request.sql, app.sql_encoder()))
        .await
        .map_err(|_| ApiError::new(ErrorCode::SqlError, format!("query ran longer than {timeout:?}")))?
        .map_err(|e| match e {
            SinkError::SqlNotReadOnly(msg) => ApiError::new(ErrorCode::SqlNotReadOnly, msg),
            SinkError::Sql(msg) => ApiError::new(ErrorCode::SqlError, msg),
            SinkError::SqlLimit(msg) => ApiError::new(ErrorCode::ResourceLimit, msg),
            other => ApiError::internal(other),
        })?;
    let epoch = HeaderValue::from(answer.epoch);
    let mut response = match request.format {
        SqlFormat::Json => {
            let rows = encode_json_rows(&answer.batches).map_err(ApiError::internal)?;
            let columns = answer
                .schema
                .fields()
                .iter()
                .map(|f| SqlColumn { name: f.name().clone(), data_type: f.data_type().to_string() })
                .collect();
            Json(SqlResponse {
                as_of: answer.epoch,
                columns,
                row_count: rows.len(),
                rows,
                took_ms: started.elapsed().as_secs_f64() * 1e3,
            })
            .into_response()
        }
        SqlFormat::Csv => {
            let bytes = encode_csv(&answer.batches).map_err(ApiError::internal)?;
            ([(CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response()
        }
        SqlFormat::Arrow => {
            let bytes = encode_arrow_ipc(&answer.schema, &answer.batches).map_err(ApiError::internal)?;
            ([(CONTENT_TYPE, "application/vnd.apache.arrow.stream")], bytes).into_response()
        }
        SqlFormat::Parquet => {
            let bytes = encode_parquet(&answer.schema, &answer.batches).map_err(ApiError::internal)?;
            ([(CONTENT_TYPE, "application/vnd.apache.parquet")], bytes).into_response()
        }
    };
    response.headers_mut().insert("x-twinflow-as-of", epoch);
    Ok(response)
}

fn parse_request(headers: &HeaderMap, body: &[u8], format: Option<SqlFormat>) -> Result<SqlRequest, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to())))?;
    let is_json =
        headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    let mut request = if is_json {
        serde_json::from_str::<SqlRequest>(text).map_err(|e| {
            let code = if e.is_data() { ErrorCode::InvalidField } else { ErrorCode::InvalidJson };
            ApiError::new(code, format!("expected {{\"sql\": \"…\", \"format\": \"json|csv|arrow|parquet\"}}: {e}"))
        })?
    } else {
        SqlRequest { sql: text.to_owned(), format: SqlFormat::default(), min_as_of: None }
    };
    if let Some(format) = format {
        request.format = format;
    }
    if request.sql.trim().is_empty() {
        return Err(ApiError::new(ErrorCode::MissingField, "the SQL statement is empty"));
    }
    Ok(request)
}
