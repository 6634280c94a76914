//! Positions of partitioned logs (Fluvio, Kafka): the next offset to read
//! of each partition of one topic, `{"topic", "offsets": {partition: offset}}`.
//! `offsets/partitions.rs` (with either source's feature) has what both
//! sources share while reading: the choice of partitions and the batching
//! of their records.

use std::collections::BTreeMap;

use serde_json::json;

use crate::SourcePosition;

#[cfg(any(feature = "fluvio", feature = "kafka"))]
mod partitions;
#[cfg(any(feature = "fluvio", feature = "kafka"))]
pub(crate) use partitions::{PartitionBatcher, select_partitions};

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
