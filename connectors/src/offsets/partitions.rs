//! Reading a topic's partitions (the Fluvio and Kafka sources share it):
//! which partitions a source reads, and their records on the way to the
//! engine in batches, each with the position it reaches.

use std::collections::BTreeMap;

use twinflow_schemas::{ChangeLimits, DocumentChange, parse_change};

use super::offsets_position;
use crate::handle::{Halt, Outbox};
use crate::own_source;

/// The partitions of `topic` (of `count`) a source reads: `chosen` (empty:
/// all), and of those only its `share` in a cluster. The error says why
/// none or a wrong one is chosen.
pub(crate) fn select_partitions(
    topic: &str,
    count: u32,
    chosen: &[u32],
    share: Option<twinflow_schemas::config::PartitionShare>,
) -> std::result::Result<Vec<u32>, String> {
    let mut partitions: Vec<u32> = if chosen.is_empty() { (0..count).collect() } else { chosen.to_vec() };
    if let Some(bad) = partitions.iter().find(|p| **p >= count) {
        return Err(format!("topic {topic:?} has {count} partitions, no partition {bad}"));
    }
    if let Some(share) = share {
        partitions.retain(|p| share.takes(*p));
        if partitions.is_empty() {
            return Err(format!(
                "no partition of topic {topic:?} ({count}) falls to process {} of {}",
                share.index, share.of
            ));
        }
    }
    Ok(partitions)
}

/// The records of one topic's partitions on their way to the engine (the
/// Fluvio and Kafka sources share it): valid changes in batches, a bad
/// record as an ingest error at `<scheme>://<topic>/<partition>@<offset>`,
/// and after every batch the position it reaches.
pub(crate) struct PartitionBatcher {
    scheme: &'static str,
    source: String,
    topic: String,
    limits: ChangeLimits,
    batch: usize,
    /// Partition → the next offset to read (everything before it is handed over).
    pub(crate) next: BTreeMap<u32, i64>,
    pending: Vec<DocumentChange>,
    /// The position moved since the last batch (past records, or a resume to confirm).
    moved: bool,
}

impl PartitionBatcher {
    /// Starts at `next`; the first flush confirms that position even without records.
    pub(crate) fn new(
        scheme: &'static str,
        source: &str,
        topic: &str,
        limits: ChangeLimits,
        batch: usize,
        next: BTreeMap<u32, i64>,
    ) -> Self {
        Self {
            scheme,
            source: source.to_owned(),
            topic: topic.to_owned(),
            limits,
            batch: batch.max(1),
            next,
            pending: Vec::new(),
            moved: true,
        }
    }

    /// Takes the record at `offset` of `partition`; hands a full batch over.
    pub(crate) fn record(&mut self, outbox: &Outbox, partition: u32, offset: i64, payload: &[u8]) -> Result<(), Halt> {
        match parse_change(payload, offset as usize, &self.limits) {
            Ok(change) => self.pending.push(own_source(change, &self.source)),
            Err(error) => {
                self.flush(outbox)?;
                let location = format!("{}://{}/{partition}@{offset}", self.scheme, self.topic);
                outbox.error(location, error.message)?;
            }
        }
        self.next.insert(partition, offset + 1);
        self.moved = true;
        if self.pending.len() >= self.batch { self.flush(outbox) } else { Ok(()) }
    }

    /// Hands the pending changes over with the position after them (also
    /// when only the position moved, past error records).
    pub(crate) fn flush(&mut self, outbox: &Outbox) -> Result<(), Halt> {
        if self.pending.is_empty() && !self.moved {
            return Ok(());
        }
        outbox.changes_at(std::mem::take(&mut self.pending), offsets_position(&self.topic, &self.next))?;
        self.moved = false;
        Ok(())
    }
}
