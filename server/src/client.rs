//! A small blocking HTTP client for the CLI verbs that talk to a running
//! server (`ingest`, `sql`, `search`, `ask`, `status`, `snapshot`, `drift`,
//! `train`, `models`, `twin`, `datasets`): every answer is read as its
//! `schemas::api` type.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::blocking::{Client as Http, Response};
use serde::de::DeserializeOwned;

use twinflow_schemas::api::{
    DatasetVersionResponse, DatasetsResponse, DriftResponse, ErrorBody, GenerateRequest, IngestResponse,
    ModelsResponse, RagRequest, RagResponse, SearchResponse, SnapshotResponse, SqlFormat, SqlRequest, StatusResponse,
    SubscriptionCreated, SubscriptionEvent, SubscriptionRequest, Switched, TrainingStarted, TwinResponse,
};
use twinflow_schemas::datasets::{DatasetVersion, GenerationReport};
use twinflow_schemas::models::{Evaluation, TwinEvaluation};

pub use twinflow_pipelines::http::{blocking_client, blocking_client_trusting};

/// How long [`Client::ingest`] keeps sending a batch the server refuses as overloaded.
pub const INGEST_PATIENCE: Duration = Duration::from_secs(300);

/// The wait a 503 `overloaded` answer asks for (`Retry-After`, in seconds;
/// twinflow sends it only with `overloaded`); `None` for any other answer.
fn overloaded_retry_after(response: &Response) -> Option<Duration> {
    if response.status() != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds.clamp(1, 60)))
}

/// Client of one twinflow server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: Http,
}

impl Client {
    /// A client of the server at `base` (e.g. `http://127.0.0.1:8080`), without a key.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        Self::with_key(base, None)
    }

    /// A client of the server at `base` sending `key` (`Authorization: Bearer`) with every request.
    pub fn with_key(base: &str, key: Option<&str>) -> anyhow::Result<Self> {
        Self::trusting(base, key, None)
    }

    /// [`with_key`](Self::with_key), trusting the PEM certificates `roots`
    /// too when `base` is `https://` (a private CA or a self-signed server).
    pub fn trusting(base: &str, key: Option<&str>, roots: Option<&[u8]>) -> anyhow::Result<Self> {
        let http = twinflow_pipelines::http::blocking_client_trusting(Duration::from_secs(600), key, roots)
            .map_err(anyhow::Error::msg)?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    fn check(&self, response: reqwest::Result<Response>) -> anyhow::Result<Response> {
        let response =
            response.with_context(|| format!("cannot reach twinflow at {} (is `twinflow up` running?)", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => {
                let line = body.error.line.map(|l| format!(" (line {l})")).unwrap_or_default();
                bail!("{status}: {:?}{line}: {}", body.error.code, body.error.message)
            }
            Err(_) => bail!("{status}: {text}"),
        }
    }

    /// Posts NDJSON changes. While the server answers 503 `overloaded` the
    /// same body is sent again after its `Retry-After`, for up to
    /// [`INGEST_PATIENCE`]; nothing was accepted from a refused request.
    pub fn ingest(&self, ndjson: Vec<u8>, wait: bool) -> anyhow::Result<IngestResponse> {
        self.ingest_with_patience(ndjson, wait, INGEST_PATIENCE)
    }

    /// [`ingest`](Self::ingest), sending again for up to `patience` (zero: once).
    pub fn ingest_with_patience(
        &self,
        ndjson: Vec<u8>,
        wait: bool,
        patience: Duration,
    ) -> anyhow::Result<IngestResponse> {
        let url = format!("{}/v1/documents?wait={wait}", self.base);
        let deadline = std::time::Instant::now() + patience;
        loop {
            let sent = self.http.post(&url).header("content-type", "application/x-ndjson").body(ndjson.clone()).send();
            if let Ok(response) = &sent
                && let Some(wait) = overloaded_retry_after(response)
                && std::time::Instant::now() + wait < deadline
            {
                tracing::info!(retry_in_ms = wait.as_millis() as u64, "twinflow is overloaded; sending again");
                std::thread::sleep(wait);
                continue;
            }
            return Ok(self.check(sent)?.json()?);
        }
    }

    /// Runs SQL and returns the raw answer in `format`.
    pub fn sql(&self, sql: &str, format: SqlFormat) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}/v1/sql", self.base);
        let request = SqlRequest { sql: sql.to_owned(), format, min_as_of: None };
        let response = self.check(self.http.post(url).json(&request).send())?;
        Ok(response.bytes()?.to_vec())
    }

    /// Searches the live embeddings.
    pub fn search(&self, q: &str, k: usize) -> anyhow::Result<SearchResponse> {
        self.search_filtered(q, k, &[])
    }

    /// `GET /v1/search` with metadata filters, as `(parameter, value)` pairs
    /// (`author`, `kind`, `source`, `doc_id`, `since`, `until`).
    pub fn search_filtered(&self, q: &str, k: usize, filters: &[(&str, &str)]) -> anyhow::Result<SearchResponse> {
        let url = format!("{}/v1/search", self.base);
        let k = k.to_string();
        let mut params = vec![("q", q), ("k", k.as_str())];
        params.extend_from_slice(filters);
        let response = self.check(self.http.get(url).query(&params).send())?;
        Ok(response.json()?)
    }

    /// An answer with citations (`POST /v1/rag`).
    pub fn rag(&self, request: &RagRequest) -> anyhow::Result<RagResponse> {
        Ok(self.check(self.http.post(format!("{}/v1/rag", self.base)).json(request).send())?.json()?)
    }

    /// The server's status.
    pub fn status(&self) -> anyhow::Result<StatusResponse> {
        Ok(self.check(self.http.get(format!("{}/v1/status", self.base)).send())?.json()?)
    }

    /// Every running source.
    pub fn sources(&self) -> anyhow::Result<twinflow_schemas::api::SourcesResponse> {
        self.get("/v1/sources")
    }

    /// Pauses (`true`) or resumes a source.
    pub fn pause_source(&self, name: &str, pause: bool) -> anyhow::Result<twinflow_schemas::api::SourceStatus> {
        let name: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.@".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        self.post(&format!("/v1/sources/{name}/{}", if pause { "pause" } else { "resume" }))
    }

    /// Asks for a snapshot now.
    pub fn snapshot(&self) -> anyhow::Result<SnapshotResponse> {
        self.post("/v1/snapshots")
    }

    /// The drift monitor's state and latest rows.
    pub fn drift(&self) -> anyhow::Result<DriftResponse> {
        self.get("/v1/drift")
    }

    /// The embedding adapter's versions and training job.
    pub fn models(&self) -> anyhow::Result<ModelsResponse> {
        self.get("/v1/models")
    }

    /// Starts training an embedding adapter.
    pub fn train_adapter(&self) -> anyhow::Result<TrainingStarted<Evaluation>> {
        self.post("/v1/models/train")
    }

    /// Makes adapter `version` active.
    pub fn promote_adapter(&self, version: u64) -> anyhow::Result<Switched> {
        self.post(&format!("/v1/models/{version}/promote"))
    }

    /// Back to the previously active adapter.
    pub fn roll_back_adapter(&self) -> anyhow::Result<Switched> {
        self.post("/v1/models/rollback")
    }

    /// The twin's versions and fine-tuning job.
    pub fn twin(&self) -> anyhow::Result<TwinResponse> {
        self.get("/v1/twin")
    }

    /// Starts fine-tuning the twin.
    pub fn train_twin(&self) -> anyhow::Result<TrainingStarted<TwinEvaluation>> {
        self.post("/v1/twin/train")
    }

    /// Makes twin `version` answer.
    pub fn promote_twin(&self, version: u64) -> anyhow::Result<Switched> {
        self.post(&format!("/v1/twin/versions/{version}/promote"))
    }

    /// Back to the previously active twin.
    pub fn roll_back_twin(&self) -> anyhow::Result<Switched> {
        self.post("/v1/twin/rollback")
    }

    /// Every dataset's versions.
    pub fn datasets(&self) -> anyhow::Result<DatasetsResponse> {
        self.get("/v1/datasets")
    }

    /// One version of the instruct dataset.
    pub fn dataset_version(&self, version: u64) -> anyhow::Result<DatasetVersionResponse> {
        self.get(&format!("/v1/datasets/instruct/versions/{version}"))
    }

    /// Writes the next dataset version now.
    pub fn dataset_snapshot(&self) -> anyhow::Result<DatasetVersion> {
        self.post("/v1/datasets/snapshot")
    }

    /// One generation pass over at most `limit` extracts.
    pub fn dataset_generate(&self, limit: usize) -> anyhow::Result<GenerationReport> {
        let url = format!("{}/v1/datasets/generate", self.base);
        Ok(self.check(self.http.post(url).json(&GenerateRequest { limit }).send())?.json()?)
    }

    /// Registers a standing question.
    pub fn subscribe(&self, request: &SubscriptionRequest) -> anyhow::Result<SubscriptionCreated> {
        let url = format!("{}/v1/subscriptions", self.base);
        Ok(self.check(self.http.post(url).json(request).send())?.json()?)
    }

    /// Forgets a standing question.
    pub fn unsubscribe(&self, id: &str) -> anyhow::Result<()> {
        self.check(self.http.delete(format!("{}/v1/subscriptions/{id}", self.base)).send())?;
        Ok(())
    }

    /// Follows a subscription's events, each given to `on_event`, from the
    /// current top-k (or after epoch `after`) until `on_event` breaks; a
    /// stream that ends (the server restarted, the client's timeout) is
    /// opened again after the last epoch seen.
    pub fn follow(
        &self,
        id: &str,
        mut after: Option<u64>,
        on_event: &mut dyn FnMut(SubscriptionEvent) -> std::ops::ControlFlow<()>,
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let url = format!("{}/v1/subscriptions/{id}/events", self.base);
        loop {
            let mut request = self.http.get(&url);
            if let Some(epoch) = after {
                request = request.header("last-event-id", epoch.to_string());
            }
            let response = match self.check(request.send()) {
                Ok(response) => response,
                // The server went away: wait for it rather than give up.
                Err(e) if e.to_string().starts_with("cannot reach") => {
                    tracing::warn!(error = %e, "reconnecting in 2 s");
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut data = String::new();
            for line in std::io::BufReader::new(response).lines() {
                let Ok(line) = line else { break };
                if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    let event: SubscriptionEvent = serde_json::from_str(&std::mem::take(&mut data))
                        .context("an event the server sent is not a subscription event")?;
                    if event.kind != twinflow_schemas::api::EventKind::Answer {
                        after = Some(event.epoch);
                    }
                    if on_event(event).is_break() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// `GET` of a JSON answer of type `T`.
    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.check(self.http.get(format!("{}{path}", self.base)).send())?.json()?)
    }

    /// `POST` without a body, answered with JSON of type `T`.
    fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.check(self.http.post(format!("{}{path}", self.base)).send())?.json()?)
    }
}
