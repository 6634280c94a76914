//! Waiting on a source's channel with a deadline, never with sleeps; serving a test site on loopback.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use twinflow_connectors::{IngestError, SourceEvent};
use twinflow_schemas::{Document, DocumentChange};

/// Longest wait for anything a test expects.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// What a source sent, in order.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) changes: Vec<DocumentChange>,
    pub(crate) errors: Vec<IngestError>,
    pub(crate) batches: Vec<usize>,
}

impl Seen {
    /// The upserted documents, in order.
    pub(crate) fn upserts(&self) -> Vec<&Document> {
        self.changes
            .iter()
            .filter_map(|c| match c {
                DocumentChange::Upsert(doc) => Some(doc),
                DocumentChange::Delete { .. } => None,
            })
            .collect()
    }

    /// `+doc_id` for upserts and `-doc_id` for deletes, in order.
    pub(crate) fn ops(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| match c {
                DocumentChange::Upsert(doc) => format!("+{}", doc.doc_id),
                DocumentChange::Delete { doc_id } => format!("-{doc_id}"),
            })
            .collect()
    }
}

/// Receives events until `changes` changes and `errors` errors have come,
/// panicking after [`PATIENCE`] with what did come.
pub(crate) fn receive(rx: &Receiver<SourceEvent>, changes: usize, errors: usize) -> Seen {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Seen::default();
    while seen.changes.len() < changes || seen.errors.len() < errors {
        match rx.recv_deadline(deadline) {
            Ok(SourceEvent::Changes { changes, .. }) => {
                seen.batches.push(changes.len());
                seen.changes.extend(changes);
            }
            Ok(SourceEvent::Error(error)) => seen.errors.push(error),
            Err(e) => panic!(
                "waited for {changes} changes and {errors} errors, got {:?} and {:?}: {e}",
                seen.ops(),
                seen.errors
            ),
        }
    }
    seen
}

/// Receives events until one carries a position; returns what came with and
/// before it, and the position.
pub(crate) fn until_position(rx: &Receiver<SourceEvent>) -> (Seen, serde_json::Value) {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Seen::default();
    loop {
        match rx.recv_deadline(deadline) {
            Ok(SourceEvent::Changes { changes, position, .. }) => {
                seen.batches.push(changes.len());
                seen.changes.extend(changes);
                if let Some(position) = position {
                    return (seen, position);
                }
            }
            Ok(SourceEvent::Error(error)) => seen.errors.push(error),
            Err(e) => panic!("no position came; got {:?} and {:?}: {e}", seen.ops(), seen.errors),
        }
    }
}

/// A keyed record of a topic: an upsert of document `id` as JSON.
#[cfg(any(feature = "fluvio", feature = "kafka"))]
pub(crate) fn upsert_record(id: &str, text: &str) -> (String, Vec<u8>) {
    let change = serde_json::json!({"op": "upsert", "doc_id": id, "kind": "post", "title": id, "content": text});
    (id.to_owned(), change.to_string().into_bytes())
}

/// Receives until a partitioned source's position (Fluvio, Kafka) has
/// handed over `records` records in all.
#[cfg(any(feature = "fluvio", feature = "kafka"))]
pub(crate) fn until_offsets(rx: &Receiver<SourceEvent>, records: i64) -> (Seen, serde_json::Value) {
    let mut seen = Seen::default();
    loop {
        let (more, position) = until_position(rx);
        seen.changes.extend(more.changes);
        seen.errors.extend(more.errors);
        let read: i64 = position["offsets"].as_object().unwrap().values().map(|o| o.as_i64().unwrap()).sum();
        assert!(read <= records, "read {read} of {records}: {position}");
        if read == records {
            return (seen, position);
        }
    }
}

/// Serves `app` on a free loopback port from a thread of its own; returns
/// its base URL (`http://127.0.0.1:<port>`).
pub(crate) fn serve_loopback(app: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    base
}
