//! Files on disk: Parquet part files, written atomically, and read back.
//!
//! Every file is written under a hidden temporary name in its final
//! directory (`.part-0.parquet.tmp`), fsynced, renamed into place and the
//! directory fsynced ([`twinflow_schemas::fs::write_atomic`]), so a crash
//! leaves either the old file, the new file, or a stray temporary, never a
//! torn file under the real name. A part file is
//! still invisible to readers until the manifest lists it
//! ([`crate::Store::commit`] replaces the manifest after writing parts).
//!
//! Layout (relative to the data directory):
//! `<table>/epoch=<E>/part-<worker>.parquet` for change logs and
//! `<table>/_snapshots/v<N>/part-0.parquet` for snapshots.

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use twinflow_schemas::{ChunkRow, DocumentRow, EmbeddingRow, EpochUpdates, InstructRow, TableName};

use crate::convert::{TableRow, updates_to_batch};
use crate::error::{Error, Result};

/// One Parquet file written for a commit or snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenPart {
    /// The table the file belongs to.
    pub table: TableName,
    /// The file, relative to the data directory (`chunks/epoch=3/part-0.parquet`).
    pub path: String,
    /// Rows in the file.
    pub rows: usize,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// `<table>/epoch=<epoch>/part-<worker>.parquet`.
pub fn part_path(table: TableName, epoch: u64, worker: usize) -> String {
    format!("{table}/epoch={epoch}/part-{worker}.parquet")
}

/// `<table>/_snapshots/v<version>/part-0.parquet`.
pub fn snapshot_path(table: TableName, version: u64) -> String {
    format!("{table}/_snapshots/v{version}/part-0.parquet")
}

/// Writes one worker's updates of one table in `epoch` to
/// [`part_path`]; `None` (and no file) when that table has no updates.
/// Used by [`crate::Store::commit`]; a part file is not committed
/// until the manifest lists it.
pub fn write_part(
    data_dir: &Path,
    dim: usize,
    epoch: u64,
    worker: usize,
    table: TableName,
    updates: &EpochUpdates,
) -> Result<Option<WrittenPart>> {
    fn write<R: TableRow>(
        data_dir: &Path,
        dim: usize,
        epoch: u64,
        worker: usize,
        updates: &EpochUpdates,
    ) -> Result<Option<WrittenPart>> {
        let updates = R::updates(updates);
        if updates.is_empty() {
            return Ok(None);
        }
        let batch = updates_to_batch(updates, epoch, dim)?;
        let path = part_path(R::TABLE, epoch, worker);
        let bytes = write_parquet(&data_dir.join(&path), &batch)?;
        Ok(Some(WrittenPart { table: R::TABLE, path, rows: updates.len(), bytes }))
    }
    match table {
        TableName::Documents => write::<DocumentRow>(data_dir, dim, epoch, worker, updates),
        TableName::Chunks => write::<ChunkRow>(data_dir, dim, epoch, worker, updates),
        TableName::Embeddings => write::<EmbeddingRow>(data_dir, dim, epoch, worker, updates),
        TableName::Instruct => write::<InstructRow>(data_dir, dim, epoch, worker, updates),
    }
}

/// Writes every worker's non-empty table updates of `epoch` (all of
/// [`write_part`] for each part and table), in table order.
pub fn write_epoch(
    data_dir: &Path,
    dim: usize,
    epoch: u64,
    parts: &[(usize, EpochUpdates)],
) -> Result<Vec<WrittenPart>> {
    let mut written = Vec::new();
    for table in TableName::ALL {
        for (worker, updates) in parts {
            written.extend(write_part(data_dir, dim, epoch, *worker, table, updates)?);
        }
    }
    Ok(written)
}

/// Encodes `batch` as one Snappy-compressed Parquet file (standard
/// encodings, Arrow schema embedded) and writes it atomically to `path`,
/// creating its directory. Returns the file size.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<u64> {
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let parquet_err = |source| Error::Parquet { path: path.to_owned(), source };
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props)).map_err(parquet_err)?;
    writer.write(batch).map_err(parquet_err)?;
    writer.close().map_err(parquet_err)?;
    write_file_atomic(path, &buffer)?;
    Ok(buffer.len() as u64)
}

/// Reads every batch of the Parquet file at `path`.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let parquet_err = |source| Error::Parquet { path: path.to_owned(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?.build().map_err(parquet_err)?;
    reader.map(|batch| batch.map_err(|e| Error::Parquet { path: path.to_owned(), source: e.into() })).collect()
}

/// Writes `bytes` to `path` atomically ([`twinflow_schemas::fs::write_atomic`]:
/// a hidden temporary beside it, fsync, rename, fsync of the directory).
/// Creates the directory.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    twinflow_schemas::fs::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::Hash128;

    #[test]
    fn parts_are_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let row = ChunkRow {
            chunk_id: Hash128::of(b"t"),
            doc_id: "d".into(),
            ordinal: 0,
            text: "t".into(),
            char_start: 0,
            char_end: 1,
            token_estimate: 1,
            pages: Some((2, 3)),
        };
        let updates = EpochUpdates { chunks: vec![(row.clone(), 1), (row, -1)], ..Default::default() };
        let written = write_epoch(dir.path(), 4, 9, &[(2, updates), (0, EpochUpdates::default())]).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].path, "chunks/epoch=9/part-2.parquet");
        assert_eq!(written[0].rows, 2);
        let file = dir.path().join(&written[0].path);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), written[0].bytes);
        let names: Vec<_> =
            std::fs::read_dir(file.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["part-2.parquet"], "no temporary left behind");
        let batches = read_parquet(&file).unwrap();
        assert_eq!(batches[0].schema(), TableName::Chunks.change_schema(4));
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    }
}
