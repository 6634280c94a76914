//! The directory watch: initial scan, live changes, bad files, stopping.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;
use crossbeam_channel::{Receiver, bounded};
use twinflow_connectors::{Error, SourceEvent, SourceHandle, WatchSource, file_change};
use twinflow_schemas::config::WatchSourceConfig;
use twinflow_schemas::{ContentFormat, DocumentChange, DocumentKind};

use crate::support::{PATIENCE, receive};

fn config(dir: &Path) -> WatchSourceConfig {
    WatchSourceConfig {
        path: dir.to_owned(),
        kind: DocumentKind::Post,
        author: "ann".into(),
        ..WatchSourceConfig::default()
    }
}

fn start(config: WatchSourceConfig) -> (SourceHandle, Receiver<SourceEvent>) {
    let (tx, rx) = bounded(16);
    let handle = WatchSource::spawn("notes".into(), config, tx).expect("watch starts");
    (handle, rx)
}

fn write(path: &Path, content: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// Writes `parts` one `write` call at a time, a few milliseconds apart, so
/// the watcher sees several modifications of a growing file.
fn write_in_parts(path: &Path, parts: &[&str]) {
    let mut file = fs::File::create(path).unwrap();
    for part in parts {
        file.write_all(part.as_bytes()).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn initial_scan_sends_every_wanted_file_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("a.md"), "intro\n\n# Alpha notes\n\nbody");
    write(&root.join("c.html"), "<html><head><title>The C page</title></head><body>c</body></html>");
    write(&root.join("d.json"), r#"{"title": "JSON doc", "author": "bob", "content": "from json"}"#);
    write(&root.join("sub/b.txt"), "plain text");
    // Never documents: other extensions, hidden files and folders, editor files.
    write(&root.join("e.rs"), "fn main() {}");
    write(&root.join(".hidden.md"), "# hidden");
    write(&root.join(".git/HEAD.md"), "# in a hidden folder");
    write(&root.join("f.md~"), "# backup");
    write(&root.join(".f.md.swp"), "swap");
    write(&root.join("g.tmp"), "tmp");

    let (handle, rx) = start(config(root));
    let seen = receive(&rx, 4, 0);
    assert_eq!(seen.ops(), ["+file:a.md", "+file:c.html", "+file:d.json", "+file:sub/b.txt"]);
    let docs = seen.upserts();
    let summary: Vec<_> = docs.iter().map(|d| (d.title.as_str(), d.format, d.author.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("Alpha notes", Some(ContentFormat::Markdown), "ann"),
            ("The C page", Some(ContentFormat::Markdown), "ann"),
            ("JSON doc", None, "bob"),
            ("b", Some(ContentFormat::Text), "ann"),
        ]
    );
    let canonical = root.canonicalize().unwrap();
    for doc in &docs {
        assert_eq!((doc.kind, doc.source.as_str()), (DocumentKind::Post, "notes"));
        assert!(doc.fetched_at.is_some_and(|ms| ms > 1_600_000_000_000), "{doc:?}");
        let relative = doc.doc_id.strip_prefix("file:").unwrap();
        assert_eq!(doc.url, format!("file://{}/{relative}", canonical.display()));
    }
    assert_eq!(docs[2].content, "from json");
    assert_eq!(docs[3].content, "plain text");

    // Nothing else follows the scan (no echo of our own reads, no ignored
    // file): the next change is the sentinel.
    write(&root.join("zz.txt"), "sentinel");
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:zz.txt"]);
    handle.stop();
}

#[test]
fn live_creates_edits_renames_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(&root.join("0-first.txt"), "there before the start");
    let (handle, rx) = start(config(&root));
    // The scan's last batch: it is over, what follows are live events.
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:0-first.txt"]);

    // A file written in several calls is one upsert of its final content.
    write_in_parts(&root.join("new.md"), &["# New\n", "first ", "draft ", "done"]);
    let seen = receive(&rx, 1, 0);
    assert_eq!(seen.ops(), ["+file:new.md"]);
    assert_eq!(seen.upserts()[0].content, "# New\nfirst draft done");
    assert_eq!(seen.upserts()[0].title, "New");

    write_in_parts(&root.join("new.md"), &["# Newer\n", "second ", "version"]);
    let seen = receive(&rx, 1, 0);
    assert_eq!(seen.ops(), ["+file:new.md"]);
    assert_eq!(seen.upserts()[0].content, "# Newer\nsecond version");

    // A rename deletes the old id and upserts the new one.
    fs::rename(root.join("new.md"), root.join("renamed.md")).unwrap();
    let mut ops = receive(&rx, 2, 0).ops();
    ops.sort();
    assert_eq!(ops, ["+file:renamed.md", "-file:new.md"]);

    // A new folder with a file in it.
    write(&root.join("sub/x.txt"), "in a folder");
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:sub/x.txt"]);

    fs::remove_file(root.join("renamed.md")).unwrap();
    assert_eq!(receive(&rx, 1, 0).ops(), ["-file:renamed.md"]);

    // Removing a folder deletes what was in it.
    fs::remove_dir_all(root.join("sub")).unwrap();
    assert_eq!(receive(&rx, 1, 0).ops(), ["-file:sub/x.txt"]);

    // Rewriting a file with the same content is no change: the next change
    // is the sentinel written after it.
    write(&root.join("same.txt"), "same");
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:same.txt"]);
    write(&root.join("same.txt"), "same");
    write(&root.join("ignored.rs"), "not watched");
    write(&root.join(".hidden.txt"), "hidden");
    write(&root.join("zz.txt"), "sentinel");
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:zz.txt"]);
    handle.stop();
}

#[test]
fn bad_files_become_error_records_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(&root.join("bad.json"), "{\"content\": ");
    write(&root.join("big.txt"), "x".repeat(100));
    write(&root.join("latin1.txt"), b"caf\xe9");
    write(&root.join("no-content.json"), r#"{"title": "t"}"#);
    write(&root.join("ok.md"), "# fine");
    let config = WatchSourceConfig { max_file: ByteSize::b(64), ..config(&root) };
    let (handle, rx) = start(config);

    let seen = receive(&rx, 1, 4);
    assert_eq!(seen.ops(), ["+file:ok.md"]);
    let errors: Vec<_> = seen
        .errors
        .iter()
        .map(|e| (Path::new(&e.location).file_name().unwrap().to_str().unwrap(), e.reason.as_str()))
        .collect();
    let expect = [
        ("bad.json", "invalid JSON"),
        ("big.txt", "100 bytes, more than max_file"),
        ("latin1.txt", "invalid UTF-8 at byte 3"),
        ("no-content.json", "missing field `content`"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:?}");
    for ((file, reason), (want_file, want_reason)) in errors.iter().zip(expect) {
        assert_eq!(*file, want_file);
        assert!(reason.contains(want_reason), "{file}: {reason}");
    }
    assert!(seen.errors.iter().all(|e| e.source == "notes" && e.at_ms > 0));

    // Live: a bad file is an error record, later files still arrive.
    write(&root.join("later.json"), "[1, 2]");
    let seen = receive(&rx, 0, 1);
    assert!(seen.errors[0].location.ends_with("later.json"), "{:?}", seen.errors);
    write(&root.join("after.md"), "# after");
    assert_eq!(receive(&rx, 1, 0).ops(), ["+file:after.md"]);
    handle.stop();
}

#[test]
fn stop_ends_a_source_blocked_on_a_full_channel() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..600 {
        write(&dir.path().join(format!("{i:04}.txt")), format!("file {i}"));
    }
    let (tx, rx) = bounded(1);
    let handle = WatchSource::spawn("many".into(), config(dir.path()), tx).unwrap();
    // The scan comes in batches of at most 256, in path order.
    let Ok(SourceEvent::Changes { changes, .. }) = rx.recv_timeout(PATIENCE) else { panic!("no first batch") };
    assert_eq!(changes.len(), 256);
    assert_eq!(changes[0].doc_id(), "file:0000.txt");
    // The source is now blocked on the full channel; stop must not hang.
    let (done_tx, done_rx) = bounded(1);
    std::thread::spawn(move || {
        handle.stop();
        done_tx.send(()).unwrap();
    });
    done_rx.recv_timeout(PATIENCE).expect("stop returns while the channel is full");
}

#[test]
fn spawn_refuses_what_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file.md");
    write(&file, "x");
    let (tx, _rx) = bounded(1);
    let err = WatchSource::spawn("w".into(), config(&file), tx.clone()).unwrap_err();
    assert!(matches!(err, Error::NotADirectory { .. }), "{err}");
    let err = WatchSource::spawn("w".into(), config(&dir.path().join("missing")), tx).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[test]
fn file_change_reads_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let config = WatchSourceConfig { extensions: vec!["rst".into(), "json".into(), "htm".into()], ..config(root) };
    let change = |path: &str| file_change(root, &root.join(path), "src", &config);

    write(&root.join("docs/guide.rst"), "Guide\n=====\n");
    let DocumentChange::Upsert(doc) = change("docs/guide.rst").unwrap() else { panic!() };
    assert_eq!((doc.doc_id.as_str(), doc.title.as_str()), ("file:docs/guide.rst", "guide"));
    assert_eq!((doc.format, doc.source.as_str()), (None, "src"));

    write(&root.join("page.htm"), "\u{feff}<TITLE>Upper</TITLE><P>Body <B>text</B>");
    let DocumentChange::Upsert(doc) = change("page.htm").unwrap() else { panic!() };
    assert_eq!((doc.title.as_str(), doc.format), ("Upper", Some(ContentFormat::Markdown)));
    assert_eq!(doc.content, "Body **text**", "the BOM is dropped, the page's body made Markdown");

    // A JSON document may name its own id, kind, url and format.
    write(
        &root.join("post.json"),
        r#"{"doc_id": "x:1", "kind": "article", "url": "https://e.x/1", "format": "markdown",
            "fetched_at": 5, "content": "c"}"#,
    );
    let DocumentChange::Upsert(doc) = change("post.json").unwrap() else { panic!() };
    assert_eq!(
        (doc.doc_id.as_str(), doc.kind, doc.url.as_str(), doc.format, doc.fetched_at),
        ("x:1", DocumentKind::Article, "https://e.x/1", Some(ContentFormat::Markdown), Some(5))
    );
    assert_eq!((doc.title.as_str(), doc.author.as_str(), doc.source.as_str()), ("post", "ann", "src"));

    write(&root.join("bad-kind.json"), r#"{"kind": "tweet", "content": "c"}"#);
    assert!(change("bad-kind.json").unwrap_err().reason.contains("unknown document kind"));
    write(&root.join("delete.json"), r#"{"op": "delete", "doc_id": "x:1"}"#);
    assert!(change("delete.json").unwrap_err().reason.contains("not a change"));
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("o.md"), "o");
    let err = file_change(root, &outside.path().join("o.md"), "src", &config).unwrap_err();
    assert!(err.reason.contains("not inside"), "{err}");
    assert!(change("missing.md").unwrap_err().reason.contains("cannot read"));
}

/// A link is mirrored only when it points at a file inside the watched
/// directory; one pointing outside is an error record, its target unread.
#[cfg(unix)]
#[test]
fn links_out_of_the_directory_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("notes");
    let outside = dir.path().join("secrets");
    write(&outside.join("key.md"), "# private key material");
    write(&root.join("a.md"), "# inside");
    std::os::unix::fs::symlink(outside.join("key.md"), root.join("leak.md")).unwrap();
    std::os::unix::fs::symlink(root.join("a.md"), root.join("alias.md")).unwrap();
    let (handle, rx) = start(config(&root));
    let seen = receive(&rx, 2, 1);
    assert_eq!(seen.ops(), ["+file:a.md", "+file:alias.md"]);
    assert!(seen.upserts().iter().all(|d| !d.content.contains("private")));
    assert!(seen.errors[0].location.ends_with("leak.md"), "{:?}", seen.errors);
    assert!(seen.errors[0].reason.contains("outside the watched directory"), "{:?}", seen.errors);
    handle.stop();
}
