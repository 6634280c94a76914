//! The one error type of the sinks crate.

use std::path::PathBuf;

use arrow::error::ArrowError;
use parquet::errors::ParquetError;
use twinflow_schemas::api::ErrorCode;

/// What the operator should do when a stored file cannot be read.
const CORRUPT_HINT: &str = "restore this file (or the whole data directory) from a backup, \
     or move the data directory aside to start empty and re-ingest the sources";

/// Everything that can go wrong while storing, restoring or querying tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or directory failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding or decoding a Parquet file failed.
    #[error("Parquet file {}: {source}", path.display())]
    Parquet {
        /// The Parquet file.
        path: PathBuf,
        /// The Parquet library's error.
        #[source]
        source: ParquetError,
    },
    /// A stored file (the manifest or a Parquet file it lists) is damaged or missing.
    #[error("{} is corrupt: {reason}; {CORRUPT_HINT}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The data directory was written with another embedding dimension.
    #[error(
        "{} was written with embedding dimension {stored}, but the store was opened with {configured}; \
         use the embedder the data was written with, or another data directory",
        path.display()
    )]
    DimensionMismatch {
        /// The manifest.
        path: PathBuf,
        /// The dimension in the manifest.
        stored: usize,
        /// The dimension the caller asked for.
        configured: usize,
    },
    /// A row cannot be stored as given (a vector of the wrong length) or
    /// read back (a bad hash, kind or split).
    #[error("invalid {table} row: {reason}")]
    InvalidRow {
        /// The table.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The SQL statement would change something (DDL, DML, COPY, SET…).
    #[error("{0}")]
    SqlNotReadOnly(String),
    /// The SQL statement failed to parse, plan or run.
    #[error("SQL error: {0}")]
    Sql(String),
    /// The SQL statement needed more than its limits (memory pool, answer rows or bytes).
    #[error("{0}")]
    SqlLimit(String),
    /// Building or encoding Arrow data failed.
    #[error("Arrow error: {0}")]
    Arrow(#[from] ArrowError),
    /// Encoding JSON failed.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The full-text (BM25) index failed.
    #[error("full-text index: {0}")]
    TextIndex(String),
    /// The approximate vector index failed.
    #[error("vector index: {0}")]
    VectorIndex(String),
    /// An `as_of` epoch outside the time-travel window.
    #[error(
        "epoch {epoch} is outside the time-travel window: the oldest available epoch is {oldest}, the newest {newest}"
    )]
    EpochUnavailable { epoch: u64, oldest: u64, newest: u64 },
    /// The object store failed (unreachable, refused, or a listed object missing).
    #[error("object store {url}: {reason}")]
    Remote { url: String, reason: String },
    /// A write to a store opened at a past epoch, or to a follower's.
    #[error("this store is read-only (a past epoch's, or a follower's)")]
    ReadOnly,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The stable API error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::SqlNotReadOnly(_) => ErrorCode::SqlNotReadOnly,
            Self::Sql(_) => ErrorCode::SqlError,
            Self::SqlLimit(_) => ErrorCode::ResourceLimit,
            Self::EpochUnavailable { .. } => ErrorCode::EpochUnavailable,
            _ => ErrorCode::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt { path: path.into(), reason: reason.into() }
    }
}
