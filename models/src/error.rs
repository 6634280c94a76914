//! The error type of the crate.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong while fetching, loading or running a model.
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
    /// A model's configuration file is missing a field, malformed, or asks for
    /// something this implementation does not support.
    #[error("model config {}: {reason}", path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The weights file is malformed or does not match the configuration.
    #[error("weights {}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The backend failed while running the model (e.g. reading back a result from a GPU).
    #[error("inference failed: {0}")]
    Inference(String),
    /// A prompt does not fit the model's context.
    #[error("the prompt has {tokens} tokens; the model's context holds {limit}")]
    ContextOverflow {
        /// Tokens of the prompt.
        tokens: usize,
        /// Positions the model can attend to.
        limit: usize,
    },
    /// A downloaded file does not have the published checksum.
    #[error("{} has sha256 {actual}, expected {expected}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The published SHA-256.
        expected: String,
        /// The SHA-256 of the file on disk.
        actual: String,
    },
    /// The model fetch step could not run; `by_hand` says how to do it manually.
    #[error("cannot fetch the model: {reason}\n  to fetch it by hand: {by_hand}")]
    Fetch {
        /// Why it failed (pip missing, no network, an unexpected package layout).
        reason: String,
        /// The commands that do the same by hand.
        by_hand: String,
    },
}

/// The result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}
