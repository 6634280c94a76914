//! NDJSON replay: good lines become changes, bad lines error records.

use std::fs;

use crossbeam_channel::bounded;
use twinflow_connectors::{NdjsonSource, NdjsonStats, SourceEvent, read_ndjson};
use twinflow_schemas::config::NdjsonSourceConfig;
use twinflow_schemas::{ChangeLimits, DocumentChange};

use crate::support::receive;

const LOG: &str = concat!(
    r#"{"op":"upsert","doc_id":"a","content":"alpha"}"#,
    "\n",
    r#"{"op":"delete","doc_id":"old"}"#,
    "\r\n",
    "   \n",
    r#"{"op":"upsert","doc_id":"b","content":"#,
    "\n",
    r#"{"doc_id":"c"}"#,
    "\n",
    r#"{"doc_id":"d","source":"crawler","content":"delta"}"#,
    "\n",
    r#"{"doc_id":"e","content":"this content is far too long"}"#,
    "\n",
    r#"{"doc_id":"f","content":"no newline at the end"}"#,
);

fn limits() -> ChangeLimits {
    ChangeLimits { max_document_bytes: 24, ..ChangeLimits::default() }
}

#[test]
fn good_lines_are_changes_and_bad_lines_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.ndjson");
    fs::write(&path, LOG).unwrap();
    let mut events = Vec::new();
    let stats = read_ndjson(&path, "replay", &limits(), 2, |event| {
        events.push(event);
        true
    })
    .unwrap();
    assert_eq!(stats, NdjsonStats { lines: 8, changes: 4, errors: 3 });

    // Events keep the order of the lines; batches hold at most 2 changes.
    let shape: Vec<String> = events
        .iter()
        .map(|event| match event {
            SourceEvent::Changes { source, changes, .. } => {
                assert_eq!(source, "replay");
                let ids: Vec<_> = changes.iter().map(DocumentChange::doc_id).collect();
                format!("changes {}", ids.join(","))
            }
            SourceEvent::Error(e) => {
                let line = e.location.rsplit(':').next().unwrap();
                assert_eq!(e.location, format!("{}:{line}", path.display()));
                format!("error {line}: {}", e.reason)
            }
        })
        .collect();
    assert_eq!(shape.len(), 6, "{shape:#?}");
    assert_eq!(shape[0], "changes a,old");
    assert!(shape[1].starts_with("error 4: invalid JSON"), "{}", shape[1]);
    assert_eq!(shape[2], "error 5: missing field `content`");
    assert_eq!(shape[3], "changes d");
    assert!(shape[4].starts_with("error 7: document \"e\" has 28 bytes"), "{}", shape[4]);
    assert_eq!(shape[5], "changes f");

    // An upsert without a source gets the replay's name; one with keeps its own.
    let sources: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::Changes { changes, .. } => Some(changes),
            SourceEvent::Error(_) => None,
        })
        .flatten()
        .filter_map(|c| match c {
            DocumentChange::Upsert(doc) => Some((doc.doc_id.as_str(), doc.source.as_str())),
            DocumentChange::Delete { .. } => None,
        })
        .collect();
    assert_eq!(sources, [("a", "replay"), ("d", "crawler"), ("f", "replay")]);
}

#[test]
fn emit_returning_false_stops_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.ndjson");
    fs::write(&path, LOG).unwrap();
    let mut calls = 0;
    let stats = read_ndjson(&path, "replay", &limits(), 1, |_| {
        calls += 1;
        calls < 2
    })
    .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(stats, NdjsonStats { lines: 2, changes: 2, errors: 0 });
}

#[test]
fn an_endless_line_is_skipped_without_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.ndjson");
    let huge = format!("{{\"doc_id\":\"h\",\"content\":\"{}\"}}\n", "x".repeat(3 << 20));
    fs::write(&path, format!("{huge}{{\"doc_id\":\"next\",\"content\":\"ok\"}}\n")).unwrap();
    let mut events = Vec::new();
    let stats = read_ndjson(&path, "r", &limits(), 10, |e| {
        events.push(e);
        true
    })
    .unwrap();
    assert_eq!(stats, NdjsonStats { lines: 2, changes: 1, errors: 1 });
    let SourceEvent::Error(error) = &events[0] else { panic!("{events:?}") };
    assert!(error.reason.contains("longer than"), "{}", error.reason);
    assert!(error.location.ends_with("huge.ndjson:1"));
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let result = read_ndjson(&dir.path().join("nope"), "r", &limits(), 1, |_| true);
    assert!(result.is_err());
}

#[test]
fn a_spawned_replay_sends_everything_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("changes.ndjson");
    fs::write(&path, LOG).unwrap();
    let (tx, rx) = bounded(1);
    let handle =
        NdjsonSource::spawn("log".into(), NdjsonSourceConfig { path, ..Default::default() }, limits(), 100, tx)
            .unwrap();
    let seen = receive(&rx, 4, 3);
    assert_eq!(seen.ops(), ["+a", "-old", "+d", "+f"]);
    handle.wait().unwrap();
    assert!(rx.is_empty());
}
