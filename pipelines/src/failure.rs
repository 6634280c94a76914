//! What failed, and why: the step a pipeline was taking (`cannot open the
//! model registry …`) over the error of the library it called. Each
//! pipeline's error type holds a [`Failure`] for the failures that are not
//! one of its own named cases; [`Context`] attaches the step.

use std::error::Error as StdError;

/// A failed step of a pipeline and the error that caused it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Failure {
    /// The step, for people (`cannot fetch the SmolLM2 weights`).
    pub what: String,
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

/// Names the step a fallible call was part of.
pub(crate) trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T, Failure>;
    fn with_context<W: Into<String>>(self, what: impl FnOnce() -> W) -> Result<T, Failure>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T, Failure> {
        self.map_err(|e| Failure { what: what.into(), source: Box::new(e) })
    }

    fn with_context<W: Into<String>>(self, what: impl FnOnce() -> W) -> Result<T, Failure> {
        self.map_err(|e| Failure { what: what().into(), source: Box::new(e) })
    }
}

/// An error and every cause below it, `: `-separated (what logs and statuses show).
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        // `Failure` and `#[error(transparent)]` already print their source.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    message
}
