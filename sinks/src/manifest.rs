//! `_manifest.json`: the one file that says what is committed.
//!
//! A Parquet file that the manifest does not list does not exist for
//! readers. The manifest is replaced atomically
//! ([`crate::parquet_io::write_file_atomic`]) after the files it lists are
//! durable, so a crash at any point leaves the previous or the next committed
//! state.
//!
//! ```json
//! { "format": 1, "dim": 384, "committed_epoch": 7,
//!   "epochs": [ { "epoch": 3, "committed_at_ms": 1700000000000,
//!                 "files": { "chunks": ["chunks/epoch=3/part-0.parquet"] },
//!                 "rows": { "chunks": 12 } } ],
//!   "snapshots": [ { "version": 1, "epoch": 5, "created_at_ms": 1700000000000,
//!                    "files": { "chunks": ["chunks/_snapshots/v1/part-0.parquet"] },
//!                    "rows": { "chunks": 40 } } ],
//!   "sources": {} }
//! ```

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use twinflow_schemas::TableName;

use crate::error::{Error, Result};
use crate::parquet_io::write_file_atomic;

/// File name of the manifest in the data directory.
pub const MANIFEST_FILE: &str = "_manifest.json";
/// The manifest format this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The committed state of a data directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`].
    pub format: u32,
    /// The embedding dimension of the `embeddings` table.
    pub dim: usize,
    /// The last committed epoch.
    pub committed_epoch: u64,
    /// Committed epochs that wrote files, in increasing epoch order.
    pub epochs: Vec<EpochEntry>,
    /// Consolidated snapshots, in increasing version order.
    #[serde(default)]
    pub snapshots: Vec<SnapshotEntry>,
    /// Source positions committed with the outputs (reserved for the
    /// connectors: name → offset, opaque to this crate).
    #[serde(default)]
    pub sources: BTreeMap<String, serde_json::Value>,
}

/// The files one committed epoch wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochEntry {
    /// The epoch.
    pub epoch: u64,
    /// When it was committed, milliseconds since the Unix epoch.
    pub committed_at_ms: u64,
    /// Table name → part files, relative to the data directory.
    pub files: BTreeMap<String, Vec<String>>,
    /// Table name → updates written.
    pub rows: BTreeMap<String, usize>,
    /// The `drift` rows of the epoch (an append-only log, not a feature
    /// table): `drift/epoch=<E>/part-0.parquet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// The `ingest_errors` rows committed with the epoch:
    /// `ingest_errors/epoch=<E>/part-<n>.parquet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingest_errors: Vec<String>,
    /// `traces` rows written while this was the committed epoch:
    /// `traces/epoch=<E>/part-<n>.parquet`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<String>,
}

impl EpochEntry {
    /// An entry of `epoch` that lists nothing yet.
    pub fn empty(epoch: u64, committed_at_ms: u64) -> Self {
        Self {
            epoch,
            committed_at_ms,
            files: BTreeMap::new(),
            rows: BTreeMap::new(),
            drift: None,
            ingest_errors: Vec::new(),
            traces: Vec::new(),
        }
    }
}

/// One consolidated snapshot of every table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// 1, 2, …
    pub version: u64,
    /// The committed epoch the snapshot reflects.
    pub epoch: u64,
    /// When it was written, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_at_ms: u64,
    /// Table name → snapshot files, relative to the data directory.
    pub files: BTreeMap<String, Vec<String>>,
    /// Table name → live rows (sum of multiplicities).
    pub rows: BTreeMap<String, u64>,
}

impl Manifest {
    /// An empty manifest: nothing committed.
    pub fn new(dim: usize) -> Self {
        Self {
            format: FORMAT_VERSION,
            dim,
            committed_epoch: 0,
            epochs: Vec::new(),
            snapshots: Vec::new(),
            sources: BTreeMap::new(),
        }
    }

    /// Loads `<data_dir>/_manifest.json`; `None` when there is none.
    /// Unparsable or inconsistent manifests are [`Error::Corrupt`].
    pub fn load(data_dir: &Path) -> Result<Option<Manifest>> {
        let path = data_dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, format!("not a valid manifest ({e})")))?;
        manifest.validate().map_err(|reason| Error::corrupt(&path, reason))?;
        Ok(Some(manifest))
    }

    /// Replaces `<data_dir>/_manifest.json` atomically.
    pub fn store(&self, data_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_file_atomic(&data_dir.join(MANIFEST_FILE), &bytes)
    }

    /// The newest snapshot, if any.
    pub fn latest_snapshot(&self) -> Option<&SnapshotEntry> {
        self.snapshots.iter().max_by_key(|s| s.version)
    }

    /// Every change-log file of `table` committed at or before `epoch`, in
    /// epoch order.
    pub fn change_files(&self, table: TableName, epoch: u64) -> Vec<String> {
        self.epochs
            .iter()
            .filter(|e| e.epoch <= epoch)
            .filter_map(|e| e.files.get(table.as_str()))
            .flatten()
            .cloned()
            .collect()
    }

    /// Every drift log file committed at or before `epoch`, in epoch order.
    pub fn drift_files(&self, epoch: u64) -> Vec<String> {
        self.epochs.iter().filter(|e| e.epoch <= epoch).filter_map(|e| e.drift.clone()).collect()
    }

    /// Every `traces` file written at or before `epoch`, in epoch order.
    pub fn trace_files(&self, epoch: u64) -> Vec<String> {
        self.epochs.iter().filter(|e| e.epoch <= epoch).flat_map(|e| e.traces.iter().cloned()).collect()
    }

    /// Every `ingest_errors` file committed at or before `epoch`, in epoch order.
    pub fn ingest_error_files(&self, epoch: u64) -> Vec<String> {
        self.epochs.iter().filter(|e| e.epoch <= epoch).flat_map(|e| e.ingest_errors.iter().cloned()).collect()
    }

    /// Checks what a reader relies on: the format, epoch order, and file
    /// paths that stay inside their table's folder.
    fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT_VERSION {
            return Err(format!("format {} is not supported (expected {FORMAT_VERSION})", self.format));
        }
        let mut last = 0;
        for entry in &self.epochs {
            if entry.epoch <= last || entry.epoch > self.committed_epoch {
                return Err(format!(
                    "epoch {} is out of order or after committed_epoch {}",
                    entry.epoch, self.committed_epoch
                ));
            }
            last = entry.epoch;
            check_files(&entry.files)?;
            let inside = |path: &str, folder: &str| {
                path.starts_with(folder) && Path::new(path).components().all(|c| matches!(c, Component::Normal(_)))
            };
            if let Some(path) = &entry.drift
                && !inside(path, "drift/")
            {
                return Err(format!("file {path:?} is not inside the drift folder"));
            }
            if let Some(path) = entry.ingest_errors.iter().find(|p| !inside(p, "ingest_errors/")) {
                return Err(format!("file {path:?} is not inside the ingest_errors folder"));
            }
            if let Some(path) = entry.traces.iter().find(|p| !inside(p, "traces/")) {
                return Err(format!("file {path:?} is not inside the traces folder"));
            }
        }
        for snapshot in &self.snapshots {
            if snapshot.epoch > self.committed_epoch {
                return Err(format!("snapshot v{} is after committed_epoch", snapshot.version));
            }
            check_files(&snapshot.files)?;
        }
        Ok(())
    }
}

fn check_files(files: &BTreeMap<String, Vec<String>>) -> Result<(), String> {
    for (table, paths) in files {
        table.parse::<TableName>()?;
        for path in paths {
            let p = Path::new(path);
            let inside = p.starts_with(table) && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !inside {
                return Err(format!("file {path:?} is not inside the {table} folder"));
            }
        }
    }
    Ok(())
}

/// [`twinflow_schemas::clock::now_ms`] as the manifest's unsigned `*_at_ms`.
pub(crate) fn now_ms() -> u64 {
    u64::try_from(twinflow_schemas::clock::now_ms()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_bad_manifests() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), None);
        let mut manifest = Manifest::new(8);
        manifest.committed_epoch = 4;
        manifest.epochs.push(EpochEntry {
            epoch: 3,
            committed_at_ms: 1,
            files: BTreeMap::from([("chunks".into(), vec!["chunks/epoch=3/part-0.parquet".into()])]),
            rows: BTreeMap::from([("chunks".into(), 2)]),
            drift: Some("drift/epoch=3/part-0.parquet".into()),
            ingest_errors: Vec::new(),
            traces: Vec::new(),
        });
        manifest.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(manifest.clone()));
        assert_eq!(manifest.change_files(TableName::Chunks, 3).len(), 1);
        assert_eq!(manifest.change_files(TableName::Chunks, 2).len(), 0);

        manifest.epochs[0].files.insert("chunks".into(), vec!["../../etc/passwd".into()]);
        manifest.store(dir.path()).unwrap();
        let err = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("_manifest.json") && err.contains("not inside"), "{err}");
    }
}
