//! The `evaluations` table: every figure the evaluation stage measures
//! (`twinflow eval retrieval | rag | twin`) and every training run's
//! held-out judgement, one row per measure, each tied to what it measured:
//! the model version, the question set, the dataset version and the index
//! epoch (lineage). Rows of one evaluation share a `run_id`; `/v1/evals`,
//! SQL and the dashboard's plots read them.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::stats::Estimate;

/// One measured figure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvaluationRow {
    /// The evaluation it belongs to: `<kind>-<at_ms>` (every row of one run shares it).
    pub run_id: String,
    /// When the evaluation finished, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// `retrieval`, `rag`, `twin` (the `eval` commands), `adapter-run` or `twin-run` (training).
    pub kind: String,
    /// The questions: a BEIR set's name, or `instruct-v<N>` (a dataset version's
    /// held-out LLM-written questions).
    pub question_set: String,
    /// Questions (or answers) the figure is over.
    pub queries: u64,
    /// The model measured: `base`, `adapter-v<N>`, `twin-v<N>` or a generator's name.
    pub model: String,
    /// The rest of what was measured: a search mode and its fusion, `k`, …
    pub setting: String,
    /// `ndcg@10`, `recall@10`, `mrr@10`, `context_recall`, `nll`, `gain`, `latency_ms`, …
    pub metric: String,
    pub value: f64,
    /// The 95% interval (equal to `value` where none was estimated).
    pub low: f64,
    pub high: f64,
    /// The committed epoch of the index or tables measured (0: none).
    pub index_epoch: u64,
    /// The instruct dataset version measured or trained on (0: none).
    pub dataset_version: u64,
}

impl EvaluationRow {
    /// A row of `run`'s with `metric = value` and no interval.
    pub fn point(run: &EvaluationRun, model: &str, setting: &str, metric: &str, value: f64, queries: u64) -> Self {
        Self::estimate(run, model, setting, metric, Estimate { mean: value, low: value, high: value }, queries)
    }

    /// A row of `run`'s with `metric = estimate` and its interval.
    pub fn estimate(
        run: &EvaluationRun,
        model: &str,
        setting: &str,
        metric: &str,
        estimate: Estimate,
        queries: u64,
    ) -> Self {
        EvaluationRow {
            run_id: run.run_id.clone(),
            at_ms: run.at_ms,
            kind: run.kind.clone(),
            question_set: run.question_set.clone(),
            queries,
            model: model.to_owned(),
            setting: setting.to_owned(),
            metric: metric.to_owned(),
            value: estimate.mean,
            low: estimate.low,
            high: estimate.high,
            index_epoch: run.index_epoch,
            dataset_version: run.dataset_version,
        }
    }
}

/// What every row of one evaluation shares.
#[derive(Clone, Debug, PartialEq)]
pub struct EvaluationRun {
    pub run_id: String,
    pub at_ms: i64,
    pub kind: String,
    pub question_set: String,
    pub index_epoch: u64,
    pub dataset_version: u64,
}

impl EvaluationRun {
    /// A run of `kind` finishing at `at_ms`.
    pub fn new(kind: &str, at_ms: i64, question_set: &str, index_epoch: u64, dataset_version: u64) -> Self {
        EvaluationRun {
            run_id: format!("{kind}-{at_ms}"),
            at_ms,
            kind: kind.to_owned(),
            question_set: question_set.to_owned(),
            index_epoch,
            dataset_version,
        }
    }
}

/// The Arrow schema of the `evaluations` table.
pub fn evaluations_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let float = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        text("run_id"),
        Field::new("at_ms", DataType::Int64, false),
        text("kind"),
        text("question_set"),
        Field::new("queries", DataType::UInt64, false),
        text("model"),
        text("setting"),
        text("metric"),
        float("value"),
        float("low"),
        float("high"),
        Field::new("index_epoch", DataType::UInt64, false),
        Field::new("dataset_version", DataType::UInt64, false),
    ]))
}
