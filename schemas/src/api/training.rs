//! The training loop's routes: `GET /v1/drift`, the dataset versions
//! (`/v1/datasets…`), the embedding adapter's registry and job
//! (`/v1/models…`) and the twin's (`/v1/twin…`). Promotion and rollback of
//! either answer [`Switched`](crate::training::Switched).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::Fusion;
use crate::datasets::{DatasetManifest, DatasetVersion};
use crate::drift::{DriftRow, DriftState};
use crate::models::{Evaluation, ModelCard, RegistryEvent, RetrievalCard, TwinCard, TwinEvaluation};
use crate::training::JobStatus;

/// Answer to `GET /v1/drift`, and the `drift` of `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DriftResponse {
    /// False when drift monitoring is off (`[drift] enabled = false`): then
    /// there is no `state` and no rows.
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DriftState>,
    /// The latest rows of the `drift` table, oldest first.
    #[serde(default)]
    pub recent: Vec<DriftRow>,
}

/// Answer to `GET /v1/datasets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetsResponse {
    pub datasets: Vec<DatasetVersions>,
    /// LLM generations in the cache (each the questions of one extract).
    pub generations_cached: usize,
}

/// One dataset's versions, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetVersions {
    /// `instruct`.
    pub name: String,
    pub versions: Vec<DatasetSummary>,
}

/// One version in `GET /v1/datasets`: its manifest without the lineage
/// (`GET /v1/datasets/{name}/versions/{version}` has it, and the files).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetSummary {
    #[serde(flatten)]
    pub version: DatasetVersion,
    pub created_at_ms: i64,
    /// The adapter versions trained on it.
    pub models: Vec<u64>,
}

/// Answer to `GET /v1/datasets/{name}/versions/{version}`: the manifest,
/// with `files` listing the version's directory (paths on the server).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetVersionResponse {
    #[serde(flatten)]
    pub manifest: DatasetManifest,
    /// The adapter versions trained on it.
    pub models: Vec<DatasetModel>,
    /// A query of its samples (`POST /v1/sql`).
    pub sql: String,
}

/// An adapter version trained on a dataset version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetModel {
    pub version: u64,
    pub evaluation: Evaluation,
    pub decision: String,
}

/// Body of `POST /v1/datasets/generate` (optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Extracts sent to the model at most (the rest wait for the next call).
    #[serde(default = "default_generate_limit")]
    pub limit: usize,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self { limit: default_generate_limit() }
    }
}

fn default_generate_limit() -> usize {
    5
}

/// Answer to `GET /v1/models`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ModelsResponse {
    /// The active adapter (`adapter-v<N>`) or `base`.
    pub active: String,
    /// The encoder's model id.
    pub base_model: String,
    /// The projection searches go through (`adapter-v<N>`), `None` for the base model.
    pub search_projection: Option<String>,
    /// Every version's card, oldest first.
    pub versions: Vec<ModelCard>,
    pub events: Vec<RegistryEvent>,
    pub training: JobStatus<Evaluation>,
}

/// Answer to `GET /v1/twin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TwinResponse {
    /// The active twin (`twin-v<N>`) or `base`.
    pub active: String,
    /// The model answering questions (`<base>+twin-v<N>`), `None` for the base model.
    pub answering: Option<String>,
    /// Every version's card, oldest first.
    pub versions: Vec<TwinCard>,
    pub events: Vec<RegistryEvent>,
    pub training: JobStatus<TwinEvaluation>,
}

/// Answer to `GET /v1/retrieval`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RetrievalResponse {
    /// The active setting (`retrieval-v<N>`) or `base` (`[search]`'s weights).
    pub active: String,
    /// The fusion hybrid searches run with now.
    pub fusion: Fusion,
    /// `[search]`'s own weights, used when no setting is active.
    pub configured: Fusion,
    /// Every registered setting's card (weights, question set, held-out gain), oldest first.
    pub versions: Vec<RetrievalCard>,
    pub events: Vec<RegistryEvent>,
}

/// Answer to `POST /v1/models/train` and `POST /v1/twin/train` (202): the
/// run started; follow it in `training` of `GET /v1/models` or `/v1/twin`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "TrainingStartedOf{E}")]
pub struct TrainingStarted<E> {
    pub started: bool,
    pub training: JobStatus<E>,
}

/// Query of `GET /v1/evals`: every filter is an exact match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EvalsQuery {
    /// `retrieval`, `rag`, `twin`, `adapter-run` or `twin-run`.
    #[serde(default)]
    pub kind: Option<String>,
    /// `base`, `adapter-v<N>`, `twin-v<N>` or a generator's name.
    #[serde(default)]
    pub model: Option<String>,
    /// A BEIR set's name, or `instruct-v<N>`.
    #[serde(default)]
    pub question_set: Option<String>,
    /// `ndcg@10`, `recall@10`, `gain`, …
    #[serde(default)]
    pub metric: Option<String>,
    /// The newest this many matching rows (default 500, at most 10,000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Answer to `GET /v1/evals`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvalsResponse {
    /// The matching rows of the `evaluations` table, oldest first.
    pub evaluations: Vec<crate::evaluation::EvaluationRow>,
    /// Rows that matched, before `limit`.
    pub matched: usize,
}
