//! The `evaluations` table on disk: one Parquet file per evaluation run,
//! `evaluations/<run_id>.parquet` under the data directory, written
//! atomically and never changed, so the table only grows by whole runs and
//! another process (an `eval` command beside a running server) may add to
//! it. SQL reads every file as `evaluations`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use twinflow_schemas::evaluation::{EvaluationRow, evaluations_schema};

use crate::error::{Error, Result};
use crate::parquet_io::{read_parquet, write_parquet};

/// Where the table lives under the data directory.
pub const EVALUATIONS_DIR: &str = "evaluations";

/// Writes one run's rows as `evaluations/<run_id>.parquet`; returns the path.
/// A run id already written is refused, not overwritten, and so is a row
/// whose value or interval is not a finite number (JSON has no such numbers).
pub fn append_evaluations(data_dir: &Path, rows: &[EvaluationRow]) -> Result<PathBuf> {
    let invalid = |message: String| {
        Error::io(data_dir.join(EVALUATIONS_DIR), std::io::Error::new(std::io::ErrorKind::InvalidInput, message))
    };
    let Some(first) = rows.first() else { return Err(invalid("an evaluation run without rows".into())) };
    if let Some(row) = rows.iter().find(|r| ![r.value, r.low, r.high].iter().all(|v| v.is_finite())) {
        return Err(invalid(format!("{} of {} is not a finite number: {}", row.metric, row.model, row.value)));
    }
    let name: String =
        first.run_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    let path = data_dir.join(EVALUATIONS_DIR).join(format!("{name}.parquet"));
    if path.exists() {
        let exists = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "an evaluation run of this id is written");
        return Err(Error::io(&path, exists));
    }
    write_parquet(&path, &evaluation_batch(rows)?)?;
    Ok(path)
}

/// Every run's file, in name order (`<kind>-<at_ms>`: by kind, then time).
pub fn evaluation_files(data_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(EVALUATIONS_DIR)) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !name.starts_with('.') && name.ends_with(".parquet")
        })
        .collect();
    files.sort();
    files
}

/// Every row, ordered by time then run; a damaged file is [`Error::Corrupt`] naming it.
pub fn read_evaluations(data_dir: &Path) -> Result<Vec<EvaluationRow>> {
    EvaluationReader::default().read(data_dir)
}

/// Reads the table, parsing each file once: files never change, so a file
/// read before is answered from memory and only new ones are decoded.
#[derive(Debug, Default)]
pub struct EvaluationReader {
    files: Mutex<BTreeMap<PathBuf, Arc<Vec<EvaluationRow>>>>,
}

impl EvaluationReader {
    /// Every row under `data_dir`, ordered by time then run ([`read_evaluations`]).
    pub fn read(&self, data_dir: &Path) -> Result<Vec<EvaluationRow>> {
        let mut rows = Vec::new();
        for path in evaluation_files(data_dir) {
            let cached = self.files.lock().get(&path).cloned();
            let file = match cached {
                Some(file) => file,
                None => {
                    let file = Arc::new(read_file(&path)?);
                    self.files.lock().insert(path, file.clone());
                    file
                }
            };
            rows.extend(file.iter().cloned());
        }
        rows.sort_by(|a, b| (a.at_ms, &a.run_id).cmp(&(b.at_ms, &b.run_id)));
        Ok(rows)
    }
}

fn read_file(path: &Path) -> Result<Vec<EvaluationRow>> {
    let mut rows = Vec::new();
    for batch in read_parquet(path)? {
        rows.extend(rows_of(&batch).map_err(|reason| Error::corrupt(path, reason))?);
    }
    Ok(rows)
}

/// The rows as one batch of the `evaluations` schema.
fn evaluation_batch(rows: &[EvaluationRow]) -> Result<RecordBatch> {
    type Row = EvaluationRow;
    let text = |f: fn(&Row) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let u64s = |f: fn(&Row) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let f64s = |f: fn(&Row) -> f64| Arc::new(Float64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        text(|r| &r.run_id),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.at_ms))) as ArrayRef,
        text(|r| &r.kind),
        text(|r| &r.question_set),
        u64s(|r| r.queries),
        text(|r| &r.model),
        text(|r| &r.setting),
        text(|r| &r.metric),
        f64s(|r| r.value),
        f64s(|r| r.low),
        f64s(|r| r.high),
        u64s(|r| r.index_epoch),
        u64s(|r| r.dataset_version),
    ];
    Ok(RecordBatch::try_new(evaluations_schema(), columns)?)
}

fn rows_of(batch: &RecordBatch) -> std::result::Result<Vec<EvaluationRow>, String> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name:?}"));
    let mistyped = |name: &str| format!("the column {name:?} has another type");
    let text = |name: &str| column(name)?.as_any().downcast_ref::<StringArray>().cloned().ok_or_else(|| mistyped(name));
    let u64s = |name: &str| column(name)?.as_any().downcast_ref::<UInt64Array>().cloned().ok_or_else(|| mistyped(name));
    let f64s =
        |name: &str| column(name)?.as_any().downcast_ref::<Float64Array>().cloned().ok_or_else(|| mistyped(name));
    let at = column("at_ms")?.as_any().downcast_ref::<Int64Array>().cloned().ok_or_else(|| mistyped("at_ms"))?;
    let (run, kind, set, model, setting, metric) =
        (text("run_id")?, text("kind")?, text("question_set")?, text("model")?, text("setting")?, text("metric")?);
    let (queries, epoch, dataset) = (u64s("queries")?, u64s("index_epoch")?, u64s("dataset_version")?);
    let (value, low, high) = (f64s("value")?, f64s("low")?, f64s("high")?);
    Ok((0..batch.num_rows())
        .map(|i| EvaluationRow {
            run_id: run.value(i).to_owned(),
            at_ms: at.value(i),
            kind: kind.value(i).to_owned(),
            question_set: set.value(i).to_owned(),
            queries: queries.value(i),
            model: model.value(i).to_owned(),
            setting: setting.value(i).to_owned(),
            metric: metric.value(i).to_owned(),
            value: value.value(i),
            low: low.value(i),
            high: high.value(i),
            index_epoch: epoch.value(i),
            dataset_version: dataset.value(i),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::evaluation::EvaluationRun;
    use twinflow_schemas::stats::Estimate;

    #[test]
    fn runs_are_whole_files_read_back_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_evaluations(dir.path()).unwrap().is_empty(), "no table yet: no rows");
        let later = EvaluationRun::new("retrieval", 2_000, "faq", 7, 0);
        let earlier = EvaluationRun::new("adapter-run", 1_000, "instruct-v3", 5, 3);
        let gain = Estimate { mean: 0.1, low: 0.02, high: 0.18 };
        let rows = vec![
            EvaluationRow::point(&later, "base", "vector", "ndcg@10", 0.7, 40),
            EvaluationRow::point(&later, "base", "bm25", "ndcg@10", 0.5, 40),
        ];
        append_evaluations(dir.path(), &rows).unwrap();
        append_evaluations(dir.path(), &[EvaluationRow::estimate(&earlier, "adapter-v2", "k=10", "gain", gain, 90)])
            .unwrap();
        assert!(append_evaluations(dir.path(), &rows).is_err(), "a run id is written once");
        let infinite =
            EvaluationRow::point(&EvaluationRun::new("twin", 5, "s", 0, 0), "m", "", "perplexity", f64::INFINITY, 1);
        assert!(append_evaluations(dir.path(), &[infinite]).unwrap_err().to_string().contains("not a finite number"));
        let reader = EvaluationReader::default();
        assert_eq!(reader.read(dir.path()).unwrap().len(), 3);
        let back = read_evaluations(dir.path()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!((back[0].model.as_str(), back[0].low, back[0].high), ("adapter-v2", 0.02, 0.18));
        assert_eq!(&back[1..], &rows[..]);
        // A stray temporary file is not part of the table.
        std::fs::write(dir.path().join(EVALUATIONS_DIR).join(".tmp-x.parquet"), b"partial").unwrap();
        assert_eq!(evaluation_files(dir.path()).len(), 2);
        // A damaged file is named, not skipped.
        std::fs::write(dir.path().join(EVALUATIONS_DIR).join("rag-3000.parquet"), b"not parquet").unwrap();
        let error = read_evaluations(dir.path()).unwrap_err().to_string();
        assert!(error.contains("rag-3000.parquet"), "{error}");
    }
}
