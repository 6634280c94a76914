//! Standing answers: a subscription with `answer: true` has its answer
//! written again (by the [`Answerer`] the server sets) whenever a change
//! touches it or its cited chunks, on a thread of its own, and sent as an
//! `answer` event.

use std::sync::{Arc, Weak};
use std::time::Duration;

use twinflow_schemas::Hash128;
use twinflow_schemas::api::{EventKind, SubscriptionEvent};

use super::{Answerer, Subscriptions, now_ms};

impl Subscriptions {
    /// Writes answers of subscriptions with `answer: true` from now on.
    pub fn set_answerer(&self, answerer: Answerer) {
        *self.answerer.write() = Some(answerer);
        let waiting: Vec<String> = self
            .engine
            .lock()
            .subs
            .values()
            .filter(|s| s.spec.asked.answer && s.cited.is_empty())
            .map(|s| s.spec.id.clone())
            .collect();
        for id in waiting {
            self.queue_answer(&id);
        }
    }

    /// Queues `id`'s answer to be written again (once, however often it is queued meanwhile).
    pub(super) fn queue_answer(&self, id: &str) {
        if self.answerer.read().is_some() && self.pending_answers.lock().insert(id.to_owned()) {
            let _ = self.answers.send(id.to_owned());
        }
    }

    /// Writes `id`'s answer again and sends it as an `answer` event.
    fn answer(&self, id: &str) {
        self.pending_answers.lock().remove(id);
        let Some(answerer) = self.answerer.read().clone() else { return };
        let Some(spec) = self.engine.lock().subs.get(id).map(|s| s.spec.clone()) else { return };
        let response = match answerer(&spec) {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(subscription = %id, error = %e, "a standing answer could not be written");
                return;
            }
        };
        let mut cited: Vec<Hash128> = response.citations.iter().filter(|c| c.cited).map(|c| c.chunk_id).collect();
        if cited.is_empty() {
            cited = response.citations.iter().map(|c| c.chunk_id).collect();
        }
        let mut guard = self.engine.lock();
        let engine = &mut *guard;
        let Some(sub) = engine.subs.get_mut(id) else { return };
        let event = Arc::new(SubscriptionEvent {
            subscription: id.to_owned(),
            kind: EventKind::Answer,
            epoch: response.as_of,
            hits: Vec::new(),
            entered: Vec::new(),
            left: Vec::new(),
            answer: Some(Box::new(response)),
            at_ms: now_ms(),
            committed_at_ms: 0,
        });
        sub.cited = cited;
        if let Some(mut standing) = engine.matcher.get(sub.slot).cloned() {
            standing.chunks.extend(sub.cited.iter().copied());
            standing.chunks.sort_unstable();
            standing.chunks.dedup();
            engine.matcher.set(sub.slot, standing);
        }
        self.record(sub, event.clone());
        let webhook = sub.spec.asked.webhook.clone();
        let sub = &engine.subs[id];
        self.save_sub(sub, engine.matcher.get(sub.slot));
        engine.stats.events += 1;
        drop(guard);
        self.publish(event, webhook.as_ref());
    }
}

/// Writes the queued answers, one at a time, until the subscriptions are dropped.
pub(super) fn answer_loop(subscriptions: Weak<Subscriptions>, queue: crossbeam_channel::Receiver<String>) {
    loop {
        let id = match queue.recv_timeout(Duration::from_secs(1)) {
            Ok(id) => id,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if subscriptions.strong_count() > 0 => continue,
            Err(_) => return,
        };
        let Some(subscriptions) = subscriptions.upgrade() else { return };
        subscriptions.answer(&id);
    }
}
