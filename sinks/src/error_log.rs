//! The `ingest_errors` table: an append-only log of the records sources
//! refused, one Parquet file per epoch that had some
//! (`ingest_errors/epoch=<E>/part-<n>.parquet`), listed in the manifest
//! with the epoch. Queryable by SQL as `ingest_errors`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use twinflow_schemas::IngestErrorRow;
use twinflow_schemas::ingest::ingest_errors_schema;

use crate::drift_log::read_log;
use crate::error::{Error, Result};

/// `ingest_errors/epoch=<epoch>/part-<part>.parquet`.
pub(crate) fn error_log_path(epoch: u64, part: usize) -> String {
    format!("ingest_errors/epoch={epoch}/part-{part}.parquet")
}

/// The rows as one batch of the `ingest_errors` schema.
pub(crate) fn error_batch(rows: &[IngestErrorRow]) -> Result<RecordBatch> {
    let strings =
        |f: fn(&IngestErrorRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.epoch))) as ArrayRef,
        strings(|r| &r.source),
        strings(|r| &r.location),
        strings(|r| &r.reason),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.at_ms))) as ArrayRef,
    ];
    Ok(RecordBatch::try_new(ingest_errors_schema(), columns)?)
}

/// Reads the rows of one file; a damaged or missing file is [`Error::Corrupt`] naming it.
pub(crate) fn read_errors(path: &Path) -> Result<Vec<IngestErrorRow>> {
    let mut rows = Vec::new();
    for batch in read_log(path)? {
        let wrong = || Error::corrupt(path, "the ingest_errors table has a missing or mistyped column");
        let column = |i: usize| batch.columns().get(i).ok_or_else(wrong);
        let epoch = column(0)?.as_any().downcast_ref::<UInt64Array>().ok_or_else(wrong)?;
        let text = |i: usize| column(i)?.as_any().downcast_ref::<StringArray>().ok_or_else(wrong);
        let (source, location, reason) = (text(1)?, text(2)?, text(3)?);
        let at = column(4)?.as_any().downcast_ref::<Int64Array>().ok_or_else(wrong)?;
        for i in 0..batch.num_rows() {
            rows.push(IngestErrorRow {
                epoch: epoch.value(i),
                source: source.value(i).to_owned(),
                location: location.value(i).to_owned(),
                reason: reason.value(i).to_owned(),
                at_ms: at.value(i),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_io::write_parquet;

    #[test]
    fn rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rows = vec![IngestErrorRow {
            epoch: 4,
            source: "watch-0".into(),
            location: "notes/a.json".into(),
            reason: "invalid JSON".into(),
            at_ms: 17,
        }];
        let path = dir.path().join(error_log_path(4, 0));
        write_parquet(&path, &error_batch(&rows).expect("batch")).expect("written");
        assert_eq!(read_errors(&path).expect("read"), rows);
        assert!(matches!(read_errors(&dir.path().join(error_log_path(5, 0))), Err(Error::Corrupt { .. })));
    }
}
