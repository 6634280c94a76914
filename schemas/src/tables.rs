//! The Arrow schema of every feature table.
//!
//! Stored change logs add two system columns, [`EPOCH_COLUMN`] and
//! [`DIFF_COLUMN`]; current-state views do not have them.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Column holding the epoch of a change in stored change logs.
pub const EPOCH_COLUMN: &str = "_epoch";
/// Column holding the multiplicity change (+1 insert, -1 retract) in stored change logs.
pub const DIFF_COLUMN: &str = "_diff";

/// The feature tables the engine maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableName {
    Documents,
    Chunks,
    Embeddings,
    Instruct,
}

impl TableName {
    /// Every table, in dependency order.
    pub const ALL: [TableName; 4] = [Self::Documents, Self::Chunks, Self::Embeddings, Self::Instruct];

    /// The name in SQL and on disk.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Documents => "documents",
            Self::Chunks => "chunks",
            Self::Embeddings => "embeddings",
            Self::Instruct => "instruct",
        }
    }

    /// The table's schema without system columns. `dim` is the embedding
    /// dimension (only the `embeddings` table uses it).
    pub fn schema(&self, dim: usize) -> SchemaRef {
        match self {
            Self::Documents => documents_schema(),
            Self::Chunks => chunks_schema(),
            Self::Embeddings => embeddings_schema(dim),
            Self::Instruct => instruct_schema(),
        }
    }

    /// The schema of the stored change log: the table's columns plus
    /// `_epoch` and `_diff`.
    pub fn change_schema(&self, dim: usize) -> SchemaRef {
        with_change_columns(&self.schema(dim))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TableName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown table {s:?}"))
    }
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// `documents`: the current version of every document.
pub fn documents_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("doc_id"),
        utf8("kind"),
        utf8("author"),
        utf8("title"),
        utf8("url"),
        utf8("source"),
        utf8("format"),
        utf8("content_hash"),
        utf8("content"),
        Field::new("fetched_at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("version", DataType::UInt64, false),
    ]))
}

/// `chunks`: extracts of cleaned documents, keyed by the hash of their text.
pub fn chunks_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("chunk_id"),
        utf8("doc_id"),
        Field::new("ordinal", DataType::UInt32, false),
        utf8("text"),
        Field::new("char_start", DataType::UInt32, false),
        Field::new("char_end", DataType::UInt32, false),
        Field::new("token_estimate", DataType::UInt32, false),
        // The first and last page of a paged document's chunk (a PDF's); null without pages.
        Field::new("page_start", DataType::UInt32, true),
        Field::new("page_end", DataType::UInt32, true),
    ]))
}

/// The Arrow type of an embedding vector of `dim` floats.
pub fn vector_type(dim: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32)
}

/// `embeddings`: one vector per distinct chunk text and model.
pub fn embeddings_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![utf8("chunk_id"), utf8("model_id"), Field::new("vector", vector_type(dim), false)]))
}

/// `instruct`: (instruction, output) samples with lineage.
pub fn instruct_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        utf8("sample_id"),
        utf8("instruction"),
        utf8("output"),
        utf8("doc_id"),
        Field::new("chunk_ids", DataType::List(Arc::new(Field::new("item", DataType::Utf8, false))), false),
        utf8("generator"),
        utf8("split"),
    ]))
}

/// `schema` plus the `_epoch` (UInt64) and `_diff` (Int64) system columns.
pub fn with_change_columns(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(EPOCH_COLUMN, DataType::UInt64, false));
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_schema_appends_system_columns() {
        let schema = TableName::Embeddings.change_schema(8);
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["chunk_id", "model_id", "vector", "_epoch", "_diff"]);
        assert_eq!(schema.field(2).data_type(), &vector_type(8));
        assert_eq!("instruct".parse::<TableName>().unwrap(), TableName::Instruct);
    }
}
