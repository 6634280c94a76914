//! Limits on what requests may use at once: the costly routes take a slot,
//! wait for one up to `server.queue_wait`, and otherwise answer `503
//! overloaded` with `Retry-After` (a client backs off; the process is never
//! swamped).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use twinflow_schemas::api::ErrorCode;
use twinflow_schemas::config::ServerConfig;

use super::ApiError;

/// The slots of the costly routes.
#[derive(Debug)]
pub struct Slots {
    /// `POST /v1/sql` and pgwire statements.
    pub sql: Arc<Semaphore>,
    /// `POST /v1/rag`, `/v1/chat/completions`, `/v1/embeddings`.
    pub answers: Arc<Semaphore>,
    wait: Duration,
}

impl Slots {
    /// The slots `config` allows (at least one of each).
    pub fn new(config: &ServerConfig) -> Self {
        Self {
            sql: Arc::new(Semaphore::new(config.sql_concurrency.max(1))),
            answers: Arc::new(Semaphore::new(config.answer_concurrency.max(1))),
            wait: config.queue_wait,
        }
    }

    /// A slot of `kind` (`sql` or `answers`), waiting up to the configured time.
    pub async fn take(&self, kind: &Arc<Semaphore>, what: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(self.wait, kind.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::new(ErrorCode::ShuttingDown, "the server is stopping")),
            Err(_) => Err(ApiError::new(
                ErrorCode::Overloaded,
                format!("too many {what} requests at once (waited {:?} for a slot); retry later", self.wait),
            )),
        }
    }
}
