//! Encoders for SQL answers: JSON rows, CSV, Arrow IPC stream.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;

/// Each row as a JSON object (column name → value), with explicit nulls;
/// timestamps as ISO 8601 strings, lists as arrays. Uses arrow's JSON writer.
pub fn encode_json_rows(batches: &[RecordBatch]) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    if batches.iter().all(|b| b.num_rows() == 0) {
        return Ok(Vec::new());
    }
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(serde_json::from_slice(&writer.into_inner())?)
}

/// CSV with a header line. Nested columns (lists, vectors, structs) are
/// written as their display text, e.g. `[0.1, 0.2]`, since CSV has no
/// nested values.
pub fn encode_csv(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
    for batch in batches {
        writer.write(&flatten_nested(batch)?)?;
    }
    Ok(writer.into_inner())
}

/// An Arrow IPC stream (schema, then the batches), readable by
/// `arrow::ipc::reader::StreamReader`, pyarrow and others.
pub fn encode_arrow_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

/// A Parquet file (Snappy pages, as the tables are written),
/// readable by DuckDB, pandas and `twinflow sql --data`.
pub fn encode_parquet(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let failed = |source| crate::Error::Parquet { path: "<query answer>".into(), source };
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties)).map_err(failed)?;
    for batch in batches {
        writer.write(batch).map_err(failed)?;
    }
    writer.into_inner().map_err(failed)
}

/// `batch` with every nested column replaced by its display strings.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
            let text: StringArray =
                (0..column.len()).map(|i| column.is_valid(i).then(|| formatter.value(i).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, field.is_nullable()));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array, ListArray};
    use arrow::datatypes::Int64Type;

    #[test]
    fn nested_columns_become_text_in_csv() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![Some(1), Some(2)]), None]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("l", list.data_type().clone(), true),
            Field::new("f", DataType::Float32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(list), Arc::new(Float32Array::from(vec![0.5, 1.5]))],
        )
        .unwrap();
        let csv = String::from_utf8(encode_csv(&[batch]).unwrap()).unwrap();
        assert_eq!(csv, "n,l,f\n1,\"[1, 2]\",0.5\n2,,1.5\n");
    }
}
