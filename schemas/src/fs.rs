//! Files replaced whole, durably: the one way every crate writes a file
//! that readers may open at any moment (manifests, model cards, weights,
//! drift state, crawl state).
//!
//! ```text
//!  write <path>.tmp ─▶ fsync it ─▶ rename over <path> ─▶ fsync the directory
//! ```
//!
//! A reader sees the old file or the new one, never a torn one; after a
//! crash the new one is there only if the rename reached the disk.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically and durably (the parent
/// directory is created if missing).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(&dir)?;
    let tmp = temporary_name(path);
    let written = File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    rename_durably(&tmp, path)
}

/// Renames `from` to `to` (a file or a directory written and synced
/// before) and syncs `to`'s directory, so the rename survives a crash.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(&parent_of(to))
}

/// Syncs a directory's entries (new, renamed and deleted files in it).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `.<name>.tmp` beside `path`: hidden, so a stray one left by a crash is
/// not picked up by readers that list the directory (one writer per file:
/// callers serialise their writes).
fn temporary_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("twinflow-fs-{}", std::process::id()));
        let path = dir.join("nested").join("state.json");
        write_atomic(&path, b"first, longer content").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from("state.json")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("twinflow-fs-fail-{}", std::process::id()));
        let path = dir.join("state.json");
        write_atomic(&path, b"old").unwrap();
        // The temporary name is taken by a directory: the write fails before the rename.
        std::fs::create_dir_all(dir.join(".state.json.tmp")).unwrap();
        assert!(write_atomic(&path, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
