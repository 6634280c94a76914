//! The feature pipeline: changes in, committed tables out.
//!
//! ```text
//!  HTTP / sources / other processes ─▶ Ingest::accept (limits, input log, epoch, positions, errors)
//!       ─▶ Engine (dataflow: clean, chunk, embed, instruct, drift) ─▶ Committer ─▶ Store (Parquet + live state)
//! ```
//!
//! | file | what it owns |
//! |---|---|
//! | `pipeline.rs` | the pipeline as one running thing: open (restore), start (commit, replay), finish |
//! | `ingest.rs` | the one front door: [`Ingest::accept`], pending positions and ingest errors |
//! | `committer.rs` | completed epochs → commits (retried), drift rows, truncation, publishing, timeline |
//! | `restore.rs` | the committed state, the embedding cache and the input log replayed at start |
//! | `embedder.rs` | the embedders the configuration names (MiniLM, hashing) |
//! | `progress.rs` | the embedding backlog followed: started, progress, done (log lines or the caller's display) |
//! | `publish.rs` | committed changes published to Kafka / Fluvio topics |
//! | `ship.rs` | committed files shipped to an object store (`[storage] object_store`), the manifest last |
//! | `forward.rs` | a cluster process's share of partitioned sources, forwarded to process 0 |
//! | `sources.rs` | the configured sources, opened at their committed positions |

mod committer;
pub mod embedder;
pub mod forward;
mod ingest;
mod pipeline;
pub mod progress;
pub mod publish;
mod restore;
pub mod ship;
pub mod sources;

pub use committer::{Committer, Timeline};
pub use ingest::{AcceptError, Accepted, Ingest, Origin, PendingPositions};
pub use pipeline::FeaturePipeline;
pub use restore::{CHUNKING_FILE, check_chunking, open_vector_cache, replay_input_log, restore_from};

use crate::Failure;

/// Why the feature pipeline could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data directory was written with another embedding model.
    #[error(
        "the data directory holds embeddings of model {stored:?} but the configured embedder is {configured:?}; \
         use another data directory (storage.data_dir) or configure the same embedder"
    )]
    EmbedderMismatch { stored: String, configured: String },
    /// An acknowledged batch of the input log could not be submitted again.
    #[error("replaying the input log: {0}")]
    Replay(#[source] twinflow_dataflow::SubmitError),
    /// The configuration asks for something that cannot be done.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] twinflow_sinks::Error),
    #[error(transparent)]
    Failed(#[from] Failure),
}
