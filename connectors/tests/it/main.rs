//! Integration tests of twinflow-connectors: one binary, one module per source.

mod demo;
mod git;
mod ndjson;
mod support;
mod watch;
mod web;
