//! Integration tests of twinflow-sinks: one binary, one module per concern.
//!
//! `fixtures` holds the row builders, a five-epoch scenario (inserts,
//! updates, deletes, an empty epoch, re-inserts across two workers) and an
//! oracle that consolidates the same updates independently.

mod ann;
mod cold_read;
mod corrupt;
mod crash;
mod encoders;
mod fixtures;
mod follow;
mod round_trip;
mod snapshot;
mod sql_read_only;
