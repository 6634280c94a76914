//! Directory watch: mirrors a directory tree as documents.
//!
//! On start the whole tree is scanned and every file with a configured
//! extension becomes an upsert (in path order, in batches). Then file system
//! events (from `notify`) mark paths dirty; a path is looked at again once
//! no event has touched it for [`DEBOUNCE`] (or [`MAX_DELAY`] after its first
//! event), so a file written in several syscalls becomes one upsert of its
//! final content. Looking again compares the path with what was last sent:
//!
//! ```text
//!  path now           sent before        change
//!  file, new content  —/other version    upsert (and delete of an old doc_id)
//!  file, same content same version       nothing (touch, chmod)
//!  gone               file(s) under it   delete each
//!  directory          —                  scan it (a directory moved in)
//! ```
//!
//! A rename is a removal of the old path and a creation of the new one, so
//! it becomes a delete and an upsert. Hidden and temporary files never count.

mod file;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use twinflow_schemas::api::LagUnit;
use twinflow_schemas::config::WatchSourceConfig;
use twinflow_schemas::{DocumentChange, Hash128};

use crate::handle::{Halt, Outbox};
use crate::{Error, Result, SourceEvent, SourceHandle};

pub use file::file_change;

/// Quiet time after a path's last event before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Longest wait after a path's first event, however busy it is.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Changes per event at most.
pub const BATCH: usize = 256;

/// A source that mirrors a directory tree as documents (see the module doc).
#[derive(Debug)]
pub struct WatchSource;

impl WatchSource {
    /// Starts watching `config.path` on a new thread that sends into `tx`.
    ///
    /// Fails if the path is not a directory or cannot be watched; every
    /// later problem with a single file is a [`SourceEvent::Error`].
    pub fn spawn(name: String, config: WatchSourceConfig, tx: Sender<SourceEvent>) -> Result<SourceHandle> {
        let root = config.path.canonicalize().map_err(|e| Error::io(&config.path, e))?;
        if !root.is_dir() {
            return Err(Error::NotADirectory { path: root });
        }
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let watch_error = |source| Error::Watch { path: root.clone(), source };
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the source has ended.
            let _ = events_tx.send(event);
        })
        .map_err(watch_error)?;
        watcher.watch(&root, RecursiveMode::Recursive).map_err(watch_error)?;
        let config = WatchSourceConfig { path: root.clone(), ..config };
        SourceHandle::spawn(name, tx, move |outbox| {
            let _watcher = watcher; // watches as long as the thread runs
            Mirror::new(root, config, outbox).run(&events_rx)
        })
    }
}

/// What was last sent for one file.
#[derive(Debug)]
struct Sent {
    doc_id: String,
    version: Hash128,
}

/// The state of a running watch: what each file was last sent as.
#[derive(Debug)]
struct Mirror {
    root: PathBuf,
    config: WatchSourceConfig,
    outbox: Outbox,
    sent: BTreeMap<PathBuf, Sent>,
    batch: Vec<DocumentChange>,
}

impl Mirror {
    fn new(root: PathBuf, config: WatchSourceConfig, outbox: Outbox) -> Self {
        Self { root, config, outbox, sent: BTreeMap::new(), batch: Vec::new() }
    }

    fn run(mut self, events: &Receiver<notify::Result<Event>>) -> Result<(), Halt> {
        let started = Instant::now();
        let root = self.root.clone();
        self.look_at(&root)?;
        self.flush()?;
        self.outbox.report_lag(0, LagUnit::Files);
        tracing::info!(
            source = self.outbox.name(),
            root = %root.display(),
            files = self.sent.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "initial scan done"
        );
        let mut dirty = Dirty::default();
        loop {
            let wait = dirty
                .next_deadline()
                .map_or(Duration::from_secs(60), |at| at.saturating_duration_since(Instant::now()));
            select! {
                recv(events) -> event => match event {
                    Ok(Ok(event)) => self.note(&mut dirty, event),
                    Ok(Err(error)) => {
                        // Events may have been lost: look at everything again.
                        self.outbox.error(root.display().to_string(), format!("watch error: {error}"))?;
                        dirty.mark(root.clone());
                    }
                    Err(_) => return Err(Error::WatcherGone { path: root }.into()),
                },
                recv(self.outbox.stop_signal()) -> _ => return Err(Halt::Stopped),
                default(wait) => {}
            }
            for path in dirty.take_due(Instant::now()) {
                self.look_at(&path)?;
            }
            self.flush()?;
            self.outbox.report_lag(dirty.paths.len() as u64, LagUnit::Files);
            if !root.is_dir() {
                let error = Error::RootRemoved { path: root.clone() };
                self.outbox.error(root.display().to_string(), error.to_string())?;
                return Err(error.into());
            }
        }
    }

    /// Marks the paths of one event dirty.
    fn note(&self, dirty: &mut Dirty, event: Event) {
        if event.need_rescan() {
            dirty.mark(self.root.clone());
        }
        match event.kind {
            // Opening and reading (ours included) change nothing.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return,
            _ => {}
        }
        for path in event.paths {
            if path == self.root || !file::is_ignored(&self.root, &path) {
                dirty.mark(path);
            }
        }
    }

    /// Brings what was sent for `path` (and everything under it) up to date.
    fn look_at(&mut self, path: &Path) -> Result<(), Halt> {
        match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.forget_under(path, None),
            Err(e) => self.outbox.error(path.display().to_string(), format!("cannot read: {e}")),
            Ok(meta) if meta.is_dir() => {
                let mut seen = BTreeSet::new();
                self.scan(path, &mut seen)?;
                self.forget_under(path, Some(&seen))
            }
            Ok(meta) if meta.is_file() && file::is_wanted(path, &self.config) => self.upsert(path),
            Ok(_) => Ok(()),
        }
    }

    /// Upserts every wanted file under `dir`, in path order.
    fn scan(&mut self, dir: &Path, seen: &mut BTreeSet<PathBuf>) -> Result<(), Halt> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return self.outbox.error(dir.display().to_string(), format!("cannot list: {e}"));
            }
        };
        let mut entries: Vec<_> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| !file::is_ignored_name(&entry.file_name().to_string_lossy()))
            .collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                self.scan(&path, seen)?;
            } else if file::is_wanted(&path, &self.config)
                // A link counts when it points at a file; linked directories
                // are not followed (no cycles).
                && (file_type.is_file() || path.metadata().is_ok_and(|m| m.is_file()))
            {
                seen.insert(path.clone());
                self.upsert(&path)?;
            }
        }
        Ok(())
    }

    /// Sends the file's current version unless it was the last one sent.
    fn upsert(&mut self, path: &Path) -> Result<(), Halt> {
        // A link is followed only to a file inside the watched directory: the source mirrors that tree, nothing else.
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
            && !path.canonicalize().is_ok_and(|target| target.starts_with(&self.root))
        {
            let reason = "a link to outside the watched directory: not followed".to_owned();
            return self.outbox.error(path.display().to_string(), reason);
        }
        let name = self.outbox.name().to_owned();
        let change = match file_change(&self.root, path, &name, &self.config) {
            Ok(change) => change,
            // Removed since it was listed: its removal event follows.
            Err(_) if !path.exists() => return Ok(()),
            Err(error) => return self.outbox.send(SourceEvent::Error(error)),
        };
        let DocumentChange::Upsert(doc) = &change else {
            return Ok(());
        };
        let now = Sent { doc_id: doc.doc_id.clone(), version: doc.version_hash() };
        match self.sent.insert(path.to_owned(), now) {
            Some(before) if before.doc_id != doc.doc_id => {
                self.push(DocumentChange::Delete { doc_id: before.doc_id })?;
            }
            Some(before) if before.version == doc.version_hash() => return Ok(()),
            _ => {}
        }
        self.push(change)
    }

    /// Deletes what was sent for `path` and the files under it, except the
    /// paths in `keep`.
    fn forget_under(&mut self, path: &Path, keep: Option<&BTreeSet<PathBuf>>) -> Result<(), Halt> {
        // Paths order by component, so everything under `path` follows it.
        let gone: Vec<PathBuf> = self
            .sent
            .range(path.to_owned()..)
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(path))
            .filter(|p| keep.is_none_or(|keep| !keep.contains(*p)))
            .cloned()
            .collect();
        for p in gone {
            if let Some(sent) = self.sent.remove(&p) {
                self.push(DocumentChange::Delete { doc_id: sent.doc_id })?;
            }
        }
        Ok(())
    }

    fn push(&mut self, change: DocumentChange) -> Result<(), Halt> {
        self.batch.push(change);
        if self.batch.len() >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> Result<(), Halt> {
        self.outbox.changes(std::mem::take(&mut self.batch))
    }
}

/// Paths with events not yet acted on: first and last event time.
#[derive(Debug, Default)]
struct Dirty {
    paths: BTreeMap<PathBuf, (Instant, Instant)>,
}

impl Dirty {
    fn mark(&mut self, path: PathBuf) {
        let now = Instant::now();
        self.paths.entry(path).or_insert((now, now)).1 = now;
    }

    fn deadline((first, last): (Instant, Instant)) -> Instant {
        (last + DEBOUNCE).min(first + MAX_DELAY)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.paths.values().map(|times| Self::deadline(*times)).min()
    }

    /// The paths whose deadline has passed, in path order.
    fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        let due: Vec<PathBuf> = self
            .paths
            .iter()
            .filter(|(_, times)| Self::deadline(**times) <= now)
            .map(|(path, _)| path.clone())
            .collect();
        for path in &due {
            self.paths.remove(path);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_paths_wait_for_quiet_but_not_forever() {
        let mut dirty = Dirty::default();
        let start = Instant::now();
        dirty.paths.insert("a".into(), (start, start));
        dirty.paths.insert("b".into(), (start, start + Duration::from_millis(950)));
        assert!(dirty.take_due(start + Duration::from_millis(50)).is_empty());
        assert_eq!(dirty.next_deadline(), Some(start + DEBOUNCE));
        assert_eq!(dirty.take_due(start + DEBOUNCE), vec![PathBuf::from("a")]);
        // `b` keeps being touched, but waits at most MAX_DELAY.
        assert_eq!(dirty.take_due(start + MAX_DELAY), vec![PathBuf::from("b")]);
        assert!(dirty.paths.is_empty());
    }
}
