//! Positions of partitioned logs (Fluvio, Kafka): the next offset to read
//! of each partition of one topic, `{"topic", "offsets": {partition: offset}}`,
//! and the batching of their records that both sources share.

use std::collections::BTreeMap;

use serde_json::json;
use twinflow_schemas::{ChangeLimits, DocumentChange, parse_change};

use crate::handle::{Halt, Outbox};
use crate::{SourcePosition, own_source};

/// The offsets of `position`, if it is one of `topic`'s.
pub(crate) fn position_offsets(topic: &str, position: Option<&SourcePosition>) -> BTreeMap<u32, i64> {
    let Some(position) = position else { return BTreeMap::new() };
    if position["topic"] != topic {
        tracing::warn!(topic, ?position, "the committed position is another topic's: starting afresh");
        return BTreeMap::new();
    }
    let Some(offsets) = position["offsets"].as_object() else { return BTreeMap::new() };
    offsets.iter().filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?))).collect()
}

/// `{"topic", "offsets": {partition: next offset}}`.
pub(crate) fn offsets_position(topic: &str, next: &BTreeMap<u32, i64>) -> SourcePosition {
    let offsets: serde_json::Map<String, serde_json::Value> =
        next.iter().map(|(p, o)| (p.to_string(), json!(o))).collect();
    json!({ "topic": topic, "offsets": offsets })
}

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

/// One position of the offsets of several (`{"topic", "offsets"}`, the
/// positions of one source read by different processes of a cluster): per
/// partition the furthest offset, so a partition that moved to another
/// process resumes where any process left it. `None` when there is none.
pub fn merge_positions<'a>(positions: impl IntoIterator<Item = &'a SourcePosition>) -> Option<SourcePosition> {
    let mut topic: Option<String> = None;
    let mut merged: BTreeMap<u32, i64> = BTreeMap::new();
    for position in positions {
        let Some(this) = position["topic"].as_str() else { continue };
        if topic.get_or_insert_with(|| this.to_owned()) != this {
            continue;
        }
        for (partition, offset) in position_offsets(this, Some(position)) {
            let entry = merged.entry(partition).or_insert(offset);
            *entry = (*entry).max(offset);
        }
    }
    Some(offsets_position(&topic?, &merged))
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

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn merged_positions_keep_each_partitions_furthest_offset() {
        let a = json!({ "topic": "t", "offsets": { "0": 5, "2": 9 } });
        let b = json!({ "topic": "t", "offsets": { "1": 4, "2": 3 } });
        let other = json!({ "topic": "u", "offsets": { "0": 99 } });
        let merged = merge_positions([&a, &b, &other]).unwrap();
        assert_eq!(merged, json!({ "topic": "t", "offsets": { "0": 5, "1": 4, "2": 9 } }));
        assert_eq!(merge_positions([]), None);
    }
}
