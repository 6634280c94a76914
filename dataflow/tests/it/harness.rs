//! A running engine whose completed epochs are folded into current-state
//! tables, as a committer would.

use std::sync::Arc;
use std::time::Duration;

use twinflow_dataflow::{Embedder, Engine, EngineOptions, HashingEmbedder};
use twinflow_schemas::config::{ChunkSpec, ChunkingConfig, ClusterConfig, DriftConfig};
use twinflow_schemas::rng::SeededRng;
use twinflow_schemas::{Document, DocumentChange, DocumentKind, EpochUpdates};

pub(crate) struct Harness {
    pub(crate) engine: Engine,
    /// The other processes of a cluster (compute only), stopped after `engine`.
    _others: Vec<Engine>,
    /// Current state of every table: consolidated `(row, count)`.
    pub(crate) state: EpochUpdates,
    /// Updates of the last epoch.
    pub(crate) last: EpochUpdates,
}

impl Harness {
    pub(crate) fn new(workers: usize, chunking: ChunkingConfig) -> Self {
        Self::with_embedder(workers, chunking, Arc::new(HashingEmbedder::new(32)))
    }

    /// [`Harness::new`] embedding with `embedder`.
    pub(crate) fn with_embedder(workers: usize, chunking: ChunkingConfig, embedder: Arc<dyn Embedder>) -> Self {
        let options = EngineOptions {
            workers,
            tick: Duration::from_secs(3600), // epochs are closed by `flush` only
            max_batch: usize::MAX,
            max_pending: usize::MAX,
            max_lag: Duration::MAX,
            chunking,
            drift: Some(drift_config()),
            cluster: None,
            vector_sink: None,
        };
        let engine = Engine::start(options, embedder, None).expect("engine starts");
        Self { engine, _others: Vec::new(), state: EpochUpdates::default(), last: EpochUpdates::default() }
    }

    /// `processes` × `workers` in timely's cluster mode over loopback TCP,
    /// all in this test process: process 0 takes the input and collects.
    pub(crate) fn cluster(processes: usize, workers: usize, chunking: ChunkingConfig) -> Self {
        let hosts: Vec<String> = (0..processes)
            .map(|_| {
                let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                format!("127.0.0.1:{port}")
            })
            .collect();
        let options = |process| EngineOptions {
            workers,
            tick: Duration::from_secs(3600),
            max_batch: usize::MAX,
            max_pending: usize::MAX,
            max_lag: Duration::MAX,
            chunking: chunking.clone(),
            drift: Some(drift_config()),
            cluster: Some(ClusterConfig { process, hosts: hosts.clone() }),
            vector_sink: None,
        };
        // Each start blocks until the processes are connected: the others start on their own threads.
        let others: Vec<_> = (1..processes)
            .map(|process| {
                let options = options(process);
                std::thread::spawn(move || {
                    Engine::start(options, Arc::new(HashingEmbedder::new(32)), None).expect("process starts")
                })
            })
            .collect();
        let engine = Engine::start(options(0), Arc::new(HashingEmbedder::new(32)), None).expect("process 0 starts");
        let others = others.into_iter().map(|t| t.join().expect("process starts")).collect();
        Self { engine, _others: others, state: EpochUpdates::default(), last: EpochUpdates::default() }
    }

    /// Submits `changes` as one epoch, waits for it and folds it into the
    /// state. Returns the epoch.
    pub(crate) fn epoch(&mut self, changes: Vec<DocumentChange>) -> u64 {
        let epoch = self.engine.submit(changes).expect("accepted");
        let closed = self.engine.flush();
        assert!(closed.is_none() || closed == Some(epoch));
        let completed = self.engine.completed();
        self.last = EpochUpdates::default();
        if closed.is_none() {
            return epoch; // no changes: nothing was closed
        }
        loop {
            let done = completed.recv_timeout(Duration::from_secs(60)).expect("epoch completes");
            assert!(done.epoch <= epoch, "epochs complete in order");
            let merged = done.merged();
            self.state.extend(merged.clone());
            self.state.consolidate();
            if done.epoch == epoch {
                self.last = merged;
                break;
            }
        }
        self.engine.mark_committed(epoch);
        assert!(
            self.state.documents.iter().all(|(_, d)| *d > 0)
                && self.state.chunks.iter().all(|(_, d)| *d > 0)
                && self.state.embeddings.iter().all(|(_, d)| *d > 0)
                && self.state.instruct.iter().all(|(_, d)| *d > 0),
            "no table holds a negative count"
        );
        epoch
    }
}

/// Drift statistics with few features (the tests check their sums, not their quality).
pub(crate) fn drift_config() -> DriftConfig {
    DriftConfig { features: 16, ..DriftConfig::default() }
}

/// Small chunks, so short test documents have several.
pub(crate) fn small_chunks() -> ChunkingConfig {
    let spec = ChunkSpec { min_chars: 60, max_chars: 240, boundary_one_in: 3 };
    ChunkingConfig {
        article: spec.clone(),
        post: spec.clone(),
        repository: spec.clone(),
        other: spec,
        title_context: true,
    }
}

pub(crate) fn upsert(doc_id: &str, kind: DocumentKind, title: &str, content: &str) -> DocumentChange {
    DocumentChange::Upsert(Document {
        doc_id: doc_id.to_owned(),
        kind,
        author: "Ada".to_owned(),
        title: title.to_owned(),
        url: format!("https://example.com/{doc_id}"),
        source: "test".to_owned(),
        format: None,
        fetched_at: Some(1_700_000_000_000),
        content: content.to_owned(),
    })
}

pub(crate) fn delete(doc_id: &str) -> DocumentChange {
    DocumentChange::Delete { doc_id: doc_id.to_owned() }
}

/// A deterministic pseudo-random English-like text of `sentences`
/// sentences in paragraphs of 3 to 7 sentences.
pub(crate) fn prose(seed: u64, sentences: usize) -> String {
    const WORDS: &[&str] = &[
        "union", "economy", "people", "congress", "nation", "freedom", "labor", "trade", "history", "future",
        "strength", "peace", "justice", "children", "schools", "farmers", "industry", "courage", "promise", "duty",
        "citizens", "world", "liberty", "growth", "energy", "science", "health", "families", "hope", "security",
        "workers", "markets", "rivers", "cities", "roads", "budget", "taxes", "army", "navy", "treaty", "progress",
        "reform", "credit", "banks", "harvest", "railways", "courts", "votes", "rights",
    ];
    let mut rng = SeededRng::new(seed);
    let mut out = String::new();
    let mut in_paragraph = 0;
    let mut paragraph_len = 3 + rng.index(5);
    for _ in 0..sentences {
        let len = 8 + rng.index(18);
        for i in 0..len {
            let word = WORDS[rng.index(WORDS.len())];
            if i == 0 {
                let mut chars = word.chars();
                let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or('X');
                out.push(first);
                out.push_str(chars.as_str());
            } else {
                out.push(' ');
                out.push_str(word);
            }
        }
        out.push_str(". ");
        in_paragraph += 1;
        if in_paragraph == paragraph_len {
            out.push_str("\n\n");
            in_paragraph = 0;
            paragraph_len = 3 + rng.index(5);
        }
    }
    out.trim_end().to_owned()
}
