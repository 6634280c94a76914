//! `POST /v1/sql`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Output format of SQL results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqlFormat {
    #[default]
    Json,
    Csv,
    /// Arrow IPC stream.
    Arrow,
    /// One Parquet file.
    Parquet,
}

/// Body of `POST /v1/sql`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub format: SqlFormat,
    /// Read your writes: wait (up to `[replica] max_wait`) until this
    /// process has committed or followed at least this epoch — the `epoch`
    /// an ingest answered — else `503 not_caught_up`.
    #[serde(default)]
    pub min_as_of: Option<u64>,
}

/// A column of a JSON SQL answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SqlColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// JSON answer to `POST /v1/sql`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SqlResponse {
    pub as_of: u64,
    pub columns: Vec<SqlColumn>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub row_count: usize,
    pub took_ms: f64,
}
