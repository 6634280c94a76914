//! Starting where the last run stopped: the committed state replayed into
//! the engine, the persistent embedding cache seeding it, and the input
//! log's acknowledged but uncommitted batches submitted again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Error;
use crate::Context;

use twinflow_dataflow::{Embedder, Engine, Restore, SubmitError};
use twinflow_schemas::config::ChunkingConfig;
use twinflow_sinks::{EncodedBatch, InputLog, LoggedBatch, Store};

/// The file recording how a data directory's chunks were derived.
pub const CHUNKING_FILE: &str = "chunking.json";

/// Checks that `configured` derives chunks as the data directory's committed
/// ones were (recorded in [`CHUNKING_FILE`] by the first start), and records
/// it in a new directory. The restored documents are derived again on every
/// start, and their chunks must be the committed ones, so another chunking
/// is refused rather than mixed in. A directory committed before the record
/// existed was derived without title context.
pub fn check_chunking(data_dir: &Path, committed_epoch: u64, configured: &ChunkingConfig) -> Result<(), Error> {
    let path = data_dir.join(CHUNKING_FILE);
    if committed_epoch == 0 {
        // Nothing derived yet: the configured chunking is the directory's.
        let json = serde_json::to_vec_pretty(configured).map_err(|e| Error::Config(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        return std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot record the chunking in {}", path.display()))
            .map_err(Error::from);
    }
    let stored: ChunkingConfig = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{} is not a chunking record: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            ChunkingConfig { title_context: false, ..configured.clone() }
        }
        Err(e) => return Err(Error::Config(format!("cannot read {}: {e}", path.display()))),
    };
    if stored == *configured {
        return Ok(());
    }
    let recorded = if path.exists() { "" } else { " (committed before title context existed)" };
    Err(Error::Config(format!(
        "the chunks in {} were derived with [chunking] {}{recorded}, but the configuration says {}: configure \
         the data directory's chunking, or use a new data directory (storage.data_dir) and ingest again",
        data_dir.display(),
        serde_json::to_string(&stored).unwrap_or_default(),
        serde_json::to_string(configured).unwrap_or_default(),
    )))
}

/// What to replay into the engine so it continues from the committed state.
pub fn restore_from(store: &Store, embedder: &dyn Embedder) -> Result<Option<Restore>, Error> {
    let epoch = store.committed_epoch();
    if epoch == 0 {
        return Ok(None);
    }
    let embeddings = store.current_embeddings();
    if let Some(other) = embeddings.iter().find(|e| e.model_id != embedder.model_id()) {
        return Err(Error::EmbedderMismatch {
            stored: other.model_id.clone(),
            configured: embedder.model_id().to_owned(),
        });
    }
    let documents = store.current_documents();
    tracing::info!(epoch, documents = documents.len(), vectors = embeddings.len(), "restoring committed state");
    Ok(Some(Restore { epoch, documents, embeddings }))
}

/// The persistent embedding cache, as the engine's sink of computed vectors.
#[derive(Debug)]
struct PersistentVectors {
    cache: twinflow_sinks::VectorCache,
    warned: std::sync::atomic::AtomicBool,
}

impl twinflow_dataflow::ComputedVectors for PersistentVectors {
    fn computed(&self, vectors: &[(twinflow_schemas::ids::Hash128, &[f32])]) {
        // A zero vector is the stand-in for a text the model failed on: not kept, so it is tried again.
        let vectors: Vec<_> = vectors.iter().filter(|(_, v)| v.iter().any(|x| *x != 0.0)).copied().collect();
        if let Err(e) = self.cache.append(&vectors) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "could not append to the embedding cache (only a cache: nothing is lost)");
            }
        }
    }
}

/// Opens the persistent embedding cache; its vectors (of chunks not in the
/// committed `embeddings` table) join the restored ones in seeding the engine.
pub fn open_vector_cache(
    data_dir: &std::path::Path,
    embedder: &dyn Embedder,
    committed_epoch: u64,
    restore: &mut Option<Restore>,
) -> Result<Arc<dyn twinflow_dataflow::ComputedVectors>, Error> {
    let live = restore.as_ref().map(|r| r.embeddings.iter().map(|e| e.chunk_id).collect()).unwrap_or_default();
    let (cache, kept) = twinflow_sinks::VectorCache::open(data_dir, embedder.model_id(), embedder.dim(), &live)
        .with_context(|| format!("cannot open the embedding cache in {}", data_dir.display()))?;
    if !kept.is_empty() {
        tracing::info!(vectors = kept.len(), file = %cache.path().display(), "embedding cache loaded");
        let restore = restore.get_or_insert_with(|| Restore { epoch: committed_epoch, ..Restore::default() });
        restore.embeddings.extend(kept.into_iter().map(|(chunk_id, vector)| twinflow_schemas::EmbeddingRow {
            chunk_id,
            model_id: embedder.model_id().to_owned(),
            vector: twinflow_schemas::Vector(vector),
        }));
    }
    Ok(Arc::new(PersistentVectors { cache, warned: std::sync::atomic::AtomicBool::new(false) }))
}

/// Submits the input log's batches that the manifest does not hold
/// (acknowledged before a crash, not committed), in order, one epoch each,
/// before any source or request is served. They are written back to the log
/// with those epochs (`committed + 1`, `+ 2`, …) before the first is
/// submitted, so a crash during the replay loses none.
pub fn replay_input_log(
    engine: &Engine,
    log: &InputLog,
    committed: u64,
    logged: Vec<LoggedBatch>,
) -> Result<(), Error> {
    let total = logged.len();
    let pending: Vec<_> = logged.into_iter().filter(|b| b.epoch > committed && !b.changes.is_empty()).collect();
    let mut renumbered = Vec::with_capacity(pending.len());
    for (i, batch) in pending.iter().enumerate() {
        renumbered.push((committed + 1 + i as u64, EncodedBatch::new(&batch.changes)?));
    }
    log.adopt(&renumbered).with_context(|| format!("cannot rewrite the input log in {}", log.dir().display()))?;
    let changes: usize = pending.iter().map(|b| b.changes.len()).sum();
    for ((expected, encoded), batch) in renumbered.iter().zip(pending) {
        let epoch = submit_patiently(engine, batch.changes, Duration::from_secs(3600)).map_err(Error::Replay)?;
        engine.flush();
        if epoch != *expected {
            // Not the epoch it was logged with: logged again with this one, so truncation keeps it.
            tracing::warn!(epoch, expected, "a replayed batch got another epoch than logged; logging it again");
            log.append(epoch, encoded)?;
        }
    }
    if !renumbered.is_empty() {
        tracing::info!(
            batches = renumbered.len(),
            changes,
            skipped_committed = total - renumbered.len(),
            after_epoch = committed,
            "replayed acknowledged changes from the input log"
        );
    }
    Ok(())
}

/// Submits changes, waiting (bounded by `patience`) while the engine is overloaded.
fn submit_patiently(
    engine: &Engine,
    changes: Vec<twinflow_schemas::DocumentChange>,
    patience: Duration,
) -> Result<u64, SubmitError> {
    let deadline = Instant::now() + patience;
    loop {
        match engine.submit(changes.clone()) {
            Err(SubmitError::Overloaded { .. } | SubmitError::Behind { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_keeps_the_chunking_its_chunks_were_derived_with() {
        let dir = tempfile::tempdir().unwrap();
        let chunking = ChunkingConfig::default();
        check_chunking(dir.path(), 0, &chunking).unwrap();
        assert!(dir.path().join(CHUNKING_FILE).exists(), "recorded before anything is committed");
        check_chunking(dir.path(), 7, &chunking).unwrap();
        let untitled = ChunkingConfig { title_context: false, ..chunking.clone() };
        let refused = check_chunking(dir.path(), 7, &untitled).unwrap_err().to_string();
        assert!(refused.contains("\"title_context\":true") && refused.contains("new data directory"), "{refused}");
        // Nothing committed yet: the configuration simply becomes the record.
        check_chunking(dir.path(), 0, &untitled).unwrap();
        check_chunking(dir.path(), 7, &untitled).unwrap();

        // Committed before the record existed: derived without titles.
        let old = tempfile::tempdir().unwrap();
        let refused = check_chunking(old.path(), 3, &chunking).unwrap_err().to_string();
        assert!(refused.contains("before title context existed"), "{refused}");
        check_chunking(old.path(), 3, &untitled).unwrap();
    }
}
