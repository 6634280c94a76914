//! The `drift` table: an append-only log, one Parquet file per epoch that
//! measured drift (`drift/epoch=<E>/part-0.parquet`), listed in the
//! manifest with the epoch. Queryable by SQL as `drift`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use twinflow_schemas::DriftRow;
use twinflow_schemas::drift::drift_schema;

use crate::error::{Error, Result};
use crate::manifest::MANIFEST_FILE;
use crate::parquet_io::read_parquet;

/// `drift/epoch=<epoch>/part-0.parquet`.
pub(crate) fn drift_path(epoch: u64) -> String {
    format!("drift/epoch={epoch}/part-0.parquet")
}

/// The rows as one batch of the `drift` schema.
pub(crate) fn drift_batch(rows: &[DriftRow]) -> Result<RecordBatch> {
    let u64s = |f: fn(&DriftRow) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let strings = |f: fn(&DriftRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let floats = |f: fn(&DriftRow) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        u64s(|r| r.epoch),
        u64s(|r| r.window_start),
        u64s(|r| r.window_size),
        strings(|r| &r.reference),
        strings(|r| &r.metric),
        floats(|r| r.value),
        floats(|r| r.threshold),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.triggered)))) as ArrayRef,
    ];
    Ok(RecordBatch::try_new(drift_schema(), columns)?)
}

/// The batches of an append-only log file the manifest lists; a missing or
/// unreadable file is [`Error::Corrupt`] naming it.
pub(crate) fn read_log(path: &Path) -> Result<Vec<RecordBatch>> {
    read_parquet(path).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::corrupt(path, format!("it is listed in {MANIFEST_FILE} but missing"))
        }
        Error::Parquet { source, .. } => Error::corrupt(path, format!("cannot read Parquet ({source})")),
        other => other,
    })
}

/// Reads the rows of one drift file; a damaged or missing file is
/// [`Error::Corrupt`] naming it.
pub(crate) fn read_drift(path: &Path) -> Result<Vec<DriftRow>> {
    let corrupt = |reason: String| Error::corrupt(path, reason);
    let batches = read_log(path)?;
    let mut rows = Vec::new();
    for batch in &batches {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| corrupt(format!("the drift table has no column {name:?}")))
        };
        fn typed<'a, T: 'static>(column: &'a ArrayRef, path: &Path) -> Result<&'a T> {
            column.as_any().downcast_ref::<T>().ok_or_else(|| Error::corrupt(path, "a drift column has the wrong type"))
        }
        let (epoch, start, size) = (column("epoch")?, column("window_start")?, column("window_size")?);
        let (reference, metric) = (column("reference")?, column("metric")?);
        let (value, threshold, triggered) = (column("value")?, column("threshold")?, column("triggered")?);
        let epoch = typed::<UInt64Array>(epoch, path)?;
        let start = typed::<UInt64Array>(start, path)?;
        let size = typed::<UInt64Array>(size, path)?;
        let reference = typed::<StringArray>(reference, path)?;
        let metric = typed::<StringArray>(metric, path)?;
        let value = typed::<Float64Array>(value, path)?;
        let threshold = typed::<Float64Array>(threshold, path)?;
        let triggered = typed::<BooleanArray>(triggered, path)?;
        for i in 0..batch.num_rows() {
            rows.push(DriftRow {
                epoch: epoch.value(i),
                window_start: start.value(i),
                window_size: size.value(i),
                reference: reference.value(i).to_owned(),
                metric: metric.value(i).to_owned(),
                value: value.value(i),
                threshold: threshold.value(i),
                triggered: triggered.value(i),
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
        let row = |metric: &str, value, triggered| DriftRow {
            epoch: 9,
            window_start: 7,
            window_size: 400,
            reference: "bootstrap@3".into(),
            metric: metric.into(),
            value,
            threshold: 0.1,
            triggered,
        };
        let rows = vec![row("mmd", 0.25, true), row("oov_rate", 0.01, false)];
        let path = dir.path().join(drift_path(9));
        write_parquet(&path, &drift_batch(&rows).expect("batch")).expect("written");
        assert_eq!(read_drift(&path).expect("read"), rows);
        assert!(matches!(read_drift(&dir.path().join(drift_path(10))), Err(Error::Corrupt { .. })));
    }
}
