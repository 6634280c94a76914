//! The running side of a source: a thread that sends [`SourceEvent`]s into a
//! bounded channel, and the [`SourceHandle`] that stops it.
//!
//! A full channel blocks the source (backpressure), but a blocked source
//! still stops promptly: every send waits on the channel *and* on the stop
//! signal.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::Mutex;
use twinflow_schemas::DocumentChange;
use twinflow_schemas::api::SourceLag;

use crate::{Error, IngestError, Result, SourceEvent};

/// A running source. Dropping it stops the source, like [`SourceHandle::stop`].
#[derive(Debug)]
pub struct SourceHandle {
    name: String,
    /// Dropped to tell the thread to stop.
    stop: Option<Sender<()>>,
    /// Positions of this source that the engine has committed.
    committed: Sender<crate::SourcePosition>,
    /// How far behind its upstream the source last said it is.
    lag: LagProbe,
    thread: Option<JoinHandle<Result<()>>>,
}

/// The lag a source last measured (Kafka: records behind the partitions'
/// ends; Postgres: WAL bytes behind the server; web: pages queued; watch:
/// changed paths not yet read), shared with whoever shows it.
#[derive(Clone, Debug, Default)]
pub struct LagProbe(Arc<Mutex<Option<SourceLag>>>);

impl LagProbe {
    /// The last measurement; `None` for sources that measure none.
    pub fn get(&self) -> Option<SourceLag> {
        self.0.lock().clone()
    }
}

impl SourceHandle {
    /// Runs `body` on a new thread named after the source.
    pub(crate) fn spawn(
        name: String,
        tx: Sender<SourceEvent>,
        body: impl FnOnce(Outbox) -> Result<(), Halt> + Send + 'static,
    ) -> Result<Self> {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let (committed, committed_rx) = crossbeam_channel::unbounded();
        let lag = LagProbe::default();
        let outbox = Outbox { name: name.clone(), tx, stop: stop_rx, committed: committed_rx, lag: lag.clone() };
        let thread = thread::Builder::new()
            .name(format!("twinflow-source-{name}"))
            .spawn(move || match body(outbox) {
                Ok(()) | Err(Halt::Stopped) => Ok(()),
                Err(Halt::Fatal(error)) => Err(error),
            })
            .map_err(|source| Error::Spawn { name: name.clone(), source })?;
        Ok(Self { name, stop: Some(stop_tx), committed, lag, thread: Some(thread) })
    }

    /// Where the source's lag can be read while it runs.
    pub fn lag(&self) -> LagProbe {
        self.lag.clone()
    }

    /// Where to tell the source that one of its positions is committed
    /// (with the epoch of its changes): the checkpoint step of the
    /// lifecycle. A Kafka source commits its consumer group's offsets then;
    /// sources with nothing outside to tell ignore it.
    pub fn committed_sender(&self) -> Sender<crate::SourcePosition> {
        self.committed.clone()
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the source has ended (on its own, after an error, or because
    /// the receiving end of its channel was dropped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the source and waits for its thread to end. A fatal error it
    /// ended with is logged; use [`SourceHandle::wait`] to get it instead.
    pub fn stop(mut self) {
        self.shut_down();
    }

    /// Waits until the source ends on its own, without stopping it, and
    /// returns how it ended. A watch source never ends on its own while its
    /// directory exists and its channel has a receiver; an NDJSON replay
    /// ends at the end of its file.
    pub fn wait(mut self) -> Result<()> {
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(thread) => thread.join().unwrap_or_else(|_| Err(Error::Panicked { name: self.name.clone() })),
        }
    }

    fn shut_down(&mut self) {
        self.stop.take();
        if let Err(error) = self.join() {
            tracing::error!(source = %self.name, %error, "source ended with an error");
        }
    }
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Why a source's run ended early.
#[derive(Debug)]
pub(crate) enum Halt {
    /// Asked to stop, or nobody listens any more: not an error.
    Stopped,
    /// Cannot go on.
    Fatal(Error),
}

impl From<Error> for Halt {
    fn from(error: Error) -> Self {
        Self::Fatal(error)
    }
}

/// The sending side given to a source's thread.
#[derive(Debug)]
pub(crate) struct Outbox {
    name: String,
    tx: Sender<SourceEvent>,
    stop: Receiver<()>,
    committed: Receiver<crate::SourcePosition>,
    lag: LagProbe,
}

impl Outbox {
    /// The newest of the positions committed since the last call, if any.
    // Only the Kafka and Postgres sources tell anyone (the consumer group, the slot).
    #[cfg_attr(not(any(feature = "kafka", feature = "postgres")), allow(dead_code))]
    pub(crate) fn committed(&self) -> Option<crate::SourcePosition> {
        self.committed.try_iter().last()
    }

    /// Records how far behind its upstream the source is now.
    pub(crate) fn report_lag(&self, behind: u64, unit: twinflow_schemas::api::LagUnit) {
        let measured_at_ms = twinflow_schemas::clock::now_ms();
        *self.lag.0.lock() = Some(SourceLag { behind, unit, measured_at_ms });
    }

    /// The source's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Becomes ready (disconnected) when the source is asked to stop.
    pub(crate) fn stop_signal(&self) -> &Receiver<()> {
        &self.stop
    }

    /// Sends one event, waiting while the channel is full.
    pub(crate) fn send(&self, event: SourceEvent) -> Result<(), Halt> {
        select! {
            send(self.tx, event) -> sent => sent.map_err(|_| Halt::Stopped),
            recv(self.stop) -> _ => Err(Halt::Stopped),
        }
    }

    /// Sends a batch of changes (nothing when empty).
    pub(crate) fn changes(&self, changes: Vec<DocumentChange>) -> Result<(), Halt> {
        if changes.is_empty() {
            return Ok(());
        }
        self.send(SourceEvent::Changes { source: self.name.clone(), changes, position: None })
    }

    /// Sends a batch of changes and the position after them (sent even
    /// when there are no changes: the position alone moved).
    pub(crate) fn changes_at(&self, changes: Vec<DocumentChange>, position: crate::SourcePosition) -> Result<(), Halt> {
        self.send(SourceEvent::Changes { source: self.name.clone(), changes, position: Some(position) })
    }

    /// True once the source is asked to stop (or nobody listens).
    pub(crate) fn stopping(&self) -> bool {
        !matches!(self.stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty))
    }

    /// Waits `duration` unless asked to stop first; `Err(Stopped)` then.
    pub(crate) fn sleep(&self, duration: std::time::Duration) -> Result<(), Halt> {
        match self.stop.recv_timeout(duration) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(()),
            _ => Err(Halt::Stopped),
        }
    }

    /// Sends an error record.
    pub(crate) fn error(&self, location: String, reason: String) -> Result<(), Halt> {
        self.send(SourceEvent::Error(IngestError::new(&self.name, location, reason)))
    }
}
