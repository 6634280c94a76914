//! The embedding backlog's progress, shown to whoever started twinflow: a
//! bar on a terminal, else the pipeline's log lines
//! (`twinflow_pipelines::feature::progress`).

use std::time::Duration;

use twinflow_pipelines::feature::progress::{LogLines, ProgressDisplay as Display};

/// How the progress through an embedding backlog is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressDisplay {
    /// A log line every few seconds (for logs that are kept or parsed).
    Log,
    /// A progress bar on stderr (for a person at a terminal).
    Bar,
}

impl ProgressDisplay {
    /// The display: a bar, or a log line every `every`.
    pub(crate) fn build(self, every: Duration, model: &str) -> Box<dyn Display> {
        match self {
            ProgressDisplay::Log => Box::new(LogLines::new(every, model)),
            ProgressDisplay::Bar => Box::new(Bar { bar: None, end: LogLines::new(every, model) }),
        }
    }
}

/// A bar while a backlog lasts; the log line at its end.
struct Bar {
    bar: Option<indicatif::ProgressBar>,
    end: LogLines,
}

impl Display for Bar {
    fn started(&mut self, total: u64) {
        self.bar = Some(crate::ui::bar(total, "texts"));
    }

    fn progress(&mut self, done: u64, total: u64, pending: usize, _elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(format!("embedding ({pending} changes not yet committed)"));
        }
    }

    fn finished(&mut self, done: u64, elapsed: Duration) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.end.finished(done, elapsed);
    }
}
