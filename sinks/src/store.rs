//! [`Store`]: commits epochs to Parquet and the manifest, keeps the live
//! state, and answers counts, search and SQL at the committed epoch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use parking_lot::{Mutex, RwLock};
use twinflow_schemas::api::{SearchFilter, SearchHit, SearchMode};
use twinflow_schemas::{
    ChunkRow, DocumentKind, DocumentRow, DriftRow, EmbeddingRow, EpochUpdates, Hash128, IngestErrorRow, TableName,
    TraceRow,
};

use crate::text_index::TextIndex;
use crate::vector_index::{ShardedVectors, VectorIndexStats};
use twinflow_schemas::config::AnnConfig;

use crate::drift_log::{drift_batch, drift_path, read_drift};
use crate::error::{Error, Result};
use crate::error_log::{error_batch, error_log_path, read_errors};
use crate::fusion::reciprocal_rank;
use crate::live::LiveState;
use crate::manifest::{EpochEntry, MANIFEST_FILE, Manifest, SnapshotEntry, now_ms};
use crate::parquet_io::{snapshot_path, write_epoch, write_parquet};
use crate::sql::{SqlAnswer, SqlInputs};
use crate::trace_log::{read_traces, trace_batch, trace_log_path};

/// Where the vector graph is saved with each snapshot (not part of the
/// tables: readers of the Parquet layout never look here).
const INDEX_DIR: &str = "_index";

/// What one [`Store::commit_epoch`] wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitStats {
    /// The epoch.
    pub epoch: u64,
    /// Part files written (0 for an empty or already committed epoch).
    pub files: usize,
    /// Table name → updates written (after consolidation per worker).
    pub rows: BTreeMap<String, usize>,
    /// Bytes written to part files.
    pub bytes: u64,
    /// Time spent writing files and the manifest, in milliseconds.
    pub write_ms: f64,
}

/// A map applied to every stored vector and every query before vector
/// search (an embedding adapter): the index holds the projected vectors,
/// the `embeddings` table keeps the base ones.
pub trait VectorProjection: Send + Sync + fmt::Debug {
    /// A name for logs and status (e.g. the model version).
    fn id(&self) -> &str;
    /// The projected vector (same length, L2-normalised).
    fn project(&self, vector: &[f32]) -> Vec<f32>;
}

/// What a [`Store::set_projection`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionSwitch {
    /// The committed epoch from which searches use the new projection.
    pub epoch: u64,
    /// Vectors re-projected (none were re-encoded).
    pub vectors: usize,
    pub seconds: f64,
}

/// What one [`Store::snapshot`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot version (1, 2, …).
    pub version: u64,
    /// The committed epoch it reflects.
    pub epoch: u64,
    /// Table name → live rows (sum of multiplicities).
    pub rows: BTreeMap<String, u64>,
    /// The files written, relative to the data directory.
    pub files: Vec<String>,
}

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
        Ok(Store { dir, dim, writer: Mutex::new(()), state: RwLock::new(state), batches: Mutex::default() })
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

    /// Records, without a new epoch, what arrived after the last one:
    /// positions of sources whose changes are all committed already (at
    /// shutdown), ingest errors and traces (stamped with the committed
    /// epoch, each kind as a new file of that epoch). The manifest is
    /// replaced atomically, like at a commit.
    pub fn commit_late(
        &self,
        sources: BTreeMap<String, serde_json::Value>,
        mut ingest_errors: Vec<IngestErrorRow>,
        mut traces: Vec<TraceRow>,
    ) -> Result<()> {
        if sources.is_empty() && ingest_errors.is_empty() && traces.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock();
        let epoch = self.committed_epoch();
        let mut manifest = self.state.read().manifest.clone();
        manifest.sources.extend(sources);
        manifest.committed_epoch = epoch;
        if !ingest_errors.is_empty() || !traces.is_empty() {
            if manifest.epochs.last().is_none_or(|e| e.epoch < epoch) {
                manifest.epochs.push(EpochEntry::empty(epoch, now_ms()));
            }
            let entry = manifest.epochs.last_mut().expect("an entry for the committed epoch");
            if !ingest_errors.is_empty() {
                ingest_errors.iter_mut().for_each(|r| r.epoch = epoch);
                let path = error_log_path(epoch, entry.ingest_errors.len());
                write_parquet(&self.dir.join(&path), &error_batch(&ingest_errors)?)?;
                entry.ingest_errors.push(path);
            }
            if !traces.is_empty() {
                traces.iter_mut().for_each(|r| r.epoch = epoch);
                let path = trace_log_path(epoch, entry.traces.len());
                write_parquet(&self.dir.join(&path), &trace_batch(&traces)?)?;
                entry.traces.push(path);
            }
        }
        manifest.store(&self.dir)?;
        let mut state = self.state.write();
        state.manifest = manifest;
        state.ingest_errors.extend(ingest_errors);
        state.traces.extend(traces);
        Ok(())
    }

    /// Appends `traces` rows (see [`Store::commit_late`]).
    pub fn append_traces(&self, traces: Vec<TraceRow>) -> Result<()> {
        self.commit_late(BTreeMap::new(), Vec::new(), traces)
    }

    /// The last `n` committed `ingest_errors` rows, in epoch order.
    pub fn ingest_errors_tail(&self, n: usize) -> Vec<IngestErrorRow> {
        let state = self.state.read();
        state.ingest_errors[state.ingest_errors.len().saturating_sub(n)..].to_vec()
    }

    /// [`Store::commit_epoch_with`] without source positions.
    pub fn commit_epoch(&self, epoch: u64, parts: Vec<(usize, EpochUpdates)>) -> Result<CommitStats> {
        self.commit_epoch_with(epoch, parts, BTreeMap::new())
    }

    /// Commits `epoch`: writes each worker's non-empty table updates as
    /// Parquet (consolidated per worker), then atomically replaces the
    /// manifest (recording `sources`, merged over the previous positions),
    /// then applies the updates to the live state.
    ///
    /// An epoch at or below [`Store::committed_epoch`] is a no-op returning
    /// `Ok` (re-committing after a crash is harmless). An epoch without
    /// updates or sources writes nothing but still advances the committed
    /// epoch; the manifest records it with the next write.
    pub fn commit_epoch_with(
        &self,
        epoch: u64,
        parts: Vec<(usize, EpochUpdates)>,
        sources: BTreeMap<String, serde_json::Value>,
    ) -> Result<CommitStats> {
        self.commit_epoch_full(epoch, parts, sources, Vec::new(), Vec::new())
    }

    /// [`commit_epoch_with`](Self::commit_epoch_with), also appending the
    /// epoch's `drift` rows and the `ingest_errors` recorded since the last
    /// commit (stamped with this epoch); both are written and listed in the
    /// same manifest replacement, so they are committed with the epoch or not at all.
    pub fn commit_epoch_full(
        &self,
        epoch: u64,
        parts: Vec<(usize, EpochUpdates)>,
        sources: BTreeMap<String, serde_json::Value>,
        drift: Vec<DriftRow>,
        mut ingest_errors: Vec<IngestErrorRow>,
    ) -> Result<CommitStats> {
        let started = Instant::now();
        let _writer = self.writer.lock();
        if epoch <= self.committed_epoch() {
            return Ok(CommitStats { epoch, ..CommitStats::default() });
        }
        let parts = merge_by_worker(parts);
        let written = write_epoch(&self.dir, self.dim, epoch, &parts)?;

        let mut stats = CommitStats { epoch, files: written.len(), ..CommitStats::default() };
        let mut entry = EpochEntry::empty(epoch, now_ms());
        if !drift.is_empty() {
            let path = drift_path(epoch);
            stats.bytes += write_parquet(&self.dir.join(&path), &drift_batch(&drift)?)?;
            stats.files += 1;
            entry.drift = Some(path);
        }
        if !ingest_errors.is_empty() {
            ingest_errors.iter_mut().for_each(|r| r.epoch = epoch);
            let path = error_log_path(epoch, 0);
            stats.bytes += write_parquet(&self.dir.join(&path), &error_batch(&ingest_errors)?)?;
            stats.files += 1;
            entry.ingest_errors.push(path);
        }
        for part in &written {
            let table = part.table.as_str().to_owned();
            entry.files.entry(table.clone()).or_default().push(part.path.clone());
            *entry.rows.entry(table).or_default() += part.rows;
            stats.bytes += part.bytes;
        }
        stats.rows = entry.rows.clone();

        let logs = entry.drift.is_some() || !entry.ingest_errors.is_empty();
        let manifest = if written.is_empty() && sources.is_empty() && !logs {
            None
        } else {
            let mut manifest = self.state.read().manifest.clone();
            if !written.is_empty() || logs {
                manifest.epochs.push(entry);
            }
            manifest.sources.extend(sources);
            manifest.committed_epoch = epoch;
            manifest.store(&self.dir)?;
            Some(manifest)
        };

        // New vectors go into the graph before the epoch is published, beside
        // searches (which skip them until then): the write lock below stays short.
        // With an adapter active, the graph takes the projected vectors (projected here,
        // outside the locks; the writer lock keeps the projection from changing meanwhile).
        let projection = self.state.read().projection.clone();
        let inserted: Vec<&EmbeddingRow> =
            parts.iter().flat_map(|(_, u)| u.embeddings.iter()).filter(|(_, diff)| *diff > 0).map(|(e, _)| e).collect();
        let projected: Vec<(Hash128, Vec<f32>)> = match &projection {
            Some(p) => inserted.iter().map(|e| (e.chunk_id, p.project(&e.vector.0))).collect(),
            None => Vec::new(),
        };
        let added: Vec<(Hash128, &str, &[f32])> = inserted
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let vector = projected.get(i).map_or(e.vector.0.as_slice(), |(_, v)| v.as_slice());
                (e.chunk_id, e.model_id.as_str(), vector)
            })
            .collect();
        let mut staged = match self.state.write().vectors.stage(&added) {
            Ok(staged) => Some(staged),
            Err(e) => {
                tracing::error!(epoch, error = %e, "the vector index missed an update; it is rebuilt on restart");
                None
            }
        };
        if let Some(staged) = &mut staged {
            self.state.read().vectors.add_staged(staged, &added);
        }
        let touched_vectors: BTreeSet<(Hash128, String)> = parts
            .iter()
            .flat_map(|(_, u)| u.embeddings.iter().map(|(e, _)| (e.chunk_id, e.model_id.clone())))
            .collect();
        drop(added);
        drop(inserted);

        let mut state = self.state.write();
        if let Some(manifest) = manifest {
            state.manifest = manifest;
        }
        state.committed = epoch;
        state.drift.extend(drift);
        state.ingest_errors.extend(ingest_errors);
        let touched: BTreeSet<Hash128> =
            parts.iter().flat_map(|(_, u)| u.chunks.iter().map(|(c, _)| c.chunk_id)).collect();
        for (_, updates) in parts {
            state.live.apply(updates, epoch);
        }
        let State { live, text, vectors, projection, projected: projected_live, .. } = &mut *state;
        if projection.is_some() {
            for (chunk_id, vector) in projected {
                projected_live.insert(chunk_id, vector);
            }
            for (chunk_id, _) in &touched_vectors {
                if live.embeddings.present(chunk_id).next().is_none() {
                    projected_live.remove(chunk_id);
                }
            }
        }
        // The vector index follows the live embeddings row by row: staged rows
        // become visible, rows no longer live are removed.
        let present =
            |chunk_id: &Hash128, model_id: &str| live.embeddings.present(chunk_id).any(|e| e.model_id == model_id);
        if let Some(staged) = staged
            && let Err(e) = vectors.publish(staged, present)
        {
            tracing::error!(epoch, error = %e, "the vector index missed an update; it is rebuilt on restart");
        }
        for (chunk_id, model_id) in &touched_vectors {
            if !present(chunk_id, model_id)
                && let Err(e) = vectors.set(*chunk_id, model_id, None)
            {
                tracing::error!(epoch, error = %e, "the vector index missed an update; it is rebuilt on restart");
            }
        }
        // The full-text index follows the live chunks: touched ids still present are (re)indexed, others removed.
        let (mut present, mut absent) = (Vec::new(), Vec::new());
        for id in &touched {
            match live.chunks.present(id).next() {
                Some(chunk) => present.push((*id, chunk.text.as_str())),
                None => absent.push(*id),
            }
        }
        if let Err(e) = text.apply(present, absent) {
            tracing::error!(epoch, error = %e, "the full-text index missed an epoch; it is rebuilt on restart");
        }
        drop(state);
        stats.write_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(epoch, files = stats.files, bytes = stats.bytes, write_ms = stats.write_ms, "committed epoch");
        Ok(stats)
    }

    /// Writes a consolidated snapshot of every table's current state to
    /// `<table>/_snapshots/v<N>/part-0.parquet` (the change-log columns,
    /// `_epoch` = the snapshot's epoch, `_diff` = multiplicity) and records
    /// it in the manifest. Restores start from the latest snapshot.
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        let _writer = self.writer.lock();
        let (epoch, version, batches, rows) = {
            let state = self.state.read();
            let version = state.manifest.snapshots.iter().map(|s| s.version).max().unwrap_or(0) + 1;
            let mut batches = Vec::new();
            let mut rows = BTreeMap::new();
            for table in TableName::ALL {
                batches.push((table, state.live.snapshot_batch(table, state.committed, self.dim)?));
                rows.insert(table.as_str().to_owned(), state.live.count(table));
            }
            (state.committed, version, batches, rows)
        };
        let mut files = BTreeMap::new();
        for (table, batch) in &batches {
            let path = snapshot_path(*table, version);
            write_parquet(&self.dir.join(&path), batch)?;
            files.insert(table.as_str().to_owned(), vec![path]);
        }
        let mut manifest = self.state.read().manifest.clone();
        manifest.committed_epoch = manifest.committed_epoch.max(epoch);
        let entry = SnapshotEntry { version, epoch, created_at_ms: now_ms(), files: files.clone(), rows: rows.clone() };
        manifest.snapshots.push(entry);
        manifest.store(&self.dir)?;
        self.state.write().manifest = manifest;
        // The graph too, so a restart loads it instead of rebuilding it (best effort: a
        // missing or damaged file only means a rebuild).
        let state = self.state.read();
        if state.projection.is_some() {
            tracing::debug!(version, "vector index not saved: it holds projected vectors (rebuilt on open)");
        } else if let Err(e) = state.vectors.save(&self.dir.join(INDEX_DIR), version) {
            tracing::warn!(version, error = %e, "could not save the vector index with the snapshot");
        }
        tracing::info!(version, epoch, "wrote snapshot");
        Ok(SnapshotInfo { version, epoch, rows, files: files.into_values().flatten().collect() })
    }

    /// Live row counts per table (sum of multiplicities) at the committed epoch.
    pub fn counts(&self) -> (u64, BTreeMap<String, u64>) {
        let state = self.state.read();
        let counts = TableName::ALL.iter().map(|t| (t.as_str().to_owned(), state.live.count(*t))).collect();
        (state.committed, counts)
    }

    /// The current documents, sorted (to restore the dataflow after a restart).
    pub fn current_documents(&self) -> Vec<DocumentRow> {
        self.state.read().live.documents.current().into_iter().cloned().collect()
    }

    /// The current chunks, sorted.
    pub fn current_chunks(&self) -> Vec<ChunkRow> {
        self.state.read().live.chunks.current().into_iter().cloned().collect()
    }

    /// The current instruct samples and chunks, sorted, at one committed epoch.
    pub fn current_instruct_and_chunks(&self) -> (u64, Vec<twinflow_schemas::InstructRow>, Vec<ChunkRow>) {
        let state = self.state.read();
        (
            state.committed,
            state.live.instruct.current().into_iter().cloned().collect(),
            state.live.chunks.current().into_iter().cloned().collect(),
        )
    }

    /// The last `n` committed `drift` rows, in epoch order.
    pub fn drift_tail(&self, n: usize) -> Vec<DriftRow> {
        let state = self.state.read();
        state.drift[state.drift.len().saturating_sub(n)..].to_vec()
    }

    /// The current embeddings, sorted (to seed the embedding cache).
    pub fn current_embeddings(&self) -> Vec<EmbeddingRow> {
        self.state.read().live.embeddings.current().into_iter().cloned().collect()
    }

    /// Exact cosine top-`k` over the live embeddings (dot product of
    /// L2-normalised vectors), with every live occurrence of each chunk and
    /// its document's metadata, and the epoch the hits are as of. Ties are
    /// broken by `chunk_id`; `k = 0` gives no hits.
    pub fn search(&self, query: &[f32], k: usize) -> (u64, Vec<SearchHit>) {
        self.search_filtered(query, k, &SearchFilter::default())
    }

    /// Search by `mode`: cosine of `vector` (the embedded query), BM25 of
    /// the words of `text`, or both fused by weighted reciprocal rank over
    /// each one's best `max(4k, 50)`. Filters apply inside both searches.
    /// The vector side uses the HNSW index when it is on and the candidates
    /// are many; `exact` forces the exact scan. Returns the committed epoch
    /// both indexes are at.
    pub fn search_mode(
        &self,
        text: &str,
        vector: &[f32],
        k: usize,
        filter: &SearchFilter,
        mode: SearchMode,
        exact: bool,
    ) -> Result<(u64, Vec<SearchHit>)> {
        let state = self.state.read();
        let live = &state.live;
        let allowed = crate::search::allowed_docs(live, filter);
        let passes = |doc_id: &str| allowed.as_ref().is_none_or(|set| set.contains(doc_id));
        let allowed_chunks = allowed.as_ref().map(|docs| crate::search::allowed_chunks(live, docs));
        let bm25 = |n: usize| {
            let keys = allowed_chunks.as_ref().map(|ids| Arc::new(ids.iter().map(|id| id.0.to_be_bytes()).collect()));
            state.text.search(text, n, keys)
        };
        let query = state.query(vector);
        let nearest = |n: usize| {
            crate::search::planned_top_k(
                live,
                state.vectors(),
                &state.vectors,
                &query,
                n,
                allowed_chunks.as_ref(),
                exact,
            )
        };
        let hits = match mode {
            SearchMode::Vector => nearest(k)?
                .into_iter()
                .map(|(score, id)| {
                    let mut hit = crate::search::hit(live, id, score, &passes);
                    hit.vector_score = Some(score);
                    hit
                })
                .collect(),
            SearchMode::Bm25 => bm25(k)?
                .into_iter()
                .map(|(id, score)| {
                    let mut hit = crate::search::hit(live, id, score, &passes);
                    hit.bm25_score = Some(score);
                    hit
                })
                .collect(),
            SearchMode::Hybrid { vector_weight, bm25_weight, rrf_k } => {
                let n = (4 * k).max(50);
                let by_vector = nearest(n)?;
                let by_bm25 = bm25(n)?;
                let vector_ids: Vec<Hash128> = by_vector.iter().map(|(_, id)| *id).collect();
                let bm25_ids: Vec<Hash128> = by_bm25.iter().map(|(id, _)| *id).collect();
                let mut fused =
                    reciprocal_rank(&[(vector_weight, &vector_ids[..]), (bm25_weight, &bm25_ids[..])], rrf_k);
                fused.truncate(k);
                // Each part's own score goes with the hit, beside the fused one.
                let vector_scores: HashMap<Hash128, f32> =
                    by_vector.into_iter().map(|(score, id)| (id, score)).collect();
                let bm25_scores: HashMap<Hash128, f32> = by_bm25.into_iter().collect();
                fused
                    .into_iter()
                    .map(|(id, score)| {
                        let mut hit = crate::search::hit(live, id, score, &passes);
                        hit.vector_score = vector_scores.get(&id).copied();
                        hit.bm25_score = bm25_scores.get(&id).copied();
                        hit
                    })
                    .collect()
            }
        };
        Ok((state.committed, hits))
    }

    /// [`search`](Self::search) over the chunks of the documents that pass
    /// `filter`, applied during the scan (so `k` is filled when enough match).
    pub fn search_filtered(&self, query: &[f32], k: usize, filter: &SearchFilter) -> (u64, Vec<SearchHit>) {
        let state = self.state.read();
        let query = state.query(query);
        (state.committed, crate::search::top_k(&state.live, state.vectors(), &query, k, filter))
    }

    /// The authors and kinds of the current documents, each with its number of documents.
    pub fn facets(&self) -> (Vec<(String, usize)>, Vec<(DocumentKind, usize)>) {
        let state = self.state.read();
        let mut authors: BTreeMap<&str, usize> = BTreeMap::new();
        let mut kinds: BTreeMap<DocumentKind, usize> = BTreeMap::new();
        for (_, rows) in state.live.documents.groups() {
            if let Some((doc, _)) = rows.iter().find(|(_, n)| *n > 0) {
                *authors.entry(doc.author.as_str()).or_default() += 1;
                *kinds.entry(doc.kind).or_default() += 1;
            }
        }
        (authors.into_iter().map(|(a, n)| (a.to_owned(), n)).collect(), kinds.into_iter().collect())
    }

    /// Cosine of `query` with each chunk's best live vector of the same
    /// length (`None` for a chunk without one); for reranking.
    pub fn similarities(&self, query: &[f32], chunk_ids: &[Hash128]) -> Vec<Option<f32>> {
        let state = self.state.read();
        let query = state.query(query);
        chunk_ids.iter().map(|id| crate::search::best_similarity(&state.live, state.vectors(), id, &query)).collect()
    }

    /// Makes vector search use `projection` (an adapter; `None`: the base
    /// vectors): every live vector is re-projected from the stored base
    /// vector (nothing is re-encoded) into a new index, built while searches
    /// go on against the current one; then both switch under the write lock,
    /// so every search sees one projection, at one committed epoch. Commits
    /// wait meanwhile.
    pub fn set_projection(&self, projection: Option<Arc<dyn VectorProjection>>) -> Result<ProjectionSwitch> {
        let started = Instant::now();
        let _writer = self.writer.lock();
        let (mut index, projected) = {
            let state = self.state.read();
            let rows = state.live.embeddings.current();
            let projected: HashMap<Hash128, Vec<f32>> = match &projection {
                Some(p) => rows.iter().map(|r| (r.chunk_id, p.project(&r.vector.0))).collect(),
                None => HashMap::new(),
            };
            let mut index = ShardedVectors::new(self.dim, &state.vectors.config(), state.vectors.shards())?;
            for row in &rows {
                let vector = projected.get(&row.chunk_id).map_or(row.vector.0.as_slice(), Vec::as_slice);
                index.set(row.chunk_id, &row.model_id, Some(vector))?;
            }
            (index, projected)
        };
        let vectors = index.len();
        let mut state = self.state.write();
        std::mem::swap(&mut state.vectors, &mut index);
        state.projected = projected;
        tracing::info!(
            epoch = state.committed,
            projection = projection.as_ref().map(|p| p.id()).unwrap_or("none"),
            vectors,
            "vector search switched projection"
        );
        state.projection = projection;
        let epoch = state.committed;
        drop(state);
        drop(index);
        Ok(ProjectionSwitch { epoch, vectors, seconds: started.elapsed().as_secs_f64() })
    }

    /// The id of the active projection, if any.
    pub fn projection(&self) -> Option<String> {
        self.state.read().projection.as_ref().map(|p| p.id().to_owned())
    }

    /// Sizes of the approximate vector index.
    pub fn vector_index_stats(&self) -> VectorIndexStats {
        self.state.read().vectors.stats()
    }

    /// Sets the HNSW search breadth (`ef`) from now on (for benchmarks that sweep it).
    pub fn set_vector_search_breadth(&self, ef: usize) {
        self.state.read().vectors.set_expansion_search(ef);
    }

    /// Runs one read-only SQL statement over the committed epoch: the live
    /// tables `documents`, `chunks`, `embeddings`, `instruct` and their
    /// committed change logs `<table>_changes` (with `_epoch`, `_diff`).
    /// Statements that would change anything are [`Error::SqlNotReadOnly`];
    /// others that fail are [`Error::Sql`].
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer> {
        let inputs = self.sql_inputs()?;
        crate::sql::run(inputs, sql).await
    }

    /// The committed `drift` rows of epochs after `since` (all with 0), in epoch order.
    pub fn drift_rows(&self, since: u64) -> Vec<DriftRow> {
        let state = self.state.read();
        let start = state.drift.partition_point(|r| r.epoch <= since);
        state.drift[start..].to_vec()
    }

    /// Everything one query reads, taken under one read lock.
    fn sql_inputs(&self) -> Result<SqlInputs> {
        let state = self.state.read();
        let mut cache = self.batches.lock();
        let mut current = Vec::new();
        let mut changes = Vec::new();
        for table in TableName::ALL {
            let changed_at = state.live.changed_at(table);
            let batch = match cache.get(&table) {
                Some((at, batch)) if *at == changed_at => batch.clone(),
                _ => {
                    let batch = state.live.current_batch(table, self.dim)?;
                    cache.insert(table, (changed_at, batch.clone()));
                    batch
                }
            };
            current.push((table, batch));
            let files = state.manifest.change_files(table, state.committed);
            changes.push((table, files.iter().map(|f| self.dir.join(f)).collect()));
        }
        let drift = drift_batch(&state.drift)?;
        let ingest_errors = error_batch(&state.ingest_errors)?;
        let traces = trace_batch(&state.traces)?;
        let snapshots = TableName::ALL
            .iter()
            .map(|table| {
                let files = state.manifest.snapshots.iter().filter_map(|s| s.files.get(table.as_str())).flatten();
                (*table, files.map(|f| self.dir.join(f)).collect())
            })
            .collect();
        let datasets = crate::datasets::dataset_files(&self.dir);
        Ok(SqlInputs {
            epoch: state.committed,
            dim: self.dim,
            current,
            changes,
            drift,
            ingest_errors,
            traces,
            snapshots,
            datasets,
        })
    }
}

/// One `EpochUpdates` per worker (parts of the same worker appended),
/// each consolidated.
fn merge_by_worker(parts: Vec<(usize, EpochUpdates)>) -> Vec<(usize, EpochUpdates)> {
    let mut merged: BTreeMap<usize, EpochUpdates> = BTreeMap::new();
    for (worker, updates) in parts {
        merged.entry(worker).or_default().extend(updates);
    }
    merged
        .into_iter()
        .map(|(worker, mut updates)| {
            updates.consolidate();
            (worker, updates)
        })
        .collect()
}
