//! The git source on repositories the test creates (with the git CLI):
//! the files of HEAD, then exactly the changed, added and deleted files of
//! new commits; filters, binary and oversize files, resuming from a
//! committed position, and polling.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinflow_connectors::GitSource;
use twinflow_schemas::config::GitSourceConfig;
use twinflow_schemas::{ContentFormat, DocumentKind};

use crate::support::until_position;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
}

fn write(dir: &Path, path: &str, content: &[u8]) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn config(dir: &Path) -> GitSourceConfig {
    GitSourceConfig {
        repo: format!("file://{}", dir.display()),
        max_file: bytesize::ByteSize::kib(1),
        poll: Duration::ZERO,
        ..GitSourceConfig::default()
    }
}

fn sorted(mut ops: Vec<String>) -> Vec<String> {
    ops.sort();
    ops
}

#[test]
fn head_files_then_exact_commit_diffs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("twin-notes");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "README.md", b"# Notes\n\nWhat this is.\n");
    write(&repo, "src/lib.rs", b"pub fn answer() -> u32 {\n    42\n}\n");
    write(&repo, "notes.txt", b"plain notes\n");
    write(&repo, "logo.png", &[0x89, b'P', b'N', b'G', 0, 0, 1, 2, 0, 3]);
    write(&repo, "big.txt", "x".repeat(2_000).as_bytes());
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let id = |p: &str| format!("git:twin-notes/{p}");

    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = GitSource::spawn("git".into(), config(&repo), None, tx).unwrap();
    let (seen, first) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(
        sorted(seen.ops()),
        sorted(vec![
            format!("+{}", id("README.md")),
            format!("+{}", id("notes.txt")),
            format!("+{}", id("src/lib.rs"))
        ])
    );
    let lib = seen.upserts().into_iter().find(|d| d.doc_id == id("src/lib.rs")).unwrap();
    assert_eq!(
        (lib.kind, lib.format, lib.title.as_str(), lib.author.as_str()),
        (DocumentKind::Repository, Some(ContentFormat::Code), "src/lib.rs", "Ada")
    );
    assert!(lib.content.contains("42"));
    assert_eq!(seen.errors.len(), 1, "{:?}", seen.errors);
    assert!(seen.errors[0].location.ends_with("big.txt"));

    // A commit that modifies, adds, deletes and renames.
    write(&repo, "src/lib.rs", b"pub fn answer() -> u32 {\n    43\n}\n");
    write(&repo, "docs/guide.md", b"# Guide\n");
    std::fs::remove_file(repo.join("README.md")).unwrap();
    git(&repo, &["mv", "notes.txt", "notes-2024.txt"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = GitSource::spawn("git".into(), config(&repo), Some(first.clone()), tx).unwrap();
    let (seen, second) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(
        sorted(seen.ops()),
        sorted(vec![
            format!("+{}", id("src/lib.rs")),
            format!("+{}", id("docs/guide.md")),
            format!("-{}", id("README.md")),
            format!("-{}", id("notes.txt")),
            format!("+{}", id("notes-2024.txt")),
        ])
    );
    assert_ne!(first["commit"], second["commit"]);

    // Nothing new: nothing sent but the position.
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = GitSource::spawn("git".into(), config(&repo), Some(second.clone()), tx).unwrap();
    let (seen, same) = until_position(&rx);
    handle.wait().unwrap();
    assert!(seen.changes.is_empty(), "{:?}", seen.ops());
    assert_eq!(same, second);

    // Filters: only Rust and Markdown, not docs/.
    let filtered = GitSourceConfig {
        include: vec!["**/*.rs".into(), "*.md".into(), "**/*.md".into()],
        exclude: vec!["docs/**".into()],
        ..config(&repo)
    };
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = GitSource::spawn("git".into(), filtered, None, tx).unwrap();
    let (seen, _) = until_position(&rx);
    handle.wait().unwrap();
    assert_eq!(seen.ops(), [format!("+{}", id("src/lib.rs"))]);

    // Polling: a new commit arrives by itself.
    let polling = GitSourceConfig { poll: Duration::from_millis(50), ..config(&repo) };
    let (tx, rx) = crossbeam_channel::bounded(64);
    let handle = GitSource::spawn("git".into(), polling, Some(second), tx).unwrap();
    let (seen, _) = until_position(&rx);
    assert!(seen.changes.is_empty());
    write(&repo, "docs/guide.md", b"# Guide\n\nMore.\n");
    git(&repo, &["commit", "-q", "-am", "third"]);
    let (seen, _) = until_position(&rx);
    assert_eq!(seen.ops(), [format!("+{}", id("docs/guide.md"))]);
    handle.stop();

    // Not a repository, or no such branch: fatal at spawn.
    let (tx, _rx) = crossbeam_channel::bounded(1);
    assert!(GitSource::spawn("git".into(), config(dir.path()), None, tx.clone()).is_err());
    let no_branch = GitSourceConfig { branch: Some("nope".into()), ..config(&repo) };
    assert!(GitSource::spawn("git".into(), no_branch, None, tx).is_err());
}
