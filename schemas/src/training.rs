//! The training jobs' records: what a job is doing ([`JobStatus`]), what
//! one run produced ([`RunOutcome`]), and what a promotion or a rollback
//! switched to ([`Switched`]). `E` is the evaluation a kind of run ends
//! with: [`Evaluation`](crate::models::Evaluation) for the embedding
//! adapter, [`TwinEvaluation`](crate::models::TwinEvaluation) for the twin.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::models::DatasetRef;

/// What a job is doing, for `/v1/status`, `/v1/models` and `/v1/twin`;
/// `E` is the evaluation its runs end with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "JobStatusOf{E}")]
pub struct JobStatus<E> {
    /// `idle` or `running`.
    pub state: String,
    /// The step of the run (`snapshot`, `encode`, `load`, `train`, `evaluate`, `register`, `switch`).
    pub phase: String,
    pub step: usize,
    pub steps: usize,
    pub loss: Option<f32>,
    pub started_at_ms: Option<i64>,
    /// What started the run in progress or the last one: free-form, as its
    /// source described it (`"manual"`, `{"drift": …}`); `null` before any.
    pub trigger: serde_json::Value,
    /// The outcome of the last finished run.
    pub last: Option<RunOutcome<E>>,
    /// The error of the last failed run.
    pub last_error: Option<String>,
    pub runs: u64,
}

impl<E> Default for JobStatus<E> {
    fn default() -> Self {
        Self {
            state: "idle".into(),
            phase: String::new(),
            step: 0,
            steps: 0,
            loss: None,
            started_at_ms: None,
            trigger: serde_json::Value::Null,
            last: None,
            last_error: None,
            runs: 0,
        }
    }
}

/// What one run produced: the registered version, whether it was promoted
/// and why, its held-out evaluation and the dataset version it read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "RunOutcomeOf{E}")]
pub struct RunOutcome<E> {
    pub version: u64,
    pub promoted: bool,
    pub decision: String,
    pub evaluation: E,
    pub dataset: DatasetRef,
    pub seconds: f64,
    /// The epoch from which searches use a promoted adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at_epoch: Option<u64>,
}

/// What a promotion or a rollback switched to: the answer of
/// `POST /v1/models/{v}/promote`, `POST /v1/models/rollback`,
/// `POST /v1/twin/versions/{v}/promote` and `POST /v1/twin/rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Switched {
    /// The active version now: `<kind>-v<N>`, or `base`.
    pub active: String,
    /// The epoch from which searches use it (adapters).
    pub switched_at_epoch: Option<u64>,
    /// The model answering questions now (twins).
    pub answering: Option<String>,
}
