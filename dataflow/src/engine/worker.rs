//! What each timely worker runs: how the workers are laid out over threads
//! and processes, and the loop that feeds a worker's input from the ingest's
//! batches, netting each epoch's changes for the documents it owns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, TryRecvError};
use differential_dataflow::input::InputSession;

use twinflow_schemas::DocumentRow;
use twinflow_schemas::config::ClusterConfig;
use twinflow_schemas::ids::partition_hash;

use super::EngineError;
use super::ingest::Batch;
use crate::features::apply_change;

/// timely's configuration for `workers` threads per process, with this
/// process's index and the number of processes (`cluster`: `None` for one
/// process).
pub(super) fn layout(
    workers: usize,
    cluster: Option<&ClusterConfig>,
) -> Result<(timely::Config, usize, usize), EngineError> {
    Ok(match cluster {
        None => (timely::Config::process(workers), 0, 1),
        Some(cluster) => {
            if cluster.process >= cluster.hosts.len() {
                return Err(EngineError::Start(format!(
                    "process {} is not among the {} hosts",
                    cluster.process,
                    cluster.hosts.len()
                )));
            }
            let communication = timely::CommunicationConfig::Cluster {
                threads: workers,
                process: cluster.process,
                addresses: cluster.hosts.clone(),
                report: false,
                zerocopy: false,
            };
            (
                timely::Config { communication, worker: timely::WorkerConfig::default() },
                cluster.process,
                cluster.hosts.len(),
            )
        }
    })
}

/// The loop of one worker thread: apply batches, step the dataflow.
/// `(index, count)` of the worker among those that take input (the
/// process's): each nets the changes of its share of documents.
pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    mut input: InputSession<u64, DocumentRow, isize>,
    rx: Receiver<Arc<Batch>>,
    (index, peers): (usize, usize),
) {
    let owns = |doc_id: &str| partition_hash(doc_id) % peers as u64 == index as u64;
    let mut docs: HashMap<String, DocumentRow> = HashMap::new();
    let mut apply = |batch: &Batch, input: &mut InputSession<u64, DocumentRow, isize>| {
        input.advance_to(batch.epoch);
        for row in batch.restore.iter().filter(|r| owns(&r.doc_id)) {
            docs.insert(row.doc_id.clone(), row.clone());
            input.insert(row.clone());
        }
        // Net the epoch's changes per document: only the difference between
        // the version before and after the epoch enters the dataflow.
        let mut before: HashMap<&str, Option<DocumentRow>> = HashMap::new();
        for change in batch.changes.iter().filter(|c| owns(c.doc_id())) {
            before.entry(change.doc_id()).or_insert_with(|| docs.get(change.doc_id()).cloned());
            apply_change(&mut docs, change, batch.epoch);
        }
        for (doc_id, old) in before {
            let new = docs.get(doc_id);
            if old.as_ref() != new {
                if let Some(old) = old {
                    input.remove(old);
                }
                if let Some(new) = new {
                    input.insert(new.clone());
                }
            }
        }
        input.advance_to(batch.epoch + 1);
        input.flush();
    };
    loop {
        let mut disconnected = false;
        loop {
            match rx.try_recv() {
                Ok(batch) => apply(&batch, &mut input),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        if disconnected {
            break;
        }
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    drop(input);
    while worker.step() {}
}
