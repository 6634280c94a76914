//! The input log: changes accepted over HTTP are appended here and fsynced
//! before they are acknowledged, so an acknowledged change survives a crash
//! (`kill -9`, power loss) even when its epoch was not committed yet.
//!
//! ```text
//!  <data>/_input_log/00000000000000000001.log   closed segment
//!  <data>/_input_log/00000000000000000002.log   active segment (appends)
//!
//!  frame = len: u32 LE │ crc32(epoch ‖ payload): u32 LE │ epoch: u64 LE │ payload (JSON array of changes)
//! ```
//!
//! - Each batch is stamped with the epoch the engine gave it. Once an epoch is
//!   committed, segments holding only batches at or before it are deleted
//!   ([`InputLog::truncate_through`]): the log holds only what the manifest
//!   does not.
//! - On open, the batches of every segment are read back in order; those
//!   segments are kept apart (truncation never touches them). The caller
//!   renumbers the batches after its committed epoch (`committed + 1`, `+ 2`, …,
//!   the epochs it will give them, one per batch) and [`InputLog::adopt`]s them
//!   *before* submitting any: they are written whole to a fresh segment
//!   (temporary file, fsync, rename), and only then are the old segments
//!   deleted. A crash at any point leaves every batch in a segment numbered
//!   like the manifest (at worst twice, each copy whole and in order: replaying
//!   the sequence twice gives the same state).
//! - A torn frame at the end of the newest segment is a write cut short by
//!   the crash: that batch was never acknowledged, and the tail is dropped (with a
//!   warning). A bad frame anywhere else is corruption, reported with the file and
//!   offset; nothing is dropped silently.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use twinflow_schemas::DocumentChange;

use crate::error::{Error, Result};

/// The input log's folder under the data directory.
pub const INPUT_LOG_DIR: &str = "_input_log";

/// A frame larger than this is not a frame (a corrupt length).
const MAX_FRAME: usize = 1 << 31;
const HEADER: usize = 4 + 4 + 8;
/// The active segment is closed once this large, so that under steady
/// ingest (its newest batch never committed) older batches can still go.
const ROTATE_BYTES: u64 = 1 << 20;

/// One logged batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedBatch {
    /// The epoch the engine stamped the batch with (in the run that logged it).
    pub epoch: u64,
    pub changes: Vec<DocumentChange>,
}

/// A batch encoded before it is submitted, so the encoding cost is not
/// paid while holding the log's lock.
#[derive(Debug)]
pub struct EncodedBatch(Vec<u8>);

impl EncodedBatch {
    /// Encodes `changes` (the epoch is added at append time).
    pub fn new(changes: &[DocumentChange]) -> Result<Self> {
        Ok(Self(serde_json::to_vec(changes)?))
    }

    /// Bytes of the payload.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// The newest epoch of a batch in it.
    max_epoch: u64,
    bytes: u64,
}

#[derive(Debug)]
struct State {
    /// Appends go to the last one.
    active: File,
    segments: Vec<Segment>,
    next_seq: u64,
    /// Segments read back at open, numbered by the previous run: deleted by
    /// [`InputLog::adopt`] only.
    recovered: Vec<PathBuf>,
}

/// The input log of one data directory. See the module documentation.
#[derive(Debug)]
pub struct InputLog {
    dir: PathBuf,
    state: Mutex<State>,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "{reason} (input log: move this file out of {} to start without the batches it holds)",
            path.parent().map(|p| p.display().to_string()).unwrap_or_default()
        ),
    }
}

impl InputLog {
    /// Opens (creating) the log under `data_dir` and reads back every batch
    /// in it, oldest first. New appends go to a fresh segment.
    pub fn open(data_dir: &Path) -> Result<(Self, Vec<LoggedBatch>)> {
        let dir = data_dir.join(INPUT_LOG_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut seqs: Vec<u64> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(&dir, e))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let mut batches = Vec::new();
        let mut recovered = Vec::new();
        for (i, seq) in seqs.iter().enumerate() {
            let path = segment_path(&dir, *seq);
            let newest = i + 1 == seqs.len();
            let (read, bytes) = read_segment(&path, newest)?;
            recovered.push(path.clone());
            if newest {
                // Cut a torn tail off now, so this segment reads clean once it is no longer the newest.
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| Error::io(&path, e))?;
                if file.metadata().map_err(|e| Error::io(&path, e))?.len() > bytes {
                    file.set_len(bytes).and_then(|()| file.sync_all()).map_err(|e| Error::io(&path, e))?;
                }
            }
            batches.extend(read);
        }
        let next_seq = seqs.last().map_or(1, |s| s + 1);
        let path = segment_path(&dir, next_seq);
        let active = create_segment(&path)?;
        let segments = vec![Segment { path, max_epoch: 0, bytes: 0 }];
        let log = Self { dir, state: Mutex::new(State { active, segments, next_seq: next_seq + 1, recovered }) };
        Ok((log, batches))
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one batch stamped `epoch` and fsyncs it: when this returns
    /// `Ok`, the batch survives a crash.
    pub fn append(&self, epoch: u64, batch: &EncodedBatch) -> Result<()> {
        let mut frame = Vec::with_capacity(HEADER + batch.0.len());
        push_frame(&mut frame, epoch, batch);
        let mut state = self.state.lock();
        let segment = state.segments.last().expect("an active segment");
        let (path, good) = (segment.path.clone(), segment.bytes);
        let written = state.active.write_all(&frame).and_then(|()| state.active.sync_data());
        if let Err(e) = written {
            // Part of the frame may be on disk: cut it off, and append to a new segment from now on,
            // so no later acknowledged batch lands behind garbage.
            let _ = state.active.set_len(good).and_then(|()| state.active.sync_all());
            let _ = self.rotate(&mut state);
            return Err(Error::io(&path, e));
        }
        let segment = state.segments.last_mut().expect("an active segment");
        segment.max_epoch = segment.max_epoch.max(epoch);
        segment.bytes += frame.len() as u64;
        Ok(())
    }

    /// Starts a new active segment.
    fn rotate(&self, state: &mut State) -> Result<()> {
        let path = segment_path(&self.dir, state.next_seq);
        state.active = create_segment(&path)?;
        state.next_seq += 1;
        state.segments.push(Segment { path, max_epoch: 0, bytes: 0 });
        Ok(())
    }

    /// Makes the batches read back by [`InputLog::open`] the log's own,
    /// stamped with the epochs this run will give them (call it before
    /// submitting them): written whole as one new segment (a temporary file,
    /// fsync, rename), then the recovered segments deleted and the deletion
    /// made durable.
    ///
    /// Whole, because a crash in between must leave either none of the copy or
    /// all of it: a prefix of it after the old segments would replay its
    /// batches again after the later ones (an upsert undoing a later delete).
    pub fn adopt(&self, renumbered: &[(u64, EncodedBatch)]) -> Result<()> {
        let mut state = self.state.lock();
        if let Some(max_epoch) = renumbered.iter().map(|(epoch, _)| *epoch).max() {
            let mut bytes = Vec::with_capacity(renumbered.iter().map(|(_, b)| HEADER + b.0.len()).sum());
            for (epoch, batch) in renumbered {
                push_frame(&mut bytes, *epoch, batch);
            }
            // The copy takes the place of the (empty) active segment; appends go on after it.
            if state.segments.last().is_some_and(|s| s.bytes > 0) {
                self.rotate(&mut state)?;
            }
            let path = state.segments.last().expect("an active segment").path.clone();
            twinflow_schemas::fs::write_atomic(&path, &bytes).map_err(|e| Error::io(&path, e))?;
            state.active = OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
            let segment = state.segments.last_mut().expect("an active segment");
            segment.max_epoch = max_epoch;
            segment.bytes = bytes.len() as u64;
        }
        for old in std::mem::take(&mut state.recovered) {
            match std::fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&old, e)),
            }
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&self.dir, e))
    }

    /// Deletes the segments whose batches are all at or before `committed`
    /// (the active one is closed and replaced first when that holds for it,
    /// or when it has grown past a megabyte).
    /// Returns the number of segments deleted.
    pub fn truncate_through(&self, committed: u64) -> Result<usize> {
        let mut state = self.state.lock();
        let active = state.segments.last().expect("an active segment");
        if active.bytes > 0 && (active.max_epoch <= committed || active.bytes >= ROTATE_BYTES) {
            self.rotate(&mut state)?;
        }
        let keep_from = state.segments.len() - 1;
        let mut deleted = 0;
        let mut failure = None;
        let mut kept = Vec::new();
        for (i, segment) in std::mem::take(&mut state.segments).into_iter().enumerate() {
            if i < keep_from && segment.max_epoch <= committed {
                match std::fs::remove_file(&segment.path) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted += 1,
                    Err(e) => {
                        // Kept, and tried again at the next commit.
                        failure.get_or_insert(Error::io(&segment.path, e));
                        kept.push(segment);
                    }
                }
            } else {
                kept.push(segment);
            }
        }
        state.segments = kept;
        failure.map_or(Ok(deleted), Err)
    }

    /// Bytes held in the log (all segments).
    pub fn bytes(&self) -> u64 {
        self.state.lock().segments.iter().map(|s| s.bytes).sum()
    }
}

/// Appends the frame of `batch` stamped with `epoch` to `out`.
fn push_frame(out: &mut Vec<u8>, epoch: u64, batch: &EncodedBatch) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&epoch.to_le_bytes());
    crc.update(&batch.0);
    out.extend_from_slice(&(batch.0.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&batch.0);
}

fn create_segment(path: &Path) -> Result<File> {
    let file = OpenOptions::new().create_new(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Ok(file)
}

/// The frame at `at`, if one is there whole and its checksum holds: `(epoch, payload)`.
fn frame_at(bytes: &[u8], at: usize) -> Option<(u64, &[u8])> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let epoch = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(payload);
    (hasher.finalize() == crc).then_some((epoch, payload))
}

/// The batches of one segment and its valid length. A bad frame is a torn
/// write (a crash mid-append, never acknowledged) only in the newest segment
/// and only when no valid frame follows it: then the tail is dropped with a
/// warning. Anything else is corruption, reported with the file and offset.
fn read_segment(path: &Path, newest: bool) -> Result<(Vec<LoggedBatch>, u64)> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io(path, e))?;
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some((epoch, payload)) = frame_at(&bytes, at) else {
            // Zeros need no search; otherwise any valid frame further on means this one was damaged in place.
            let zeros = bytes[at..].iter().all(|b| *b == 0);
            let later =
                !zeros && (at + 1..bytes.len().saturating_sub(HEADER - 1)).any(|o| frame_at(&bytes, o).is_some());
            if newest && !later {
                tracing::warn!(
                    file = %path.display(),
                    offset = at,
                    dropped_bytes = bytes.len() - at,
                    "input log ends with a torn write: that batch was never acknowledged; dropped"
                );
                return Ok((batches, at as u64));
            }
            let reason = if later { "a damaged frame with valid frames after it" } else { "a bad frame" };
            return Err(corrupt(path, format!("checksum mismatch: {reason} at byte {at}")));
        };
        let changes: Vec<DocumentChange> = serde_json::from_slice(payload)
            .map_err(|e| corrupt(path, format!("undecodable batch at byte {at}: {e}")))?;
        batches.push(LoggedBatch { epoch, changes });
        at += HEADER + payload.len();
    }
    Ok((batches, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::Document;

    fn upsert(id: &str) -> DocumentChange {
        DocumentChange::Upsert(Document {
            doc_id: id.into(),
            kind: Default::default(),
            author: "Ada".into(),
            title: id.to_uppercase(),
            url: String::new(),
            source: "http".into(),
            format: None,
            fetched_at: Some(1),
            content: format!("content of {id}"),
        })
    }

    fn batch(ids: &[&str]) -> (Vec<DocumentChange>, EncodedBatch) {
        let changes: Vec<_> = ids.iter().map(|id| upsert(id)).collect();
        let encoded = EncodedBatch::new(&changes).unwrap();
        (changes, encoded)
    }

    fn segments(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(INPUT_LOG_DIR)).unwrap().count()
    }

    #[test]
    fn batches_survive_reopen_and_truncation_follows_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = InputLog::open(dir.path()).unwrap();
        assert!(old.is_empty());
        let (a, a_enc) = batch(&["a", "b"]);
        let (c, c_enc) = batch(&["c"]);
        log.append(1, &a_enc).unwrap();
        log.append(2, &c_enc).unwrap();
        assert_eq!(log.truncate_through(1).unwrap(), 0, "epoch 2 is not committed: nothing goes");
        drop(log);

        let (log, read) = InputLog::open(dir.path()).unwrap();
        assert_eq!(read, vec![LoggedBatch { epoch: 1, changes: a }, LoggedBatch { epoch: 2, changes: c.clone() }]);
        // Until adopted, the recovered segment is out of truncation's reach.
        assert_eq!(log.truncate_through(100).unwrap(), 0);
        assert_eq!(segments(dir.path()), 2);
        // Replayed in a new run: say only [c] is pending, renumbered 7.
        log.adopt(&[(7, EncodedBatch::new(&c).unwrap())]).unwrap();
        assert_eq!(segments(dir.path()), 1, "the old segments are gone once adopted");
        assert_eq!(log.truncate_through(6).unwrap(), 0);
        assert_eq!(log.truncate_through(7).unwrap(), 1, "everything committed: the segment is deleted");
        assert_eq!(log.bytes(), 0);
        drop(log);
        let (_, read) = InputLog::open(dir.path()).unwrap();
        assert!(read.is_empty());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = InputLog::open(dir.path()).unwrap();
        let (a, a_enc) = batch(&["a"]);
        log.append(1, &a_enc).unwrap();
        log.append(2, &batch(&["b"]).1).unwrap();
        let path = log.state.lock().segments.last().unwrap().path.clone();
        drop(log);
        // A crash in the middle of the second append.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let (log, read) = InputLog::open(dir.path()).unwrap();
        assert_eq!(read, vec![LoggedBatch { epoch: 1, changes: a.clone() }]);
        drop(log);
        // The tail was cut at that open: the segment reads clean now that it is not the newest.
        let (log, read) = InputLog::open(dir.path()).unwrap();
        assert_eq!(read, vec![LoggedBatch { epoch: 1, changes: a }]);
        drop(log);

        // A flipped byte inside the first frame of a segment that is not the newest: an error naming the file.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = InputLog::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("checksum"), "{err}");
    }

    #[test]
    fn a_damaged_frame_in_the_newest_segment_is_not_taken_for_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = InputLog::open(dir.path()).unwrap();
        log.append(1, &batch(&["a"]).1).unwrap();
        log.append(2, &batch(&["b"]).1).unwrap();
        let path = log.state.lock().segments.last().unwrap().path.clone();
        drop(log);
        // A flipped bit in the first frame's length: the second, acknowledged, frame must not be dropped silently.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = InputLog::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("valid frames after it") && err.contains(&path.display().to_string()), "{err}");
        // Zeros after the last frame (space allocated, never written): a torn tail.
        bytes[2] ^= 0x01;
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, read) = InputLog::open(dir.path()).unwrap();
        assert_eq!(read.len(), 2);
    }
}
