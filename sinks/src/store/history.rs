//! Time travel: the state of a past committed epoch as a read-only
//! [`Store`] ([`Store::as_of`]), rebuilt from the latest snapshot at or
//! before it and the change logs up to it (nothing is re-encoded), so search,
//! facets and answers read it as they read the live one. Vector search over
//! it scans exactly; the active projection applies, so an answer at a past
//! epoch uses today's adapter on that epoch's data. The last few are kept.
//!
//! The window ([`Store::set_time_travel`]) bounds how far back `AS OF` reads:
//! a state is available while it was current within the window. The change
//! logs themselves are kept whole (nothing is compacted).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use twinflow_schemas::config::AnnConfig;

use super::{State, Store};
use crate::error::{Error, Result};
use crate::manifest::now_ms;
use crate::text_index::TextIndex;
use crate::vector_index::ShardedVectors;

/// Past states kept built.
const KEPT: usize = 2;

impl Store {
    /// Limits `AS OF` to states current within `window` (`None`: every committed epoch).
    pub fn set_time_travel(&self, window: Option<Duration>) {
        *self.history.write() = window;
    }

    /// The oldest and newest epochs `AS OF` can read now.
    pub fn epochs_available(&self) -> (u64, u64) {
        let state = self.state.read();
        let newest = state.committed;
        let Some(window) = *self.history.read() else { return (0, newest) };
        let cutoff = now_ms().saturating_sub(window.as_millis() as u64);
        // The last state current at the cutoff, else the first one committed after it.
        let epochs = &state.manifest.epochs;
        let oldest = epochs
            .iter()
            .rev()
            .find(|e| e.committed_at_ms <= cutoff)
            .or_else(|| epochs.first())
            .map_or(newest, |e| e.epoch);
        (oldest.min(newest), newest)
    }

    /// [`Error::EpochUnavailable`] unless `epoch` is within the window.
    pub fn check_epoch(&self, epoch: u64) -> Result<()> {
        let (oldest, newest) = self.epochs_available();
        if epoch < oldest || epoch > newest {
            return Err(Error::EpochUnavailable { epoch, oldest, newest });
        }
        Ok(())
    }

    /// The store as it was at `epoch` (this one at the committed epoch).
    pub fn as_of(self: &Arc<Self>, epoch: u64) -> Result<Arc<Store>> {
        self.check_epoch(epoch)?;
        if epoch == self.committed_epoch() {
            return Ok(self.clone());
        }
        let projection = self.state.read().projection.as_ref().map(|p| p.id().to_owned());
        if let Some((_, store)) = self.past.lock().iter().find(|(at, s)| *at == epoch && s.projection() == projection) {
            return Ok(store.clone());
        }
        let store = Arc::new(self.past_state(epoch)?);
        let mut past = self.past.lock();
        past.retain(|(at, _)| *at != epoch);
        past.push((epoch, store.clone()));
        if past.len() > KEPT {
            past.remove(0);
        }
        Ok(store)
    }

    fn past_state(&self, epoch: u64) -> Result<Store> {
        let (mut manifest, projection) = {
            let state = self.state.read();
            (state.manifest.clone(), state.projection.clone())
        };
        manifest.epochs.retain(|e| e.epoch <= epoch);
        manifest.snapshots.retain(|s| s.epoch <= epoch);
        manifest.committed_epoch = epoch;
        let live = crate::restore::restore(&self.dir, &manifest)?;
        let text = TextIndex::with_shards(1)?;
        let chunks = live.chunks.current();
        text.apply(chunks.iter().map(|c| (c.chunk_id, c.text.as_str())), [])?;
        drop(chunks);
        // Exact scans only: nothing to build.
        let vectors = ShardedVectors::new(self.dim, &AnnConfig { enabled: false, ..AnnConfig::default() }, 1)?;
        let projected: HashMap<_, _> = match &projection {
            Some(p) => live.embeddings.current().iter().map(|r| (r.chunk_id, p.project(&r.vector.0))).collect(),
            None => HashMap::new(),
        };
        let state = State {
            committed: epoch,
            manifest,
            live,
            text,
            vectors,
            drift: Vec::new(),
            ingest_errors: Vec::new(),
            traces: Vec::new(),
            projection,
            projected,
        };
        Ok(Store {
            dir: self.dir.clone(),
            dim: self.dim,
            writer: Mutex::new(()),
            state: RwLock::new(state),
            batches: Mutex::default(),
            sql_runtime: RwLock::new(self.sql_runtime.read().clone()),
            retention: RwLock::default(),
            held: RwLock::default(),
            observers: RwLock::default(),
            read_only: true,
            following: false,
            mark: Mutex::default(),
            history: RwLock::new(*self.history.read()),
            past: Mutex::default(),
        })
    }
}
