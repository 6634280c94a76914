//! # twinflow-benches
//!
//! Benchmarks of twinflow and the end-to-end bench runner
//! (`cargo run -p twinflow-benches --bin twinflow-bench -- --help`).
//!
//! ```text
//!  corpus.rs  real documents (State of the Union speeches, crate READMEs,
//!             Rust sources from ~/.cargo/registry) ─▶ DocumentChange
//!  embed.rs   MiniLM throughput, twinflow vs sentence-transformers (peers/)
//!  ann.rs     HNSW recall/QPS/memory/deletes, twinflow vs hnswlib (peers/)
//!  shards.rs  the store's live indexes on 1, 2, 4 shards: commit and query
//!             latency side by side, answers compared
//!  serve.rs   /v1/search under concurrent clients, /v1/rag step timings,
//!             local LLM prefill/decode tokens/s
//!  drift.rs   the training loop on every SOTU speech, decade by decade
//!  sources.rs records/s through the NDJSON, git, Fluvio, Kafka and web sources; a restart replays nothing
//!  peers.rs   keeping an index fresh beside Pathway, CocoIndex, LlamaIndex and a
//!             batch Qdrant pipeline (peers/): build, edits, correctness, load, restart
//!  twin.rs    one LoRA fine-tuning run of the twin, base vs twin decode speed
//!  bin/twinflow-bench.rs  engine throughput, incremental cost, freshness,
//!             embedding throughput, the above → JSON
//!  benches/*.rs           criterion micro-benchmarks (one question per file)
//! ```

pub mod ann;
pub mod corpus;
pub mod drift;
pub mod embed;
pub mod peers;
pub mod quantized;
pub mod replicas;
pub mod serve;
pub mod shards;
pub mod sources;
pub mod standing;
pub mod twin;
