//! The embedding backlog's progress, shown to whoever started twinflow: a
//! bar on a terminal, else a log line every few seconds.

use std::time::{Duration, Instant};

use twinflow_dataflow::Engine;

/// How the progress through an embedding backlog is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// A log line every few seconds (for logs that are kept or parsed).
    Log,
    /// A progress bar on stderr (for a person at a terminal).
    Bar,
}

/// Shows the progress of the embedding model through a backlog (the initial
/// load of a corpus, a large batch of changes): a log line every `every`, or a
/// bar; and how long it took once it is through. Small backlogs (under 100
/// texts) finish quietly.
pub(crate) fn report_progress(engine: &Engine, stop: &crossbeam_channel::Receiver<()>, every: Duration, display: ProgressDisplay) {
    struct Backlog {
        since: Instant,
        embedded_at_start: u64,
        last_report: Instant,
        bar: Option<indicatif::ProgressBar>,
    }
    let mut backlog: Option<Backlog> = None;
    loop {
        match stop.recv_timeout(Duration::from_millis(250)) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let stats = engine.stats();
        let waiting = stats.texts_queued.saturating_sub(stats.texts_embedded);
        let busy = waiting > 0 || stats.pending_changes > 0;
        match &mut backlog {
            None if waiting > 0 => {
                let now = Instant::now();
                let bar = (display == ProgressDisplay::Bar).then(|| crate::ui::bar(waiting, "texts"));
                backlog = Some(Backlog { since: now, embedded_at_start: stats.texts_embedded, last_report: now, bar });
            }
            Some(b) if busy => {
                if let Some(bar) = &b.bar {
                    bar.set_length(stats.texts_queued - b.embedded_at_start);
                    bar.set_position(stats.texts_embedded - b.embedded_at_start);
                    bar.set_message(format!("embedding ({} changes not yet committed)", stats.pending_changes));
                } else if b.last_report.elapsed() >= every {
                    b.last_report = Instant::now();
                    let done = stats.texts_embedded - b.embedded_at_start;
                    let total = stats.texts_queued - b.embedded_at_start;
                    let rate = done as f64 / b.since.elapsed().as_secs_f64().max(1e-9);
                    tracing::info!(
                        "embedding: {done}/{total} texts ({:.0}%), {rate:.0} texts/s, about {:.0} s left; {} changes not yet committed",
                        100.0 * done as f64 / total.max(1) as f64,
                        waiting as f64 / rate.max(1e-9),
                        stats.pending_changes,
                    );
                }
            }
            Some(b) => {
                if let Some(bar) = &b.bar {
                    bar.finish_and_clear();
                }
                let done = stats.texts_embedded - b.embedded_at_start;
                let seconds = b.since.elapsed().as_secs_f64();
                if done >= 100 {
                    tracing::info!(
                        "embedding backlog done: {done} texts in {seconds:.1} s ({:.0} texts/s, model {})",
                        done as f64 / seconds.max(1e-9),
                        engine.embedder().model_id()
                    );
                }
                backlog = None;
            }
            None => {}
        }
    }
}

