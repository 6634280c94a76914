//! The engine: timely worker threads running the feature dataflow, the
//! ingest side that stamps changes with epochs, and the collector that
//! hands complete epochs to whoever commits them.
//!
//! ```text
//!  submit(changes) ─▶ Ingest: open epoch E ─(tick or full)─▶ Batch E ─┬─▶ worker 0 ─┐
//!                         │                                         └─▶ worker n ─┤ WorkerMsg
//!                         └─ Closed(E) ────────────────────────────▶ Collector ◀──┘
//!                                                                      │ all workers past E
//!                                                                      ▼
//!                                                        CompletedEpoch E ─▶ committer (sinks)
//!                                                                      │
//!                                                  mark_committed(E) ◀─┘  (wakes wait_committed)
//! ```
//! Every worker receives every batch, keeps the changes whose `doc_id` it
//! owns, nets them against its current documents and advances its input to
//! E+1, so all workers close epochs together.
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | [`Engine`]: starting the threads and channels, the handle's methods, shutdown |
//! | `options.rs` | [`EngineOptions`] and the [`Restore`]d state to resume from |
//! | `ingest.rs` | the open epoch, admission ([`SubmitError`]), closing batches, the committed epoch, [`EngineStats`] |
//! | `worker.rs` | what each timely worker runs: the thread/process layout and the input loop |
//! | `collector.rs` | gathering the workers' updates into [`CompletedEpoch`]s |

mod collector;
mod ingest;
mod options;
mod worker;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use twinflow_schemas::DocumentChange;

use crate::embed::Embedder;
use crate::graph;
use crate::operators::EmbedCache;

pub use collector::CompletedEpoch;
pub use ingest::{EngineStats, SubmitError};
pub use options::{EngineOptions, Restore};

use collector::{CollectorMsg, run_collector};
use ingest::{Batch, Ingest};
use worker::run_worker;

/// Errors starting or stopping the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// timely could not start its workers.
    #[error("could not start the dataflow workers: {0}")]
    Start(String),
    /// A worker thread panicked.
    #[error("a dataflow worker failed: {0}")]
    Worker(String),
}

/// A running feature engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    ingest: Arc<Ingest>,
    cache: Arc<EmbedCache>,
    embedder: Arc<dyn Embedder>,
    completed: Receiver<CompletedEpoch>,
    workers: usize,
    stop_ticker: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<Result<(), String>>>>,
}

impl Engine {
    /// Starts the workers, the collector and the epoch ticker. With
    /// `restore`, the restored documents are replayed at `restore.epoch`
    /// (delivered as a `restored` completed epoch) and new changes start at
    /// the next epoch.
    pub fn start(
        options: EngineOptions,
        embedder: Arc<dyn Embedder>,
        restore: Option<Restore>,
    ) -> Result<Engine, EngineError> {
        let workers = options.workers.max(1);
        // In a cluster, process 0 takes the input and collects every worker's output; the
        // others only compute (their inputs close at once, so only process 0's drive the epochs).
        let (timely_config, process, processes) = worker::layout(workers, options.cluster.as_ref())?;
        let restore = restore.unwrap_or_default();
        let cache = Arc::new(EmbedCache::new(embedder.model_id()).with_sink(options.vector_sink.clone()));
        cache.seed(restore.embeddings);

        let (collector_tx, collector_rx) = crossbeam_channel::unbounded();
        let (completed_tx, completed_rx) = crossbeam_channel::unbounded();
        let mut worker_txs = Vec::new();
        let mut worker_rxs = Vec::new();
        for _ in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded::<Arc<Batch>>();
            worker_txs.push(tx);
            worker_rxs.push(Mutex::new(Some(rx)));
        }
        let ingest = Arc::new(Ingest::new(restore.epoch, worker_txs, collector_tx.clone(), &options));

        // The restored state is replayed as epoch `restore.epoch`, before any change.
        if !restore.documents.is_empty() {
            ingest.replay(restore.epoch, restore.documents);
        }

        let mut threads = Vec::new();
        if process == 0 {
            let collector = std::thread::Builder::new()
                .name("twinflow-collector".into())
                .spawn(move || {
                    run_collector(workers, collector_rx, completed_tx);
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?;
            threads.push(collector);
        }

        let worker_rxs = Arc::new(worker_rxs);
        let chunking = options.chunking.clone();
        let worker_embedder = embedder.clone();
        let worker_cache = cache.clone();
        let drift = options.drift.as_ref().map(|c| Arc::new(crate::drift::DriftFeatures::new(embedder.dim(), c)));
        let guards = timely::execute(timely_config, move |worker| {
            let local = worker.index() - process * workers;
            let rx = if process == 0 { worker_rxs[local].lock().take() } else { None };
            let tx = (process == 0).then(|| collector_tx.clone());
            let emit = move |msg| {
                // The collector outlives the workers; a send error means it gave up.
                if let Some(tx) = &tx {
                    let _ = tx.send(CollectorMsg::Worker(msg));
                }
            };
            let input = graph::build(
                worker,
                chunking.clone(),
                worker_embedder.clone(),
                worker_cache.clone(),
                drift.clone(),
                processes > 1,
                emit,
            );
            match rx {
                Some(rx) => run_worker(worker, input, rx, (local, workers)),
                // Another process's worker: no input of its own; it computes until process 0 stops.
                None => drop(input),
            }
        })
        .map_err(EngineError::Start)?;
        threads.push(
            std::thread::Builder::new()
                .name("twinflow-workers".into())
                .spawn(move || {
                    for result in guards.join() {
                        result?;
                    }
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?,
        );

        let ticker_ingest = ingest.clone();
        let tick = options.tick;
        let (stop_ticker, ticker_stopped) = crossbeam_channel::bounded::<()>(0);
        threads.push(
            std::thread::Builder::new()
                .name("twinflow-ticker".into())
                .spawn(move || {
                    // Wakes every tick; ends when `stop_ticker` is dropped.
                    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = ticker_stopped.recv_timeout(tick) {
                        ticker_ingest.flush();
                    }
                    Ok(())
                })
                .map_err(|e| EngineError::Start(e.to_string()))?,
        );

        Ok(Engine {
            ingest,
            cache,
            embedder,
            completed: completed_rx,
            workers: workers * processes,
            stop_ticker: Mutex::new(Some(stop_ticker)),
            threads: Mutex::new(threads),
        })
    }

    /// Accepts changes into the open epoch and returns its number. All or
    /// nothing: either every change is accepted or none is.
    pub fn submit(&self, changes: Vec<DocumentChange>) -> Result<u64, SubmitError> {
        self.ingest.submit(changes)
    }

    /// Closes the open epoch now (if it holds changes) and returns it.
    pub fn flush(&self) -> Option<u64> {
        self.ingest.flush()
    }

    /// Completed epochs, in order. Whoever commits them must call
    /// [`Engine::mark_committed`] afterwards.
    pub fn completed(&self) -> Receiver<CompletedEpoch> {
        self.completed.clone()
    }

    /// Records that every epoch up to `epoch` is committed: frees pending
    /// capacity and wakes [`Engine::wait_committed`].
    pub fn mark_committed(&self, epoch: u64) {
        self.ingest.mark_committed(epoch);
    }

    /// Waits until `epoch` is committed; false on timeout.
    pub fn wait_committed(&self, epoch: u64, timeout: Duration) -> bool {
        self.ingest.wait_committed(epoch, timeout)
    }

    /// The texts the model could not embed since the last call (each has
    /// no row in `embeddings`).
    pub fn take_embed_failures(&self) -> Vec<crate::operators::EmbedFailure> {
        self.cache.take_failures()
    }

    /// The embedder the engine uses.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Current counters.
    pub fn stats(&self) -> EngineStats {
        self.ingest.stats(self.workers, &self.cache)
    }

    /// Stops accepting changes, closes the open epoch, lets the workers
    /// finish every epoch, and waits for them. Completed epochs not yet
    /// received stay readable from [`Engine::completed`].
    pub fn shutdown(&self) -> Result<(), EngineError> {
        if !self.ingest.stop() {
            return Ok(());
        }
        self.stop_ticker.lock().take();
        let threads = std::mem::take(&mut *self.threads.lock());
        let mut failure = None;
        for thread in threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = Some(e),
                Err(_) => failure = Some("a thread panicked".to_owned()),
            }
        }
        failure.map_or(Ok(()), |e| Err(EngineError::Worker(e)))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
