//! One job type for every training run (the embedding adapter, the twin):
//! at most one run at a time, on its own thread, with a status people and
//! the dashboard can follow; a run that panics is a failed run, never a job
//! stuck "running"; its outcome is counted in the metrics.
//!
//! ```text
//!  Job::start(trigger, run) ─▶ status: running, phase … ─▶ run(trigger) on a thread
//!       │ (already running: a drift trigger waits, when the job keeps them)    │
//!       └──────────────── the waiting trigger starts the next run ◀── status: idle, last / last_error
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::Value;

use super::Error;

/// What a job is doing and what one run produced: plain types of `schemas` (the API shows them).
pub use twinflow_schemas::training::{JobStatus, RunOutcome};

/// One run of a job, from its trigger to its outcome.
pub type Run<E> = Arc<dyn Fn(Value) -> Result<RunOutcome<E>, Error> + Send + Sync>;

/// A training job of one kind.
#[derive(Debug)]
pub struct Job<E> {
    /// `adapter` or `twin`: the thread's name and the metrics label.
    kind: &'static str,
    status: Mutex<JobStatus<E>>,
    running: AtomicBool,
    /// Whether a drift trigger that fires during a run starts another one after it.
    keeps_drift_triggers: bool,
    /// Such a trigger, waiting for the run in progress.
    pending: Mutex<Option<Value>>,
}

impl<E: Clone + Send + 'static> Job<E> {
    /// An idle job; with `keeps_drift_triggers`, a drift trigger that fires
    /// during a run starts a run when that one ends.
    pub fn new(kind: &'static str, keeps_drift_triggers: bool) -> Self {
        Self {
            kind,
            status: Mutex::new(JobStatus::default()),
            running: AtomicBool::new(false),
            keeps_drift_triggers,
            pending: Mutex::new(None),
        }
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus<E> {
        self.status.lock().clone()
    }

    /// True while a run is in progress.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    /// The run moved on to `phase`.
    pub fn phase(&self, phase: &str) {
        self.status.lock().phase = phase.into();
    }

    /// Training progress of the run.
    pub fn progress(&self, step: usize, steps: usize, loss: f32) {
        let mut status = self.status.lock();
        status.step = step;
        status.steps = steps;
        status.loss = Some(loss);
    }

    /// Starts `run` on a thread; `false` when a run is in progress (a drift
    /// trigger then waits for it, when the job keeps them).
    pub fn start(self: &Arc<Self>, trigger: Value, run: Run<E>) -> Result<bool, Error> {
        if self.running.swap(true, Ordering::SeqCst) {
            if self.keeps_drift_triggers && trigger.get("drift").is_some() {
                *self.pending.lock() = Some(trigger);
            }
            return Ok(false);
        }
        {
            let mut status = self.status.lock();
            status.state = "running".into();
            status.phase = "snapshot".into();
            status.step = 0;
            status.steps = 0;
            status.loss = None;
            status.started_at_ms = Some(crate::now_ms());
            status.trigger = trigger.clone();
        }
        let job = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name(format!("twinflow-{}", self.kind))
            .spawn(move || job.run_to_end(trigger, run));
        if let Err(e) = spawned {
            self.running.store(false, Ordering::SeqCst);
            return Err(Error::Thread(e));
        }
        Ok(true)
    }

    fn run_to_end(self: &Arc<Self>, trigger: Value, run: Run<E>) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(trigger)))
            .unwrap_or_else(|panic| Err(Error::Panicked(panic_message(&*panic))));
        let mut status = self.status.lock();
        status.state = "idle".into();
        status.phase = String::new();
        status.runs += 1;
        match result {
            Ok(outcome) => {
                tracing::info!(
                    kind = self.kind,
                    version = outcome.version,
                    promoted = outcome.promoted,
                    seconds = outcome.seconds,
                    "training run finished: {}",
                    outcome.decision
                );
                crate::metrics::training_run(self.kind, if outcome.promoted { "promoted" } else { "kept" });
                status.last = Some(outcome);
                status.last_error = None;
            }
            Err(e) => {
                let message = crate::error_chain(&e);
                tracing::error!(kind = self.kind, error = %message, "training run failed");
                crate::metrics::training_run(self.kind, "failed");
                status.last_error = Some(message);
            }
        }
        drop(status);
        self.running.store(false, Ordering::SeqCst);
        if let Some(trigger) = self.pending.lock().take() {
            tracing::info!(kind = self.kind, "starting the run a drift trigger asked for during the last one");
            if let Err(e) = self.start(trigger, run) {
                tracing::error!(kind = self.kind, error = %e, "could not start the pending training run");
            }
        }
    }
}

/// What a caught panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// At most `limit` of `items`, evenly spread (0 = all).
pub(crate) fn even_sample<T: Clone>(items: Vec<T>, limit: usize) -> Vec<T> {
    if limit == 0 || items.len() <= limit {
        return items;
    }
    let step = items.len() as f64 / limit as f64;
    (0..limit).map(|i| items[(i as f64 * step) as usize].clone()).collect()
}
