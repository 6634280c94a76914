//! Integration tests of twinflow-connectors: one binary, one module per source.

mod demo;
mod fluvio;
mod git;
mod kafka;
mod ndjson;
mod support;
mod watch;
mod web;
