//! A read replica: the inference pipeline scaled out. [`Replica`] follows
//! a primary's committed epochs through its data directory
//! ([`Store::follow`]) — a shared one, or a local mirror of the object
//! store the primary ships to ([`Mirror`]) — and its registries (the
//! active adapter, twin and retrieval setting), and keeps what
//! `/v1/status`, `/metrics` and `/readyz` say about its lag.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use twinflow_schemas::api::ReplicaStatus;
use twinflow_schemas::config::ReplicaConfig;
use twinflow_sinks::{Mirror, Store};

use crate::training::evaluation::setting::RetrievalSettings;
use crate::training::{Training, Twin};

/// Apply lags kept for the percentiles.
const LAGS_KEPT: usize = 1024;

/// A replica's follower: what it follows and how far behind it is.
#[derive(Debug)]
pub struct Replica {
    store: Arc<Store>,
    config: ReplicaConfig,
    /// The object store's copy the store was opened on, when following one.
    mirror: Option<Mirror>,
    state: Mutex<Following>,
}

#[derive(Debug, Default)]
struct Following {
    /// The last successful read of the primary's manifest.
    read_at: Option<Instant>,
    last_error: Option<String>,
    /// (epoch, committed_at_ms) of the primary's newest commit seen, when not applied yet.
    behind: Option<(u64, u64)>,
    /// Commit-to-visible lags of the last epochs applied, in milliseconds.
    lags_ms: VecDeque<f64>,
    applied: u64,
}

impl Replica {
    /// Follows the primary whose data directory `store` was opened on
    /// ([`Store::open_follower`]), fetched first from an object store when
    /// `mirror` is its copy.
    pub fn new(store: Arc<Store>, config: ReplicaConfig, mirror: Option<Mirror>) -> Self {
        Self { store, config, mirror, state: Mutex::default() }
    }

    /// The settings it follows with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// One read of the primary's manifest, applying every new epoch.
    /// A failure is kept for the status (and `/readyz`) and logged once.
    pub fn step(&self) {
        let pulled = match &self.mirror {
            Some(mirror) => mirror.pull_tables().map(|_| ()),
            None => Ok(()),
        };
        match pulled.and_then(|()| self.store.follow()) {
            Ok(followed) => {
                let now = twinflow_schemas::clock::now_ms().max(0) as u64;
                let mut state = self.state.lock();
                for (_, committed_at_ms) in &followed.applied {
                    if state.lags_ms.len() == LAGS_KEPT {
                        state.lags_ms.pop_front();
                    }
                    state.lags_ms.push_back(now.saturating_sub(*committed_at_ms) as f64);
                }
                state.applied += followed.applied.len() as u64;
                state.read_at = Some(Instant::now());
                state.last_error = None;
                state.behind = None;
                if !followed.applied.is_empty() {
                    tracing::debug!(from = followed.from, to = followed.to, "followed the primary");
                }
            }
            Err(e) => {
                let message = e.to_string();
                let mut state = self.state.lock();
                if state.last_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = %message, "could not follow the primary's commits; retrying");
                }
                state.last_error = Some(message);
                if state.behind.is_none() {
                    state.behind = self.primary_head().filter(|(epoch, _)| *epoch > self.store.committed_epoch());
                }
            }
        }
    }

    /// The primary's newest commit as its manifest says now (epoch, committed_at_ms).
    fn primary_head(&self) -> Option<(u64, u64)> {
        if self.mirror.is_some() {
            return None;
        }
        let manifest = twinflow_sinks::Manifest::load(self.store.data_dir()).ok()??;
        let at = manifest.epochs.last().map_or(0, |e| e.committed_at_ms);
        Some((manifest.committed_epoch, at))
    }

    /// Follows the registries too: an adapter, twin or retrieval setting
    /// the primary promoted or rolled back is used here from now on.
    pub fn follow_registries(&self, training: &Training, twin: &Twin, retrieval: &RetrievalSettings) {
        if let Some(mirror) = &self.mirror
            && let Err(e) = mirror.pull_others()
        {
            tracing::warn!(url = %mirror.remote().url(), error = %e, "could not fetch the registries from the object store");
        }
        if let Err(e) = training.follow_active() {
            tracing::warn!(error = %e, "could not follow the active embedding adapter");
        }
        if let Err(e) = twin.follow_active() {
            tracing::warn!(error = %e, "could not follow the active twin");
        }
        if let Err(e) = retrieval.refresh() {
            tracing::warn!(error = %e, "could not follow the active retrieval setting");
        }
    }

    /// Reads `store.follow` every `[replica] poll` and the registries every
    /// `every`, until `stop` is dropped.
    pub fn run(&self, stop: &crossbeam_channel::Receiver<()>, registries: &dyn Fn(), every: Duration) {
        let poll = self.config.poll.max(Duration::from_millis(5));
        let mut registries_at = Instant::now();
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(poll) {
            self.step();
            if registries_at.elapsed() >= every {
                registries();
                registries_at = Instant::now();
            }
        }
    }

    /// Where it stands.
    pub fn status(&self) -> ReplicaStatus {
        let state = self.state.lock();
        let committed = self.store.committed_epoch();
        let now = twinflow_schemas::clock::now_ms().max(0) as u64;
        let (primary_epoch, lag_seconds) = match state.behind {
            Some((epoch, at)) => (epoch, now.saturating_sub(at) as f64 / 1e3),
            None => (committed, 0.0),
        };
        let read_ms_ago = state.read_at.map(|at| at.elapsed().as_millis() as u64);
        let mut lags: Vec<f64> = state.lags_ms.iter().copied().collect();
        lags.sort_by(f64::total_cmp);
        let quantile = |q: f64| (!lags.is_empty()).then(|| lags[((lags.len() - 1) as f64 * q).round() as usize]);
        let max_lag = self.config.max_lag;
        let stale = read_ms_ago.is_none_or(|ms| Duration::from_millis(ms) > max_lag);
        ReplicaStatus {
            following: match &self.mirror {
                Some(mirror) => mirror.remote().url().to_owned(),
                None => self.store.data_dir().display().to_string(),
            },
            primary: self.config.primary.clone(),
            primary_epoch,
            lag_epochs: primary_epoch.saturating_sub(committed),
            lag_seconds,
            last_read_ms_ago: read_ms_ago,
            last_error: state.last_error.clone(),
            apply_lag_p50_ms: quantile(0.5),
            apply_lag_p99_ms: quantile(0.99),
            epochs_applied: state.applied,
            ready: !stale && Duration::from_secs_f64(lag_seconds) <= max_lag,
        }
    }
}
