//! Integration tests of twinflow-connectors: one binary, one module per source.

mod demo;
mod feed;
#[cfg(feature = "fluvio")]
mod fluvio;
mod formats;
#[cfg(feature = "git")]
mod git;
#[cfg(feature = "kafka")]
mod kafka;
mod ndjson;
#[cfg(feature = "postgres")]
mod postgres;
mod support;
mod watch;
mod web;
