//! Admission control: `submit` refuses while too many changes wait to be
//! committed, or while the oldest has waited too long, and accepts again
//! once the backlog is committed.

use std::sync::Arc;
use std::time::Duration;

use twinflow_dataflow::{Engine, EngineOptions, HashingEmbedder, SubmitError};
use twinflow_schemas::DocumentKind;

use crate::harness::{prose, upsert};

fn engine(max_pending: usize, max_lag: Duration) -> Engine {
    let options = EngineOptions {
        workers: 1,
        tick: Duration::from_secs(3600),
        max_batch: usize::MAX,
        max_pending,
        max_lag,
        ..EngineOptions::default()
    };
    Engine::start(options, Arc::new(HashingEmbedder::new(32)), None).expect("engine starts")
}

fn doc(i: u64) -> twinflow_schemas::DocumentChange {
    upsert(&format!("d{i}"), DocumentKind::Article, "t", &prose(i, 3))
}

/// Waits for `epoch` to complete and marks it committed.
fn commit(engine: &Engine, epoch: u64) {
    let completed = engine.completed();
    while completed.recv_timeout(Duration::from_secs(60)).expect("epoch completes").epoch < epoch {}
    engine.mark_committed(epoch);
}

#[test]
fn ingest_is_refused_while_the_oldest_uncommitted_change_is_too_old() {
    let engine = engine(usize::MAX, Duration::from_secs(1));
    let first = engine.submit(vec![doc(1)]).expect("accepted");
    engine.flush();
    // Within the limit: accepted although the first epoch is not committed.
    let second = engine.submit(vec![doc(2)]).expect("accepted");
    std::thread::sleep(Duration::from_millis(1500));
    match engine.submit(vec![doc(3)]) {
        Err(SubmitError::Behind { lag, limit }) => {
            assert!(lag >= Duration::from_millis(1500) && limit == Duration::from_secs(1), "{lag:?} {limit:?}")
        }
        other => panic!("expected Behind, got {other:?}"),
    }
    // Committing the closed epoch is not enough: the open one is as old.
    commit(&engine, first);
    assert!(matches!(engine.submit(vec![doc(3)]), Err(SubmitError::Behind { .. })));
    let closed = engine.flush().expect("the open epoch held a change");
    assert_eq!(closed, second);
    commit(&engine, second);
    engine.submit(vec![doc(3)]).expect("accepted once the backlog is committed");
    assert_eq!(engine.stats().pending_changes, 1);
    engine.shutdown().expect("stops");
}

#[test]
fn ingest_is_refused_above_the_pending_limit() {
    let engine = engine(3, Duration::MAX);
    let first = engine.submit(vec![doc(1), doc(2)]).expect("accepted");
    // An oversize batch is accepted into an empty engine (else it could never be).
    assert!(matches!(engine.submit(vec![doc(3), doc(4)]), Err(SubmitError::Overloaded { pending: 2, limit: 3 })));
    engine.submit(vec![doc(3)]).expect("fits");
    engine.flush();
    commit(&engine, first);
    engine.submit(vec![doc(4), doc(5)]).expect("accepted once committed");
    engine.shutdown().expect("stops");
}
