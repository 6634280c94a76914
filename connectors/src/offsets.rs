//! Positions of partitioned logs (Fluvio, Kafka): the next offset to read
//! of each partition of one topic, `{"topic", "offsets": {partition: offset}}`.

use std::collections::BTreeMap;

use serde_json::json;

use crate::SourcePosition;

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
