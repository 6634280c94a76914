//! The `ingest_errors` table: records sources refused (bad JSON, invalid
//! UTF-8, an oversize file, a page that failed to fetch), committed with the
//! epoch after they happened.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

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
