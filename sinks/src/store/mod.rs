//! [`Store`]: commits epochs to Parquet and the manifest, keeps the live
//! state, and answers counts, search and SQL at the committed epoch.
//!
//! This file holds the store itself: its state behind the locks, opening
//! (restoring the live state and rebuilding or loading both indexes) and
//! the plain accessors. The rest is by responsibility:
//!
//! | file | what it owns |
//! |---|---|
//! | `commit.rs` | writing: `EpochCommit` and `commit`, `commit_late`, `append_traces`, `snapshot` |
//! | `query.rs` | reading at the committed epoch: counts, `current_*`, tails, search, facets, SQL |
//! | `follow.rs` | following another process's commits: `open_follower`, `follow` (read replicas) |
//! | `history.rs` | time travel: `as_of` a past epoch (a read-only store), the window |
//! | `notice.rs` | following commits: `on_commit` and the `CommitNotice` each commit sends |
//! | `projection.rs` | the embedding adapter (`set_projection`) and the vector index's stats and breadth |

mod commit;
mod follow;
mod history;
mod notice;
mod projection;
mod query;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use parking_lot::{Mutex, RwLock};
use twinflow_schemas::config::AnnConfig;
use twinflow_schemas::{DriftRow, Hash128, IngestErrorRow, TableName, TraceRow};

use crate::drift_log::read_drift;
use crate::error::{Error, Result};
use crate::error_log::read_errors;
use crate::live::LiveState;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::text_index::TextIndex;
use crate::trace_log::read_traces;
use crate::vector_index::ShardedVectors;

pub use commit::{CommitStats, EpochCommit, SnapshotInfo};
pub use follow::Followed;
pub use notice::{CommitNotice, CommitObserver};
pub use projection::{ProjectionSwitch, VectorProjection};
pub use query::Ranked;

/// Where the vector graph is saved with each snapshot (not part of the
/// tables: readers of the Parquet layout never look here).
const INDEX_DIR: &str = "_index";

/// The committed state and its live view. `Send + Sync`: share it as
/// `Arc<Store>` between the committer and the readers.
///
/// Writers (commits, snapshots) are serialised; readers see whole epochs,
/// since the live state changes under a write lock only after the manifest
/// naming the epoch's files is durable.
pub struct Store {
    dir: PathBuf,
    dim: usize,
    /// Serialises commits and snapshots.
    writer: Mutex<()>,
    state: RwLock<State>,
    /// Current-state batches for SQL: table → (epoch of its last change, batch).
    batches: Mutex<HashMap<TableName, (u64, RecordBatch)>>,
    /// The memory pool and limits every SQL statement runs within.
    sql_runtime: RwLock<Arc<crate::sql::SqlRuntime>>,
    /// Which snapshots are kept after a new one is written.
    retention: RwLock<SnapshotRetention>,
    /// Snapshots kept besides `retention`'s: those something else still names.
    held: RwLock<Vec<u64>>,
    /// Told of every commit ([`Store::on_commit`]).
    observers: RwLock<Vec<CommitObserver>>,
    /// A past epoch's state ([`Store::as_of`]) or a follower's: commits and snapshots refused.
    read_only: bool,
    /// Opened with [`Store::open_follower`]: [`Store::follow`] applies another process's commits.
    following: bool,
    /// The followed manifest file as last read.
    mark: Mutex<follow::ManifestMark>,
    /// How far back `AS OF` reads (`None`: every committed epoch).
    history: RwLock<Option<std::time::Duration>>,
    /// Past states built lately, with their epochs.
    past: Mutex<Vec<(u64, Arc<Store>)>>,
}

/// Which snapshots a store keeps: the newest `keep` (0: all) and the
/// `pinned` versions; the newest, which a restart starts from, always; and
/// those [`Store::hold_snapshots`] holds (the lineage of kept datasets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotRetention {
    pub keep: usize,
    pub pinned: Vec<u64>,
}

#[derive(Debug)]
struct State {
    /// The last committed epoch; may be ahead of `manifest.committed_epoch`
    /// by epochs that wrote nothing.
    committed: u64,
    manifest: Manifest,
    live: LiveState,
    /// BM25 over the live chunk texts, at `committed` like `live`.
    text: TextIndex,
    /// HNSW over the live embeddings, at `committed` like `live`.
    vectors: ShardedVectors,
    /// Every committed `drift` row, in epoch order.
    drift: Vec<DriftRow>,
    /// Every committed `ingest_errors` row, in epoch order.
    ingest_errors: Vec<IngestErrorRow>,
    /// Every written `traces` row, in order.
    traces: Vec<TraceRow>,
    /// The active projection and the projected live vectors (by chunk).
    projection: Option<Arc<dyn VectorProjection>>,
    projected: HashMap<Hash128, Vec<f32>>,
}

impl State {
    fn vectors(&self) -> crate::search::Vectors<'_> {
        crate::search::Vectors { projected: self.projection.as_ref().map(|_| &self.projected) }
    }

    /// The query as the index sees it.
    fn query<'q>(&self, query: &'q [f32]) -> std::borrow::Cow<'q, [f32]> {
        match &self.projection {
            Some(p) if !query.is_empty() => std::borrow::Cow::Owned(p.project(query)),
            _ => std::borrow::Cow::Borrowed(query),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("dim", &self.dim)
            .field("committed_epoch", &self.committed_epoch())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating) `data_dir`; `dim` is the embedding dimension. When
    /// `_manifest.json` exists, restores the live state from it (latest
    /// snapshot, then the committed epochs after it). Files the manifest does
    /// not list are ignored. A damaged manifest or Parquet file is
    /// [`Error::Corrupt`] naming the file; a different `dim` is
    /// [`Error::DimensionMismatch`].
    pub fn open(data_dir: &Path, dim: usize) -> Result<Store> {
        Self::open_with(data_dir, dim, &AnnConfig::default())
    }

    /// [`open`](Self::open) with the settings of the approximate vector index,
    /// which is rebuilt from the stored embeddings (nothing is re-encoded).
    pub fn open_with(data_dir: &Path, dim: usize, ann: &AnnConfig) -> Result<Store> {
        Self::open_sharded(data_dir, dim, ann, 1)
    }

    /// [`open_with`](Self::open_with) with both live indexes (BM25 and HNSW)
    /// split into `shards` shards by chunk id: searches ask every shard and
    /// merge their best, commits update the shards side by side. BM25 scores
    /// with the statistics of the whole live corpus and exact vector scans are
    /// unaffected, so answers match one shard's up to near-ties (see
    /// `shards.rs`); approximate (HNSW) candidates can differ, as between any
    /// two graphs.
    pub fn open_sharded(data_dir: &Path, dim: usize, ann: &AnnConfig, shards: usize) -> Result<Store> {
        let shards = shards.max(1);
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let dir = std::fs::canonicalize(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let (manifest, live) = match Manifest::load(&dir)? {
            Some(manifest) => {
                if manifest.dim != dim {
                    return Err(Error::DimensionMismatch {
                        path: dir.join(MANIFEST_FILE),
                        stored: manifest.dim,
                        configured: dim,
                    });
                }
                let live = crate::restore::restore(&dir, &manifest)?;
                (manifest, live)
            }
            None => (Manifest::new(dim), LiveState::default()),
        };
        let text = TextIndex::with_shards(shards)?;
        let chunks = live.chunks.current();
        text.apply(chunks.iter().map(|c| (c.chunk_id, c.text.as_str())), [])?;
        drop(chunks);
        let started = Instant::now();
        // The graph saved with the latest snapshot, brought up to date; else a rebuild.
        let saved = manifest.snapshots.iter().map(|s| s.version).max().and_then(|version| {
            let mut index = ShardedVectors::load(&dir.join(INDEX_DIR), version, dim, ann, shards)?;
            let rows = live.embeddings.current();
            let rows = rows.iter().map(|r| (r.chunk_id, r.model_id.as_str(), r.vector.0.as_slice()));
            match index.reconcile(rows) {
                Ok((added, removed)) => {
                    tracing::info!(version, added, removed, "loaded the vector index saved with the snapshot");
                    Some(index)
                }
                Err(e) => {
                    tracing::warn!(version, error = %e, "the saved vector index could not be updated; rebuilding");
                    None
                }
            }
        });
        let vectors = match saved {
            Some(index) => index,
            None => {
                let mut vectors = ShardedVectors::new(dim, ann, shards)?;
                for row in live.embeddings.current() {
                    vectors.set(row.chunk_id, &row.model_id, Some(&row.vector.0))?;
                }
                vectors
            }
        };
        tracing::info!(
            dir = %dir.display(),
            epoch = manifest.committed_epoch,
            chunks = text.len(),
            vectors = vectors.len(),
            shards,
            vector_index_ms = started.elapsed().as_millis() as u64,
            "opened store"
        );
        let mut drift = Vec::new();
        for file in manifest.drift_files(manifest.committed_epoch) {
            drift.extend(read_drift(&dir.join(file))?);
        }
        let mut ingest_errors = Vec::new();
        for file in manifest.ingest_error_files(manifest.committed_epoch) {
            ingest_errors.extend(read_errors(&dir.join(file))?);
        }
        let mut traces = Vec::new();
        for file in manifest.trace_files(manifest.committed_epoch) {
            traces.extend(read_traces(&dir.join(file))?);
        }
        let state = State {
            committed: manifest.committed_epoch,
            manifest,
            live,
            text,
            vectors,
            drift,
            ingest_errors,
            traces,
            projection: None,
            projected: HashMap::new(),
        };
        let sql_runtime = RwLock::new(Arc::new(crate::sql::SqlRuntime::new(crate::SqlLimits::default())?));
        Ok(Store {
            dir,
            dim,
            writer: Mutex::new(()),
            state: RwLock::new(state),
            batches: Mutex::default(),
            sql_runtime,
            retention: RwLock::default(),
            held: RwLock::default(),
            observers: RwLock::default(),
            read_only: false,
            following: false,
            mark: Mutex::default(),
            history: RwLock::default(),
            past: Mutex::default(),
        })
    }

    /// The data directory (absolute).
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Last committed epoch (0 when nothing is committed yet).
    pub fn committed_epoch(&self) -> u64 {
        self.state.read().committed
    }

    /// A copy of the current manifest (as last written).
    pub fn manifest(&self) -> Manifest {
        self.state.read().manifest.clone()
    }

    /// The source positions committed so far (name → position).
    pub fn source_positions(&self) -> BTreeMap<String, serde_json::Value> {
        self.state.read().manifest.sources.clone()
    }
}
