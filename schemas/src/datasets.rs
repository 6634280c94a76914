//! The instruct dataset's records: what one generation pass did
//! ([`GenerationReport`]), what a snapshot wrote ([`DatasetVersion`]) and
//! the manifest saved beside each version ([`DatasetManifest`]).
//!
//! ```text
//!  datasets/instruct/v<N>/manifest.json = DatasetVersion + created_at_ms + lineage
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a sample was dropped by the quality filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Instruction under 3 words or answer under 10.
    TooShort,
    /// Instruction over 120 words or answer over 800.
    TooLong,
    /// Under 80% of the letters are Latin, or control characters.
    Charset,
    /// The answer repeats the instruction, or is mostly one repeated word.
    Format,
}

/// What one generation pass did: the answer of `POST /v1/datasets/generate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GenerationReport {
    pub generator: String,
    /// Live extracts considered.
    pub extracts: usize,
    /// Already generated for this generator and prompt version: not sent again.
    pub cached: usize,
    /// Sent to the model in this pass.
    pub generated: usize,
    pub questions: usize,
    /// Extracts left for a later pass (over the limit).
    pub remaining: usize,
    pub failures: usize,
    pub seconds: f64,
}

/// What a snapshot wrote: the answer of `POST /v1/datasets/snapshot`, and
/// the fields of every version's manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetVersion {
    pub name: String,
    pub version: u64,
    pub source_epoch: u64,
    /// The store snapshot (every table) taken just before it.
    pub tables_snapshot: u64,
    /// The epoch of that snapshot (≤ `source_epoch`: commits may land in between).
    pub tables_snapshot_epoch: u64,
    pub documents: usize,
    /// Samples per generator (`offline`, `llm:<model>@p<prompt version>`).
    pub generators: BTreeMap<String, usize>,
    pub candidates: usize,
    pub rejected: BTreeMap<Rejection, usize>,
    pub duplicates: usize,
    pub train: usize,
    pub test: usize,
    pub preference: usize,
    pub content_hash: String,
    /// The files written, relative to the data directory (empty in the
    /// manifest, which is written before the list is known).
    #[serde(default)]
    pub files: Vec<String>,
}

/// Where a dataset version comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetLineage {
    pub source_epoch: u64,
    pub tables_snapshot: u64,
    /// The documents its samples come from.
    pub documents: Vec<String>,
    /// The version of the prompt the LLM questions were asked with.
    pub prompt_version: u32,
    /// Jaccard similarity above which two samples were duplicates.
    pub duplicate_jaccard: f64,
}

/// A dataset version's `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DatasetManifest {
    #[serde(flatten)]
    pub version: DatasetVersion,
    pub created_at_ms: i64,
    pub lineage: DatasetLineage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_as_written() {
        let written = serde_json::json!({
            "name": "instruct", "version": 2, "source_epoch": 9, "tables_snapshot": 3, "tables_snapshot_epoch": 8,
            "documents": 2, "generators": { "offline": 4 }, "candidates": 7, "rejected": { "too_short": 2, "format": 1 },
            "duplicates": 0, "train": 3, "test": 1, "preference": 0, "content_hash": "ab", "files": [],
            "created_at_ms": 1700, "lineage": {
                "source_epoch": 9, "tables_snapshot": 3, "documents": ["a", "b"], "prompt_version": 2,
                "duplicate_jaccard": 0.7,
            },
        });
        let manifest: DatasetManifest = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(manifest.version.rejected[&Rejection::TooShort], 2);
        assert_eq!(manifest.lineage.documents, ["a", "b"]);
        assert_eq!(serde_json::to_value(&manifest).unwrap(), written);
    }
}
