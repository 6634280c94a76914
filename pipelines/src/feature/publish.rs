//! Publishing committed table changes to a Fluvio or Kafka topic
//! (`[publish.fluvio]`, `[publish.kafka]`).
//!
//! After the committer has made an epoch durable it hands the epoch's
//! updates here; a thread turns them into records and produces them:
//!
//! ```text
//!  committer ──(epoch, updates)──▶ bounded queue ──▶ publisher thread ──▶ Fluvio or Kafka topic
//!                                                    key: doc_id
//!                                                    value: {"table","epoch","diff","row"}
//! ```
//!
//! Records are keyed by the row's document, so one document's changes stay
//! in one partition, in order: within an epoch retractions (`diff` -1) come
//! before insertions (+1). A failed produce is retried (reconnecting) until
//! it succeeds; while it fails the queue fills and the committer waits, as
//! any sink that cannot keep up slows the pipeline rather than dropping
//! changes. Epochs are published after they are committed: a crash between
//! the two loses that epoch's records for the topic (the tables have them).
//! At shutdown a failing topic gets one more try per queued epoch; an epoch
//! that still fails is logged as not published, and the shutdown goes on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Error;
use crate::Context;
use crossbeam_channel::Sender;
use serde::Serialize;
use serde_json::json;
use twinflow_connectors::{FluvioPublisher, KafkaPublisher};
use twinflow_schemas::config::{FluvioPublishConfig, KafkaPublishConfig, PublishConfig};
use twinflow_schemas::{EpochUpdates, TableName};

/// The publishing thread and its queue; [`ChangePublisher::finish`] drains it.
#[derive(Debug)]
pub struct ChangePublisher {
    tx: Option<Sender<(u64, Vec<(usize, EpochUpdates)>)>>,
    thread: Option<JoinHandle<()>>,
    /// Set at shutdown: a failing topic is tried once more per epoch, not forever.
    closing: Arc<AtomicBool>,
}

/// A topic records are produced to.
#[derive(Clone, Debug)]
enum Target {
    Fluvio(FluvioPublishConfig),
    Kafka(KafkaPublishConfig),
}

/// A connected producer of a [`Target`].
enum Producer {
    Fluvio(FluvioPublisher),
    Kafka(KafkaPublisher),
}

impl Target {
    fn connect(&self) -> twinflow_connectors::Result<Producer> {
        match self {
            Self::Fluvio(c) => {
                FluvioPublisher::connect(&c.endpoint, &c.topic).map(|p| Producer::Fluvio(p.with_timeout(c.timeout)))
            }
            Self::Kafka(c) => KafkaPublisher::connect(&c.brokers, &c.topic, &c.options)
                .map(|p| Producer::Kafka(p.with_timeout(c.timeout))),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Fluvio(_) => "fluvio",
            Self::Kafka(_) => "kafka",
        }
    }

    fn topic(&self) -> &str {
        match self {
            Self::Fluvio(c) => &c.topic,
            Self::Kafka(c) => &c.topic,
        }
    }

    fn tables(&self) -> &[TableName] {
        match self {
            Self::Fluvio(c) => &c.tables,
            Self::Kafka(c) => &c.tables,
        }
    }
}

impl Producer {
    fn publish(&self, records: &[(String, Vec<u8>)]) -> twinflow_connectors::Result<()> {
        match self {
            Self::Fluvio(p) => p.publish(records.iter().cloned()),
            Self::Kafka(p) => p.publish(records.iter().cloned()),
        }
    }
}

impl ChangePublisher {
    /// One publisher per configured output.
    pub fn start_all(config: &PublishConfig) -> Result<Vec<Self>, Error> {
        let targets =
            config.fluvio.clone().map(Target::Fluvio).into_iter().chain(config.kafka.clone().map(Target::Kafka));
        targets.map(Self::start).collect()
    }

    /// Connects (failing if the cluster or the topic cannot be reached) and
    /// starts the thread.
    fn start(target: Target) -> Result<Self, Error> {
        let producer = target
            .connect()
            .with_context(|| format!("cannot publish to {} topic {:?}", target.kind(), target.topic()))?;
        let (tx, rx) = crossbeam_channel::bounded::<(u64, Vec<(usize, EpochUpdates)>)>(64);
        let closing = Arc::new(AtomicBool::new(false));
        let stop = closing.clone();
        let name = format!("twinflow-publish-{}", target.kind());
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut producer = Some(producer);
            for (epoch, parts) in rx {
                let records = records(epoch, &parts, target.tables());
                let count = records.len();
                if publish_until_done(&mut producer, &target, &records, &stop) {
                    metrics::counter!("twinflow_published_records_total", "sink" => target.kind())
                        .increment(count as u64);
                    tracing::debug!(epoch, records = count, topic = %target.topic(), "epoch published");
                } else {
                    tracing::error!(epoch, records = count, topic = %target.topic(), "shutting down: epoch not published");
                }
            }
        })
        .context("cannot start the publishing thread")?;
        Ok(Self { tx: Some(tx), thread: Some(thread), closing })
    }

    /// Queues a committed epoch's updates (waits while the queue is full).
    pub fn send(&self, epoch: u64, parts: &[(usize, EpochUpdates)]) {
        if let Some(tx) = &self.tx
            && tx.send((epoch, parts.to_vec())).is_err()
        {
            tracing::error!(epoch, "the publisher thread is gone; epoch not published");
        }
    }

    /// Publishes what is queued, then stops (a topic that is failing gets
    /// one more try per epoch, so a shutdown never hangs on it).
    pub fn finish(&mut self) {
        self.closing.store(true, Ordering::Relaxed);
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ChangePublisher {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Publishes `records`, retrying until done (`true`) or until shutdown (`false`).
fn publish_until_done(
    producer: &mut Option<Producer>,
    target: &Target,
    records: &[(String, Vec<u8>)],
    closing: &AtomicBool,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        let result = match producer {
            Some(p) => p.publish(records),
            None => target.connect().and_then(|p| p.publish(records).map(|()| *producer = Some(p))),
        };
        match result {
            Ok(()) => return true,
            Err(_) if closing.load(Ordering::Relaxed) => return false,
            Err(error) => {
                tracing::error!(%error, retry_in = ?delay, topic = %target.topic(), "publishing failed; will retry");
                *producer = None;
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The records of one epoch: per table, retractions first, keyed by document.
fn records(epoch: u64, parts: &[(usize, EpochUpdates)], tables: &[TableName]) -> Vec<(String, Vec<u8>)> {
    fn push<R: Serialize>(
        out: &mut Vec<(String, Vec<u8>)>,
        table: TableName,
        epoch: u64,
        updates: Vec<(&R, i64)>,
        key: impl Fn(&R) -> String,
    ) {
        let mut updates = updates;
        updates.sort_by_key(|(_, diff)| *diff);
        for (row, diff) in updates {
            let value = json!({ "table": table, "epoch": epoch, "diff": diff, "row": row });
            out.push((key(row), value.to_string().into_bytes()));
        }
    }
    let mut out = Vec::new();
    for table in tables {
        let all = parts.iter().map(|(_, u)| u);
        match table {
            TableName::Documents => {
                let updates = all.flat_map(|u| u.documents.iter().map(|(r, d)| (r, *d))).collect();
                push(&mut out, *table, epoch, updates, |r| r.doc_id.clone());
            }
            TableName::Chunks => {
                let updates = all.flat_map(|u| u.chunks.iter().map(|(r, d)| (r, *d))).collect();
                push(&mut out, *table, epoch, updates, |r| r.doc_id.clone());
            }
            TableName::Embeddings => {
                // Embedding rows know their chunk, not their document: keyed by chunk.
                let updates = all.flat_map(|u| u.embeddings.iter().map(|(r, d)| (r, *d))).collect();
                push(&mut out, *table, epoch, updates, |r| r.chunk_id.to_string());
            }
            TableName::Instruct => {
                let updates = all.flat_map(|u| u.instruct.iter().map(|(r, d)| (r, *d))).collect();
                push(&mut out, *table, epoch, updates, |r| r.doc_id.clone());
            }
        }
    }
    out
}
