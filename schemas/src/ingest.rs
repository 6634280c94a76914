//! The `ingest_errors` table: records sources refused (bad JSON, invalid
//! UTF-8, an oversize file, a page that failed to fetch), committed with the
//! epoch after they happened.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A record a source refused, and why (an `ingest_errors` row once committed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IngestError {
    /// The source's name.
    pub source: String,
    /// Where the record is: a file path, or `path:line`.
    pub location: String,
    /// What is wrong with it, for a human.
    pub reason: String,
    /// When it was refused, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl IngestError {
    /// An error record stamped with the current time.
    pub fn new(source: &str, location: String, reason: String) -> Self {
        Self { source: source.to_owned(), location, reason, at_ms: crate::clock::now_ms() }
    }
}

impl std::fmt::Display for IngestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.source, self.location, self.reason)
    }
}

impl std::error::Error for IngestError {}

/// One refused record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestErrorRow {
    /// The epoch it was committed with.
    pub epoch: u64,
    /// The source's name (`watch-0`, `web-1`, `http`, …).
    pub source: String,
    /// Where the record is: a path, `path:line`, a URL.
    pub location: String,
    /// What is wrong with it.
    pub reason: String,
    /// When it was refused, milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// The Arrow schema of `ingest_errors`.
pub fn ingest_errors_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::UInt64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("at_ms", DataType::Int64, false),
    ]))
}
