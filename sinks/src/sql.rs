//! Read-only SQL over one committed epoch, with DataFusion.
//!
//! Each query gets its own `SessionContext` with eight tables, all at the
//! same epoch:
//!
//! ```text
//!  documents, chunks, embeddings, instruct          MemTables of the live rows
//!                                                   (cached per table and epoch)
//!  documents_changes, chunks_changes, …             ListingTables over exactly the
//!                                                   part files the manifest lists
//! ```
//!
//! A statement is accepted only when it reads: it is parsed and checked
//! before planning (SELECT, WITH, VALUES, EXPLAIN, SHOW, DESCRIBE pass), and
//! the plan is checked again with DataFusion's `SQLOptions` (no DDL, DML,
//! COPY or SET).
//!
//! A live table can be read as it was at an earlier epoch:
//! `FROM chunks AS OF EPOCH 120` (`sql_as_of.rs`).
//!
//! With a query encoder ([`crate::Store::sql_with`]) the statement can also
//! search: `knn`, `bm25` and `hybrid` table functions and `embed(text)`
//! (`sql_search.rs`), at the same epoch as the tables.
//!
//! Every statement of the process draws on one memory pool ([`SqlRuntime`]):
//! operators that can spill (sorts, aggregations, joins' build sides) spill
//! to a bounded temporary folder, and a statement that still needs more
//! fails with [`Error::SqlLimit`]. The answer itself is bounded in rows and
//! bytes, so a cross join without `LIMIT` is refused rather than collected.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures_util::StreamExt;
use twinflow_schemas::TableName;

use crate::error::{Error, Result};

/// The answer to a SQL query, and the epoch it reflects.
#[derive(Clone, Debug)]
pub struct SqlAnswer {
    /// The committed epoch every table was read at.
    pub epoch: u64,
    /// The schema of the result (also when there are no rows).
    pub schema: SchemaRef,
    /// The result rows; at least one (possibly empty) batch.
    pub batches: Vec<RecordBatch>,
}

/// What one statement may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlLimits {
    /// Bytes of memory all running statements share (beyond it they spill, then fail).
    pub memory: usize,
    /// Bytes the statements may spill to temporary files, together.
    pub spill: u64,
    /// Rows of one answer.
    pub max_rows: usize,
    /// Bytes of one answer (Arrow, in memory).
    pub max_bytes: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self { memory: 1 << 30, spill: 4 << 30, max_rows: 1_000_000, max_bytes: 256 << 20 }
    }
}

/// The memory pool and spill folder every statement of a store runs in.
#[derive(Debug)]
pub struct SqlRuntime {
    env: Arc<RuntimeEnv>,
    limits: SqlLimits,
}

impl SqlRuntime {
    /// A runtime within `limits`.
    pub fn new(limits: SqlLimits) -> Result<Self> {
        let env = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limits.memory)))
            .with_max_temp_directory_size(limits.spill)
            .build_arc()
            .map_err(sql_error)?;
        Ok(Self { env, limits })
    }
}

/// What one query reads, captured under the store's lock.
#[derive(Debug)]
pub(crate) struct SqlInputs {
    pub(crate) epoch: u64,
    /// The oldest epoch `AS OF` may read (the time-travel window).
    pub(crate) oldest: u64,
    pub(crate) dim: usize,
    /// Current state of every table.
    pub(crate) current: Vec<(TableName, RecordBatch)>,
    /// Absolute paths of every table's committed part files.
    pub(crate) changes: Vec<(TableName, Vec<PathBuf>)>,
    /// The `drift` log.
    pub(crate) drift: RecordBatch,
    /// The `ingest_errors` log.
    pub(crate) ingest_errors: RecordBatch,
    /// The `traces` log.
    pub(crate) traces: RecordBatch,
    /// Every dataset version's samples and preference files.
    pub(crate) datasets: (Vec<PathBuf>, Vec<PathBuf>),
    /// Every evaluation run's file.
    pub(crate) evaluations: Vec<PathBuf>,
    /// Absolute paths of every table's snapshot files (all versions).
    pub(crate) snapshots: Vec<(TableName, Vec<PathBuf>)>,
}

/// Rows per batch handed to DataFusion from the live tables.
const BATCH_ROWS: usize = 8192;

/// Runs one read-only statement over `inputs`.
pub(crate) async fn run(
    inputs: SqlInputs,
    sql: &str,
    runtime: &SqlRuntime,
    search: Option<&crate::sql_search::SearchFunctions>,
) -> Result<SqlAnswer> {
    let (sql, as_of) = crate::sql_as_of::rewrite(sql)?;
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime.env.clone());
    register(&ctx, &inputs)?;
    crate::sql_as_of::register(&ctx, &as_of, inputs.oldest, inputs.epoch, inputs.dim).await?;
    if let Some(search) = search {
        crate::sql_search::register(&ctx, search);
    }

    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(&sql, &dialect).map_err(sql_error)?;
    check_statement(&statement)?;
    let plan = state.statement_to_plan(statement).await.map_err(sql_error)?;
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    options
        .verify_plan(&plan)
        .map_err(|e| Error::SqlNotReadOnly(format!("SQL is read-only here: {}", e.strip_backtrace())))?;

    let frame = ctx.execute_logical_plan(plan).await.map_err(sql_error)?;
    let physical = frame.create_physical_plan().await.map_err(sql_error)?;
    let schema = physical.schema();
    let limits = runtime.limits;
    let mut stream = datafusion::physical_plan::execute_stream(physical, ctx.task_ctx()).map_err(sql_error)?;
    let (mut batches, mut rows, mut bytes) = (Vec::new(), 0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(sql_error)?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > limits.max_rows {
            return Err(Error::SqlLimit(format!(
                "the answer has more than {} rows (the limit of one answer): add a LIMIT or aggregate",
                limits.max_rows
            )));
        }
        if bytes > limits.max_bytes {
            return Err(Error::SqlLimit(format!(
                "the answer is larger than {} bytes (the limit of one answer): select fewer columns or rows",
                limits.max_bytes
            )));
        }
        batches.push(batch);
    }
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema.clone()));
    }
    Ok(SqlAnswer { epoch: inputs.epoch, schema, batches })
}

/// Registers the live tables and the change logs.
fn register(ctx: &SessionContext, inputs: &SqlInputs) -> Result<()> {
    let partitions = ctx.copied_config().target_partitions();
    for (table, batch) in &inputs.current {
        let memtable = MemTable::try_new(batch.schema(), split(batch, partitions)).map_err(sql_error)?;
        ctx.register_table(table.as_str(), Arc::new(memtable)).map_err(sql_error)?;
    }
    let drift = MemTable::try_new(inputs.drift.schema(), vec![vec![inputs.drift.clone()]]).map_err(sql_error)?;
    ctx.register_table("drift", Arc::new(drift)).map_err(sql_error)?;
    let errors = MemTable::try_new(inputs.ingest_errors.schema(), vec![vec![inputs.ingest_errors.clone()]])
        .map_err(sql_error)?;
    ctx.register_table("ingest_errors", Arc::new(errors)).map_err(sql_error)?;
    let traces = MemTable::try_new(inputs.traces.schema(), vec![vec![inputs.traces.clone()]]).map_err(sql_error)?;
    ctx.register_table("traces", Arc::new(traces)).map_err(sql_error)?;
    let (samples, preference) = crate::datasets::dataset_schemas();
    let provider = change_log(samples, &inputs.datasets.0).map_err(sql_error)?;
    ctx.register_table("instruct_dataset", provider).map_err(sql_error)?;
    let provider = change_log(preference, &inputs.datasets.1).map_err(sql_error)?;
    ctx.register_table("preference_dataset", provider).map_err(sql_error)?;
    let provider =
        change_log(twinflow_schemas::evaluation::evaluations_schema(), &inputs.evaluations).map_err(sql_error)?;
    ctx.register_table("evaluations", provider).map_err(sql_error)?;
    for (table, files) in &inputs.snapshots {
        let provider = change_log(table.change_schema(inputs.dim), files).map_err(sql_error)?;
        ctx.register_table(format!("{table}_snapshots"), provider).map_err(sql_error)?;
    }
    for (table, files) in &inputs.changes {
        let provider = change_log(table.change_schema(inputs.dim), files).map_err(sql_error)?;
        ctx.register_table(format!("{table}_changes"), provider).map_err(sql_error)?;
    }
    Ok(())
}

/// A table over exactly `files` (never a directory listing, so files the
/// manifest does not list stay invisible); empty when there are none.
fn change_log(schema: SchemaRef, files: &[PathBuf]) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    if files.is_empty() {
        return Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?));
    }
    let urls =
        files.iter().map(|path| ListingTableUrl::parse(path.to_string_lossy())).collect::<Result<Vec<_>, _>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// `batch` as up to `partitions` partitions of zero-copy slices.
fn split(batch: &RecordBatch, partitions: usize) -> Vec<Vec<RecordBatch>> {
    let rows = batch.num_rows();
    if rows == 0 {
        return vec![vec![batch.clone()]];
    }
    let per_partition = rows.div_ceil(partitions.max(1)).max(BATCH_ROWS);
    (0..rows)
        .step_by(per_partition)
        .map(|start| {
            let end = (start + per_partition).min(rows);
            (start..end).step_by(BATCH_ROWS).map(|s| batch.slice(s, BATCH_ROWS.min(end - s))).collect()
        })
        .collect()
}

/// Refuses every statement that is not a query, before it is planned.
fn check_statement(statement: &DfStatement) -> Result<()> {
    match statement {
        DfStatement::Statement(inner) => check_sql_statement(inner),
        DfStatement::Explain(explain) => check_statement(&explain.statement),
        other => Err(not_read_only(&other.to_string())),
    }
}

fn check_sql_statement(statement: &SqlStatement) -> Result<()> {
    match statement {
        SqlStatement::Query(_)
        | SqlStatement::ShowTables { .. }
        | SqlStatement::ShowColumns { .. }
        | SqlStatement::ShowVariable { .. }
        | SqlStatement::ShowVariables { .. }
        | SqlStatement::ShowFunctions { .. }
        | SqlStatement::ExplainTable { .. } => Ok(()),
        SqlStatement::Explain { statement, .. } => check_sql_statement(statement),
        other => Err(not_read_only(&other.to_string())),
    }
}

/// The refusal, naming the statement's leading keyword.
fn not_read_only(what: &str) -> Error {
    let keyword = what.split_whitespace().next().unwrap_or("this").to_uppercase();
    Error::SqlNotReadOnly(format!(
        "SQL is read-only here: {keyword} statements are not allowed \
         (use SELECT, WITH, EXPLAIN, SHOW or DESCRIBE)"
    ))
}

fn sql_error(e: DataFusionError) -> Error {
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        return Error::SqlLimit(format!(
            "the statement needs more memory than the SQL pool has left: {}",
            e.find_root().strip_backtrace()
        ));
    }
    // The spill cap comes back wrapped in an Arrow I/O error, so only its text names it.
    let text = e.strip_backtrace();
    if text.contains("max_temp_directory_size") {
        return Error::SqlLimit(format!(
            "the statement needs more memory than the SQL pool has, and more spill space than allowed: {text}"
        ));
    }
    Error::Sql(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::UInt64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn split_covers_every_row_once() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from_iter_values(0..50_000))]).unwrap();
        let parts = split(&batch, 3);
        assert_eq!(parts.len(), 3);
        let rows: usize = parts.iter().flatten().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 50_000);
        assert!(parts.iter().flatten().all(|b| b.num_rows() <= BATCH_ROWS));
    }
}
