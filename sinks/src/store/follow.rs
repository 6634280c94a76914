//! Following another process's commits: a read replica opens a primary's
//! data directory ([`Store::open_follower`]) and applies each epoch the
//! primary's manifest adds ([`Store::follow`]) as the committer would have —
//! the same live state, the same BM25 and vector indexes, the same notices —
//! reading the epoch's change-log files, never re-encoding. Commits,
//! snapshots and traces are the primary's: the follower refuses them.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use twinflow_schemas::config::AnnConfig;

use super::Store;
use crate::drift_log::read_drift;
use crate::error::{Error, Result};
use crate::error_log::read_errors;
use crate::manifest::{EpochEntry, MANIFEST_FILE, Manifest};
use crate::restore::read_epoch;
use crate::trace_log::read_traces;

/// What one [`Store::follow`] applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Followed {
    /// The committed epoch before.
    pub from: u64,
    /// The committed epoch now (the manifest's).
    pub to: u64,
    /// Each epoch applied, with when the primary committed it (ms since the Unix epoch).
    pub applied: Vec<(u64, u64)>,
}

/// The manifest file as last read: a follower parses it again only when it changed.
pub(super) type ManifestMark = Option<(SystemTime, u64, u64)>;

impl Store {
    /// Opens another process's data directory to follow it: the state at
    /// its committed epoch, restored as [`Store::open_sharded`] restores it
    /// (the vector graph saved with the latest snapshot, else rebuilt from
    /// the stored embeddings), then [`Store::follow`] applies what the
    /// primary commits. Nothing is written to the directory.
    pub fn open_follower(data_dir: &Path, dim: usize, ann: &AnnConfig, shards: usize) -> Result<Store> {
        if !data_dir.is_dir() {
            return Err(Error::io(
                data_dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no data directory to follow here"),
            ));
        }
        let mut store = Self::open_sharded(data_dir, dim, ann, shards)?;
        store.read_only = true;
        store.following = true;
        *store.mark.get_mut() = manifest_mark(&store.dir);
        Ok(store)
    }

    /// True for a store opened with [`Store::open_follower`].
    pub fn is_follower(&self) -> bool {
        self.following
    }

    /// Reads the primary's manifest (when the file changed since the last
    /// call) and applies every epoch committed after this store's, one at a
    /// time, so readers see each epoch whole; then the epochs that wrote
    /// nothing, and the traces and ingest errors written late into epochs
    /// already applied. A manifest that went back (a primary restored from
    /// an older copy) is [`Error::Corrupt`]: the follower must be restarted.
    pub fn follow(&self) -> Result<Followed> {
        if !self.following {
            return Err(Error::ReadOnly);
        }
        let _writer = self.writer.lock();
        let from = self.committed_epoch();
        let nothing = Followed { from, to: from, applied: Vec::new() };
        let mark = manifest_mark(&self.dir);
        if mark.is_some() && mark == *self.mark.lock() {
            return Ok(nothing);
        }
        let Some(manifest) = Manifest::load(&self.dir)? else { return Ok(nothing) };
        if manifest.dim != self.dim {
            return Err(Error::DimensionMismatch {
                path: self.dir.join(MANIFEST_FILE),
                stored: manifest.dim,
                configured: self.dim,
            });
        }
        if manifest.committed_epoch < from {
            return Err(Error::corrupt(
                self.dir.join(MANIFEST_FILE),
                format!(
                    "the followed manifest went back from epoch {from} to {}: restart the follower",
                    manifest.committed_epoch
                ),
            ));
        }
        let current = self.state.read().manifest.clone();
        self.follow_late_logs(&current, &manifest, from)?;
        let mut applied = Vec::new();
        for entry in manifest.epochs.iter().filter(|e| e.epoch > from) {
            let updates = read_epoch(&self.dir, self.dim, entry)?;
            let drift = match &entry.drift {
                Some(file) => read_drift(&self.dir.join(file))?,
                None => Vec::new(),
            };
            let mut ingest_errors = Vec::new();
            for file in &entry.ingest_errors {
                ingest_errors.extend(read_errors(&self.dir.join(file))?);
            }
            let mut traces = Vec::new();
            for file in &entry.traces {
                traces.extend(read_traces(&self.dir.join(file))?);
            }
            let mut at = manifest.clone();
            at.epochs.retain(|e| e.epoch <= entry.epoch);
            at.snapshots.retain(|s| s.epoch <= entry.epoch);
            at.committed_epoch = entry.epoch;
            self.publish(entry.epoch, vec![(0, updates)], Some(at), drift, ingest_errors);
            self.state.write().traces.extend(traces);
            applied.push((entry.epoch, entry.committed_at_ms));
        }
        let to = manifest.committed_epoch;
        {
            let mut state = self.state.write();
            state.committed = state.committed.max(to);
            state.manifest = manifest;
        }
        *self.mark.lock() = mark;
        Ok(Followed { from, to: self.committed_epoch(), applied })
    }

    /// Traces and ingest errors the primary wrote after epochs this store
    /// had applied ([`Store::commit_late`] adds them to the committed epoch's entry).
    fn follow_late_logs(&self, current: &Manifest, manifest: &Manifest, from: u64) -> Result<()> {
        let known: BTreeMap<u64, &EpochEntry> = current.epochs.iter().map(|e| (e.epoch, e)).collect();
        let (mut traces, mut ingest_errors) = (Vec::new(), Vec::new());
        for entry in manifest.epochs.iter().filter(|e| e.epoch <= from) {
            let (traces_seen, errors_seen) =
                known.get(&entry.epoch).map_or((0, 0), |e| (e.traces.len(), e.ingest_errors.len()));
            for file in entry.traces.iter().skip(traces_seen) {
                traces.extend(read_traces(&self.dir.join(file))?);
            }
            for file in entry.ingest_errors.iter().skip(errors_seen) {
                ingest_errors.extend(read_errors(&self.dir.join(file))?);
            }
        }
        if !traces.is_empty() || !ingest_errors.is_empty() {
            let mut state = self.state.write();
            state.traces.extend(traces);
            state.ingest_errors.extend(ingest_errors);
        }
        Ok(())
    }
}

/// When the manifest file was last replaced, its length and its inode
/// (each replacement is a new file: coarse timestamps cannot hide one);
/// `None`: absent.
fn manifest_mark(dir: &Path) -> ManifestMark {
    let meta = std::fs::metadata(dir.join(MANIFEST_FILE)).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}
