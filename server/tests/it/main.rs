//! Server tests: the router in process (`oneshot`), a real socket, and the
//! `twinflow` binary as a process (watch directory, SIGTERM, restart).

mod binary;
mod fixtures;
mod minilm;
mod readers;
mod router;
mod socket;
