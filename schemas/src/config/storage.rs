//! `[storage]`: where tables live and what is kept on disk besides them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where and how tables are stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root of the Parquet tables and the manifest.
    pub data_dir: PathBuf,
    /// Write a consolidated snapshot of every table every this many
    /// committed epochs (0: only on demand).
    pub snapshot_every: u64,
    /// Append changes accepted over HTTP to an fsynced log before
    /// acknowledging them (`<data_dir>/_input_log`), so an acknowledged change
    /// survives a crash before its epoch commits. Off: faster, and a crash
    /// loses the acknowledged changes of uncommitted epochs.
    pub input_log: bool,
    /// Keep every computed vector in `<data_dir>/_embed_cache` (by chunk hash
    /// and model), so a restart never encodes a text twice.
    pub embedding_cache: bool,
    /// Snapshots kept after each new one: the newest this many (0: all),
    /// plus `pinned_snapshots`; the newest (a restart's start) always.
    pub keep_snapshots: usize,
    /// Snapshot versions never removed.
    pub pinned_snapshots: Vec<u64>,
    /// Dataset versions (`datasets/<name>/v<N>`) kept after each new one:
    /// the newest this many (0: all), plus `pinned_datasets` and every
    /// version a model still in a registry was trained on.
    pub keep_datasets: usize,
    /// Dataset versions never removed.
    pub pinned_datasets: Vec<u64>,
    /// How far back `AS OF` reads (SQL, `/v1/search?as_of=`, `/v1/rag`): the
    /// states current within this window (`"7d"`); unset: every committed
    /// epoch. An epoch before it is refused, naming the oldest available.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub time_travel: Option<std::time::Duration>,
    /// Ship every commit to this object store (`s3://bucket/prefix`;
    /// credentials and endpoint from `AWS_*`): the files, then the
    /// manifest, so it always holds a committed state that read replicas
    /// follow (`twinflow serve --follow s3://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<String>,
    /// Settings of the object store over the `AWS_*` environment, by
    /// `object_store`'s names: `aws_endpoint`, `aws_allow_http`,
    /// `aws_region`, `aws_access_key_id`, `aws_secret_access_key`, …
    /// (also used by a replica following one).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub object_store_options: std::collections::BTreeMap<String, String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("twinflow-data"),
            snapshot_every: 500,
            input_log: true,
            embedding_cache: true,
            keep_snapshots: 10,
            pinned_snapshots: Vec::new(),
            keep_datasets: 10,
            pinned_datasets: Vec::new(),
            time_travel: None,
            object_store: None,
            object_store_options: Default::default(),
        }
    }
}
