//! The `traces` table: an append-only log of answered questions,
//! `traces/epoch=<E>/part-<n>.parquet` (E: the committed epoch when the
//! file was written), listed in the manifest. Queryable by SQL as `traces`.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use twinflow_schemas::TraceRow;
use twinflow_schemas::trace::traces_schema;

use crate::drift_log::read_log;
use crate::error::{Error, Result};

/// `traces/epoch=<epoch>/part-<part>.parquet`.
pub(crate) fn trace_log_path(epoch: u64, part: usize) -> String {
    format!("traces/epoch={epoch}/part-{part}.parquet")
}

/// The rows as one batch of the `traces` schema.
pub(crate) fn trace_batch(rows: &[TraceRow]) -> Result<RecordBatch> {
    let text = |f: fn(&TraceRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let u64s = |f: fn(&TraceRow) -> u64| Arc::new(UInt64Array::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        u64s(|r| r.epoch),
        text(|r| &r.trace_id),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.at_ms))) as ArrayRef,
        text(|r| &r.question),
        text(|r| &r.filters),
        text(|r| &r.queries),
        text(|r| &r.retrieved),
        u64s(|r| r.as_of),
        u64s(|r| r.prompt_tokens),
        u64s(|r| r.completion_tokens),
        text(|r| &r.answer),
        text(|r| &r.finish_reason),
        text(|r| &r.timings),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.total_ms))) as ArrayRef,
        text(|r| &r.model),
        text(|r| &r.search_model),
    ];
    Ok(RecordBatch::try_new(traces_schema(), columns)?)
}

/// Reads the rows of one file; a damaged or missing file is [`Error::Corrupt`] naming it.
pub(crate) fn read_traces(path: &Path) -> Result<Vec<TraceRow>> {
    let mut rows = Vec::new();
    for batch in read_log(path)? {
        let wrong = || Error::corrupt(path, "the traces table has a missing or mistyped column");
        let column = |i: usize| batch.columns().get(i).ok_or_else(wrong);
        let text = |i: usize| column(i)?.as_any().downcast_ref::<StringArray>().ok_or_else(wrong);
        let u64s = |i: usize| column(i)?.as_any().downcast_ref::<UInt64Array>().ok_or_else(wrong);
        let at = column(2)?.as_any().downcast_ref::<Int64Array>().ok_or_else(wrong)?;
        let total = column(13)?.as_any().downcast_ref::<Float64Array>().ok_or_else(wrong)?;
        let (epoch, as_of, prompt, completion) = (u64s(0)?, u64s(7)?, u64s(8)?, u64s(9)?);
        let strings = [1, 3, 4, 5, 6, 10, 11, 12, 14, 15].map(text);
        let [id, question, filters, queries, retrieved, answer, finish, timings, model, search] = strings;
        let (id, question, filters, queries, retrieved) = (id?, question?, filters?, queries?, retrieved?);
        let (answer, finish, timings, model, search) = (answer?, finish?, timings?, model?, search?);
        for i in 0..batch.num_rows() {
            rows.push(TraceRow {
                epoch: epoch.value(i),
                trace_id: id.value(i).to_owned(),
                at_ms: at.value(i),
                question: question.value(i).to_owned(),
                filters: filters.value(i).to_owned(),
                queries: queries.value(i).to_owned(),
                retrieved: retrieved.value(i).to_owned(),
                as_of: as_of.value(i),
                prompt_tokens: prompt.value(i),
                completion_tokens: completion.value(i),
                answer: answer.value(i).to_owned(),
                finish_reason: finish.value(i).to_owned(),
                timings: timings.value(i).to_owned(),
                total_ms: total.value(i),
                model: model.value(i).to_owned(),
                search_model: search.value(i).to_owned(),
            });
        }
    }
    Ok(rows)
}
