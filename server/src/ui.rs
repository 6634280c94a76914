//! Output for people at a terminal: colours and progress bars when the
//! stream is a terminal, plain text when it is piped or redirected.
//!
//! Colours follow the usual conventions (through `console`): off when the
//! stream is not a terminal, `NO_COLOR` or `CLICOLOR=0` turn them off,
//! `CLICOLOR_FORCE=1` turns them on. Progress bars draw on stderr only when it
//! is a terminal; otherwise the callers print plain lines instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use console::{Style, StyledObject, Term};
use indicatif::{ProgressBar, ProgressStyle};

/// Whether stderr is a terminal (progress bars are drawn there).
pub fn stderr_is_terminal() -> bool {
    Term::stderr().is_term()
}

/// Whether log lines on stderr may carry colour codes: a terminal, unless
/// `NO_COLOR` or `CLICOLOR=0` turn them off (`CLICOLOR_FORCE=1` turns them on).
pub fn stderr_colours() -> bool {
    console::colors_enabled_stderr()
}

/// Text styles of the CLI's output on stdout.
pub mod paint {
    use super::*;

    fn with(style: Style, text: impl std::fmt::Display) -> StyledObject<String> {
        style.apply_to(text.to_string())
    }

    /// Titles and names.
    pub fn strong(text: impl std::fmt::Display) -> StyledObject<String> {
        with(Style::new().bold(), text)
    }

    /// Secondary details: scores, timings, epochs.
    pub fn dim(text: impl std::fmt::Display) -> StyledObject<String> {
        with(Style::new().dim(), text)
    }

    /// Identifiers: document ids, versions, markers.
    pub fn id(text: impl std::fmt::Display) -> StyledObject<String> {
        with(Style::new().cyan(), text)
    }

    /// Good news: active, cited, promoted.
    pub fn good(text: impl std::fmt::Display) -> StyledObject<String> {
        with(Style::new().green(), text)
    }

    /// Bad news: triggered, failed.
    pub fn bad(text: impl std::fmt::Display) -> StyledObject<String> {
        with(Style::new().red().bold(), text)
    }
}

/// `error:` in red on a terminal, as the prefix of a fatal error on stderr.
pub fn error_prefix() -> StyledObject<&'static str> {
    Style::new().for_stderr().red().bold().apply_to("error:")
}

/// A bar of `len` steps on stderr (hidden when stderr is not a terminal).
pub fn bar(len: u64, unit: &str) -> ProgressBar {
    let template =
        format!("{{spinner}} {{msg}} [{{bar:32}}] {{human_pos}}/{{human_len}} {unit} · {{rate}} · {{eta}} left");
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", state.per_sec());
        })
        .progress_chars("=> ");
    let bar = ProgressBar::new(len).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar over bytes (for files being sent).
pub fn byte_bar(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:32}] {binary_bytes}/{binary_total_bytes} · {binary_bytes_per_sec} · {eta} left",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let bar = ProgressBar::new(len).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner with a message and the elapsed time, for work of unknown length.
pub fn spinner(message: impl Into<std::borrow::Cow<'static, str>>) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::new_spinner().with_style(style).with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// Set once logging is set up as JSON: messages for people go through the log then.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Logs are JSON from now on (or not).
pub fn set_json_logs(json: bool) {
    JSON_LOGS.store(json, Ordering::Relaxed);
}

/// Whether logs are JSON (then no bars, and messages go through the log).
pub fn json_logs() -> bool {
    JSON_LOGS.load(Ordering::Relaxed)
}

/// A message for the person running the server: stderr as text, or a log
/// event when logs are JSON (so stderr stays one JSON object per line).
pub fn say(message: impl std::fmt::Display) {
    if json_logs() {
        tracing::info!("{message}");
    } else {
        eprintln!("{message}");
    }
}
