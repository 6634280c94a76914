//! Rebuilding the live state from a manifest: the latest snapshot, then
//! every committed epoch after it.

use std::path::Path;

use twinflow_schemas::{ChunkRow, DocumentRow, EmbeddingRow, EpochUpdates, InstructRow, TableName};

use crate::convert::{TableRow, batch_to_updates};
use crate::error::{Error, Result};
use crate::live::{LiveState, Multiset};
use crate::manifest::{EpochEntry, MANIFEST_FILE, Manifest};
use crate::parquet_io::read_parquet;

/// The live state `manifest` describes, read from the files under `data_dir`.
pub(crate) fn restore(data_dir: &Path, manifest: &Manifest) -> Result<LiveState> {
    let mut tables = Tables::default();
    let mut after = 0;
    if let Some(snapshot) = manifest.latest_snapshot() {
        for (table, files) in &snapshot.files {
            load_files(data_dir, manifest.dim, &mut tables, table, files, snapshot.epoch)?;
        }
        after = snapshot.epoch;
    }
    for entry in manifest.epochs.iter().filter(|e| e.epoch > after) {
        for (table, files) in &entry.files {
            load_files(data_dir, manifest.dim, &mut tables, table, files, entry.epoch)?;
        }
    }
    Ok(LiveState::new(tables.documents, tables.chunks, tables.embeddings, tables.instruct))
}

/// The tables as they are read, before the live state indexes them.
#[derive(Default)]
struct Tables {
    documents: Multiset<DocumentRow>,
    chunks: Multiset<ChunkRow>,
    embeddings: Multiset<EmbeddingRow>,
    instruct: Multiset<InstructRow>,
}

fn load_files(data_dir: &Path, dim: usize, live: &mut Tables, table: &str, files: &[String], epoch: u64) -> Result<()> {
    let table: TableName =
        table.parse().map_err(|reason: String| Error::corrupt(data_dir.join(MANIFEST_FILE), reason))?;
    for file in files {
        let path = data_dir.join(file);
        match table {
            TableName::Documents => load::<DocumentRow>(&path, dim, &mut live.documents, epoch)?,
            TableName::Chunks => load::<ChunkRow>(&path, dim, &mut live.chunks, epoch)?,
            TableName::Embeddings => load::<EmbeddingRow>(&path, dim, &mut live.embeddings, epoch)?,
            TableName::Instruct => load::<InstructRow>(&path, dim, &mut live.instruct, epoch)?,
        }
    }
    Ok(())
}

/// The table updates one committed epoch wrote, as the committer had them
/// (what a follower applies to its live state).
pub(crate) fn read_epoch(data_dir: &Path, dim: usize, entry: &EpochEntry) -> Result<EpochUpdates> {
    let mut updates = EpochUpdates::default();
    for (table, files) in &entry.files {
        let table: TableName =
            table.parse().map_err(|reason: String| Error::corrupt(data_dir.join(MANIFEST_FILE), reason))?;
        for file in files {
            let path = data_dir.join(file);
            match table {
                TableName::Documents => updates.documents.extend(read_updates::<DocumentRow>(&path, dim)?),
                TableName::Chunks => updates.chunks.extend(read_updates::<ChunkRow>(&path, dim)?),
                TableName::Embeddings => updates.embeddings.extend(read_updates::<EmbeddingRow>(&path, dim)?),
                TableName::Instruct => updates.instruct.extend(read_updates::<InstructRow>(&path, dim)?),
            }
        }
    }
    Ok(updates)
}

/// Applies the rows of one file to `set`.
fn load<R: TableRow>(path: &Path, dim: usize, set: &mut Multiset<R>, epoch: u64) -> Result<()> {
    for (row, diff) in read_updates::<R>(path, dim)? {
        set.apply(row, diff);
    }
    set.changed_at = epoch;
    Ok(())
}

/// The rows of one change-log file with their multiplicities. Any failure
/// to read it is [`Error::Corrupt`] naming the file.
fn read_updates<R: TableRow>(path: &Path, dim: usize) -> Result<Vec<(R, i64)>> {
    let batches = read_parquet(path).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::corrupt(path, format!("it is listed in {MANIFEST_FILE} but missing"))
        }
        Error::Parquet { source, .. } => Error::corrupt(path, format!("cannot read Parquet ({source})")),
        other => other,
    })?;
    let mut updates = Vec::new();
    for batch in &batches {
        updates.extend(batch_to_updates::<R>(batch, dim).map_err(|e| Error::corrupt(path, e.to_string()))?);
    }
    Ok(updates)
}
