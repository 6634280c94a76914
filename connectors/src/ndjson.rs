//! NDJSON change logs: one JSON change per line (the body of
//! `POST /v1/documents`, see `twinflow_schemas::change`), streamed line by
//! line so a log may be far larger than memory.
//!
//! Every valid line becomes a change, every bad line an [`IngestError`]
//! located at `path:line`; the replay goes on after a bad line. A line
//! longer than any valid change could be is skipped without being held in
//! memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use crossbeam_channel::Sender;
use twinflow_schemas::config::NdjsonSourceConfig;
use twinflow_schemas::{ChangeLimits, DocumentChange, parse_change};

use crate::handle::Halt;
use crate::{Error, IngestError, Result, SourceEvent, SourceHandle, own_source};

/// What a replay read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NdjsonStats {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Changes handed to `emit`.
    pub changes: u64,
    /// Error records handed to `emit`.
    pub errors: u64,
}

/// Streams the change log at `path` into `emit`: changes in batches of up to
/// `batch`, each bad line as a [`SourceEvent::Error`] (after the changes of
/// the lines before it, so events keep the order of the lines). An upsert
/// without a `source` gets `source`. `emit` returns whether to go on; the
/// replay stops after the first call that returns `false` (that event counts
/// as handed over).
///
/// Fails only when the file cannot be opened or read.
pub fn read_ndjson(
    path: &Path,
    source: &str,
    limits: &ChangeLimits,
    batch: usize,
    emit: impl FnMut(SourceEvent) -> bool,
) -> Result<NdjsonStats> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    // JSON escapes can make content up to six times longer (`\u0000`).
    let longest = limits.max_document_bytes.saturating_mul(6).saturating_add(1 << 20);
    let batch = batch.max(1);
    let mut out = Out { emit, source, batch, pending: Vec::new(), stats: NdjsonStats::default() };
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = read_line(&mut reader, &mut line, longest).map_err(|e| Error::io(path, e))?;
        let Some(too_long) = read else { break };
        out.stats.lines += 1;
        let number = out.stats.lines as usize;
        let parsed = if too_long {
            Err(format!("the line is longer than {longest} bytes, more than any change may be"))
        } else {
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            parse_change(text, number, limits).map_err(|e| e.message)
        };
        let go_on = match parsed {
            Ok(change) => out.change(change),
            Err(reason) => out.error(format!("{}:{number}", path.display()), reason),
        };
        if !go_on {
            return Ok(out.stats);
        }
    }
    out.flush();
    Ok(out.stats)
}

/// A replay of an NDJSON change log on its own thread.
#[derive(Debug)]
pub struct NdjsonSource;

impl NdjsonSource {
    /// Replays `config.path` once into `tx` (see [`read_ndjson`]), on a new
    /// thread; [`SourceHandle::wait`] returns when the whole file is sent.
    /// Fails at once if the file cannot be opened.
    pub fn spawn(
        name: String,
        config: NdjsonSourceConfig,
        limits: ChangeLimits,
        batch: usize,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        File::open(&config.path).map_err(|e| Error::io(&config.path, e))?;
        SourceHandle::spawn(name, tx, move |outbox| {
            let mut stopped = false;
            let stats = read_ndjson(&config.path, outbox.name(), &limits, batch, |event| {
                stopped = outbox.send(event).is_err();
                !stopped
            })?;
            tracing::info!(
                source = outbox.name(),
                path = %config.path.display(),
                lines = stats.lines,
                changes = stats.changes,
                errors = stats.errors,
                stopped,
                "NDJSON replay done"
            );
            if stopped { Err(Halt::Stopped) } else { Ok(()) }
        })
    }
}

/// Batches changes on their way to `emit`, counting what it hands over.
struct Out<'a, F> {
    emit: F,
    source: &'a str,
    batch: usize,
    pending: Vec<DocumentChange>,
    stats: NdjsonStats,
}

impl<F: FnMut(SourceEvent) -> bool> Out<'_, F> {
    fn change(&mut self, change: DocumentChange) -> bool {
        self.pending.push(own_source(change, self.source));
        self.pending.len() < self.batch || self.flush()
    }

    fn error(&mut self, location: String, reason: String) -> bool {
        if !self.flush() {
            return false;
        }
        self.stats.errors += 1;
        (self.emit)(SourceEvent::Error(IngestError::new(self.source, location, reason)))
    }

    fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let changes = std::mem::take(&mut self.pending);
        self.stats.changes += changes.len() as u64;
        (self.emit)(SourceEvent::Changes { source: self.source.to_owned(), changes, position: None })
    }
}

/// Reads one line (with its `\n`) into `line`, keeping at most `longest`
/// bytes: `None` at the end of the input, else whether it was too long (then
/// `line` is left empty and the rest of the line skipped).
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, longest: usize) -> io::Result<Option<bool>> {
    let mut read_any = false;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(too_long));
        }
        read_any = true;
        let (used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if line.len() + used > longest {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(&available[..used]);
            }
        }
        reader.consume(used);
        if done {
            return Ok(Some(too_long));
        }
    }
}
