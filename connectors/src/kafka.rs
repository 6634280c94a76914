//! The Kafka source: the records of a topic's partitions, each one JSON
//! change, read with librdkafka (`rdkafka`).
//!
//! ```text
//!  open: metadata of the topic (unknown topic, bad partition, no broker
//!        answering: fatal); start offset per partition =
//!        twinflow's committed position ▸ else the group's committed offset
//!        ▸ else the beginning or the end
//!  run:  poll ─▶ batches of changes + the position {"topic", "offsets": {partition: next offset}}
//!  an epoch commits the position ─▶ the same offsets committed to the consumer group
//! ```
//!
//! Partitions are assigned by twinflow (`partitions`, else all), not by the
//! group's rebalancing: the group is where the offsets are published for
//! the tools people already have (lag monitors, `kafka-consumer-groups`),
//! while twinflow's manifest is what a restart resumes from. librdkafka
//! reconnects on its own; a broker that goes away only pauses the source.
//! A record that is not a valid change becomes an ingest error located at
//! `kafka://<topic>/<partition>@<offset>`.

#[cfg(feature = "testing")]
pub mod local_broker;

use std::collections::BTreeMap;
use std::time::Duration;

use crossbeam_channel::Sender;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use twinflow_schemas::ChangeLimits;
use twinflow_schemas::config::{KafkaSourceConfig, StartFrom};

use crate::handle::{Halt, Outbox};
use crate::offsets::{PartitionBatcher, position_offsets, select_partitions};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};

/// How long a poll waits for a record (and a partial batch for more).
const LINGER: Duration = Duration::from_millis(50);
/// How often librdkafka gives its statistics (the partitions' ends), and
/// the lag is measured from them.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long opening waits for the brokers to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The source; see the module docs.
#[derive(Debug)]
pub struct KafkaSource;

impl KafkaSource {
    /// Connects, checks the topic, finds each partition's start offset
    /// (fatal errors here), then reads on a thread.
    pub fn spawn(
        name: String,
        config: KafkaSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let reader = Reader::open(&name, config, limits, resume)?;
        SourceHandle::spawn(name, tx, move |outbox| reader.run(&outbox))
    }
}

/// The partitions' high watermarks, from librdkafka's statistics (taken
/// while polling: no request of their own).
#[derive(Default)]
struct Watermarks(parking_lot::Mutex<BTreeMap<u32, i64>>);

impl ClientContext for Watermarks {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ends = self.0.lock();
        for topic in statistics.topics.values() {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.hi_offset >= 0 {
                    ends.insert(*partition as u32, stats.hi_offset);
                }
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Watermarks {}

fn kafka_error(brokers: &str, error: impl std::fmt::Display, retryable: bool) -> Error {
    Error::Kafka { brokers: brokers.to_owned(), reason: error.to_string(), retryable }
}

struct Reader {
    name: String,
    config: KafkaSourceConfig,
    consumer: BaseConsumer<Watermarks>,
    /// Changes on their way, and each partition's next offset.
    batcher: PartitionBatcher,
    /// The partitions read, and when their lag was last measured.
    partitions: Vec<u32>,
    lag_measured: Option<std::time::Instant>,
}

impl Reader {
    fn open(
        name: &str,
        config: KafkaSourceConfig,
        limits: ChangeLimits,
        resume: Option<SourcePosition>,
    ) -> Result<Self> {
        let config_error = |reason: String| Error::Config { source_name: name.to_owned(), reason };
        if config.topic.is_empty() {
            return Err(config_error("no topic given".into()));
        }
        let brokers = config.brokers.clone();
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("client.id", format!("twinflow-{name}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", if config.start == StartFrom::End { "latest" } else { "earliest" });
        for (key, value) in &config.options {
            client.set(key, value);
        }
        client.set("statistics.interval.ms", LAG_EVERY.as_millis().to_string());
        let consumer: BaseConsumer<Watermarks> =
            client.create_with_context(Watermarks::default()).map_err(|e| config_error(e.to_string()))?;

        let metadata =
            consumer.fetch_metadata(Some(&config.topic), OPEN_TIMEOUT).map_err(|e| kafka_error(&brokers, e, false))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len() as u32);
        if count == 0 {
            return Err(config_error(format!("the brokers at {brokers} have no topic {:?}", config.topic)));
        }
        let partitions =
            select_partitions(&config.topic, count, &config.partitions, config.share).map_err(config_error)?;

        // Start offsets: twinflow's committed position, else the group's, else `start`.
        let ours = position_offsets(&config.topic, resume.as_ref());
        let mut wanted = TopicPartitionList::new();
        for p in &partitions {
            wanted.add_partition(&config.topic, *p as i32);
        }
        let groups = consumer.committed_offsets(wanted, OPEN_TIMEOUT).map_err(|e| kafka_error(&brokers, e, false))?;
        let mut assignment = TopicPartitionList::new();
        let mut next = BTreeMap::new();
        for p in partitions.iter().copied() {
            let group = groups.find_partition(&config.topic, p as i32).map(|e| e.offset());
            let offset = match (ours.get(&p), group) {
                (Some(&n), _) => Offset::Offset(n),
                (None, Some(Offset::Offset(n))) => Offset::Offset(n),
                (None, _) if config.start == StartFrom::End => Offset::End,
                (None, _) => Offset::Beginning,
            };
            if let Offset::Offset(n) = offset {
                next.insert(p, n);
            }
            assignment
                .add_partition_offset(&config.topic, p as i32, offset)
                .map_err(|e| kafka_error(&brokers, e, false))?;
        }
        consumer.assign(&assignment).map_err(|e| kafka_error(&brokers, e, false))?;
        let batcher = PartitionBatcher::new("kafka", name, &config.topic, limits, config.batch, next);
        Ok(Self { name: name.to_owned(), config, consumer, batcher, partitions, lag_measured: None })
    }

    /// Records behind the partitions' ends: the high watermarks of the
    /// last statistics librdkafka gave, less the next offsets handed over.
    fn measure_lag(&mut self, outbox: &Outbox) {
        let ends = self.consumer.context().0.lock().clone();
        let mut behind = 0u64;
        for p in &self.partitions {
            let Some(&high) = ends.get(p) else { return };
            let next = match self.batcher.next.get(p) {
                Some(next) => *next,
                None if self.config.start == StartFrom::End => high,
                None => 0,
            };
            behind += (high - next).max(0) as u64;
        }
        self.lag_measured = Some(std::time::Instant::now());
        outbox.report_lag(behind, twinflow_schemas::api::LagUnit::Records);
    }

    fn run(mut self, outbox: &Outbox) -> Result<(), Halt> {
        loop {
            if let Some(committed) = outbox.committed() {
                self.commit_to_group(&committed, CommitMode::Async);
            }
            if self.lag_measured.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
                self.measure_lag(outbox);
            }
            match self.consumer.poll(LINGER) {
                Some(Ok(message)) => {
                    let (partition, offset) = (message.partition() as u32, message.offset());
                    self.batcher.record(outbox, partition, offset, message.payload().unwrap_or_default())?;
                }
                Some(Err(error)) => {
                    self.batcher.flush(outbox)?;
                    if is_fatal(&error) {
                        return Err(Halt::Fatal(kafka_error(&self.config.brokers, error, false)));
                    }
                    tracing::warn!(source = %self.name, %error, "kafka: transient error; librdkafka retries");
                }
                None => {
                    self.batcher.flush(outbox)?;
                    if outbox.stopping() {
                        // The last one waits: the consumer closes next.
                        if let Some(committed) = outbox.committed() {
                            self.commit_to_group(&committed, CommitMode::Sync);
                        }
                        return Err(Halt::Stopped);
                    }
                }
            }
        }
    }

    /// Commits a position twinflow has committed to the consumer group too.
    fn commit_to_group(&self, position: &SourcePosition, mode: CommitMode) {
        let offsets = position_offsets(&self.config.topic, Some(position));
        let mut list = TopicPartitionList::new();
        for (p, offset) in &offsets {
            if list.add_partition_offset(&self.config.topic, *p as i32, Offset::Offset(*offset)).is_err() {
                return;
            }
        }
        if list.count() > 0
            && let Err(error) = self.consumer.commit(&list, mode)
        {
            tracing::warn!(source = %self.name, %error, "could not commit offsets to the consumer group");
        }
    }
}

/// Errors after which reading cannot go on (the topic or partition is gone,
/// authorization was refused); librdkafka retries the rest.
fn is_fatal(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        error.rdkafka_error_code(),
        Some(
            Code::UnknownTopicOrPartition
                | Code::TopicAuthorizationFailed
                | Code::GroupAuthorizationFailed
                | Code::Fatal
        )
    )
}

/// Produces records to a Kafka topic: keyed values, in order per key.
pub struct KafkaPublisher {
    brokers: String,
    topic: String,
    /// How long one [`KafkaPublisher::publish`] may take.
    timeout: Duration,
    producer: BaseProducer<Deliveries>,
}

/// Remembers the first failed delivery since the last look.
#[derive(Default)]
struct Deliveries {
    failed: parking_lot::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.lock().get_or_insert_with(|| error.to_string());
        }
    }
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").field("brokers", &self.brokers).field("topic", &self.topic).finish()
    }
}

impl KafkaPublisher {
    /// A producer for `topic` on `brokers` (idempotent: a retried send is not duplicated).
    pub fn connect(brokers: &str, topic: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", brokers).set("enable.idempotence", "true");
        for (key, value) in options {
            client.set(key, value);
        }
        let producer: BaseProducer<Deliveries> =
            client.create_with_context(Deliveries::default()).map_err(|e| kafka_error(brokers, e, false))?;
        producer.client().fetch_metadata(Some(topic), OPEN_TIMEOUT).map_err(|e| kafka_error(brokers, e, true))?;
        Ok(Self { brokers: brokers.to_owned(), topic: topic.to_owned(), timeout: Duration::from_secs(30), producer })
    }

    /// Sets how long one [`KafkaPublisher::publish`] may take (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `records` (`(key, value)`) and waits until the brokers have them all.
    pub fn publish(&self, records: impl IntoIterator<Item = (String, Vec<u8>)>) -> Result<()> {
        for (key, value) in records {
            let mut record = BaseRecord::to(&self.topic).key(&key).payload(&value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                        self.producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((error, _)) => return Err(kafka_error(&self.brokers, error, true)),
                }
            }
            self.producer.poll(Duration::ZERO);
        }
        self.producer.flush(self.timeout).map_err(|e| kafka_error(&self.brokers, e, true))?;
        match self.producer.context().failed.lock().take() {
            Some(error) => Err(kafka_error(&self.brokers, format!("a record was not delivered: {error}"), true)),
            None => Ok(()),
        }
    }
}
