//! Versioned datasets: consolidated, curated snapshots written next to the
//! tables, one directory per version.
//!
//! ```text
//!  <data>/datasets/instruct/v<N>/samples.parquet      the instruct table's columns + dataset_version
//!                               preference.parquet   prompt, chosen, rejected, doc_id, chunk_id, generator, split, dataset_version
//!                               train.jsonl test.jsonl preference.jsonl   (chat / DPO formats)
//!                               manifest.json        lineage and counts (written last: a version without it does not exist)
//! ```
//! A version is written under a temporary name, its files synced, and
//! renamed into place durably: after a crash it is whole or absent.
//! SQL sees every version as `instruct_dataset` and `preference_dataset`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use twinflow_schemas::fs::rename_durably;
use twinflow_schemas::{InstructRow, TableName};

use crate::convert::{TableRow, rows_to_batch};
use crate::error::{Error, Result};
use crate::parquet_io::{read_parquet, write_file_atomic, write_parquet};

/// Where datasets live under the data directory.
pub const DATASETS_DIR: &str = "datasets";
const MANIFEST: &str = "manifest.json";
const SAMPLES: &str = "samples.parquet";
const PREFERENCE: &str = "preference.parquet";

/// One (prompt, chosen, rejected) triple: chosen is the author's text,
/// rejected the model's answer to the same prompt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreferenceRow {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub doc_id: String,
    pub chunk_id: String,
    pub generator: String,
    pub split: String,
}

/// The directory of `name`'s version `version`.
pub fn version_dir(data_dir: &Path, name: &str, version: u64) -> PathBuf {
    data_dir.join(DATASETS_DIR).join(name).join(format!("v{version}"))
}

/// The complete versions of dataset `name`, ascending.
pub fn versions(data_dir: &Path, name: &str) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(DATASETS_DIR).join(name)) else { return Vec::new() };
    let mut out: Vec<u64> = entries
        .flatten()
        .filter(|e| e.path().join(MANIFEST).is_file())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
        .collect();
    out.sort_unstable();
    out
}

/// The manifest of a version.
pub fn read_manifest(data_dir: &Path, name: &str, version: u64) -> Result<serde_json::Value> {
    let path = version_dir(data_dir, name, version).join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&path, e.to_string()))
}

/// Writes version `version` of the instruct dataset: samples and preference
/// triples as Parquet, the `jsonl` files as given (name → contents), then
/// `manifest`. Returns the files written, relative to the data directory.
pub fn write_instruct_version(
    data_dir: &Path,
    version: u64,
    samples: &[InstructRow],
    preference: &[PreferenceRow],
    jsonl: &[(&str, String)],
    manifest: &serde_json::Value,
) -> Result<Vec<String>> {
    let dir = version_dir(data_dir, "instruct", version);
    let tmp = dir.with_file_name(format!(".v{version}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let rows: Vec<&InstructRow> = samples.iter().collect();
    let batch = with_version(rows_to_batch(&rows, 0)?, version)?;
    write_parquet(&tmp.join(SAMPLES), &batch)?;
    write_parquet(&tmp.join(PREFERENCE), &with_version(preference_batch(preference)?, version)?)?;
    let mut files = vec![SAMPLES.to_owned(), PREFERENCE.to_owned()];
    for (name, contents) in jsonl {
        write_file_atomic(&tmp.join(name), contents.as_bytes())?;
        files.push((*name).to_owned());
    }
    let bytes = serde_json::to_vec_pretty(manifest)?;
    write_file_atomic(&tmp.join(MANIFEST), &bytes)?;
    files.push(MANIFEST.to_owned());
    rename_durably(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let relative = format!("{DATASETS_DIR}/instruct/v{version}");
    Ok(files.into_iter().map(|f| format!("{relative}/{f}")).collect())
}

/// The samples of a version.
pub fn read_instruct_version(data_dir: &Path, version: u64) -> Result<Vec<InstructRow>> {
    let path = version_dir(data_dir, "instruct", version).join(SAMPLES);
    let mut rows = Vec::new();
    for batch in read_parquet(&path)? {
        rows.extend(InstructRow::from_batch(&batch, 0).map_err(|e| Error::corrupt(&path, e.to_string()))?);
    }
    Ok(rows)
}

/// The preference triples of a version.
pub fn read_preference_version(data_dir: &Path, version: u64) -> Result<Vec<PreferenceRow>> {
    let path = version_dir(data_dir, "instruct", version).join(PREFERENCE);
    let mut rows = Vec::new();
    for batch in read_parquet(&path)? {
        let text = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| Error::corrupt(&path, format!("no text column {name:?}")))
        };
        let (prompt, chosen, rejected) = (text("prompt")?, text("chosen")?, text("rejected")?);
        let (doc_id, chunk_id, generator, split) =
            (text("doc_id")?, text("chunk_id")?, text("generator")?, text("split")?);
        for i in 0..batch.num_rows() {
            rows.push(PreferenceRow {
                prompt: prompt.value(i).to_owned(),
                chosen: chosen.value(i).to_owned(),
                rejected: rejected.value(i).to_owned(),
                doc_id: doc_id.value(i).to_owned(),
                chunk_id: chunk_id.value(i).to_owned(),
                generator: generator.value(i).to_owned(),
                split: split.value(i).to_owned(),
            });
        }
    }
    Ok(rows)
}

/// Removes version `version` of dataset `name`: first its manifest (from
/// then on the version does not exist: [`versions`] and SQL skip it), then
/// its folder. Removing a version that is not there is not an error.
pub fn remove_version(data_dir: &Path, name: &str, version: u64) -> Result<()> {
    let dir = version_dir(data_dir, name, version);
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match std::fs::remove_file(dir.join(MANIFEST)) {
        Err(e) if !gone(&e) => return Err(Error::io(&dir.join(MANIFEST), e)),
        _ => {}
    }
    match std::fs::remove_dir_all(&dir) {
        Err(e) if !gone(&e) => Err(Error::io(&dir, e)),
        _ => Ok(()),
    }
}

/// Absolute paths of every complete version's samples and preference files.
pub(crate) fn dataset_files(data_dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let versions = versions(data_dir, "instruct");
    let dirs: Vec<PathBuf> = versions.iter().map(|v| version_dir(data_dir, "instruct", *v)).collect();
    (dirs.iter().map(|d| d.join(SAMPLES)).collect(), dirs.iter().map(|d| d.join(PREFERENCE)).collect())
}

/// The schemas of the two SQL tables over every version.
pub(crate) fn dataset_schemas() -> (Arc<Schema>, Arc<Schema>) {
    let samples = with_version_field(&TableName::Instruct.schema(0));
    let preference = with_version_field(&preference_schema());
    (samples, preference)
}

fn preference_schema() -> Arc<Schema> {
    let names = ["prompt", "chosen", "rejected", "doc_id", "chunk_id", "generator", "split"];
    Arc::new(Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect::<Vec<_>>()))
}

fn with_version_field(schema: &Schema) -> Arc<Schema> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("dataset_version", DataType::UInt64, false));
    Arc::new(Schema::new(fields))
}

fn preference_batch(rows: &[PreferenceRow]) -> Result<RecordBatch> {
    let column =
        |f: fn(&PreferenceRow) -> &str| Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as ArrayRef;
    let columns = vec![
        column(|r| &r.prompt),
        column(|r| &r.chosen),
        column(|r| &r.rejected),
        column(|r| &r.doc_id),
        column(|r| &r.chunk_id),
        column(|r| &r.generator),
        column(|r| &r.split),
    ];
    Ok(RecordBatch::try_new(preference_schema(), columns)?)
}

fn with_version(batch: RecordBatch, version: u64) -> Result<RecordBatch> {
    let schema = with_version_field(&batch.schema());
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from(vec![version; batch.num_rows()])));
    Ok(RecordBatch::try_new(schema, columns)?)
}
