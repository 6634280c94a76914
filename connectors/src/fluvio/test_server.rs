//! **A test server, not Fluvio.** An in-memory stand-in for a Fluvio
//! cluster that speaks Fluvio's wire protocol well enough for the official
//! `fluvio` client to connect, produce and consume. A real cluster cannot
//! be installed on our build machines (its server binaries are on no
//! registry they reach), so the Fluvio source is tested against this.
//! Behind the crate's `testing` feature.
//!
//! It is written on the published protocol crates (`fluvio-protocol`,
//! `fluvio-sc-schema`, `fluvio-spu-schema`, `fluvio-socket`), at the same
//! version as the client, and plays two roles on two loopback ports:
//!
//! ```text
//!  client ──ApiVersions, Watch(SPU|Partition|Topic)──▶ SC   (metadata: one SPU leads every partition)
//!  client ──ApiVersions, Produce, FetchOffsets,──────▶ SPU  (partition logs in memory:
//!           StreamFetch (pushed as records arrive),          batches kept with their base offsets)
//!           UpdateOffsets, consumer offsets
//! ```
//!
//! Not covered: topic administration (topics are fixed at start),
//! replication, SmartModules, compression, retention. [`FluvioTestServer::stop`]
//! closes every connection (clients see the cluster go away), and
//! [`FluvioTestServer::restart`] brings it back on the same ports with the
//! same logs, which is how reconnection is tested.
//!
//! This file is the server itself (start, stop, restart, what the logs
//! hold) and the state both roles share; `test_server/controller.rs` serves
//! the controller's metadata, `test_server/spu.rs` the partition logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use event_listener::Event;
use fluvio_future::net::TcpListener;
use fluvio_future::task::{run_block_on, spawn};
use fluvio_protocol::api::Request;
use fluvio_protocol::link::ErrorCode;
use fluvio_protocol::link::versions::{ApiVersionKey, ApiVersionsResponse, PlatformVersion};
use fluvio_protocol::record::{Batch, RawRecords, ReplicaKey};
use futures_util::future::{Either, select};
use parking_lot::Mutex;

mod controller;
mod spu;

/// See the module docs. Stops when dropped.
#[derive(Debug)]
pub struct FluvioTestServer {
    sc: SocketAddr,
    spu: SocketAddr,
    state: Arc<State>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    /// Closed to stop every task of this run.
    shutdown: async_channel::Sender<()>,
}

impl FluvioTestServer {
    /// Starts a server on two free loopback ports with the given topics
    /// (`(name, partitions)`), all empty.
    pub fn start(topics: &[(&str, u32)]) -> std::io::Result<Self> {
        let state = Arc::new(State::new(topics));
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut server = Self { sc: any, spu: any, state, running: None };
        server.listen(any, any)?;
        Ok(server)
    }

    /// The controller's address: what a client connects to (`host:port`).
    pub fn endpoint(&self) -> String {
        self.sc.to_string()
    }

    /// Closes the listeners and every open connection; the logs stay.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.close();
        }
    }

    /// Stops, then listens again on the same two ports with the same logs.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let (sc, spu) = (self.sc, self.spu);
        // A closed listener's port can take a moment to be free again.
        let mut tries = 0;
        loop {
            match self.listen(sc, spu) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// The records of a partition: `(offset, key, value)`, in order.
    pub fn records(&self, topic: &str, partition: u32) -> Vec<(i64, Option<Vec<u8>>, Vec<u8>)> {
        let logs = self.state.logs.lock();
        let Some(log) = logs.get(&(topic.to_owned(), partition)) else { return Vec::new() };
        let mut out = Vec::new();
        for batch in &log.batches {
            let base = batch.get_base_offset();
            let Ok(memory) = batch.memory_records() else { continue };
            for (i, record) in memory.iter().enumerate() {
                let key = record.key().map(|k| k.as_ref().to_vec());
                out.push((base + i as i64, key, record.value().as_ref().to_vec()));
            }
        }
        out
    }

    /// The next offset of a partition (its number of records).
    pub fn end_offset(&self, topic: &str, partition: u32) -> i64 {
        self.state.logs.lock().get(&(topic.to_owned(), partition)).map_or(0, |log| log.next)
    }

    /// Connections accepted so far (controller and SPU together).
    pub fn connections(&self) -> u32 {
        self.state.connections.load(Ordering::Relaxed)
    }

    fn listen(&mut self, sc: SocketAddr, spu: SocketAddr) -> std::io::Result<()> {
        let (sc_listener, spu_listener) = run_block_on(async {
            let sc_listener = TcpListener::bind(sc).await?;
            let spu_listener = TcpListener::bind(spu).await?;
            std::io::Result::Ok((sc_listener, spu_listener))
        })?;
        self.sc = sc_listener.local_addr()?;
        self.spu = spu_listener.local_addr()?;
        self.state.spu_addr.lock().replace(self.spu);
        let (shutdown, stopped) = async_channel::bounded::<()>(1);
        spawn(accept(sc_listener, self.state.clone(), stopped.clone(), Role::Controller));
        spawn(accept(spu_listener, self.state.clone(), stopped, Role::Spu));
        self.running = Some(Running { shutdown });
        Ok(())
    }
}

impl Drop for FluvioTestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Clone, Copy, Debug)]
enum Role {
    Controller,
    Spu,
}

/// Everything the server knows; it outlives restarts.
#[derive(Debug)]
struct State {
    /// Topic name → partitions.
    topics: Vec<(String, u32)>,
    logs: Mutex<HashMap<(String, u32), Log>>,
    /// Notified whenever records are appended.
    appended: Event,
    spu_addr: Mutex<Option<SocketAddr>>,
    next_stream: AtomicU32,
    /// Stream id → (replica, consumer id) of each open stream fetch.
    streams: Mutex<HashMap<u32, (ReplicaKey, Option<String>)>>,
    /// (replica, consumer id) → last consumed offset.
    consumer_offsets: Mutex<HashMap<(ReplicaKey, String), i64>>,
    connections: AtomicU32,
}

#[derive(Debug, Default)]
struct Log {
    batches: Vec<Batch<RawRecords>>,
    /// The offset the next record gets.
    next: i64,
}

impl State {
    fn new(topics: &[(&str, u32)]) -> Self {
        let mut logs = HashMap::new();
        for (topic, partitions) in topics {
            for partition in 0..*partitions {
                logs.insert(((*topic).to_owned(), partition), Log::default());
            }
        }
        Self {
            topics: topics.iter().map(|(t, p)| ((*t).to_owned(), *p)).collect(),
            logs: Mutex::new(logs),
            appended: Event::new(),
            spu_addr: Mutex::new(None),
            next_stream: AtomicU32::new(1),
            streams: Mutex::new(HashMap::new()),
            consumer_offsets: Mutex::new(HashMap::new()),
            connections: AtomicU32::new(0),
        }
    }
}

type Shutdown = async_channel::Receiver<()>;

/// Runs `work` until it ends or the server shuts down.
async fn or_shutdown<T>(work: impl Future<Output = T>, shutdown: &Shutdown) -> Option<T> {
    match select(pin!(work), pin!(shutdown.recv())).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

async fn accept(listener: TcpListener, state: Arc<State>, shutdown: Shutdown, role: Role) {
    while let Some(Ok((stream, _))) = or_shutdown(listener.accept(), &shutdown).await {
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (state, shutdown) = (state.clone(), shutdown.clone());
        spawn(async move {
            let result = match role {
                Role::Controller => controller::serve(stream, &state, &shutdown).await,
                Role::Spu => spu::serve(stream, &state, &shutdown).await,
            };
            if let Err(error) = result {
                tracing::debug!(?role, %error, "fluvio test server: connection ended");
            }
        });
    }
}

fn api_versions(keys: Vec<ApiVersionKey>) -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: ErrorCode::None,
        api_keys: keys,
        platform_version: PlatformVersion::from(semver::Version::new(0, 18, 0)),
    }
}

fn key<R: Request>(api_key: impl Into<i16>) -> ApiVersionKey {
    ApiVersionKey { api_key: api_key.into(), min_version: R::MIN_API_VERSION, max_version: R::MAX_API_VERSION }
}
