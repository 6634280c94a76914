//! The Fluvio source: the records of a topic's partitions, each one JSON
//! change (the line format of an NDJSON change log), read with the
//! official `fluvio` client.
//!
//! ```text
//!  open: connect to the controller, look the topic up (unknown topic, bad
//!        partition, unreachable cluster: fatal)
//!  run:  one stream per partition, from the committed offset
//!        (else the beginning or the end) ─▶ merged ─▶ batches of changes
//!        + the position {"topic", "offsets": {partition: next offset}}
//!  a broken stream or a lost cluster: reconnect with backoff, resume from
//!  the offsets already handed over (nothing twice, nothing skipped)
//! ```
//!
//! A record that is not a valid change becomes an ingest error located at
//! `fluvio://<topic>/<partition>@<offset>`; the stream goes on. The
//! position is Fluvio's offsets, not a consumer group's: it is committed in
//! twinflow's manifest with the epoch the changes land in, which is what
//! makes a restart resume exactly where the committed outputs end.
//! [`FluvioPublisher`] is the other direction: it produces records to a
//! topic (the server publishes each committed epoch's table changes).
//!
//! The client runs on `fluvio-future`'s executor; this source drives it
//! from its own thread with `run_block_on`.

#[cfg(feature = "testing")]
pub mod test_server;

use std::pin::pin;
use std::time::Duration;

use ::fluvio::consumer::{ConsumerConfigExt, Record, RetryMode};
use ::fluvio::metadata::topic::TopicSpec;
use ::fluvio::{Fluvio, FluvioClusterConfig, Offset, RecordKey, TopicProducerPool};
use crossbeam_channel::Sender;
use fluvio_future::task::run_block_on;
use futures_util::future::{Either, select};
use futures_util::stream::{BoxStream, StreamExt, select_all};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::{FluvioSourceConfig, StartFrom};

use crate::handle::{Halt, Outbox};
use crate::offsets::{PartitionBatcher, position_offsets, select_partitions};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};

/// How long a partial batch waits for more records before it is sent.
const LINGER: Duration = Duration::from_millis(50);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The source; see the module docs.
#[derive(Debug)]
pub struct FluvioSource;

impl FluvioSource {
    /// Connects, checks the topic and its partitions (fatal errors here),
    /// then reads on a thread from `resume` (the committed position).
    pub fn spawn(
        name: String,
        config: FluvioSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let reader = Reader::open(&name, config, limits, resume)?;
        SourceHandle::spawn(name, tx, move |outbox| reader.run(&outbox))
    }
}

fn fluvio_error(endpoint: &str, error: impl std::fmt::Display, retryable: bool) -> Error {
    Error::Fluvio { endpoint: endpoint.to_owned(), reason: format!("{error:#}"), retryable }
}

async fn connect(endpoint: &str) -> std::result::Result<Fluvio, anyhow::Error> {
    Fluvio::connect_with_config(&FluvioClusterConfig::new(endpoint)).await
}

struct Reader {
    name: String,
    config: FluvioSourceConfig,
    partitions: Vec<u32>,
    /// Changes on their way, and each partition's next offset (kept across reconnections).
    batcher: PartitionBatcher,
}

impl Reader {
    fn open(
        name: &str,
        config: FluvioSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
    ) -> Result<Self> {
        let config_error = |reason: String| Error::Config { source_name: name.to_owned(), reason };
        if config.topic.is_empty() {
            return Err(config_error("no topic given".into()));
        }
        let endpoint = config.endpoint.clone();
        let count = run_block_on(async {
            let fluvio = connect(&endpoint).await.map_err(|e| fluvio_error(&endpoint, e, false))?;
            let topics = fluvio
                .admin()
                .await
                .list::<TopicSpec, String>(vec![config.topic.clone()])
                .await
                .map_err(|e| fluvio_error(&endpoint, e, false))?;
            let topic = topics.into_iter().find(|t| t.name == config.topic);
            Ok::<_, Error>(topic.map(|t| t.spec.partitions()))
        })?;
        let Some(count) = count else {
            return Err(config_error(format!("the cluster at {endpoint} has no topic {:?}", config.topic)));
        };
        let partitions =
            select_partitions(&config.topic, count, &config.partitions, config.share).map_err(config_error)?;
        let next = position_offsets(&config.topic, resume.as_ref());
        let batcher = PartitionBatcher::new("fluvio", name, &config.topic, limits, config.batch, next);
        Ok(Self { name: name.to_owned(), config, partitions, batcher })
    }

    fn run(mut self, outbox: &Outbox) -> Result<(), Halt> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let read_before = self.batcher.next.clone();
            match run_block_on(self.session(outbox)) {
                Err(Halt::Fatal(error)) if error.is_retryable() => {
                    if self.batcher.next != read_before {
                        backoff = Duration::from_millis(100);
                    }
                    tracing::warn!(source = %self.name, %error, retry_in = ?backoff, "fluvio stream lost; reconnecting");
                    outbox.sleep(backoff)?;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                other => return other,
            }
        }
    }

    /// One connection: reads until the stream breaks or the source stops.
    async fn session(&mut self, outbox: &Outbox) -> Result<(), Halt> {
        let endpoint = self.config.endpoint.clone();
        let lost = |e: anyhow::Error| Halt::Fatal(fluvio_error(&endpoint, e, true));
        let fluvio = connect(&endpoint).await.map_err(lost)?;
        let mut streams: Vec<BoxStream<'static, std::result::Result<Record, String>>> = Vec::new();
        for &partition in &self.partitions {
            let start = match (self.batcher.next.get(&partition), self.config.start) {
                (Some(&next), _) => Offset::absolute(next).map_err(|e| lost(e.into()))?,
                (None, StartFrom::Beginning) => Offset::beginning(),
                (None, StartFrom::End) => Offset::end(),
            };
            let config = ConsumerConfigExt::builder()
                .topic(&self.config.topic)
                .partition(partition)
                .offset_start(start)
                .retry_mode(RetryMode::Disabled)
                .build()
                .map_err(lost)?;
            let stream = fluvio.consumer_with_config(config).await.map_err(lost)?;
            streams.push(stream.map(|r| r.map_err(|code| code.to_string())).boxed());
        }
        let mut records = select_all(streams);
        let batcher = &mut self.batcher;
        loop {
            let next = match select(records.next(), pin!(fluvio_future::timer::sleep(LINGER))).await {
                Either::Left((next, _)) => Some(next),
                Either::Right(_) => None,
            };
            match next {
                Some(Some(Ok(record))) => {
                    batcher.record(outbox, record.partition(), record.offset(), record.value())?
                }
                Some(Some(Err(code))) => {
                    batcher.flush(outbox)?;
                    return Err(lost(anyhow::anyhow!("stream error: {code}")));
                }
                Some(None) => {
                    batcher.flush(outbox)?;
                    return Err(lost(anyhow::anyhow!("the stream ended")));
                }
                None => {
                    batcher.flush(outbox)?;
                    if outbox.stopping() {
                        return Err(Halt::Stopped);
                    }
                }
            }
        }
    }
}

/// Produces records to a Fluvio topic: keyed JSON values, in order per key.
pub struct FluvioPublisher {
    endpoint: String,
    topic: String,
    /// How long one [`FluvioPublisher::publish`] may take.
    timeout: Duration,
    producer: TopicProducerPool,
    /// Keeps the connection the producer uses.
    _fluvio: Fluvio,
}

impl std::fmt::Debug for FluvioPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FluvioPublisher").field("endpoint", &self.endpoint).field("topic", &self.topic).finish()
    }
}

impl FluvioPublisher {
    /// Connects and opens a producer for `topic` (which must exist).
    pub fn connect(endpoint: &str, topic: &str) -> Result<Self> {
        run_block_on(async {
            let fluvio = connect(endpoint).await.map_err(|e| fluvio_error(endpoint, e, true))?;
            let producer = fluvio.topic_producer(topic).await.map_err(|e| fluvio_error(endpoint, e, false))?;
            Ok(Self {
                endpoint: endpoint.to_owned(),
                topic: topic.to_owned(),
                timeout: Duration::from_secs(30),
                producer,
                _fluvio: fluvio,
            })
        })
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Sets how long one [`FluvioPublisher::publish`] may take (default 30 s;
    /// the client itself retries for minutes).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `records` (`(key, value)`; records with one key go to one
    /// partition, in order) and waits until the cluster has them all, or
    /// fails after the timeout.
    pub fn publish(&self, records: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<()> {
        let failed = |e: anyhow::Error| fluvio_error(&self.endpoint, e, true);
        let records: Vec<_> = records.into_iter().collect();
        let send = async {
            let mut sent = Vec::new();
            for (key, value) in records {
                sent.push(self.producer.send(RecordKey::from(key), value).await.map_err(failed)?);
            }
            self.producer.flush().await.map_err(failed)?;
            for output in sent {
                output.wait().await.map_err(|e| failed(e.into()))?;
            }
            Ok(())
        };
        run_block_on(async {
            match select(pin!(send), pin!(fluvio_future::timer::sleep(self.timeout))).await {
                Either::Left((result, _)) => result,
                Either::Right(_) => Err(failed(anyhow::anyhow!("not acknowledged within {:?}", self.timeout))),
            }
        })
    }
}
