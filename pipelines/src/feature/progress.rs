//! The embedding model's progress through a backlog (the initial load of a
//! corpus, a large batch of changes), followed from the engine's counters.
//!
//! ```text
//!  Engine::stats every 250 ms ─▶ Backlog: started ─▶ progress (done / total, rate, pending) … ─▶ done
//!                                    └─▶ a Display: a log line every few seconds, or a bar
//! ```

use std::time::{Duration, Instant};

use twinflow_dataflow::Engine;

/// Where progress goes: [`LogLines`] writes log lines; the CLI draws a bar.
pub trait ProgressDisplay: Send {
    /// A backlog of `total` texts began.
    fn started(&mut self, total: u64);
    /// `done` of `total` texts are embedded; `pending` changes are not yet committed.
    fn progress(&mut self, done: u64, total: u64, pending: usize, elapsed: Duration);
    /// The backlog is through: `done` texts in `elapsed`.
    fn finished(&mut self, done: u64, elapsed: Duration);
}

/// A log line every `every`, and one when a backlog of 100 texts or more is through.
#[derive(Debug)]
pub struct LogLines {
    pub every: Duration,
    /// The embedding model's name, said at the end.
    pub model: String,
    last: Option<Instant>,
}

impl LogLines {
    pub fn new(every: Duration, model: impl Into<String>) -> Self {
        Self { every, model: model.into(), last: None }
    }
}

impl ProgressDisplay for LogLines {
    fn started(&mut self, _total: u64) {
        self.last = Some(Instant::now());
    }

    fn progress(&mut self, done: u64, total: u64, pending: usize, elapsed: Duration) {
        if self.last.is_some_and(|last| last.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
        tracing::info!(
            "embedding: {done}/{total} texts ({:.0}%), {rate:.0} texts/s, about {:.0} s left; {pending} changes not yet committed",
            100.0 * done as f64 / total.max(1) as f64,
            total.saturating_sub(done) as f64 / rate.max(1e-9),
        );
    }

    fn finished(&mut self, done: u64, elapsed: Duration) {
        if done >= 100 {
            let seconds = elapsed.as_secs_f64();
            tracing::info!(
                "embedding backlog done: {done} texts in {seconds:.1} s ({:.0} texts/s, model {})",
                done as f64 / seconds.max(1e-9),
                self.model
            );
        }
    }
}

/// Follows the engine's backlog until `stop` is dropped, telling `display`.
pub fn follow_backlog(engine: &Engine, stop: &crossbeam_channel::Receiver<()>, display: &mut dyn ProgressDisplay) {
    // (when it began, texts embedded before it)
    let mut backlog: Option<(Instant, u64)> = None;
    loop {
        match stop.recv_timeout(Duration::from_millis(250)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let stats = engine.stats();
        let waiting = stats.texts_queued.saturating_sub(stats.texts_embedded);
        let busy = waiting > 0 || stats.pending_changes > 0;
        match backlog {
            None if waiting > 0 => {
                backlog = Some((Instant::now(), stats.texts_embedded));
                display.started(waiting);
            }
            Some((since, at_start)) if busy => display.progress(
                stats.texts_embedded - at_start,
                stats.texts_queued - at_start,
                stats.pending_changes,
                since.elapsed(),
            ),
            Some((since, at_start)) => {
                display.finished(stats.texts_embedded - at_start, since.elapsed());
                backlog = None;
            }
            None => {}
        }
    }
}
