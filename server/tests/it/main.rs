//! Server tests: the router in process (`oneshot`), a real socket, the
//! `twinflow` binary as a process (watch directory, SIGTERM, restart), and
//! answers from the real SmolLM2 generator (`rag`), and the LLM twin
//! fine-tuned from it (`twin`).

mod auth;
mod binary;
mod crash;
mod dashboard;
mod datasets;
mod disk_full;
mod drift;
mod eval;
mod fixtures;
mod hostile;
mod mcp;
mod memory;
mod metrics;
mod minilm;
mod openapi;
mod pgwire;
mod promotion;
mod rag;
mod readers;
mod replicas;
mod router;
mod scale;
mod search;
mod socket;
mod sources;
mod subscriptions;
mod time_travel;
mod tls;
mod twin;
