//! Queries of concurrent requests embedded together: one forward pass of the
//! encoder for many short texts reads the weights once instead of once per
//! query, which is most of a short query's cost on a CPU.
//!
//! ```text
//!  request A ─┐                    ┌─ leader: the queue's oldest texts (≤ MAX_BATCH, its own first),
//!  request B ─┼─▶ queue ──────────▶┤          one embed_batch, each caller's vectors to its slot,
//!  request C ─┘  (texts + slot)    │          then the oldest caller still queued leads the next batch
//!                                  └─ others: wait on their slot
//! ```
//!
//! No timer: a request that finds no batch running leads at once, so an idle
//! server adds no latency; under load, texts queue while a batch runs and the
//! next batch takes them. A leader runs one batch and hands over, so no
//! caller waits for other callers' batches after its own.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use twinflow_dataflow::{EmbedError, Embedder};

/// Texts one forward pass takes at most.
const MAX_BATCH: usize = 64;

/// What a waiting caller is told.
enum Outcome {
    Vectors(Result<Vec<Vec<f32>>, EmbedError>),
    /// Run the next batch (yours is its first entry).
    Lead,
}

/// Where a caller's answer arrives.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl Slot {
    fn tell(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome);
        self.ready.notify_one();
    }
}

struct Waiting {
    texts: Vec<String>,
    slot: Arc<Slot>,
}

/// Invariant: `waiting` is not empty only while `leading`.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// A caller is running a batch (or has been told to).
    leading: bool,
}

/// An [`Embedder`] that embeds the texts of concurrent calls in one batch.
pub struct CombiningEmbedder {
    inner: Arc<dyn Embedder>,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for CombiningEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CombiningEmbedder").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl CombiningEmbedder {
    pub fn new(inner: Arc<dyn Embedder>) -> Self {
        Self { inner, queue: Mutex::new(Queue::default()) }
    }

    /// Runs one batch of the oldest queued calls, then hands the lead to the
    /// oldest call still queued (or gives it up).
    fn lead(&self) {
        let batch = {
            let mut queue = self.queue.lock();
            let mut texts = 0;
            let take = queue
                .waiting
                .iter()
                .take_while(|w| {
                    texts += w.texts.len();
                    texts <= MAX_BATCH
                })
                .count()
                .max(1)
                .min(queue.waiting.len());
            queue.waiting.drain(..take).collect::<Vec<_>>()
        };
        let texts: Vec<&str> = batch.iter().flat_map(|w| w.texts.iter().map(String::as_str)).collect();
        // A panicking encoder fails this batch's callers, not every later call.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.embed_batch(&texts)))
            .unwrap_or_else(|_| Err(EmbedError("the encoder panicked".into())));
        let mut vectors = match result {
            Ok(vectors) if vectors.len() == texts.len() => Ok(vectors.into_iter()),
            Ok(vectors) => {
                Err(EmbedError(format!("the encoder returned {} vectors for {} texts", vectors.len(), texts.len())))
            }
            Err(e) => Err(e),
        };
        for waiting in batch {
            let answer = match &mut vectors {
                Ok(all) => Ok(all.by_ref().take(waiting.texts.len()).collect()),
                Err(e) => Err(EmbedError(e.0.clone())),
            };
            waiting.slot.tell(Outcome::Vectors(answer));
        }
        let mut queue = self.queue.lock();
        match queue.waiting.first() {
            Some(next) => next.slot.tell(Outcome::Lead),
            None => queue.leading = false,
        }
    }
}

impl Embedder for CombiningEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn batch_size(&self) -> usize {
        self.inner.batch_size()
    }

    fn max_tokens(&self) -> Option<usize> {
        self.inner.max_tokens()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.inner.count_tokens(text)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.len() >= MAX_BATCH {
            // A batch of its own already.
            return self.inner.embed_batch(texts);
        }
        let slot = Arc::new(Slot::default());
        let lead = {
            let mut queue = self.queue.lock();
            queue.waiting.push(Waiting { texts: texts.iter().map(|t| (*t).to_owned()).collect(), slot: slot.clone() });
            // Nobody leading: the queue was empty, so this call is its oldest.
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            self.lead();
        }
        loop {
            let outcome = {
                let mut outcome = slot.outcome.lock();
                while outcome.is_none() {
                    slot.ready.wait(&mut outcome);
                }
                outcome.take().expect("told")
            };
            match outcome {
                Outcome::Vectors(answer) => return answer,
                Outcome::Lead => self.lead(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The hashing embedder, counting its calls and slow enough for calls to queue.
    #[derive(Debug)]
    struct Slow(twinflow_dataflow::HashingEmbedder, AtomicUsize);

    impl Embedder for Slow {
        fn model_id(&self) -> &str {
            self.0.model_id()
        }
        fn dim(&self) -> usize {
            self.0.dim()
        }
        fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.1.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            self.0.embed_batch(texts)
        }
    }

    #[test]
    fn concurrent_calls_share_batches_and_get_their_own_vectors() {
        let slow = Arc::new(Slow(twinflow_dataflow::HashingEmbedder::new(64), AtomicUsize::new(0)));
        let combining = Arc::new(CombiningEmbedder::new(slow.clone()));
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let combining = combining.clone();
                std::thread::spawn(move || {
                    let texts = [format!("query {i}"), format!("other {i}")];
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    (texts.clone(), combining.embed_batch(&refs).unwrap())
                })
            })
            .collect();
        let plain = twinflow_dataflow::HashingEmbedder::new(64);
        for thread in threads {
            let (texts, vectors) = thread.join().unwrap();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            assert_eq!(vectors, plain.embed_batch(&refs).unwrap(), "each caller gets its own texts' vectors");
        }
        let calls = slow.1.load(Ordering::SeqCst);
        assert!(calls < 32, "32 concurrent calls took {calls} forward passes");
        // Idle again: one call is one pass.
        combining.embed_batch(&["alone"]).unwrap();
        assert_eq!(slow.1.load(Ordering::SeqCst), calls + 1);
    }
}
