//! The SPU side of the Fluvio test server: the partition logs in memory
//! (batches kept with their base offsets), produce, end offsets, stream
//! fetches that push records as they are appended, and consumer offsets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use fluvio_future::net::TcpStream;
use fluvio_future::task::spawn;
use fluvio_protocol::api::ResponseMessage;
use fluvio_protocol::link::ErrorCode;
use fluvio_protocol::record::{Batch, RawRecords, RecordSet, ReplicaKey};
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

use super::{Shutdown, State, api_versions, key, or_shutdown};

/// A stream-fetch response carries at most this many bytes of batches (the
/// client's queue per stream is short, so responses are coalesced).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

impl State {
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
}

/// Serves one SPU connection until it closes or the server stops.
pub(super) async fn serve(stream: TcpStream, state: &Arc<State>, shutdown: &Shutdown) -> anyhow::Result<()> {
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
