//! Writing: each epoch's part files, drift and error logs, then the
//! manifest, then the live state and both indexes ([`Store::commit`] of an
//! [`EpochCommit`]); late positions, errors and traces without a new
//! epoch ([`Store::commit_late`]); consolidated snapshots ([`Store::snapshot`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use twinflow_schemas::{DriftRow, EmbeddingRow, EpochUpdates, Hash128, IngestErrorRow, TableName, TraceRow};

use super::{INDEX_DIR, State, Store};
use crate::drift_log::{drift_batch, drift_path};
use crate::error::Result;
use crate::error_log::{error_batch, error_log_path};
use crate::manifest::{EpochEntry, Manifest, SnapshotEntry, now_ms};
use crate::parquet_io::{snapshot_path, write_epoch, write_parquet};
use crate::trace_log::{trace_batch, trace_log_path};

/// What one [`Store::commit`] wrote.
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

/// One epoch to commit: its updates, and what is committed with it in
/// the same manifest replacement (so with the epoch or not at all).
#[derive(Clone, Debug, Default)]
pub struct EpochCommit {
    /// The epoch.
    pub epoch: u64,
    /// Each worker's table updates.
    pub parts: Vec<(usize, EpochUpdates)>,
    /// Source positions reached by this epoch's changes (merged over the previous ones).
    pub sources: BTreeMap<String, serde_json::Value>,
    /// The epoch's drift rows.
    pub drift: Vec<DriftRow>,
    /// Ingest errors recorded since the last commit (stamped with this epoch).
    pub ingest_errors: Vec<IngestErrorRow>,
}

impl EpochCommit {
    /// `epoch` with its updates and nothing else.
    pub fn new(epoch: u64, parts: Vec<(usize, EpochUpdates)>) -> Self {
        Self { epoch, parts, ..Self::default() }
    }

    /// Also records the sources' positions.
    pub fn with_sources(mut self, sources: BTreeMap<String, serde_json::Value>) -> Self {
        self.sources = sources;
        self
    }

    /// Also appends drift rows.
    pub fn with_drift(mut self, drift: Vec<DriftRow>) -> Self {
        self.drift = drift;
        self
    }

    /// Also appends ingest errors.
    pub fn with_ingest_errors(mut self, ingest_errors: Vec<IngestErrorRow>) -> Self {
        self.ingest_errors = ingest_errors;
        self
    }
}

impl Store {
    /// Commits an epoch: writes each worker's non-empty table updates as
    /// Parquet (consolidated per worker) and the epoch's drift rows and
    /// ingest errors, then atomically replaces the manifest (recording the
    /// source positions, merged over the previous ones), then applies the
    /// updates to the live state and both indexes.
    ///
    /// An epoch at or below [`Store::committed_epoch`] is a no-op returning
    /// `Ok` (re-committing after a crash is harmless). An epoch without
    /// updates or sources writes nothing but still advances the committed
    /// epoch; the manifest records it with the next write.
    pub fn commit(&self, commit: EpochCommit) -> Result<CommitStats> {
        let EpochCommit { epoch, parts, sources, drift, mut ingest_errors } = commit;
        let started = Instant::now();
        if self.read_only {
            return Err(crate::Error::ReadOnly);
        }
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

        self.publish(epoch, parts, manifest, drift, ingest_errors);
        stats.write_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::debug!(epoch, files = stats.files, bytes = stats.bytes, write_ms = stats.write_ms, "committed epoch");
        Ok(stats)
    }

    /// Makes a written epoch current: the manifest (when one was written),
    /// then the live state and both indexes; then tells the observers. The
    /// committer calls it after writing, a follower after reading what
    /// another process wrote.
    pub(super) fn publish(
        &self,
        epoch: u64,
        parts: Vec<(usize, EpochUpdates)>,
        manifest: Option<Manifest>,
        drift: Vec<DriftRow>,
        ingest_errors: Vec<IngestErrorRow>,
    ) {
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
        self.notify(touched.iter().copied().chain(touched_vectors.iter().map(|(id, _)| *id)).collect::<BTreeSet<_>>());
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
        if self.read_only {
            return Err(crate::Error::ReadOnly);
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

    /// Keeps, from the next snapshot on, only the snapshots `retention` names.
    pub fn set_snapshot_retention(&self, retention: super::SnapshotRetention) {
        *self.retention.write() = retention;
    }

    /// Keeps the snapshot `versions` too, from the next snapshot on, whatever
    /// the retention says: the ones the kept dataset versions were taken
    /// from. Replaces the versions held before.
    pub fn hold_snapshots(&self, versions: Vec<u64>) {
        *self.held.write() = versions;
    }

    /// Writes a consolidated snapshot of every table's current state to
    /// `<table>/_snapshots/v<N>/part-0.parquet` (the change-log columns,
    /// `_epoch` = the snapshot's epoch, `_diff` = multiplicity) and records
    /// it in the manifest. Restores start from the latest snapshot.
    pub fn snapshot(&self) -> Result<SnapshotInfo> {
        if self.read_only {
            return Err(crate::Error::ReadOnly);
        }
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
        let held = self.held.read().clone();
        let mut dropped = self.retention.read().dropped(&manifest.snapshots);
        dropped.retain(|v| !held.contains(v));
        manifest.snapshots.retain(|s| !dropped.contains(&s.version));
        manifest.store(&self.dir)?;
        self.state.write().manifest = manifest;
        // Listed nowhere now: their files go (a crash before this leaves unlisted files, nothing worse).
        for version in &dropped {
            for table in TableName::ALL {
                let dir = self.dir.join(snapshot_path(table, *version));
                let dir = dir.parent().expect("a snapshot file is in its version's folder");
                if let Err(e) = std::fs::remove_dir_all(dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(version, error = %e, folder = %dir.display(), "could not remove an old snapshot");
                }
            }
            tracing::info!(version, "removed an old snapshot (storage.keep_snapshots)");
        }
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
}

impl super::SnapshotRetention {
    /// The versions of `snapshots` to drop: past the newest `keep`, not pinned.
    fn dropped(&self, snapshots: &[SnapshotEntry]) -> Vec<u64> {
        if self.keep == 0 {
            return Vec::new();
        }
        let mut versions: Vec<u64> = snapshots.iter().map(|s| s.version).collect();
        versions.sort_unstable_by(|a, b| b.cmp(a));
        versions.into_iter().skip(self.keep).filter(|v| !self.pinned.contains(v)).collect()
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
