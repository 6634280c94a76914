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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use event_listener::Event;
use fluvio_future::net::{TcpListener, TcpStream};
use fluvio_future::task::{run_block_on, spawn};
use fluvio_protocol::api::{Request, ResponseMessage};
use fluvio_protocol::link::ErrorCode;
use fluvio_protocol::link::versions::{ApiVersionKey, ApiVersionsResponse, PlatformVersion};
use fluvio_protocol::record::{Batch, RawRecords, RecordSet, ReplicaKey};
use fluvio_sc_schema::objects::{
    ListRequest, ListResponse, Metadata, MetadataUpdate, ObjectApiListRequest, ObjectApiListResponse,
    ObjectApiWatchRequest, ObjectApiWatchResponse, WatchRequest, WatchResponse,
};
use fluvio_sc_schema::partition::{PartitionResolution, PartitionSpec, PartitionStatus};
use fluvio_sc_schema::spu::SpuSpec;
use fluvio_sc_schema::store::KeyFilter;
use fluvio_sc_schema::topic::TopicSpec;
use fluvio_sc_schema::{AdminPublicApiKey, AdminPublicDecodedRequest, AdminSpec, TryEncodableFrom};
use fluvio_socket::{ExclusiveFlvSink, FluvioSocket};
use fluvio_spu_schema::fetch::FetchablePartitionResponse;
use fluvio_spu_schema::produce::{
    DefaultProduceRequest, PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use fluvio_spu_schema::server::consumer_offset::{
    ConsumerOffset, DeleteConsumerOffsetResponse, FetchConsumerOffsetsResponse, UpdateConsumerOffsetResponse,
};
use fluvio_spu_schema::server::fetch_offset::{
    FetchOffsetPartitionResponse, FetchOffsetTopicResponse, FetchOffsetsResponse,
};
use fluvio_spu_schema::server::stream_fetch::DefaultStreamFetchResponse;
use fluvio_spu_schema::server::update_offset::{OffsetUpdateStatus, UpdateOffsetsResponse};
use fluvio_spu_schema::server::{SpuServerApiKey, SpuServerRequest};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use parking_lot::Mutex;

/// The one SPU's id.
const SPU_ID: i32 = 5001;
/// The replica that consumer offsets live on (`fluvio_types::defaults::CONSUMER_REPLICA_KEY`).
const CONSUMER_OFFSETS: &str = "consumer-offset";
/// A stream-fetch response carries at most this many bytes of batches (the
/// client's queue per stream is short, so responses are coalesced).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

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

    /// Appends a batch, giving it its base offset: `Err` for an unknown partition.
    fn append(&self, topic: &str, partition: u32, mut batch: Batch<RawRecords>) -> Result<i64, ErrorCode> {
        let mut logs = self.logs.lock();
        let log = logs.get_mut(&(topic.to_owned(), partition)).ok_or(ErrorCode::PartitionNotLeader)?;
        let base = log.next;
        batch.set_base_offset(base);
        log.next = base + batch.records_len() as i64;
        log.batches.push(batch);
        drop(logs);
        self.appended.notify(usize::MAX);
        Ok(base)
    }

    /// The batches holding offsets at or after `from` (up to about
    /// [`MAX_RESPONSE_BYTES`]), and the log's next offset.
    fn read_from(&self, topic: &str, partition: u32, from: i64) -> Option<(Vec<Batch<RawRecords>>, i64)> {
        let logs = self.logs.lock();
        let log = logs.get(&(topic.to_owned(), partition))?;
        let first = log.batches.partition_point(|b| b.computed_last_offset() <= from);
        let mut bytes = 0;
        let mut out = Vec::new();
        for batch in &log.batches[first..] {
            if !out.is_empty() && bytes + batch.batch_len as usize > MAX_RESPONSE_BYTES {
                break;
            }
            bytes += batch.batch_len as usize;
            out.push(batch.clone());
        }
        Some((out, log.next))
    }

    fn metadata_spus(&self) -> Vec<Metadata<SpuSpec>> {
        let addr = self.spu_addr.lock().unwrap_or_else(|| ([127, 0, 0, 1], 0).into());
        vec![Metadata {
            name: format!("spu-{SPU_ID}"),
            spec: SpuSpec::new_public_addr(SPU_ID, addr.port(), addr.ip().to_string()),
            status: Default::default(),
        }]
    }

    fn metadata_partitions(&self) -> Vec<Metadata<PartitionSpec>> {
        let partition = |name: String| Metadata {
            name,
            spec: PartitionSpec::new(SPU_ID, vec![SPU_ID]),
            status: PartitionStatus { resolution: PartitionResolution::Online, ..Default::default() },
        };
        let mut out = vec![partition(format!("{CONSUMER_OFFSETS}-0"))];
        for (topic, partitions) in &self.topics {
            out.extend((0..*partitions).map(|p| partition(format!("{topic}-{p}"))));
        }
        out
    }

    fn metadata_topics(&self) -> Vec<Metadata<TopicSpec>> {
        self.topics
            .iter()
            .map(|(topic, partitions)| Metadata {
                name: topic.clone(),
                spec: TopicSpec::new_computed(*partitions, 1, None),
                status: Default::default(),
            })
            .collect()
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
                Role::Controller => serve_controller(stream, &state, &shutdown).await,
                Role::Spu => serve_spu(stream, &state, &shutdown).await,
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

async fn serve_controller(stream: TcpStream, state: &State, shutdown: &Shutdown) -> anyhow::Result<()> {
    let (sink, mut stream) = FluvioSocket::from(stream).split();
    let mut sink = sink.as_shared();
    let mut requests = stream.api_stream::<AdminPublicDecodedRequest, AdminPublicApiKey>();
    while let Some(request) = or_shutdown(requests.next(), shutdown).await.flatten() {
        match request? {
            AdminPublicDecodedRequest::ApiVersionsRequest(request) => {
                let body = api_versions(vec![
                    key::<ObjectApiWatchRequest>(AdminPublicApiKey::Watch as i16),
                    key::<ObjectApiListRequest>(AdminPublicApiKey::List as i16),
                ]);
                sink.send_response(&request.new_response(body), request.header.api_version()).await?;
            }
            AdminPublicDecodedRequest::WatchRequest(request) => {
                let (header, watch) = request.get_header_request();
                let version = header.api_version();
                // Everything is sent at once; the stream stays open (but
                // nothing changes: topics are fixed).
                let body = if is_watch::<SpuSpec>(&watch) {
                    encode_all(state.metadata_spus(), version)?
                } else if is_watch::<PartitionSpec>(&watch) {
                    encode_all(state.metadata_partitions(), version)?
                } else if is_watch::<TopicSpec>(&watch) {
                    encode_all(state.metadata_topics(), version)?
                } else {
                    continue;
                };
                sink.send_response(&ResponseMessage::new(header.correlation_id(), body), version).await?;
            }
            AdminPublicDecodedRequest::ListRequest(request) => {
                let (header, list) = request.get_header_request();
                let version = header.api_version();
                // Topics and partitions can be listed (by name); other kinds are not served.
                let body = if let Ok(Some(list)) = list.downcast() as anyhow::Result<Option<ListRequest<TopicSpec>>> {
                    let topics = state.metadata_topics().into_iter().filter(|t| list.name_filters.filter(&t.name));
                    ObjectApiListResponse::try_encode_from(ListResponse::new(topics.collect()), version)?
                } else if let Ok(Some(list)) = list.downcast() as anyhow::Result<Option<ListRequest<PartitionSpec>>> {
                    let partitions =
                        state.metadata_partitions().into_iter().filter(|p| list.name_filters.filter(&p.name));
                    ObjectApiListResponse::try_encode_from(ListResponse::new(partitions.collect()), version)?
                } else {
                    continue;
                };
                sink.send_response(&ResponseMessage::new(header.correlation_id(), body), version).await?;
            }
            other => tracing::debug!(?other, "fluvio test server: controller request not served"),
        }
    }
    Ok(())
}

fn is_watch<S>(watch: &ObjectApiWatchRequest) -> bool
where
    S: AdminSpec + fluvio_protocol::Encoder + fluvio_protocol::Decoder,
    S::Status: fluvio_protocol::Encoder + fluvio_protocol::Decoder,
{
    let typed: anyhow::Result<Option<WatchRequest<S>>> = watch.downcast();
    matches!(typed, Ok(Some(_)))
}

fn encode_all<S>(all: Vec<Metadata<S>>, version: i16) -> anyhow::Result<ObjectApiWatchResponse>
where
    S: AdminSpec + fluvio_protocol::Encoder + fluvio_protocol::Decoder,
    S::Status: fluvio_protocol::Encoder + fluvio_protocol::Decoder,
    ObjectApiWatchResponse: TryEncodableFrom<WatchResponse<S>>,
{
    ObjectApiWatchResponse::try_encode_from(WatchResponse::<S>::new(MetadataUpdate::with_all(1, all)), version)
}

async fn serve_spu(stream: TcpStream, state: &Arc<State>, shutdown: &Shutdown) -> anyhow::Result<()> {
    use fluvio_spu_schema::server::consumer_offset::{
        DeleteConsumerOffsetRequest, FetchConsumerOffsetsRequest, UpdateConsumerOffsetRequest,
    };
    use fluvio_spu_schema::server::fetch_offset::FetchOffsetsRequest;
    use fluvio_spu_schema::server::stream_fetch::DefaultStreamFetchRequest;
    use fluvio_spu_schema::server::update_offset::UpdateOffsetsRequest;

    let (sink, mut stream) = FluvioSocket::from(stream).split();
    let mut sink = sink.as_shared();
    let mut requests = stream.api_stream::<SpuServerRequest, SpuServerApiKey>();
    while let Some(request) = or_shutdown(requests.next(), shutdown).await.flatten() {
        match request? {
            SpuServerRequest::ApiVersionsRequest(request) => {
                let body = api_versions(vec![
                    key::<DefaultProduceRequest>(SpuServerApiKey::Produce as i16),
                    key::<FetchOffsetsRequest>(SpuServerApiKey::FetchOffsets as i16),
                    key::<DefaultStreamFetchRequest>(SpuServerApiKey::StreamFetch as i16),
                    key::<UpdateOffsetsRequest>(SpuServerApiKey::UpdateOffsets as i16),
                    key::<UpdateConsumerOffsetRequest>(SpuServerApiKey::UpdateConsumerOffset as i16),
                    key::<DeleteConsumerOffsetRequest>(SpuServerApiKey::DeleteConsumerOffset as i16),
                    key::<FetchConsumerOffsetsRequest>(SpuServerApiKey::FetchConsumerOffsets as i16),
                ]);
                sink.send_response(&request.new_response(body), request.header.api_version()).await?;
            }
            SpuServerRequest::ProduceRequest(request) => {
                let (header, produce) = request.get_header_request();
                let mut response = ProduceResponse::default();
                for topic in produce.topics {
                    let mut answer = TopicProduceResponse { name: topic.name.clone(), ..Default::default() };
                    // One answer per entry, in order: the client pairs them with its batches.
                    for data in topic.partitions {
                        let mut base = Ok(-1);
                        for batch in data.records.batches {
                            let appended = state.append(&topic.name, data.partition_index, batch);
                            if base == Ok(-1) || appended.is_err() {
                                base = appended;
                            }
                        }
                        let (base_offset, error_code) = match base {
                            Ok(base) => (base, ErrorCode::None),
                            Err(code) => (-1, code),
                        };
                        answer.partitions.push(PartitionProduceResponse {
                            partition_index: data.partition_index,
                            error_code,
                            base_offset,
                            ..Default::default()
                        });
                    }
                    response.responses.push(answer);
                }
                sink.send_response(&ResponseMessage::new(header.correlation_id(), response), header.api_version())
                    .await?;
            }
            SpuServerRequest::FetchOffsetsRequest(request) => {
                let mut response = FetchOffsetsResponse::default();
                for topic in &request.request.topics {
                    let partitions = topic
                        .partitions
                        .iter()
                        .map(|p| {
                            let end = state.logs.lock().get(&(topic.name.clone(), p.partition_index)).map(|l| l.next);
                            FetchOffsetPartitionResponse {
                                error_code: if end.is_some() { ErrorCode::None } else { ErrorCode::PartitionNotLeader },
                                partition_index: p.partition_index,
                                start_offset: 0,
                                last_stable_offset: end.unwrap_or(0),
                            }
                        })
                        .collect();
                    response.topics.push(FetchOffsetTopicResponse { name: topic.name.clone(), partitions });
                }
                sink.send_response(&request.new_response(response), request.header.api_version()).await?;
            }
            SpuServerRequest::FileStreamFetchRequest(request) => {
                let (header, fetch) = request.get_header_request();
                let stream_id = state.next_stream.fetch_add(1, Ordering::Relaxed);
                let replica = ReplicaKey::new(fetch.topic.clone(), fetch.partition);
                state.streams.lock().insert(stream_id, (replica, fetch.consumer_id.clone()));
                let push = StreamPush {
                    state: state.clone(),
                    sink: sink.clone(),
                    topic: fetch.topic,
                    partition: fetch.partition,
                    next: fetch.fetch_offset,
                    stream_id,
                    correlation_id: header.correlation_id(),
                    version: header.api_version(),
                };
                let shutdown = shutdown.clone();
                spawn(async move { push.run(&shutdown).await });
            }
            SpuServerRequest::UpdateOffsetsRequest(request) => {
                let status = request
                    .request
                    .offsets
                    .iter()
                    .map(|o| OffsetUpdateStatus { session_id: o.session_id, error: ErrorCode::None })
                    .collect();
                let body = UpdateOffsetsResponse { status };
                sink.send_response(&request.new_response(body), request.header.api_version()).await?;
            }
            SpuServerRequest::UpdateConsumerOffsetRequest(request) => {
                let update = &request.request;
                let stream = state.streams.lock().get(&update.session_id).cloned();
                let error_code = match stream {
                    Some((replica, Some(consumer))) => {
                        state.consumer_offsets.lock().insert((replica, consumer), update.offset);
                        ErrorCode::None
                    }
                    _ => ErrorCode::Other(format!("no consumer stream {}", update.session_id)),
                };
                let body = UpdateConsumerOffsetResponse { offset: update.offset, error_code };
                sink.send_response(&request.new_response(body), request.header.api_version()).await?;
            }
            SpuServerRequest::FetchConsumerOffsetsRequest(request) => {
                let (header, fetch) = request.get_header_request();
                let (replica_id, consumer_id) =
                    fetch.filter_opts.map_or((None, None), |f| (f.replica_id, f.consumer_id));
                let consumers = state
                    .consumer_offsets
                    .lock()
                    .iter()
                    .filter(|((replica, consumer), _)| {
                        replica_id.as_ref().is_none_or(|r| r == replica)
                            && consumer_id.as_ref().is_none_or(|c| c == consumer)
                    })
                    .map(|((replica, consumer), offset)| ConsumerOffset {
                        consumer_id: consumer.clone(),
                        replica_id: replica.clone(),
                        offset: *offset,
                        modified_time: 0,
                    })
                    .collect();
                let body = FetchConsumerOffsetsResponse { error_code: ErrorCode::None, consumers };
                sink.send_response(&ResponseMessage::new(header.correlation_id(), body), header.api_version()).await?;
            }
            SpuServerRequest::DeleteConsumerOffsetRequest(request) => {
                let delete = &request.request;
                state.consumer_offsets.lock().remove(&(delete.replica_id.clone(), delete.consumer_id.clone()));
                let body = DeleteConsumerOffsetResponse { error_code: ErrorCode::None };
                sink.send_response(&request.new_response(body), request.header.api_version()).await?;
            }
            other => tracing::debug!(?other, "fluvio test server: SPU request not served"),
        }
    }
    Ok(())
}

/// One stream fetch: pushes batches from `next` on as they are appended.
struct StreamPush {
    state: Arc<State>,
    sink: ExclusiveFlvSink,
    topic: String,
    partition: u32,
    next: i64,
    stream_id: u32,
    correlation_id: i32,
    version: i16,
}

impl StreamPush {
    async fn run(mut self, shutdown: &Shutdown) {
        loop {
            // Listen before looking, so an append in between is not missed.
            let appended = self.state.appended.listen();
            let Some((batches, end)) = self.state.read_from(&self.topic, self.partition, self.next) else {
                return;
            };
            if let Some(last) = batches.last() {
                self.next = last.computed_last_offset();
                let body = DefaultStreamFetchResponse {
                    topic: self.topic.clone(),
                    stream_id: self.stream_id,
                    partition: FetchablePartitionResponse {
                        partition_index: self.partition,
                        error_code: ErrorCode::None,
                        high_watermark: end,
                        next_filter_offset: 0,
                        log_start_offset: 0,
                        aborted: None,
                        records: RecordSet { batches },
                    },
                };
                let message = ResponseMessage::new(self.correlation_id, body);
                if self.sink.send_response(&message, self.version).await.is_err() {
                    return;
                }
                continue;
            }
            if or_shutdown(appended, shutdown).await.is_none() {
                self.state.streams.lock().remove(&self.stream_id);
                return;
            }
        }
    }
}
