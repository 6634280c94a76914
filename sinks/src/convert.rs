//! Row ↔ Arrow conversion for the four feature tables, in both directions.
//!
//! Rows become the columns of `TableName::schema(dim)` (current state) or
//! `TableName::change_schema(dim)` (change logs, with `_epoch` and `_diff`);
//! batches read back from Parquet become rows again. Hashes are 32-hex
//! strings, kinds and splits lowercase strings, `fetched_at` a UTC
//! millisecond timestamp, vectors `FixedSizeList<Float32>(dim)`.
//!
//! ```
//! use twinflow_schemas::{ChunkRow, Hash128};
//! use twinflow_sinks::convert::{batch_to_updates, updates_to_batch};
//!
//! let row = ChunkRow {
//!     chunk_id: Hash128::of(b"hi"),
//!     doc_id: "d".into(),
//!     ordinal: 0,
//!     text: "hi".into(),
//!     char_start: 0,
//!     char_end: 2,
//!     token_estimate: 1,
//!     pages: Some((3, 4)),
//! };
//! let batch = updates_to_batch(&[(row.clone(), 1)], 7, 384).unwrap();
//! assert_eq!(batch.num_columns(), 11); // 9 columns + _epoch + _diff
//! assert_eq!(batch_to_updates::<ChunkRow>(&batch, 384).unwrap(), vec![(row, 1)]);
//! ```

use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, FieldRef, Float32Type, Int64Type, UInt32Type, UInt64Type};
use twinflow_schemas::tables::{DIFF_COLUMN, EPOCH_COLUMN};
use twinflow_schemas::{
    ChunkRow, ContentFormat, DocumentKind, DocumentRow, EmbeddingRow, EpochUpdates, Hash128, InstructRow, Split,
    TableName, Updates, Vector,
};

use crate::error::{Error, Result};

/// A row type of one feature table: how it maps to Arrow columns and how the
/// live state groups it.
pub trait TableRow: Clone + Eq + Hash + Ord + Send + Sync + 'static {
    /// The table the row belongs to.
    const TABLE: TableName;
    /// The identity the live state groups rows by (`doc_id`, `chunk_id`, `sample_id`).
    type Key: Clone + Eq + Hash + Send + Sync;
    /// This row's key.
    fn key(&self) -> Self::Key;
    /// The table's columns (no system columns) for `rows`, in schema order.
    fn columns(rows: &[&Self], dim: usize) -> Result<Vec<ArrayRef>>;
    /// Rows from a batch holding at least the table's columns (found by name).
    fn from_batch(batch: &RecordBatch, dim: usize) -> Result<Vec<Self>>;
    /// This table's updates in `updates`.
    fn updates(updates: &EpochUpdates) -> &Updates<Self>;
    /// This table's updates in `updates`, mutably.
    fn updates_mut(updates: &mut EpochUpdates) -> &mut Updates<Self>;
}

/// A current-state batch (`TableName::schema(dim)`), one row per entry of `rows`.
pub fn rows_to_batch<R: TableRow>(rows: &[&R], dim: usize) -> Result<RecordBatch> {
    let columns = R::columns(rows, dim)?;
    Ok(RecordBatch::try_new(R::TABLE.schema(dim), columns)?)
}

/// A change-log batch (`TableName::change_schema(dim)`): the rows of
/// `updates` with `_epoch = epoch` and `_diff` = their diff.
pub fn updates_to_batch<R: TableRow>(updates: &[(R, i64)], epoch: u64, dim: usize) -> Result<RecordBatch> {
    let rows: Vec<&R> = updates.iter().map(|(row, _)| row).collect();
    let diffs = updates.iter().map(|(_, diff)| *diff);
    change_batch(&rows, diffs, epoch, dim)
}

/// Like [`updates_to_batch`], for rows held by reference.
pub fn change_batch<R: TableRow>(
    rows: &[&R],
    diffs: impl IntoIterator<Item = i64>,
    epoch: u64,
    dim: usize,
) -> Result<RecordBatch> {
    let mut columns = R::columns(rows, dim)?;
    columns.push(Arc::new(UInt64Array::from_value(epoch, rows.len())));
    columns.push(Arc::new(Int64Array::from_iter_values(diffs)));
    Ok(RecordBatch::try_new(R::TABLE.change_schema(dim), columns)?)
}

/// Rows and their diffs from a batch: `_diff` when the batch has that column,
/// else 1 per row. Columns are found by name and cast to the table's types.
pub fn batch_to_updates<R: TableRow>(batch: &RecordBatch, dim: usize) -> Result<Vec<(R, i64)>> {
    let rows = R::from_batch(batch, dim)?;
    let diffs: Vec<i64> = match batch.column_by_name(DIFF_COLUMN) {
        Some(_) => {
            column(batch, R::TABLE, DIFF_COLUMN, &DataType::Int64)?.as_primitive::<Int64Type>().values().to_vec()
        }
        None => vec![1; rows.len()],
    };
    Ok(rows.into_iter().zip(diffs).collect())
}

/// The epochs of a change-log batch (`_epoch`), for checks on restore.
pub fn batch_epochs(batch: &RecordBatch, table: TableName) -> Result<Vec<u64>> {
    let col = column(batch, table, EPOCH_COLUMN, &DataType::UInt64)?;
    Ok(col.as_primitive::<UInt64Type>().values().to_vec())
}

// ---- writing ------------------------------------------------------------

fn strings<'a, R: 'a>(rows: &[&'a R], f: impl Fn(&'a R) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r))))
}

fn hashes<R>(rows: &[&R], f: impl Fn(&R) -> Hash128) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| f(r).to_hex())))
}

fn u32s<R>(rows: &[&R], f: impl Fn(&R) -> u32) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| f(r))))
}

/// The child field of a list-typed column of `table`'s schema.
fn item_field(table: TableName, name: &str, dim: usize) -> FieldRef {
    let schema = table.schema(dim);
    match schema.field_with_name(name).map(|f| f.data_type().clone()) {
        Ok(DataType::FixedSizeList(item, _)) | Ok(DataType::List(item)) => item,
        other => unreachable!("{table}.{name} is a list column in tables.rs, found {other:?}"),
    }
}

impl TableRow for DocumentRow {
    const TABLE: TableName = TableName::Documents;
    type Key = String;

    fn key(&self) -> String {
        self.doc_id.clone()
    }

    fn columns(rows: &[&Self], _dim: usize) -> Result<Vec<ArrayRef>> {
        let fetched = TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.fetched_at));
        Ok(vec![
            strings(rows, |r| &r.doc_id),
            strings(rows, |r| r.kind.as_str()),
            strings(rows, |r| &r.author),
            strings(rows, |r| &r.title),
            strings(rows, |r| &r.url),
            strings(rows, |r| &r.source),
            strings(rows, |r| r.format.as_str()),
            hashes(rows, |r| r.content_hash),
            strings(rows, |r| &r.content),
            Arc::new(fetched.with_timezone("UTC")),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.version))),
        ])
    }

    fn from_batch(batch: &RecordBatch, dim: usize) -> Result<Vec<Self>> {
        let t = Self::TABLE;
        let s = |name| str_column(batch, t, name);
        let (doc_id, kind, author, title) = (s("doc_id")?, s("kind")?, s("author")?, s("title")?);
        let (url, source, format) = (s("url")?, s("source")?, s("format")?);
        let (hash, content) = (s("content_hash")?, s("content")?);
        let fetched_type = t.schema(dim).field_with_name("fetched_at")?.data_type().clone();
        let fetched = column(batch, t, "fetched_at", &fetched_type)?;
        let fetched = fetched.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let version = column(batch, t, "version", &DataType::UInt64)?;
        let version = version.as_primitive::<UInt64Type>();
        (0..batch.num_rows())
            .map(|i| {
                Ok(DocumentRow {
                    doc_id: doc_id.value(i).to_owned(),
                    kind: parse_kind(kind.value(i))?,
                    author: author.value(i).to_owned(),
                    title: title.value(i).to_owned(),
                    url: url.value(i).to_owned(),
                    source: source.value(i).to_owned(),
                    format: parse_format(format.value(i))?,
                    content_hash: parse_hash(t, hash.value(i))?,
                    content: content.value(i).to_owned(),
                    fetched_at: fetched.value(i),
                    version: version.value(i),
                })
            })
            .collect()
    }

    fn updates(updates: &EpochUpdates) -> &Updates<Self> {
        &updates.documents
    }

    fn updates_mut(updates: &mut EpochUpdates) -> &mut Updates<Self> {
        &mut updates.documents
    }
}

impl TableRow for ChunkRow {
    const TABLE: TableName = TableName::Chunks;
    type Key = Hash128;

    fn key(&self) -> Hash128 {
        self.chunk_id
    }

    fn columns(rows: &[&Self], _dim: usize) -> Result<Vec<ArrayRef>> {
        Ok(vec![
            hashes(rows, |r| r.chunk_id),
            strings(rows, |r| &r.doc_id),
            u32s(rows, |r| r.ordinal),
            strings(rows, |r| &r.text),
            u32s(rows, |r| r.char_start),
            u32s(rows, |r| r.char_end),
            u32s(rows, |r| r.token_estimate),
            Arc::new(rows.iter().map(|r| r.pages.map(|p| p.0)).collect::<UInt32Array>()),
            Arc::new(rows.iter().map(|r| r.pages.map(|p| p.1)).collect::<UInt32Array>()),
        ])
    }

    fn from_batch(batch: &RecordBatch, _dim: usize) -> Result<Vec<Self>> {
        let t = Self::TABLE;
        let (chunk_id, doc_id, text) =
            (str_column(batch, t, "chunk_id")?, str_column(batch, t, "doc_id")?, str_column(batch, t, "text")?);
        let u = |name| u32_column(batch, t, name);
        let (ordinal, start, end, tokens) = (u("ordinal")?, u("char_start")?, u("char_end")?, u("token_estimate")?);
        let (first, last) = (optional_u32_column(batch, t, "page_start")?, optional_u32_column(batch, t, "page_end")?);
        (0..batch.num_rows())
            .map(|i| {
                let page = |column: &Option<UInt32Array>| column.as_ref().filter(|c| c.is_valid(i)).map(|c| c.value(i));
                Ok(ChunkRow {
                    chunk_id: parse_hash(t, chunk_id.value(i))?,
                    doc_id: doc_id.value(i).to_owned(),
                    ordinal: ordinal.value(i),
                    text: text.value(i).to_owned(),
                    char_start: start.value(i),
                    char_end: end.value(i),
                    token_estimate: tokens.value(i),
                    pages: page(&first).zip(page(&last)),
                })
            })
            .collect()
    }

    fn updates(updates: &EpochUpdates) -> &Updates<Self> {
        &updates.chunks
    }

    fn updates_mut(updates: &mut EpochUpdates) -> &mut Updates<Self> {
        &mut updates.chunks
    }
}

impl TableRow for EmbeddingRow {
    const TABLE: TableName = TableName::Embeddings;
    type Key = Hash128;

    fn key(&self) -> Hash128 {
        self.chunk_id
    }

    fn columns(rows: &[&Self], dim: usize) -> Result<Vec<ArrayRef>> {
        let mut values = Vec::with_capacity(rows.len() * dim);
        for row in rows {
            if row.vector.0.len() != dim {
                return Err(Error::InvalidRow {
                    table: Self::TABLE.as_str(),
                    reason: format!(
                        "vector of chunk {} has {} values, the store's dimension is {dim}",
                        row.chunk_id,
                        row.vector.0.len()
                    ),
                });
            }
            values.extend_from_slice(&row.vector.0);
        }
        let item = item_field(Self::TABLE, "vector", dim);
        let vectors = FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), None)?;
        Ok(vec![hashes(rows, |r| r.chunk_id), strings(rows, |r| &r.model_id), Arc::new(vectors)])
    }

    fn from_batch(batch: &RecordBatch, dim: usize) -> Result<Vec<Self>> {
        let t = Self::TABLE;
        let (chunk_id, model_id) = (str_column(batch, t, "chunk_id")?, str_column(batch, t, "model_id")?);
        let vector_type = t.schema(dim).field_with_name("vector")?.data_type().clone();
        let vectors = column(batch, t, "vector", &vector_type)?;
        let vectors = vectors.as_fixed_size_list();
        let values = vectors.values().as_primitive::<Float32Type>();
        if values.null_count() > 0 {
            return Err(Error::InvalidRow { table: t.as_str(), reason: "a vector holds nulls".into() });
        }
        (0..batch.num_rows())
            .map(|i| {
                let start = vectors.value_offset(i) as usize;
                Ok(EmbeddingRow {
                    chunk_id: parse_hash(t, chunk_id.value(i))?,
                    model_id: model_id.value(i).to_owned(),
                    vector: Vector(values.values()[start..start + dim].to_vec()),
                })
            })
            .collect()
    }

    fn updates(updates: &EpochUpdates) -> &Updates<Self> {
        &updates.embeddings
    }

    fn updates_mut(updates: &mut EpochUpdates) -> &mut Updates<Self> {
        &mut updates.embeddings
    }
}

impl TableRow for InstructRow {
    const TABLE: TableName = TableName::Instruct;
    type Key = Hash128;

    fn key(&self) -> Hash128 {
        self.sample_id
    }

    fn columns(rows: &[&Self], dim: usize) -> Result<Vec<ArrayRef>> {
        let ids: Vec<String> = rows.iter().flat_map(|r| r.chunk_ids.iter().map(Hash128::to_hex)).collect();
        let lengths = rows.iter().map(|r| r.chunk_ids.len());
        let item = item_field(Self::TABLE, "chunk_ids", dim);
        let chunk_ids = ListArray::try_new(
            item,
            OffsetBuffer::from_lengths(lengths),
            Arc::new(StringArray::from_iter_values(ids)),
            None,
        )?;
        Ok(vec![
            hashes(rows, |r| r.sample_id),
            strings(rows, |r| &r.instruction),
            strings(rows, |r| &r.output),
            strings(rows, |r| &r.doc_id),
            Arc::new(chunk_ids),
            strings(rows, |r| &r.generator),
            strings(rows, |r| r.split.as_str()),
        ])
    }

    fn from_batch(batch: &RecordBatch, dim: usize) -> Result<Vec<Self>> {
        let t = Self::TABLE;
        let s = |name| str_column(batch, t, name);
        let (sample_id, instruction, output) = (s("sample_id")?, s("instruction")?, s("output")?);
        let (doc_id, generator, split) = (s("doc_id")?, s("generator")?, s("split")?);
        let list_type = t.schema(dim).field_with_name("chunk_ids")?.data_type().clone();
        let lists = column(batch, t, "chunk_ids", &list_type)?;
        let lists = lists.as_list::<i32>();
        let items = lists.values().as_string::<i32>();
        (0..batch.num_rows())
            .map(|i| {
                let range = lists.value_offsets()[i] as usize..lists.value_offsets()[i + 1] as usize;
                Ok(InstructRow {
                    sample_id: parse_hash(t, sample_id.value(i))?,
                    instruction: instruction.value(i).to_owned(),
                    output: output.value(i).to_owned(),
                    doc_id: doc_id.value(i).to_owned(),
                    chunk_ids: range.map(|j| parse_hash(t, items.value(j))).collect::<Result<_>>()?,
                    generator: generator.value(i).to_owned(),
                    split: parse_split(split.value(i))?,
                })
            })
            .collect()
    }

    fn updates(updates: &EpochUpdates) -> &Updates<Self> {
        &updates.instruct
    }

    fn updates_mut(updates: &mut EpochUpdates) -> &mut Updates<Self> {
        &mut updates.instruct
    }
}

// ---- reading ------------------------------------------------------------

/// Column `name` of `batch`, cast to `data_type` when stored differently
/// (e.g. `Utf8View`), and without nulls.
fn column(batch: &RecordBatch, table: TableName, name: &str, data_type: &DataType) -> Result<ArrayRef> {
    let invalid = |reason: String| Error::InvalidRow { table: table.as_str(), reason };
    let col = batch.column_by_name(name).ok_or_else(|| invalid(format!("column {name} is missing")))?;
    let col = if col.data_type() == data_type {
        col.clone()
    } else {
        arrow::compute::cast(col, data_type)
            .map_err(|e| invalid(format!("column {name} has type {}: {e}", col.data_type())))?
    };
    if col.null_count() > 0 {
        return Err(invalid(format!("column {name} holds nulls")));
    }
    Ok(col)
}

fn str_column(batch: &RecordBatch, table: TableName, name: &str) -> Result<StringArray> {
    Ok(column(batch, table, name, &DataType::Utf8)?.as_string::<i32>().clone())
}

fn u32_column(batch: &RecordBatch, table: TableName, name: &str) -> Result<UInt32Array> {
    Ok(column(batch, table, name, &DataType::UInt32)?.as_primitive::<UInt32Type>().clone())
}

/// A nullable `u32` column; `None` when the batch has no such column (a
/// file written before the column was added).
fn optional_u32_column(batch: &RecordBatch, table: TableName, name: &str) -> Result<Option<UInt32Array>> {
    let Some(col) = batch.column_by_name(name) else { return Ok(None) };
    let col = arrow::compute::cast(col, &DataType::UInt32).map_err(|e| Error::InvalidRow {
        table: table.as_str(),
        reason: format!("column {name} has type {}: {e}", col.data_type()),
    })?;
    Ok(Some(col.as_primitive::<UInt32Type>().clone()))
}

fn parse_hash(table: TableName, s: &str) -> Result<Hash128> {
    s.parse().map_err(|e| Error::InvalidRow { table: table.as_str(), reason: format!("{e}") })
}

fn parse_kind(s: &str) -> Result<DocumentKind> {
    s.parse().map_err(|e| Error::InvalidRow { table: "documents", reason: format!("{e}") })
}

fn parse_format(s: &str) -> Result<ContentFormat> {
    s.parse().map_err(|reason| Error::InvalidRow { table: "documents", reason })
}

fn parse_split(s: &str) -> Result<Split> {
    match s {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        other => Err(Error::InvalidRow { table: "instruct", reason: format!("unknown split {other:?}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> DocumentRow {
        DocumentRow {
            doc_id: "a".into(),
            kind: DocumentKind::Post,
            author: "me".into(),
            title: "t".into(),
            url: "u".into(),
            source: "http".into(),
            format: ContentFormat::Markdown,
            content_hash: Hash128::of(b"x"),
            content: "x".into(),
            fetched_at: 1_700_000_000_000,
            version: 3,
        }
    }

    #[test]
    fn every_table_round_trips_through_arrow() {
        let dim = 3;
        let docs = vec![(doc(), 1), (DocumentRow { kind: DocumentKind::Repository, ..doc() }, -1)];
        let batch = updates_to_batch(&docs, 5, dim).unwrap();
        assert_eq!(batch.schema(), TableName::Documents.change_schema(dim));
        assert_eq!(batch_to_updates::<DocumentRow>(&batch, dim).unwrap(), docs);
        assert_eq!(batch_epochs(&batch, TableName::Documents).unwrap(), vec![5, 5]);

        let emb =
            EmbeddingRow { chunk_id: Hash128::of(b"c"), model_id: "m".into(), vector: Vector(vec![0.5, -1.0, 2.0]) };
        let embs = vec![(emb.clone(), 2), (EmbeddingRow { vector: Vector(vec![0.0; 3]), ..emb }, 1)];
        let batch = updates_to_batch(&embs, 1, dim).unwrap();
        assert_eq!(batch_to_updates::<EmbeddingRow>(&batch, dim).unwrap(), embs);
        // A slice starts at a non-zero offset: values must still line up.
        let tail = batch.slice(1, 1);
        assert_eq!(batch_to_updates::<EmbeddingRow>(&tail, dim).unwrap(), embs[1..]);

        let sample = InstructRow {
            sample_id: Hash128::of(b"s"),
            instruction: "i".into(),
            output: "o".into(),
            doc_id: "a".into(),
            chunk_ids: vec![Hash128::of(b"1"), Hash128::of(b"2")],
            generator: "g".into(),
            split: Split::Test,
        };
        let samples = vec![(sample.clone(), 1), (InstructRow { chunk_ids: vec![], split: Split::Train, ..sample }, 1)];
        let batch = updates_to_batch(&samples, 1, dim).unwrap();
        assert_eq!(batch_to_updates::<InstructRow>(&batch, dim).unwrap(), samples);
        assert_eq!(batch_to_updates::<InstructRow>(&batch.slice(1, 1), dim).unwrap(), samples[1..]);
    }

    #[test]
    fn current_state_batches_have_no_system_columns_and_diff_defaults_to_one() {
        let d = doc();
        let batch = rows_to_batch(&[&d], 4).unwrap();
        assert_eq!(batch.schema(), TableName::Documents.schema(4));
        assert_eq!(batch_to_updates::<DocumentRow>(&batch, 4).unwrap(), vec![(d, 1)]);
    }

    #[test]
    fn chunk_pages_are_nullable_and_absent_in_older_files() {
        let chunk = ChunkRow {
            chunk_id: Hash128::of(b"c"),
            doc_id: "file:a.pdf".into(),
            ordinal: 0,
            text: "c".into(),
            char_start: 0,
            char_end: 1,
            token_estimate: 1,
            pages: Some((2, 3)),
        };
        let rows = vec![(chunk.clone(), 1), (ChunkRow { pages: None, ..chunk.clone() }, 1)];
        let batch = updates_to_batch(&rows, 1, 3).unwrap();
        assert_eq!(batch.column_by_name("page_start").unwrap().null_count(), 1);
        assert_eq!(batch_to_updates::<ChunkRow>(&batch, 3).unwrap(), rows);
        // A file written before the page columns existed reads as chunks without pages.
        let mut older = batch.clone();
        for name in ["page_start", "page_end"] {
            let index = older.schema().index_of(name).unwrap();
            older.remove_column(index);
        }
        let read = batch_to_updates::<ChunkRow>(&older, 3).unwrap();
        assert!(read.iter().all(|(row, _)| row.pages.is_none()) && read.len() == 2);
    }

    #[test]
    fn wrong_vector_length_is_refused() {
        let emb = EmbeddingRow { chunk_id: Hash128::of(b"c"), model_id: "m".into(), vector: Vector(vec![1.0]) };
        let err = updates_to_batch(&[(emb, 1)], 1, 3).unwrap_err();
        assert!(err.to_string().contains("has 1 values, the store's dimension is 3"), "{err}");
    }
}
