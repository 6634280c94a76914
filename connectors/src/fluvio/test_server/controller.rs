//! The controller (SC) side of the Fluvio test server: API versions, and
//! the metadata a client watches or lists (the one SPU, every partition led
//! by it, the topics), all sent at once since topics are fixed at start.

use fluvio_future::net::TcpStream;
use fluvio_protocol::api::ResponseMessage;
use fluvio_sc_schema::objects::{
    ListRequest, ListResponse, Metadata, MetadataUpdate, ObjectApiListRequest, ObjectApiListResponse,
    ObjectApiWatchRequest, ObjectApiWatchResponse, WatchRequest, WatchResponse,
};
use fluvio_sc_schema::partition::{PartitionResolution, PartitionSpec, PartitionStatus};
use fluvio_sc_schema::spu::SpuSpec;
use fluvio_sc_schema::store::KeyFilter;
use fluvio_sc_schema::topic::TopicSpec;
use fluvio_sc_schema::{AdminPublicApiKey, AdminPublicDecodedRequest, AdminSpec, TryEncodableFrom};
use fluvio_socket::FluvioSocket;
use futures_util::StreamExt;

use super::{Shutdown, State, api_versions, key, or_shutdown};

/// The one SPU's id.
const SPU_ID: i32 = 5001;
/// The replica that consumer offsets live on (`fluvio_types::defaults::CONSUMER_REPLICA_KEY`).
const CONSUMER_OFFSETS: &str = "consumer-offset";

impl State {
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

/// Serves one controller connection until it closes or the server stops.
pub(super) async fn serve(stream: TcpStream, state: &State, shutdown: &Shutdown) -> anyhow::Result<()> {
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
