//! Read your writes: an ingest answers the epoch that will hold its
//! changes; a read that names it as `min_as_of` waits until this process has
//! committed it (a primary) or followed it (a replica), up to `[replica]
//! max_wait`, then answers `503 not_caught_up` saying how far behind it is.

use std::time::{Duration, Instant};

use twinflow_schemas::api::ErrorCode;

use super::ApiError;
use crate::app::App;

/// How often a waiting read looks at the committed epoch.
const LOOK_EVERY: Duration = Duration::from_millis(5);

/// Returns once the committed epoch is at least `min_as_of` (at once
/// without one), else `503 not_caught_up` after `[replica] max_wait`.
pub async fn caught_up(app: &App, min_as_of: Option<u64>) -> Result<(), ApiError> {
    let Some(wanted) = min_as_of else { return Ok(()) };
    let deadline = Instant::now() + app.config.replica.max_wait;
    loop {
        let committed = app.store.committed_epoch();
        if committed >= wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ApiError::new(ErrorCode::NotCaughtUp, behind(app, wanted, committed)));
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Why `wanted` is not here: where this process is, and where its primary is.
fn behind(app: &App, wanted: u64, committed: u64) -> String {
    let waited = app.config.replica.max_wait;
    match (app.replica(), app.engine()) {
        (Some(replica), _) => {
            let status = replica.status();
            format!(
                "epoch {wanted} is not on this replica after {waited:?}: it is at epoch {committed}, {} epochs ({:.1} s) \
                 behind the primary's {}; retry, or read from the primary",
                status.lag_epochs, status.lag_seconds, status.primary_epoch
            )
        }
        (None, Ok(engine)) => {
            let stats = engine.stats();
            format!(
                "epoch {wanted} is not committed after {waited:?}: the committed epoch is {committed}, the open one {} \
                 ({} changes pending)",
                stats.open_epoch, stats.pending_changes
            )
        }
        (None, Err(_)) => {
            format!("epoch {wanted} is not committed after {waited:?}: the committed epoch is {committed}")
        }
    }
}
