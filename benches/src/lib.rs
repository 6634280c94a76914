//! # twinflow-benches
//!
//! Benchmarks of twinflow and the end-to-end bench runner
//! (`cargo run -p twinflow-benches --bin twinflow-bench -- --help`).
//!
//! ```text
//!  corpus.rs  real documents (State of the Union speeches, crate READMEs,
//!             Rust sources from ~/.cargo/registry) ─▶ DocumentChange
//!  bin/twinflow-bench.rs  engine throughput, incremental cost, freshness → JSON
//!  benches/*.rs           criterion micro-benchmarks (one question per file)
//! ```

pub mod corpus;
